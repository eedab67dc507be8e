"""``avsegformer data-check ROOT --task s4|ms3|avss``: check an AVSBench dataset root.

Prints, per split, the clips, frames, masks and audio files found against what the
official layout requires, and the first missing or unreadable files. Exit status 0 when
everything required is there (and decodes, with ``--deep``), 1 otherwise, 2 when no
dataset is found at ROOT.
"""

from __future__ import annotations

import argparse
import json

from ..data.avsbench import SPLITS
from ..data.check import check_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root",
        help="the task folder (Single-source/, Multi-sources/, the AVSS folder) or its parent",
    )
    parser.add_argument("--task", required=True, choices=["s4", "ms3", "avss"])
    parser.add_argument(
        "--split", nargs="+", choices=SPLITS, default=None, help="splits to check (default all)"
    )
    parser.add_argument(
        "--deep", action="store_true", help="also decode every file (slower: reads everything)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--max-listed", type=int, default=10, help="problems listed per split (default 10)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    report = check_dataset(
        args.root,
        args.task,
        args.split,
        deep=args.deep,
        max_listed=args.max_listed,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format_text())
    return 0 if report.ok else 1
