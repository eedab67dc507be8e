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
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..checkpoint import require_checkpoint_file
from ..errors import (
    AVSegFormerError,
    MissingFileError,
    NoAudioStreamError,
    OutputExistsError,
)
from ..fileio import (
    atomic_write_text,
    check_writable,
    file_sha256,
    is_temporary_name,
    os_error_text,
    remove_path,
    sweep_stale_temporaries,
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


@dataclass
class VideoResult:
    """What became of one input: its summary, and whether the overlay asked for is missing."""

    summary: dict[str, Any]
    overlay_missing: bool = False


# The files predict writes in an output folder (besides masks/NNNNNN.png): --overwrite
# removes these and nothing else.
SUMMARY_NAME = "summary.json"
OVERLAY_NAME = "overlay.mp4"
_MASK_NAME = re.compile(r"^\d{6}\.png$")
# summary.json is rewritten this often (s) while a video is processed, so that an
# interrupted run leaves an up-to-date record beside its masks; less often when writing
# it takes long (tens of thousands of samples), so that it never costs over ~2%.
SUMMARY_EVERY_S = 10.0
SUMMARY_MAX_SHARE = 0.02


def _is_predict_summary(path: Path) -> dict[str, Any] | None:
    """The summary.json at ``path`` if avsegformer predict wrote it, else None."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if isinstance(record, dict) and "avsegformer" in (record.get("software") or {}):
        return record
    return None


def check_output_folder(source: Path, folder: Path, overwrite: bool) -> None:
    """Fail before any work if ``folder`` cannot take ``source``'s results.

    A missing or empty folder is fine. An existing predict output folder (it holds our
    summary.json) needs ``overwrite``; any other non-empty folder is refused even then,
    because files predict did not write are never deleted and would be mixed with ours.

    Raises:
        OutputExistsError, OutputNotWritableError.
    """
    check_writable(folder, what="the output folder", folder=True)
    if not folder.is_dir():
        return
    entries = [e for e in folder.iterdir() if not is_temporary_name(e.name)]
    if not entries:
        return
    previous = _is_predict_summary(folder / SUMMARY_NAME)
    if previous is None:
        raise OutputExistsError(
            f"{source}: the output folder {folder} exists and is not an avsegformer predict "
            "output (no summary.json of ours): not writing into it (choose another --out, or "
            "move its files away)"
        )
    if not overwrite:
        what = {
            "complete": "a complete result",
            "incomplete": "an incomplete result",
            "interrupted": "an interrupted result",
        }.get(previous.get("status", "complete"), "the result of a run that did not finish")
        raise OutputExistsError(
            f"{source}: the output folder {folder} exists already ({what})",
            hint="pass overwrite=True to replace it",
            cli_hint="pass --overwrite to replace it",
        )


def _remove_previous_outputs(folder: Path) -> list[str]:
    """Delete what predict wrote in ``folder`` (masks/NNNNNN.png, summary.json,
    overlay.mp4, our temporaries); return the names of the other entries, which stay."""
    for name in (SUMMARY_NAME, OVERLAY_NAME):
        (folder / name).unlink(missing_ok=True)
    masks = folder / "masks"
    if masks.is_dir():
        for entry in masks.iterdir():
            if _MASK_NAME.match(entry.name) or is_temporary_name(entry.name):
                remove_path(entry)
    return sorted(
        e.name + ("/" if e.is_dir() else "")
        for e in folder.iterdir()
        if not (e.name == "masks" and e.is_dir() and not any(e.iterdir()))
    )


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

    Masks are written as they are computed (each PNG atomically) and summary.json is
    rewritten every few seconds, so work is never lost: the summary's ``status`` is
    "running" during the run, "complete" at the end, "incomplete" (with ``error``) when
    the video fails midway, "interrupted" on SIGTERM / Ctrl-C. A failure before the
    first mask leaves nothing behind. The overlay is optional: when it cannot be
    written, the masks and the summary are still completed, and the summary says why
    the overlay is missing (``outputs.overlay`` None, ``overlay_error``); see
    :func:`process_video_result`.

    ``on_sample(done, total)``: called after each sample is written (``avsegformer serve``
    shows it as progress); an exception it raises stops the work like any other error
    (masks written so far are kept, with status "incomplete").

    Raises:
        OutputExistsError: ``folder`` holds a previous result and not ``overwrite``, or
            files predict did not write.
        OutputNotWritableError: ``folder`` cannot be written.
        the video errors of :mod:`avsegformer.data.video` (each names the file).
    """
    return process_video_result(
        predictor,
        path,
        folder,
        fps=fps,
        allow_silent=allow_silent,
        overlay=overlay,
        alpha=alpha,
        overwrite=overwrite,
        checkpoint=checkpoint,
        progress=progress,
        progress_position=progress_position,
        on_sample=on_sample,
    ).summary


def process_video_result(
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
) -> VideoResult:
    """:func:`process_video`, also saying whether the overlay asked for is missing."""
    from ..data.video import VideoWriter, probe_video, sample_times
    from ..predictor import StageTimes, _check_fps, iter_video_samples
    from ..progress import progress_bar
    from ..render import overlay as draw_overlay
    from ..render import save_binary_mask_png, save_class_mask_png

    started = time.perf_counter()
    fps = _check_fps(fps)  # NaN, inf, <= 0: one line (the command line refuses them earlier)
    path, folder = Path(path), Path(folder)
    check_output_folder(path, folder, overwrite)  # before any decoding
    info = probe_video(path)
    silent = not info.has_audio
    if silent and not allow_silent:
        raise NoAudioStreamError(
            f"{path}: no audio stream",
            hint="pass allow_silent=True to use silence",
            cli_hint="pass --allow-silent to use silence",
        )
    notes: list[str] = []
    if silent:
        logger.warning("%s: no audio stream; predicting with silence as the sound", path)
    num_samples = len(sample_times(info.duration, fps))
    if info.fps and fps > info.fps * 1.01:
        frames_note = f"{info.num_frames} frames" if info.num_frames else "fewer frames"
        note = (
            f"sampling at {fps:g} per second, faster than the video's {info.fps:.3g} frames "
            f"per second: {num_samples} samples from {frames_note}, so consecutive samples "
            "show the same frame (each with its own sound window)"
        )
        logger.warning("%s: %s", path, note)
        notes.append(note)

    before = dataclasses.replace(predictor.times)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(folder)
    kept = _remove_previous_outputs(folder)
    if kept:
        logger.info("%s: keeping %d entries predict did not write: %s", folder, len(kept),
                    ", ".join(kept[:5]) + (" ..." if len(kept) > 5 else ""))  # fmt: skip
    (folder / "masks").mkdir(exist_ok=True)
    sweep_stale_temporaries(folder / "masks")

    frames: list[dict[str, Any]] = []
    state: dict[str, Any] = {
        "status": "running",
        "error": None,
        "overlay_error": None,
        "overlay_audio": None,
        "write_s": 0.0,
        "summary_every_s": SUMMARY_EVERY_S,
    }

    def summary() -> dict[str, Any]:
        stages = _stage_difference(predictor.times, before, StageTimes)
        total = time.perf_counter() - started
        overlay_written = overlay and state["overlay_error"] is None
        return {
            "status": state["status"],
            "error": state["error"],
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
            "notes": notes,
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
                "overlay": OVERLAY_NAME
                if overlay_written and state["status"] == "complete"
                else None,  # fmt: skip
                "overlay_requested": overlay,
                "overlay_error": state["overlay_error"],
                "overlay_audio": state["overlay_audio"],
            },
            "num_samples_expected": num_samples,
            "num_samples": len(frames),
            "frames": frames,
            "timings": {
                "total_s": round(total, 4),
                **stages.as_dict(),
                "write_s": round(state["write_s"], 4),
                "seconds_per_video_second": round(total / info.duration, 4),
            },
            "software": {"avsegformer": __version__, "created": _now()},
        }

    def write_summary() -> dict[str, Any]:
        clock = time.perf_counter()
        record = summary()
        atomic_write_text(folder / SUMMARY_NAME, json.dumps(record, indent=2) + "\n")
        state["summary_every_s"] = max(
            SUMMARY_EVERY_S, (time.perf_counter() - clock) / SUMMARY_MAX_SHARE
        )
        return record

    def overlay_failed(error: BaseException) -> None:
        nonlocal writer
        text = error.cli_text() if isinstance(error, AVSegFormerError) else (
            f"{type(error).__name__}: {error}"
        )  # fmt: skip
        state["overlay_error"] = " ".join(text.partition("\n")[0].split())
        logger.debug("overlay of %s failed", path, exc_info=True)
        logger.warning(
            "%s: %s is missing: %s; the masks and %s are still written",
            path, OVERLAY_NAME, state["overlay_error"], SUMMARY_NAME,
        )  # fmt: skip
        if writer is not None:
            writer.abort()
        writer = None

    writer: Any = None
    samples = None
    bar = progress_bar(
        num_samples, path.name, "sample", enabled=progress, position=progress_position
    )
    try:
        write_summary()
        last_summary = time.perf_counter()
        samples = iter_video_samples(
            path, fps=fps, allow_silent=allow_silent, keep_period_frames=overlay, info=info
        )
        size = info.display_size
        if overlay:
            # Set up front, so that what the encoder cannot take is known before the work.
            try:
                writer = VideoWriter(
                    folder / OVERLAY_NAME, fps=info.fps, size=size, duration=info.duration,
                    overwrite=True,
                )  # fmt: skip
                writer.mux_audio_from(path, missing_ok=allow_silent)
                state["overlay_audio"] = writer.audio_note
                if writer.audio_changed:
                    notes.append(f"{OVERLAY_NAME}: {writer.audio_note}")
            except Exception as error:  # noqa: BLE001 - the overlay is optional
                overlay_failed(error)
        for sample, prediction in predictor.predict_samples(samples):
            clock = time.perf_counter()
            mask_name = f"masks/{prediction.index:06d}.png"
            if predictor.binary:
                save_binary_mask_png(folder / mask_name, prediction.mask)
            else:
                save_class_mask_png(folder / mask_name, prediction.mask)
            frames.append({**prediction.to_dict(), "mask": mask_name})
            if writer is not None:
                try:
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
                except Exception as error:  # noqa: BLE001 - the overlay is optional
                    overlay_failed(error)
            state["write_s"] += time.perf_counter() - clock
            bar.update()
            if on_sample is not None:
                on_sample(len(frames), num_samples)
            if clock - last_summary > state["summary_every_s"]:
                write_summary()
                last_summary = time.perf_counter()
        if writer is not None:
            clock = time.perf_counter()
            try:
                writer.close()
            except Exception as error:  # noqa: BLE001 - the overlay is optional
                overlay_failed(error)
            state["write_s"] += time.perf_counter() - clock
        state["status"] = "complete"
        record = write_summary()
    except BaseException as error:
        if samples is not None:
            samples.close()  # closes the decoders now, not whenever the GC runs
        if writer is not None:
            writer.abort()
        interrupted = not isinstance(error, Exception)  # SIGTERM (Terminated), Ctrl-C
        _keep_or_remove_partial(folder, created, frames, error, interrupted, state, write_summary)
        raise
    finally:
        bar.close()
    return VideoResult(record, overlay_missing=overlay and state["overlay_error"] is not None)


def _keep_or_remove_partial(
    folder: Path,
    created: bool,
    frames: list[dict[str, Any]],
    error: BaseException,
    interrupted: bool,
    state: dict[str, Any],
    write_summary: Any,
) -> None:
    """After a failure: keep the masks written so far with a summary that says what
    happened, or, with none written, remove what this run created."""
    if frames:
        state["status"] = "interrupted" if interrupted else "incomplete"
        if isinstance(error, AVSegFormerError):
            reason = error.cli_text()
        else:
            reason = f"{type(error).__name__}: {error}".rstrip(": ")
        state["error"] = " ".join(reason.partition("\n")[0].split()) or type(error).__name__
        try:
            write_summary()
        except Exception:  # noqa: BLE001 - e.g. a full disk: the masks stay all the same
            logger.debug("cannot update %s", folder / SUMMARY_NAME, exc_info=True)
        logger.warning(
            "%s: %s after %d samples; the masks so far and %s are kept",
            folder, state["status"], len(frames), SUMMARY_NAME,
        )  # fmt: skip
        return
    (folder / SUMMARY_NAME).unlink(missing_ok=True)
    masks = folder / "masks"
    with contextlib.suppress(OSError):
        masks.rmdir()  # only if empty
    if created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def _stage_difference(now: Any, before: Any, cls: type) -> Any:
    return cls(
        **{f.name: getattr(now, f.name) - getattr(before, f.name) for f in dataclasses.fields(cls)}
    )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


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
