"""``avsegformer synth``: generate a synthetic dataset in the official AVSBench layout.

Examples::

    avsegformer synth --task s4 --out data/synth/Single-source --videos 500 --seed 0
    avsegformer synth --task ms3 --out data/synth/Multi-sources --splits train=80,val=10,test=10
    avsegformer synth --task avss --out data/synth/AVSS --videos 300 --size 320x224 --workers 2
"""

from __future__ import annotations

import argparse
import time

from ..data.synthetic import GENERATOR_VERSION, generate_dataset
from ..tasks import iter_tasks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        required=True,
        choices=[t.name for t in iter_tasks() if t.synthetic is not None],
        help="layout to write",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (becomes the task folder: holds the CSV)"
    )
    parser.add_argument(
        "--videos", type=int, help="total number of videos (optional with explicit split counts)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size",
        default="224",
        help="frame size: N (S4/MS3 NxN; AVSS round(N*10/7)xN, e.g. 320x224) or WxH",
    )
    parser.add_argument(
        "--splits",
        help="splits to write: names (train,val,test = 70/15/15 %%, the default), "
        "fractions (train=0.8,val=0.1,test=0.1) or counts (train=100,val=20,test=20)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes (the output does not depend on it)"
    )
    parser.add_argument(
        "--no-logmel",
        dest="logmel",
        action="store_false",
        help="S4/MS3: skip the audio_log_mel/*.pkl files (readers can use the WAVs)",
    )
    parser.add_argument(
        "--short-audio",
        type=float,
        default=0.0,
        metavar="P",
        help="fraction of videos whose audio is 1-2 s short (tests padding rules; default 0)",
    )
    parser.add_argument(
        "--avss-mix",
        help="AVSS subset weights, default v1s=0.4,v1m=0.2,v2=0.4 (v2 clips last 10 s)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    summary = generate_dataset(
        args.task,
        args.out,
        videos=args.videos,
        seed=args.seed,
        size=args.size,
        splits=args.splits,
        workers=args.workers,
        logmel=args.logmel,
        short_audio=args.short_audio,
        avss_mix=args.avss_mix,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    total = sum(summary.splits.values())
    splits = ", ".join(f"{name} {count}" for name, count in summary.splits.items())
    subsets = ", ".join(f"{k} {v}" for k, v in sorted(summary.subsets.items()))
    print(
        f"wrote {total} synthetic {summary.task.upper()} videos ({splits}"
        + (f"; {subsets}" if subsets else "")
        + f") at {summary.size[0]}x{summary.size[1]}, seed {summary.seed}, "
        f"generator v{GENERATOR_VERSION}, to {summary.root} in {seconds:.1f} s"
    )
    return 0
