"""Benchmark of ``avsegformer predict``: where the time goes per sampled frame, and memory.

Prints one JSON object:

* ``stages``: for a generated 1280x720 30 fps H.264 + AAC video, sampled at 1 fps, the
  time per sampled frame spent in decoding (frames and audio: demux, decode, colour
  conversion, resampling, windowing) + pre-processing (resize, normalise, log-mel) vs in
  the model forward, for ``res50_s4`` at its default 512 and at 224 and for the tiny
  model, in the two decode modes of ``predict``:

  - ``overlay`` (the default): every frame is decoded to RGB (it is drawn on);
  - ``no_overlay`` (``--no-overlay``): only the sampled frames are converted to RGB.

  ``overhead`` = (decode + preprocess) / model; the target is <= 0.10. Runs through
  :func:`avsegformer.commands.predict.process_video` (the command's code path) with
  random weights (speed does not depend on them), after one warm-up forward.
* ``peak_rss``: peak resident memory of ``avsegformer predict`` (tiny model, 1 fps) on a
  1-minute and a 10-minute 720p video (the long one at a low bit rate), each in a fresh
  process, with and without the overlay; flat memory means the two lengths agree
  (target: within 10%).

Each measurement runs in a fresh subprocess; timings are the best of ``--runs`` (the
machine may be shared, and the least disturbed run is the most telling).

Usage: ``python bench/predict.py [--seconds 10] [--long-minutes 10] [--runs 1] [--out f.json]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from video_decode import generate_video  # noqa: E402  (one generator for all benchmarks)

logger = logging.getLogger("bench.predict")

# (label, configuration, img_size)
MODELS = (("res50_s4@512", "res50_s4", 512), ("res50_s4@224", "res50_s4", 224))


# ---------------------------------------------------------------------------------------
# Child tasks (fresh subprocesses)


def task_stages(path: str, name: str, img_size: str, mode: str, out: str) -> dict:
    from avsegformer.commands.predict import process_video
    from avsegformer.modeling.build import build_model
    from avsegformer.predictor import Predictor

    torch.manual_seed(0)
    model = build_model(name, overrides=[f"img_size={img_size}"])
    predictor = Predictor(model, device="cpu")
    size = int(img_size)
    with torch.inference_mode():  # warm-up: one-off allocations and kernel selection
        predictor.forward(torch.zeros(1, 3, size, size), torch.zeros(1, 1, 96, 64))
    summary = process_video(
        predictor, Path(path), Path(out), overlay=mode == "overlay", overwrite=True
    )
    t = summary["timings"]
    decode, preprocess, model_ms = (
        t["decode_ms_per_sample"],
        t["preprocess_ms_per_sample"],
        t["model_ms_per_sample"],
    )
    return {
        "model": summary["model"]["name"],
        "img_size": size,
        "mode": mode,
        "samples": t["samples"],
        "decode_ms": decode,
        "preprocess_ms": preprocess,
        "model_ms": model_ms,
        "postprocess_ms": t["postprocess_ms_per_sample"],
        "write_ms": round(t["write_s"] * 1000 / t["samples"], 2),
        "total_ms": round(t["total_s"] * 1000 / t["samples"], 2),
        "overhead": round((decode + preprocess) / model_ms, 4),
        "meets_10pct": (decode + preprocess) <= 0.10 * model_ms,
    }


def task_checkpoint(path: str) -> dict:
    from avsegformer.checkpoint import save_checkpoint
    from avsegformer.modeling.build import build_model

    torch.manual_seed(0)
    save_checkpoint(build_model("tiny_s4"), path)
    return {"path": path}


def task_rss(video: str, checkpoint: str, out: str, overlay: str) -> dict:
    """Run ``avsegformer predict`` as a child and report its peak RSS (this process waits)."""
    command = [
        sys.executable, "-m", "avsegformer.cli", "predict", video, "--checkpoint", checkpoint,
        "--out", out, "--no-progress", "--overwrite",
    ]  # fmt: skip
    if overlay == "0":
        command.append("--no-overlay")
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads((Path(out) / Path(video).stem / "summary.json").read_text())
    return {
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "seconds": round(time.perf_counter() - start, 1),
        "video_seconds": summary["video"]["duration"],
        "samples": summary["num_samples"],
    }


TASKS = {"stages": task_stages, "checkpoint": task_checkpoint, "rss": task_rss}


def run_child(task: str, *args: str) -> dict:
    command = [sys.executable, __file__, "--child", task, *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def best_of(runs: int, key: str, task: str, *args: str) -> dict:
    results = [run_child(task, *args) for _ in range(runs)]
    return {**min(results, key=lambda r: r[key]), "runs": runs}


# ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the 720p video")
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1, help="fresh processes per timing")
    parser.add_argument("--skip-res50", action="store_true", help="only the tiny model")
    parser.add_argument("--skip-rss", action="store_true", help="no 1 vs 10 minute runs")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, *task_args = args.child
        print(json.dumps(TASKS[task](*task_args)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    results: dict = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_average_at_start": os.getloadavg(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as folder:
        d = Path(folder)
        start = time.perf_counter()
        hd = generate_video(d / "hd.mp4", args.seconds, 30, (1280, 720), crf=23, preset="veryfast")
        logger.info("generated the 720p video in %.1f s", time.perf_counter() - start)
        models = [("tiny_s4@224", "tiny_s4", 224)] + ([] if args.skip_res50 else list(MODELS))
        stages = []
        for label, name, size in models:
            for mode in ("overlay", "no_overlay"):
                logger.info("stages: %s, %s", label, mode)
                out = str(d / f"out-{label}-{mode}")
                stages.append(
                    {
                        "label": label,
                        **best_of(
                            args.runs, "total_ms", "stages", str(hd), name, str(size), mode, out
                        ),
                    }  # fmt: skip
                )
        results["stages"] = {
            "video": f"1280x720 30 fps H.264 crf23 + 44.1 kHz stereo AAC, {args.seconds:g} s, "
            "1 sample/s; times in ms per sampled frame",
            "runs": stages,
        }
        if not args.skip_rss:
            checkpoint = run_child("checkpoint", str(d / "tiny.safetensors"))["path"]
            start = time.perf_counter()
            short = generate_video(
                d / "one_minute.mp4", 60, 30, (1280, 720), crf=35, preset="ultrafast"
            )
            long = generate_video(
                d / "long.mp4", args.long_minutes * 60, 30, (1280, 720), crf=35, preset="ultrafast"
            )
            logger.info("generated the 1 and %g min videos in %.1f s", args.long_minutes,
                        time.perf_counter() - start)  # fmt: skip
            rss = {"video": "1280x720 30 fps H.264 crf35 + AAC; tiny model, 1 fps"}
            for overlay in ("1", "0"):
                key = "overlay" if overlay == "1" else "no_overlay"
                for label, video in (("1_min", short), (f"{args.long_minutes:g}_min", long)):
                    logger.info("peak RSS: %s, %s", label, key)
                    rss[f"{key}_{label}"] = run_child(
                        "rss", str(video), checkpoint, str(d / f"rss-{key}"), overlay
                    )
                pair = [rss[f"{key}_{label}"]["peak_rss_mib"] for label in ("1_min",
                        f"{args.long_minutes:g}_min")]  # fmt: skip
                rss[f"{key}_long_over_short"] = round(pair[1] / pair[0], 4)
                rss[f"{key}_within_10pct"] = pair[1] <= 1.10 * pair[0]
            results["peak_rss"] = rss
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
