"""``avsegformer train CONFIG --data-root DIR [--out DIR] [--resume] [--set k=v ...]``.

Runs the same way under ``torchrun --nproc_per_node=K`` (DistributedDataParallel).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ._common import (
    add_config_arguments,
    add_device_arguments,
    add_precision_argument,
    add_skip_bad_clips_argument,
    add_workers_argument,
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--data-root", required=True, help="dataset root (AVSBench layout)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/<config>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from last.safetensors to the same end; with "
        "--set epochs=N or --max-steps N it goes on to the new end (the learning-rate "
        "schedule is recomputed for it)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in an --out that holds a run: removes only the files a run "
        "writes (checkpoints, logs, config.json, curves.png, train_summary.json)",
    )
    parser.add_argument(
        "--pretrained",
        nargs="+",
        default=[],
        metavar="FILE",
        help="initial weights: resnet50-19c8e357.pth, pvt_v2_b5.pth, vggish-10086976.pth, "
        "or a whole checkpoint to fine-tune",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        metavar="N",
        help="train exactly N optimiser steps instead of the configuration's epochs (as "
        "many epochs as that takes; the learning-rate schedule ends at step N)",
    )
    add_workers_argument(parser, default=None, what="data-loading processes (default: the "
                         "configuration's num_workers)")  # fmt: skip
    add_precision_argument(
        parser,
        default=None,
        what="autocast precision: auto (bf16 on CUDA, fp32 elsewhere), fp32, bf16, fp16 "
        "(CUDA) (default: the configuration's precision)",
    )
    parser.add_argument(
        "--save-every", type=int, default=200, metavar="STEPS", help="checkpoint interval"
    )
    parser.add_argument("--val-split", default="val", help="validation split ('' for none)")
    parser.add_argument(
        "--audio-policy",
        default=None,
        help="how clips with too few/many audio examples are fitted (see avsegformer.audio)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_skip_bad_clips_argument(parser)
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..configuration import resolve_config
    from ..engine import dist
    from ..engine.loading import report_skipped
    from ..engine.trainer import Trainer, TrainOptions

    info = dist.init_distributed()
    try:
        overrides = list(args.overrides)
        if args.workers is not None:
            overrides.append(f"num_workers={args.workers}")
        if args.precision is not None:
            overrides.append(f"precision={args.precision}")
        config = resolve_config(args.config, overrides, name_option="CONFIG").config
        out = Path(args.out) if args.out else Path("runs") / config.name
        dataset_options = {}
        if args.audio_policy:
            dataset_options["audio_policy"] = args.audio_policy
        options = TrainOptions(
            data_root=args.data_root,
            out_dir=out,
            resume=args.resume,
            overwrite=args.overwrite,
            skip_bad_clips=args.skip_bad_clips,
            pretrained=args.pretrained,
            device=args.device,
            max_steps=args.max_steps,
            save_every_steps=args.save_every,
            val_split=args.val_split,
            dataset_options=dataset_options,
            progress=not args.no_progress,
        )
        trainer = Trainer(config, options)
        if info.is_main:
            logger.info(
                "training %s on %s (%d process%s, %s); run folder %s",
                config.name,
                args.data_root,
                info.world_size,
                "es" if info.world_size > 1 else "",
                trainer.device,
                out,
            )
        result = trainer.fit()
        if info.is_main:
            if result.already_finished:
                print(f"nothing to do: the run in {out} is finished ({result.steps} steps)")
            elif result.best_epoch:
                print(
                    f"done: {result.steps} steps; best validation mIoU {result.best_miou:.4f}, "
                    f"F {result.best_fscore:.4f} (epoch {result.best_epoch}); "
                    f"checkpoints in {out}"
                )
            else:
                print(f"done: {result.steps} steps (no validation); checkpoints in {out}")
            skipped_steps = result.nonfinite_skipped_steps + result.overflow_skipped_steps
            if skipped_steps:
                print(
                    f"{skipped_steps} step(s) skipped without an update: "
                    f"{result.nonfinite_skipped_steps} with a non-finite loss or gradient, "
                    f"{result.overflow_skipped_steps} float16 overflow(s)"
                )
            report_skipped(result.skipped_clips, "training")
        # A run that left clips out did not train on the data asked for: say so.
        return 1 if result.skipped_clips else 0
    finally:
        dist.cleanup()
