"""``avsegformer models``: the registered configurations, their released weights and
whether those are in the cache; ``--card NAME`` prints a model card."""

from __future__ import annotations

import argparse

from ..tasks import task_names
from ..zoo import get_config, get_weights, list_models, list_weights, weights_for_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=task_names(), help="only this task")
    parser.add_argument(
        "--card",
        metavar="NAME",
        default=None,
        help="print the model card of released weights NAME (source, what it reproduces, "
        "licence, size, sha256, cache path)",
    )
    parser.add_argument(
        "--dir", default=None, metavar="DIR", help="weights folder (default: the cache)"
    )


def _weights_column(name: str, folder: str | None) -> str:
    from ..hub import cache_status, cached_path

    status = cache_status(name, folder)
    if status == "missing":
        return f"weights: not downloaded (avsegformer download {name})"
    if status == "unverified":
        return f"weights: {cached_path(name, folder)} (not yet verified: checked on first use)"
    return f"weights: {cached_path(name, folder)}"


def run(args: argparse.Namespace) -> int:
    if args.card is not None:
        from ..hub import model_card

        get_weights(args.card)  # an unknown name: one line listing the known ones
        print(model_card(args.card, args.dir), end="")
        return 0
    for name in list_models(task=args.task):
        cfg = get_config(name)
        published = (
            f"  published mIoU {cfg.published['miou']:.4f} F {cfg.published['fscore']:.3f}"
            if cfg.published
            else ""
        )
        weights = weights_for_config(name)
        column = _weights_column(weights.name, args.dir) if weights else "weights: none released"
        print(f"{name:12s} {cfg.task:5s} {cfg.description}{published}\n{'':18s} {column}")
    if args.task is None:
        print("backbone files (avsegformer train --pretrained FILE):")
        for name in list_weights():
            weights = get_weights(name)
            if weights.target:
                print(f"{name:12s} {weights.file_name:22s} {_weights_column(name, args.dir)}")
    return 0
