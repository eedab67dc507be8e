"""``avsegformer models``: list the registered configurations."""

from __future__ import annotations

import argparse

from ..zoo import get_config, list_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=["s4", "ms3", "avss"], help="only this task")


def run(args: argparse.Namespace) -> int:
    for name in list_models(task=args.task):
        cfg = get_config(name)
        published = (
            f"  published mIoU {cfg.published['miou']:.4f} F {cfg.published['fscore']:.3f}"
            if cfg.published
            else ""
        )
        print(f"{name:12s} {cfg.task:5s} {cfg.description}{published}")
    return 0
