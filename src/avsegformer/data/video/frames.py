"""Frames of a video file: sampling times, the frame displayed at a time, every frame.

Decodes sequentially with constant memory; selection follows the frame rule of
:mod:`avsegformer.data.video` (the last frame whose pts is <= t, clamped at both ends).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import NamedTuple

import av
import numpy as np

from avsegformer.errors import CorruptVideoError, EmptyVideoError

from .probe import (
    PathLike,
    _ffmpeg_reason,
    _open_input,
    _quarter_turns,
    _raise_if_truncated,
    _require_video_stream,
    _time_origin,
)

__all__ = [
    "AVSBENCH_FRAME_OFFSET",
    "SampledFrame",
    "TimedFrame",
    "iter_all_frames",
    "iter_frames_at",
    "sample_times",
]

logger = logging.getLogger(__name__)

# A float time like 1/3 must select the frame whose pts is exactly 1/3 s.
TIME_EPSILON = 1e-6
# AVSBench keeps frame int(l*F + 15/16*F) of second l (avsbench-data.md §2.3).
AVSBENCH_FRAME_OFFSET = 15 / 16


class SampledFrame(NamedTuple):
    """A frame chosen for a requested time: ``image`` is uint8 [H, W, 3] RGB."""

    t_requested: float
    t_actual: float
    image: np.ndarray


class TimedFrame(NamedTuple):
    """A decoded frame and its presentation time ``t`` (s, video clock)."""

    t: float
    image: np.ndarray


# ---------------------------------------------------------------------------------------
# Frames


def sample_times(
    duration: float, fps: float = 1.0, offset: float = AVSBENCH_FRAME_OFFSET
) -> list[float]:
    """Times (s, video clock) at which to sample ``fps`` frames per second of video.

    Sample k is taken at ``(k + offset) / fps`` for every sampling period that starts
    inside the video: k = 0 .. ceil(duration * fps) - 1. The default ``offset=15/16``
    is the AVSBench convention (the frame ~0.94 s into each second, avsbench-data.md
    §2.3): with an integer frame rate F, :func:`iter_frames_at` then picks exactly the
    frame index ``int(k*F + 15/16*F)`` that AVSBench kept. ``offset=0.5`` samples
    mid-period. Times may lie past the last frame in a final partial period; the frame
    iterators clamp them to the last frame, as AVSBench clamps indices.

    Args:
        duration: video duration in s (``VideoInfo.duration``).
        fps: samples per second (> 0).
        offset: position inside each sampling period, in periods, in [0, 1).
    """
    if fps <= 0 or not 0 <= offset < 1:
        raise ValueError(f"sample_times: need fps > 0 and 0 <= offset < 1 (got {fps}, {offset})")
    count = math.ceil(duration * fps - 1e-9)
    return [(k + offset) / fps for k in range(max(count, 0))]


class _DecodedFrame(NamedTuple):
    t: Fraction
    frame: av.VideoFrame


def _decode_video(path: PathLike, *, threads: bool = True) -> Iterator[_DecodedFrame]:
    """Every frame of the video stream in presentation order, with its time (video clock).

    Opens the file now (so that opening errors are raised by the call, not by the first
    ``next``) and returns a generator that decodes sequentially with frame/slice
    threads and closes the file when it finishes or is closed. On damage it yields
    what the decoder still holds, then raises CorruptVideoError.
    """
    container = _open_input(path)
    try:
        stream = _require_video_stream(container, path)
    except BaseException:
        container.close()
        raise
    if threads:
        stream.thread_type = "AUTO"  # frame + slice threads: ~1.5x on 2 cores for H.264
    else:
        stream.thread_count = 1  # FFmpeg would otherwise still use slice threads
    return _decoded_frames(path, container, stream)


def _decoded_frames(
    path: PathLike, container: av.container.InputContainer, stream: av.VideoStream
) -> Iterator[_DecodedFrame]:
    with container:
        origin = _time_origin(container)
        period = 1 / Fraction(stream.average_rate or stream.guessed_rate or 25)
        previous: Fraction | None = None
        count = 0
        damage: str | None = None
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    previous = _frame_time(frame, origin, previous, period)
                    count += 1
                    yield _DecodedFrame(previous, frame)
        except av.FFmpegError as error:
            damage = _ffmpeg_reason(error)
        if damage is None:
            _raise_if_truncated(path, stream, f" (after {count} frames)")
        else:
            # Frames already inside the decoder are good: hand them out before failing.
            try:
                for frame in stream.codec_context.decode(None):
                    previous = _frame_time(frame, origin, previous, period)
                    count += 1
                    yield _DecodedFrame(previous, frame)
            except av.FFmpegError:
                pass
            raise CorruptVideoError(
                f"{path}: truncated or corrupt: {damage} (after {count} frames)"
            )
        if count == 0:
            raise EmptyVideoError(f"{path}: zero-length video (no decodable video frame)")


def _frame_time(
    frame: av.VideoFrame, origin: Fraction, previous: Fraction | None, period: Fraction
) -> Fraction:
    """Presentation time of ``frame`` on the video clock (extrapolated if it has no pts)."""
    if frame.pts is not None and frame.time_base:
        return frame.pts * frame.time_base - origin
    return Fraction(0) if previous is None else previous + period


def _to_rgb(frame: av.VideoFrame, autorotate: bool) -> np.ndarray:
    """uint8 [H, W, 3] RGB of a decoded frame, turned upright if asked."""
    image = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame.rotation) if autorotate else 0
    if turns:
        # np.rot90 turns counter-clockwise, like FFmpeg's display-matrix angle.
        image = np.ascontiguousarray(np.rot90(image, k=turns))
    return image


def iter_frames_at(
    path: PathLike,
    times: Iterable[float],
    *,
    autorotate: bool = True,
    threads: bool = True,
) -> Iterator[SampledFrame]:
    """For each requested time, the frame displayed at that time, decoding sequentially.

    Memory is one decoded frame (plus the decoder's own buffers) whatever the length.

    Args:
        path: the video file.
        times: non-decreasing times in s on the video clock (e.g. :func:`sample_times`).
        autorotate: turn frames upright according to the file's display rotation.
        threads: let FFmpeg decode with several threads.

    Yields:
        ``SampledFrame(t_requested, t_actual, image)``: ``t_actual`` (s) is the chosen
        frame's presentation time; ``image`` uint8 [H, W, 3] RGB (a fresh array each time).

    Raises:
        ValueError: ``times`` decrease.
        the errors of :func:`probe_video`; CorruptVideoError after yielding the frames
        that precede the damage.
    """
    return _frames_at(path, _decode_video(path, threads=threads), times, autorotate)


def _frames_at(
    path: PathLike, frames: Iterator[_DecodedFrame], times: Iterable[float], autorotate: bool
) -> Iterator[SampledFrame]:
    try:
        current: _DecodedFrame | None = None
        upcoming = next(frames, None)
        current_rgb: np.ndarray | None = None
        last_t = -math.inf
        warned_past_end = False
        for t in times:
            if t < last_t:
                raise ValueError(f"iter_frames_at: times must not decrease ({t} after {last_t})")
            last_t = t
            while upcoming is not None and upcoming.t <= t + TIME_EPSILON:
                current, current_rgb = upcoming, None
                upcoming = next(frames, None)
            if current is None:  # t before the first frame
                current, current_rgb = upcoming, None
                upcoming = next(frames, None)
            if upcoming is None and not warned_past_end and t > float(current.t) + 1.0:
                logger.warning(
                    "%s: %.3f s is past the last frame (%.3f s); using the last frame",
                    path, t, float(current.t),
                )  # fmt: skip
                warned_past_end = True
            if current_rgb is None:
                current_rgb = _to_rgb(current.frame, autorotate)
                image = current_rgb
            else:
                image = current_rgb.copy()
            yield SampledFrame(float(t), float(current.t), image)
    finally:
        frames.close()


def iter_all_frames(
    path: PathLike, *, autorotate: bool = True, threads: bool = True
) -> Iterator[TimedFrame]:
    """Every frame of the video in display order: ``TimedFrame(t, image)``.

    ``t`` (s, video clock) is the frame's own presentation time (variable frame rates
    keep their timing; pass it to :meth:`VideoWriter.write_frame`); ``image`` uint8
    [H, W, 3] RGB, upright if ``autorotate``. Errors as :func:`iter_frames_at`.
    """
    return _all_frames(_decode_video(path, threads=threads), autorotate)


def _all_frames(frames: Iterator[_DecodedFrame], autorotate: bool) -> Iterator[TimedFrame]:
    try:
        for decoded in frames:
            yield TimedFrame(float(decoded.t), _to_rgb(decoded.frame, autorotate))
    finally:
        frames.close()
