"""Benchmark: synthetic clips generated per second on one CPU core (prints JSON).

For each task, writes ``--videos`` clips in the official layout into a temporary folder
with one process and one torch thread, once with the S4/MS3 log-mel ``.pkl`` step and
once without (AVSS has no pkl files). A warm-up run first fills the per-process caches
(sprites, noise banks, torch import). Reports wall-clock and CPU-time rates: on a shared
machine the CPU-time rate is the steadier one.

    python bench/synth_speed.py [--videos 60] [--size 224] [--tasks s4,ms3,avss]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from avsegformer.data.synthetic import generate_clip, generate_dataset


def time_dataset(task: str, videos: int, size: int, logmel: bool, workdir: Path) -> dict:
    """Wall and CPU seconds to write ``videos`` clips of ``task``."""
    out = workdir / f"{task}_{'pkl' if logmel else 'nopkl'}"
    wall, cpu = time.perf_counter(), time.process_time()
    generate_dataset(task, out, videos=videos, seed=1, size=size, logmel=logmel, overwrite=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "clips_per_s": round(videos / wall, 2),
        "cpu_clips_per_s": round(videos / cpu, 2),
        "ms_per_clip": round(1000 * wall / videos, 2),
    }


def time_in_memory(kind: str, videos: int, size: int) -> dict:
    """Clips per second of :func:`generate_clip` alone (no files)."""
    seconds = 10 if kind == "avss" else 5
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(videos):
        generate_clip(kind, seconds=seconds, fps=1.0, size=size, seed=seed)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"clips_per_s": round(videos / wall, 2), "cpu_clips_per_s": round(videos / cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--tasks", default="s4,ms3,avss")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="synth_speed_") as tmp:
        workdir = Path(tmp)
        for task in tasks:  # warm-up: caches and lazy imports
            generate_dataset(task, workdir / f"warm_{task}", videos=3, seed=0, size=args.size)
        for task in tasks:
            entry = {"with_pkl": time_dataset(task, args.videos, args.size, True, workdir)}
            if task != "avss":
                entry["without_pkl"] = time_dataset(task, args.videos, args.size, False, workdir)
            entry["in_memory"] = time_in_memory(task, args.videos, args.size)
            results[task] = entry
    report = {
        "benchmark": "synth_speed",
        "size": args.size,
        "videos_per_task": args.videos,
        "workers": 1,
        "torch_threads": torch.get_num_threads(),
        "notes": "S4/MS3: 5 s, 5 frames; AVSS: mix v1s/v1m (5 s) and v2 (10 s, 10 frames), "
        "frames round(size*10/7) x size",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
