"""Segmenting one video file into a folder: masks, overlay video and summary.

:func:`process_video` is the code path of ``avsegformer predict`` (and of ``avsegformer
demo`` and ``avsegformer serve``, which call it): it probes the file, samples frames and
sound with :func:`avsegformer.predictor.iter_video_samples`, runs a
:class:`~avsegformer.predictor.Predictor` on them and writes into one folder ``masks/``
(one PNG per sample, source resolution), ``overlay.mp4`` (the source video with its masks
and its own sound) and ``summary.json``. Masks are written (atomically) as they are
computed and the summary is rewritten every few seconds, its ``status`` saying whether
the run is ``running``, ``complete``, ``incomplete`` or ``interrupted``; the overlay is
optional (when it cannot be written, the summary says why). Outside ``commands/``: the
command line (``avsegformer.commands.predict``) is one caller among several.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import AVSegFormerError, NoAudioStreamError, OutputExistsError
from .fileio import (
    atomic_write_text,
    check_writable,
    is_temporary_name,
    remove_path,
    sweep_stale_temporaries,
)

__all__ = [
    "OVERLAY_NAME",
    "SUMMARY_NAME",
    "VIDEO_EXTENSIONS",
    "VideoResult",
    "check_output_folder",
    "process_video",
    "process_video_result",
]

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

    from .render import resize_mask

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
    from .data.video import VideoWriter, probe_video, sample_times
    from .predictor import StageTimes, _check_fps, iter_video_samples
    from .progress import progress_bar
    from .render import overlay as draw_overlay
    from .render import save_binary_mask_png, save_class_mask_png

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
            path,
            fps=fps,
            allow_silent=allow_silent,
            keep_period_frames=overlay,
            info=info,
            audio_window=predictor.audio_window,
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
