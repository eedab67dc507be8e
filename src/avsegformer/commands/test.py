"""``avsegformer test [CONFIG] --checkpoint FILE --data-root DIR``: the official metrics.

Prints the table (mIoU, F as fractions in [0, 1]; AVSS per class too), and with
``--json PATH`` writes it as JSON. CONFIG defaults to the configuration the checkpoint
records (files written by ``avsegformer train``); the authors' ``.pth`` files need it.
CONFIG without ``--checkpoint`` evaluates its released weights (from the cache,
downloaded on first use: ``avsegformer download CONFIG``).
Runs under ``torchrun`` too (each process evaluates a share of the videos).
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from ._common import (
    add_config_arguments,
    add_device_arguments,
    add_json_argument,
    add_precision_argument,
    add_skip_bad_clips_argument,
    add_workers_argument,
    write_json_output,
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, optional=True)
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="weights: the authors' .pth or a .safetensors from `avsegformer train` "
        "(default: CONFIG's released weights, downloaded into the cache on first use)",
    )
    parser.add_argument("--data-root", required=True, help="dataset root (AVSBench layout)")
    parser.add_argument("--split", default="test", help="train, val or test (default test)")
    parser.add_argument(
        "--metric-mode",
        choices=["avsbench", "invariant"],
        default="avsbench",
        help="S4/MS3 F-score: per-group maximum as published (avsbench) or one "
        "dataset-level threshold, independent of batching (invariant)",
    )
    parser.add_argument(
        "--videos-per-group",
        type=int,
        default=None,
        help="avsbench mode grouping: 2 = AVSegFormer release (default for its configs), "
        "4 = AVSBench",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="videos per forward pass")
    parser.add_argument(
        "--audio",
        choices=["matched", "zero", "shuffled", "noise"],
        default="matched",
        help="audio-reliance test: the clip's own audio, silence, another clip's audio, noise",
    )
    parser.add_argument("--save-masks", default=None, metavar="DIR", help="write predicted masks")
    add_json_argument(parser, "the result (scores, per class for AVSS, settings)")
    add_precision_argument(parser, default="auto")
    add_workers_argument(
        parser, default=2, what="data-loading processes (default 2)", old="--num-workers"
    )
    parser.add_argument("--audio-policy", default=None, help="see `avsegformer train`")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        help="run the forward eagerly on CUDA (default: replay CUDA graphs)",
    )
    add_skip_bad_clips_argument(parser)
    add_device_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint, read_checkpoint
    from ..configuration import resolve_config
    from ..data import PixelNorm, build_dataset
    from ..engine import dist
    from ..engine.evaluator import evaluate
    from ..engine.loading import report_skipped
    from ..fileio import check_writable
    from ..modeling.build import build_model
    from ..modeling.optimize import optimize

    if args.checkpoint is None:
        from ..errors import ConfigError
        from ..hub import released_checkpoint

        if args.config is None:
            raise ConfigError(
                "no weights: give CONFIG for its released weights (see `avsegformer "
                "models`) or --checkpoint FILE"
            )
        # Before the process group: other ranks wait on the download's lock, not on NCCL.
        args.checkpoint = str(released_checkpoint(args.config, progress=not args.no_progress))
    info = dist.init_distributed()
    try:
        # Before any work: an evaluation is not thrown away for an unwritable output.
        if args.json and args.json != "-":
            check_writable(args.json, what="--json file")
        if args.save_masks:
            check_writable(args.save_masks, what="--save-masks folder", folder=True)
        config = resolve_config(
            args.config,
            args.overrides,
            checkpoint=args.checkpoint,
            recorded=read_checkpoint(args.checkpoint).config,
            name_option="CONFIG",
        ).config
        # Evaluation never runs the authors' unused modules: do not hold them in memory.
        model = build_model(config.with_overrides({"model.keep_unused_modules": False}))
        report = load_checkpoint(model, args.checkpoint)
        logger.debug("%s", report)
        device = torch.device(info.device if args.device is None else args.device)
        model = model.to(device).eval()
        optimize(
            model,
            device,
            args.precision.resolve(device),
            cuda_graphs=device.type == "cuda" and not args.no_cuda_graphs,
        )
        # The model's audio front end converts the dataset's audio files.
        options = {
            "img_size": config.data.img_size,
            "audio_front_end": model.audio_front_end,
            "pixel_norm": PixelNorm.for_model(config.model),
        }
        if args.audio_policy:
            options["audio_policy"] = args.audio_policy
        dataset = build_dataset(config.task, args.data_root, args.split, **options)
        result = evaluate(
            model,
            dataset,
            task=config.task,
            batch_size=args.batch_size or config.train.eval_batch_size,
            metric_mode=args.metric_mode,
            videos_per_group=args.videos_per_group or config.train.eval_batch_size,
            audio_mode=args.audio,
            precision=args.precision,
            save_masks=args.save_masks,
            num_workers=args.workers,
            progress=not args.no_progress,
            split=args.split,
            skip_bad_clips=args.skip_bad_clips,
        )
        result.config = config.name
        result.checkpoint = str(args.checkpoint)
        if info.is_main:
            # With --json - the JSON owns standard output: the table goes to stderr.
            print(result.format_table(), file=sys.stderr if args.json == "-" else sys.stdout)
            if args.json:
                written = write_json_output(args.json, result.to_dict())
                if written:
                    print(f"results written to {written}")
            report_skipped(result.skipped_clips, f"the {args.split} split")
        # Scores over fewer clips than the split holds are not the split's scores.
        return 1 if result.skipped_clips else 0
    finally:
        dist.cleanup()
