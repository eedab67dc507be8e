"""Cost of the model's input check (shapes, dtypes, NaN/inf: one reduction and one host
synchronisation per forward), measured as a ratio in one run: the same forward with
``model.check_inputs`` on and off, interleaved, best of ``--repeats``. Prints JSON.

    python bench/input_check.py                       # res50_s4, 5 x 224, CPU
    python bench/input_check.py --model pvt2_s4 --frames 5 --size 224 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from avsegformer.modeling.build import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="res50_s4")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model).eval().to(device)
    frames = torch.randn(args.frames, 3, args.size, args.size, device=device)
    audio = torch.randn(args.frames, 1, 96, 64, device=device)

    def timed() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(frames, audio)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    best = {True: float("inf"), False: float("inf")}
    with torch.inference_mode():
        timed()  # warm-up
        for _ in range(args.repeats):
            for check in (True, False):
                model.check_inputs = check
                best[check] = min(best[check], timed())
    print(json.dumps({
        "model": args.model, "frames": args.frames, "size": args.size, "device": str(device),
        "forward_s_check_on": round(best[True], 5), "forward_s_check_off": round(best[False], 5),
        "ratio_on_over_off": round(best[True] / best[False], 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
