"""How much the evaluator's metrics add to a model forward pass. Prints JSON.

Times ``BinaryMetric.update`` on 10 frames at 512x512 (S4/MS3 at AVSegFormer's
evaluation size) and ``AVSSMetric.update`` on 10 frames of 71-class logits at 224x224,
and compares each with the forward time of 10 frames of a model at the same size:

* ``--forward-seconds S4 AVSS``: given forward times (seconds per 10 frames), or
* ``--model``: build the named configurations with ``avsegformer.build_model`` (random
  weights) and time them; if that is not possible, or with ``--stand-in``, a small
  convolutional stand-in (stated in the output, with its FLOPs) is timed instead. The
  stand-in is far lighter than AVSegFormer, so its ratio is a pessimistic bound.

Usage: ``python bench/metrics_overhead.py [--repeats 5] [--threads 2] [--stand-in]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from avsegformer.engine.metrics import AVSSMetric, BinaryMetric

FRAMES = 10


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (allocations, thread pool)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class StandIn(nn.Module):
    """Five stride-2 conv stages and a 1x1 head upsampled back: a cheap segmentation net."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        widths = (32, 64, 128, 256, 256)
        layers: list[nn.Module] = []
        previous = 3
        for width in widths:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.ReLU()]
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(previous, num_classes, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.features(frames))
        return nn.functional.interpolate(logits, size=frames.shape[-2:], mode="bilinear")


def _stand_in_forward(num_classes: int, size: int) -> tuple[Callable[[], object], dict]:
    model = StandIn(num_classes).eval()
    frames = torch.randn(FRAMES, 3, size, size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(frames)

    def run() -> object:
        with torch.no_grad():
            return model(frames)

    return run, {
        "model": "stand-in conv net",
        "gflops_per_10_frames": counter.get_total_flops() / 1e9,
    }


def _real_forward(name: str, size: int) -> tuple[Callable[[], object], dict]:
    import avsegformer

    model = avsegformer.build_model(name).eval()
    frames = torch.randn(FRAMES, 3, size, size)
    audio = torch.randn(FRAMES, 1, 96, 64)

    def run() -> object:
        with torch.no_grad():
            return model(frames, audio)

    run()  # fail here (not later) if the model cannot run
    return run, {"model": name}


def _forward(args: argparse.Namespace, task: str, num_classes: int, size: int) -> dict:
    given = dict(zip(("s4", "avss"), args.forward_seconds or (), strict=False))
    if task in given:
        return {"model": "given on the command line", "seconds": given[task]}
    name = {"s4": "res50_s4", "avss": "res50_avss"}[task]
    if args.stand_in:
        run, info = _stand_in_forward(num_classes, size)
    else:
        try:
            run, info = _real_forward(name, size)
        except Exception as exc:  # the model package may be unfinished or the name unknown
            run, info = _stand_in_forward(num_classes, size)
            info["why_stand_in"] = f"{name}: {type(exc).__name__}: {exc}"[:200]
    info["seconds"] = _median_seconds(run, args.forward_repeats)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed metric updates")
    parser.add_argument("--forward-repeats", type=int, default=2, help="timed forwards")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--forward-seconds",
        type=float,
        nargs="+",
        metavar=("S4", "AVSS"),
        help="forward seconds per 10 frames (S4 at 512, then AVSS at 224)",
    )
    parser.add_argument("--stand-in", action="store_true", help="time the stand-in net")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)

    logits = torch.randn(FRAMES, 1, 512, 512, generator=generator) * 3
    gt = (torch.rand(FRAMES, 1, 512, 512, generator=generator) > 0.7).float()
    binary = BinaryMetric()
    video_index = torch.arange(FRAMES) // 5
    binary_seconds = _median_seconds(lambda: binary.update(logits, gt, video_index), args.repeats)

    avss_logits = torch.randn(FRAMES, 71, 224, 224, generator=generator)
    avss_target = torch.randint(0, 71, (FRAMES, 224, 224), generator=generator)
    avss = AVSSMetric()
    avss_seconds = _median_seconds(lambda: avss.update(avss_logits, avss_target), args.repeats)

    s4_forward = _forward(args, "s4", 1, 512)
    avss_forward = _forward(args, "avss", 71, 224)
    report = {
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "binary_update_seconds_per_10_frames_512": round(binary_seconds, 5),
        "avss_update_seconds_per_10_frames_224_71cls": round(avss_seconds, 5),
        "s4_forward": s4_forward,
        "avss_forward": avss_forward,
        "binary_overhead_ratio": round(binary_seconds / s4_forward["seconds"], 5),
        "avss_overhead_ratio": round(avss_seconds / avss_forward["seconds"], 5),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
