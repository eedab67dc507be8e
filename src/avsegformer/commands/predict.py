"""``avsegformer predict``: segment the sounding objects in video files.

Examples::

    avsegformer predict clip.mp4 --checkpoint S4_res50_best.pth --model res50_s4
    avsegformer predict videos/ --checkpoint checkpoints/demo_tiny_s4.safetensors
    torchrun --nproc_per_node=2 -m avsegformer.cli predict videos/ --checkpoint FILE

Each input gets a folder in ``--out`` (named after the file's stem; ``-2``, ``-3``... when
stems repeat) holding ``masks/`` (one PNG per sampled frame, source resolution),
``overlay.mp4`` (the source video with its masks and its own sound) and
``summary.json``. The folder is assembled under a hidden temporary name and renamed
when complete, so a failure leaves nothing half-written. A bad input is reported on one
line and the others still run; the exit status is 2 if any input failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import (
    AVSegFormerError,
    CheckpointError,
    MissingFileError,
    NoAudioStreamError,
    OutputExistsError,
)
from ._common import add_precision_argument, warn_on_alias

logger = logging.getLogger(__name__)

#: Suffixes picked up when an input is a directory (explicit files may have any suffix).
VIDEO_EXTENSIONS = frozenset(
    (
        ".mp4",
        ".m4v",
        ".mov",
        ".qt",
        ".mkv",
        ".webm",
        ".avi",
        ".flv",
        ".f4v",
        ".ts",
        ".mts",
        ".m2ts",
        ".mpg",
        ".mpeg",
        ".mpe",
        ".vob",
        ".wmv",
        ".asf",
        ".ogv",
        ".ogg",
        ".3gp",
        ".3g2",
        ".mxf",
        ".divx",
        ".dv",
        ".nut",
        ".y4m",
    )  # fmt: skip
)

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
        "--checkpoint", required=True, help="weights: our .safetensors or the authors' .pth"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="configuration name, needed for the authors' .pth files (e.g. res50_s4; "
        "see `avsegformer models`)",
    )
    parser.add_argument(
        "--fps", type=float, default=1.0, help="sampled frames per second (default 1)"
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
    parser.add_argument("--overwrite", action="store_true", help="replace existing output folders")
    parser.add_argument(
        "--no-overlay", dest="overlay", action="store_false", help="skip overlay.mp4"
    )
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="overlay opacity of the masks (default 0.5)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


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


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# One video


def _video_properties(info: Any) -> dict[str, Any]:
    record = dataclasses.asdict(info)
    record["path"] = str(info.path)
    record["display_size"] = list(info.display_size)
    return record


def _fit(
    image: np.ndarray, mask: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Frame and mask at ``size`` (w, h): only for streams whose resolution changes midway."""
    from PIL import Image

    from ..render import resize_mask

    if image.shape[1::-1] != size:
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    if mask.shape[::-1] != size:
        mask = resize_mask(mask, size)
    return image, mask


def process_video(
    predictor: Any,
    path: Path,
    folder: Path,
    *,
    fps: float = 1.0,
    allow_silent: bool = False,
    overlay: bool = True,
    alpha: float = 0.5,
    overwrite: bool = False,
    checkpoint: dict[str, Any] | None = None,
    progress: bool = False,
    progress_position: int | None = None,
    on_sample: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Segment one video into ``folder`` (masks/, overlay.mp4, summary.json); returns the summary.

    The folder is built under a hidden temporary name next to it and renamed at the end;
    on any error the temporary folder is removed and the error re-raised.

    ``on_sample(done, total)``: called after each sample is written (``avsegformer serve``
    shows it as progress); an exception it raises stops the work like any other error.

    Raises:
        OutputExistsError: ``folder`` exists and not ``overwrite``.
        the video errors of :mod:`avsegformer.data.video` (each names the file).
    """
    from ..data.video import VideoWriter, probe_video, sample_times
    from ..predictor import StageTimes, iter_video_samples
    from ..progress import progress_bar
    from ..render import overlay as draw_overlay
    from ..render import save_binary_mask_png, save_class_mask_png

    started = time.perf_counter()
    if folder.exists() and not overwrite:
        raise OutputExistsError(
            f"{path}: the output folder {folder} exists already (pass --overwrite to replace it)"
        )
    info = probe_video(path)
    silent = not info.has_audio
    if silent and not allow_silent:
        raise NoAudioStreamError(
            f"{path}: no audio stream",
            hint="pass allow_silent=True to use silence",
            cli_hint="pass --allow-silent to use silence",
        )
    if silent:
        logger.warning("%s: no audio stream; predicting with silence as the sound", path)
    num_samples = len(sample_times(info.duration, fps))
    before = dataclasses.replace(predictor.times)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    (temporary / "masks").mkdir(parents=True)
    writer = None
    samples = None
    write_seconds = 0.0
    frames: list[dict[str, Any]] = []
    bar = progress_bar(
        num_samples, path.name, "sample", enabled=progress, position=progress_position
    )
    try:
        samples = iter_video_samples(
            path, fps=fps, allow_silent=allow_silent, keep_period_frames=overlay, info=info
        )
        if overlay:
            size = info.display_size
            writer = VideoWriter(temporary / "overlay.mp4", fps=info.fps, size=size)
            writer.mux_audio_from(path, missing_ok=allow_silent)
        for sample, prediction in predictor.predict_samples(samples):
            clock = time.perf_counter()
            mask_name = f"masks/{prediction.index:06d}.png"
            if predictor.binary:
                save_binary_mask_png(temporary / mask_name, prediction.mask)
            else:
                save_class_mask_png(temporary / mask_name, prediction.mask)
            if writer is not None:
                for source in sample.period_frames or ():
                    image, mask = source.image, prediction.mask
                    if image.shape[:2] != mask.shape or image.shape[1::-1] != size:
                        image, mask = _fit(image, mask, size)
                    drawn = draw_overlay(
                        image,
                        mask,
                        alpha=alpha,
                        mode="binary" if predictor.binary else "classes",
                        class_names=predictor.class_names,
                    )
                    writer.write_frame(drawn, source.t)
            frames.append({**prediction.to_dict(), "mask": mask_name})
            write_seconds += time.perf_counter() - clock
            bar.update()
            if on_sample is not None:
                on_sample(len(frames), num_samples)
        if writer is not None:
            clock = time.perf_counter()
            writer.close()
            write_seconds += time.perf_counter() - clock
        stages = _stage_difference(predictor.times, before, StageTimes)
        total = time.perf_counter() - started
        summary = {
            "input": str(path),
            "output": str(folder),
            "model": {
                "name": predictor.name,
                "task": predictor.task,
                "num_classes": predictor.num_classes,
                "img_size": predictor.img_size,
                "class_names": list(predictor.class_names),
            },
            "checkpoint": checkpoint or {},
            "fps": fps,
            "dtype": str(predictor.dtype).replace("torch.", ""),
            "device": str(predictor.device),
            "batch_size": predictor.batch_size,
            # torchrun: which process wrote this folder (rank r takes inputs r, r+K, ...)
            "process": {
                "rank": int(os.environ.get("RANK", 0) or 0),
                "world_size": int(os.environ.get("WORLD_SIZE", 1) or 1),
            },
            "silent_audio": silent,
            "audio_note": (
                "the video has no audio stream: silence was used as its sound (--allow-silent)"
                if silent
                else "audio windows past the end of the audio track are padded with silence"
            ),
            "time_convention": {
                "sample_period": "[k/fps, (k+1)/fps)",
                "frame_time": "(k + 15/16)/fps",
                "audio_window": "[k/fps, k/fps + 0.975) s, 16 kHz mono, one VGGish example",
                "overlay": "each source frame shows the mask of the period containing it",
            },
            "video": _video_properties(info),
            "outputs": {
                "masks": "masks/",
                "mask_format": "binary 0/255 PNG" if predictor.binary else "AVSS palette RGB PNG",
                "overlay": "overlay.mp4" if overlay else None,
            },
            "num_samples": len(frames),
            "frames": frames,
            "timings": {
                "total_s": round(total, 4),
                **stages.as_dict(),
                "write_s": round(write_seconds, 4),
                "seconds_per_video_second": round(total / info.duration, 4),
            },
            "software": {"avsegformer": __version__, "created": _now()},
        }
        (temporary / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _move_into_place(temporary, folder, overwrite)
    except BaseException:
        if samples is not None:
            samples.close()  # closes the decoders now, not whenever the GC runs
        if writer is not None:
            writer.abort()
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        bar.close()
    return summary


def _stage_difference(now: Any, before: Any, cls: type) -> Any:
    return cls(
        **{f.name: getattr(now, f.name) - getattr(before, f.name) for f in dataclasses.fields(cls)}
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _move_into_place(temporary: Path, folder: Path, overwrite: bool) -> None:
    """Rename the finished ``temporary`` folder to ``folder`` (replacing it if allowed)."""
    if folder.exists():
        if not overwrite:
            raise OutputExistsError(f"{folder}: exists already (pass --overwrite to replace it)")
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(folder, old)
        os.replace(temporary, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, folder)


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

    if args.fps <= 0:
        raise AVSegFormerError(f"--fps must be positive, got {args.fps}")
    if not 0.0 <= args.alpha <= 1.0:
        raise AVSegFormerError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.frames_per_batch < 1:
        raise AVSegFormerError(f"--frames-per-batch must be >= 1, got {args.frames_per_batch}")
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise MissingFileError(f"{checkpoint}: checkpoint file not found")
    # Inputs first: a typo in a path should not wait for a model to load.
    items = [
        item if item.problem or item.path.is_file() else InputItem(item.path, _missing(item.path))
        for item in collect_inputs(args.inputs)
    ]
    if all(item.problem for item in items):
        for item in items:
            _report_failure(str(item.problem))
        raise MissingFileError(f"none of the {len(items)} input(s) can be read; nothing to do")
    rank, world = _dist_setup()
    if rank == 0:
        for item in items:
            if item.problem:
                _report_failure(item.problem)
    items = [dataclasses.replace(item, reported=bool(item.problem)) for item in items]
    device = args.device
    if device is None and world > 1 and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    from ..engine.evaluator import resolve_precision

    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = resolve_precision(chosen, args.precision) or torch.float32
    try:
        predictor = Predictor.from_checkpoint(
            checkpoint, args.model, device=chosen, dtype=dtype, batch_size=args.frames_per_batch
        )
    except CheckpointError as error:
        if args.model is None and "name=" in str(error):  # the library's wording
            raise CheckpointError(
                str(error).replace("pass name=...", "pass --model NAME")
            ) from None
        raise
    checkpoint_record = {
        "path": str(checkpoint),
        "absolute_path": str(checkpoint.resolve()),
        "sha256": file_sha256(checkpoint),
    }
    names = output_names([item.path for item in items])
    out = Path(args.out)
    mine = list(zip(items, names, strict=True))[rank::world]
    failed = process_inputs(
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
        failed = sum(all_gather_object(failed))
        cleanup()
    if rank == 0:
        done = len(items) - failed
        where = f" (results in {out})" if done else ""
        failures = f"; {failed} failed" if failed else ""
        print(f"{done} of {len(items)} input(s) done{where}{failures}")
    return 2 if failed else 0


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
) -> int:
    """Process each (input, folder name); print one line per result; return the failures."""
    from ..progress import track

    several = len(work) > 1
    failed = 0
    for item, name in track(work, len(work), "videos", "video", enabled=progress and several):
        try:
            if item.problem is not None:
                if item.reported:
                    failed += 1
                    continue
                raise MissingFileError(item.problem)
            summary = process_video(
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
            _report_failure(f"{item.path}: {type(error).__name__}: {error}")
        else:
            timings = summary["timings"]
            print(
                f"{item.path} -> {out / name} ({summary['num_samples']} samples, "
                f"{timings['total_s']:.1f} s)"
            )
    return failed


def _report_failure(message: str) -> None:
    first, _, details = message.partition("\n")
    if details:
        logger.debug("%s", details)
    line = " ".join(first.split())  # one line, whatever FFmpeg said
    print(f"avsegformer predict: error: {line}", file=sys.stderr, flush=True)
