"""``avsegformer predict``: segment the sounding objects in video files.

Examples::

    avsegformer predict clip.mp4 --model pvt2_s4     # the released weights (cached)
    avsegformer predict clip.mp4 --checkpoint S4_res50_best.pth --model res50_s4
    avsegformer predict videos/ --checkpoint checkpoints/demo_tiny_s4.safetensors
    torchrun --nproc_per_node=2 -m avsegformer.cli predict videos/ --checkpoint FILE

Each input gets a folder in ``--out`` (named after the file's stem; ``-2``, ``-3``... when
stems repeat) holding ``masks/`` (one PNG per sampled frame, source resolution),
``overlay.mp4`` (the source video with its masks and its own sound) and
``summary.json``.

Nothing is lost and nothing is torn: each mask PNG is written (atomically) as soon as it
is computed and summary.json is rewritten every few seconds, its ``status`` saying whether
the run is ``running``, ``complete``, ``incomplete`` (a video damaged midway: ``error``
says where) or ``interrupted`` (SIGTERM, Ctrl-C). The overlay is one output among
several: when it cannot be written, the masks and summary are finished anyway and the
summary says why the overlay is missing. Temporaries (``.NAME.tmp-PID-...``) are removed
on any failure and, when a process was killed outright, by the next start.

``--overwrite`` removes only what predict writes (masks/NNNNNN.png, summary.json,
overlay.mp4); a non-empty folder without our summary.json is never written into.

A bad input is reported on one line and the others still run. Exit status: 0 all done;
1 all done but an overlay asked for is missing (warning, summary); 2 an input failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import require_checkpoint_file
from ..errors import AVSegFormerError, MissingFileError
from ..fileio import check_writable, file_sha256, os_error_text, sweep_stale_temporaries

# The pipeline for one video is a library module (demo and serve call it too); its names
# stay importable from here.
from ..video_pipeline import (  # noqa: F401 - re-exported
    OVERLAY_NAME,
    SUMMARY_EVERY_S,
    SUMMARY_MAX_SHARE,
    SUMMARY_NAME,
    VIDEO_EXTENSIONS,
    VideoResult,
    check_output_folder,
    process_video,
    process_video_result,
)
from ._common import add_precision_argument, warn_on_alias

logger = logging.getLogger(__name__)

TIME_CONVENTION = """\
time convention (details: `pydoc avsegformer.predictor`):
  With --fps f, sample k covers the period [k/f, (k+1)/f) of the video (t = 0 is the
  first frame). Its frame is the one displayed at t_k = (k + 15/16)/f (AVSBench's
  choice: the frame ~15/16 into each second); its sound is one 0.96-s VGGish example
  computed from the 0.975 s of audio starting at k/f (AVSBench's "second k <-> example
  k", without the 40 ms/s drift of back-to-back examples). Audio that runs out (the last
  partial period, a track shorter than the video) is padded with digital silence.
  In overlay.mp4 every source frame shows the mask of the sample whose period contains
  it, at the source frame rate, with the original sound.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = TIME_CONVENTION
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files (any container/codec FFmpeg reads) or directories (searched "
        "recursively for video suffixes)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="weights: our .safetensors or the authors' .pth (default: the released "
        "weights of --model, downloaded into the cache on first use)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="configuration name (see `avsegformer models`): alone, its released weights; "
        "with the authors' .pth files, the configuration they belong to (e.g. res50_s4)",
    )
    parser.add_argument(
        "--fps",
        type=positive_fps,
        default=1.0,
        help="sampled frames per second (default 1; above the video's frame rate, "
        "samples share frames: a warning says so)",
    )
    parser.add_argument(
        "--out", default="predictions", help="output folder (default: predictions/)"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )
    add_precision_argument(parser, default="auto", old="--dtype")
    parser.add_argument(
        "--frames-per-batch",
        "--batch-size",
        dest="frames_per_batch",
        type=int,
        default=1,
        metavar="N",
        help="sampled frames per forward pass (default 1; memory grows with it)",
    )
    warn_on_alias(parser, "--batch-size", "--frames-per-batch")
    parser.add_argument(
        "--allow-silent",
        action="store_true",
        help="process videos without an audio stream, with silence as their sound",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results in existing output folders (only the files predict "
        "writes: masks/, summary.json, overlay.mp4; other files stay)",
    )
    parser.add_argument(
        "--no-overlay", dest="overlay", action="store_false", help="skip overlay.mp4"
    )
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="overlay opacity of the masks (default 0.5)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def positive_fps(text: str) -> float:
    """argparse type of ``--fps``: a positive, finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a positive, finite number of samples per second, got {text!r}"
        )
    return value


# ---------------------------------------------------------------------------------------
# Inputs and output names


@dataclass(frozen=True)
class InputItem:
    """One input to process; ``problem`` is set when it cannot be (e.g. an empty folder)."""

    path: Path
    problem: str | None = None
    reported: bool = False  # the problem was printed already (before the model loaded)


def collect_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[InputItem]:
    """Expand directories (recursively, video suffixes, sorted), keep files as given.

    Paths that do not exist are kept: processing them reports the error in its turn.
    The same file named twice is processed once.
    """
    items: list[InputItem] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append(InputItem(path))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
            )
            if not found:
                items.append(InputItem(path, f"{path}: no video files in this folder"))
            for p in found:
                add(p)
        else:
            add(path)
    return items


def output_names(paths: Sequence[Path]) -> list[str]:
    """A folder name per input: the file stem, with ``-2``, ``-3``... for repeated stems.

    Depends only on the input list (not on the process), so that every rank of a
    torchrun launch agrees.
    """
    names: list[str] = []
    taken: set[str] = set()
    for path in paths:
        stem = path.stem or path.name or "video"
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------
# The command


def _dist_setup() -> tuple[int, int]:
    """(rank, world size): torchrun's when launched by it with several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return 0, 1
    import torch

    from ..engine.dist import init_distributed

    # Gloo only carries the final barrier; ranks may finish hours apart.
    info = init_distributed(backend="gloo", timeout=datetime.timedelta(days=7))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world) or world)
    if not torch.cuda.is_available():
        # Share the cores instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return info.rank, info.world_size


def run(args: argparse.Namespace) -> int:
    import torch

    from ..predictor import Predictor

    if not 0.0 <= args.alpha <= 1.0:
        raise AVSegFormerError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.frames_per_batch < 1:
        raise AVSegFormerError(f"--frames-per-batch must be >= 1, got {args.frames_per_batch}")
    if args.checkpoint is None and args.model is None:
        raise AVSegFormerError(
            "no weights: give --model NAME for its released weights (see `avsegformer "
            "models`) or --checkpoint FILE"
        )
    checkpoint = require_checkpoint_file(args.checkpoint) if args.checkpoint else None
    out = Path(args.out)
    # Before any decoding or model loading: a run must not end unable to write.
    check_writable(out, what="the output folder (--out)", folder=True)
    # Inputs first: a typo in a path should not wait for a model to load.
    items = [
        item if item.problem or item.path.is_file() else InputItem(item.path, _missing(item.path))
        for item in collect_inputs(args.inputs)
    ]
    if all(item.problem for item in items):
        for item in items:
            _report_failure(str(item.problem))
        raise MissingFileError(f"none of the {len(items)} input(s) can be read; nothing to do")
    if checkpoint is None:
        from ..hub import released_checkpoint

        # Before the process group: other ranks wait on the download's lock, not on NCCL.
        checkpoint = released_checkpoint(args.model, progress=not args.no_progress)
    rank, world = _dist_setup()
    if rank == 0:
        for item in items:
            if item.problem:
                _report_failure(item.problem)
    items = [dataclasses.replace(item, reported=bool(item.problem)) for item in items]
    device = args.device
    if device is None and world > 1 and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # A file that records no configuration: the error's command-line hint names --model.
    predictor = Predictor.from_checkpoint(
        checkpoint,
        args.model,
        device=chosen,
        dtype=args.precision,
        batch_size=args.frames_per_batch,
    )
    checkpoint_record = {
        "path": str(checkpoint),
        "absolute_path": str(checkpoint.resolve()),
        "sha256": file_sha256(checkpoint),
    }
    names = output_names([item.path for item in items])
    if rank == 0:
        sweep_stale_temporaries(out)  # left by killed runs (their process is gone)
    mine = list(zip(items, names, strict=True))[rank::world]
    failed, without_overlay = process_inputs(
        predictor,
        mine,
        out,
        fps=args.fps,
        allow_silent=args.allow_silent,
        overlay=args.overlay,
        alpha=args.alpha,
        overwrite=args.overwrite,
        checkpoint=checkpoint_record,
        progress=not args.no_progress,
    )
    if world > 1:
        from ..engine.dist import all_gather_object, cleanup

        # Everyone waits for everyone: torchrun stops all workers when one exits non-zero.
        gathered = all_gather_object((failed, without_overlay))
        failed = sum(f for f, _ in gathered)
        without_overlay = sum(w for _, w in gathered)
        cleanup()
    if rank == 0:
        done = len(items) - failed
        where = f" (results in {out})" if done else ""
        failures = f"; {failed} failed" if failed else ""
        missing = (
            f"; {without_overlay} without {OVERLAY_NAME} (see the warnings and summary.json)"
            if without_overlay
            else ""
        )
        print(f"{done} of {len(items)} input(s) done{where}{failures}{missing}")
    # 2: inputs failed; 1: every input done, but an overlay asked for is missing.
    if failed:
        return 2
    return 1 if without_overlay else 0


def _missing(path: Path) -> str:
    if not path.exists():
        return f"{path}: no such file or folder"
    return f"{path}: not a file"


def process_inputs(
    predictor: Any,
    work: Sequence[tuple[InputItem, str]],
    out: Path,
    *,
    progress: bool = False,
    **options: Any,
) -> tuple[int, int]:
    """Process each (input, folder name); print one line per result; return the number
    of failed inputs and of inputs done without the overlay asked for."""
    from ..progress import track

    several = len(work) > 1
    failed = without_overlay = 0
    for item, name in track(work, len(work), "videos", "video", enabled=progress and several):
        try:
            if item.problem is not None:
                if item.reported:
                    failed += 1
                    continue
                raise MissingFileError(item.problem)
            result = process_video_result(
                predictor,
                item.path,
                out / name,
                progress=progress,
                progress_position=1 if several else None,
                **options,
            )
        except AVSegFormerError as error:
            failed += 1
            _report_failure(error.cli_text())
        except Exception as error:  # noqa: BLE001 - one bad input must not stop the others
            # Not raised on purpose (a full disk, a bug): still one line, and go on.
            failed += 1
            logger.debug("%s failed", item.path, exc_info=True)
            if isinstance(error, OSError):
                _report_failure(f"{item.path}: {os_error_text(error)}")
            else:
                _report_failure(f"{item.path}: {type(error).__name__}: {error}")
        else:
            summary = result.summary
            without_overlay += result.overlay_missing
            timings = summary["timings"]
            lacking = f", without {OVERLAY_NAME}" if result.overlay_missing else ""
            print(
                f"{item.path} -> {out / name} ({summary['num_samples']} samples, "
                f"{timings['total_s']:.1f} s{lacking})"
            )
    return failed, without_overlay


def _report_failure(message: str) -> None:
    first, _, details = message.partition("\n")
    if details:
        logger.debug("%s", details)
    line = " ".join(first.split())  # one line, whatever FFmpeg said
    print(f"avsegformer predict: error: {line}", file=sys.stderr, flush=True)
