"""``avsegformer data-check ROOT --task s4|ms3|avss``: check an AVSBench dataset root.

Prints the metadata file's bad rows (unknown split, clips listed twice), then per split
the clips, frames, masks and audio files found against what the official layout
requires, and the first missing, unreadable or invalid files (``--deep``: NaN values,
wrong sizes, irregular masks). Exit status 0 when everything required is there (and
decodes cleanly, with ``--deep``), 1 otherwise, 2 when no dataset or no readable
metadata file (e.g. one without a required column) is found at ROOT.
"""

from __future__ import annotations

import argparse

from ..data.avsbench import SPLITS
from ..data.check import check_dataset
from ..tasks import task_names
from ._common import add_json_argument, write_json_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root",
        help="the task folder (Single-source/, Multi-sources/, the AVSS folder) or its parent",
    )
    parser.add_argument("--task", required=True, choices=task_names())
    parser.add_argument(
        "--split", nargs="+", choices=SPLITS, default=None, help="splits to check (default all)"
    )
    parser.add_argument(
        "--deep", action="store_true", help="also decode every file (slower: reads everything)"
    )
    add_json_argument(parser, "the report")
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
        written = write_json_output(args.json, report.to_dict())
        if written:
            print(report.format_text())
            print(f"report written to {written}")
    else:
        print(report.format_text())
    return 0 if report.ok else 1
