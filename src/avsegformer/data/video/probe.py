"""Opening and probing video files, and recognising damaged ones.

:func:`probe_video` describes a file (:class:`VideoInfo`, :class:`AudioInfo`). The helpers
open files and pick streams with errors that name the file and FFmpeg's reason, and find
files cut short through the container index. The lowest layer of
:mod:`avsegformer.data.video` (its docstring states the time convention and the rules for
damaged files): :mod:`.frames`, :mod:`.sound` and :mod:`.writer` open files through it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avsegformer.errors import (
    CorruptVideoError,
    EmptyVideoError,
    MissingFileError,
    NotAVideoError,
    UnsupportedCodecError,
)

__all__ = ["AudioInfo", "VideoInfo", "probe_video"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# FFmpeg "demuxers" that accept files which are not videos (text, still images).
_NOT_VIDEO_FORMATS = {"tty", "image2", "bin", "lavfi"}
# Container signatures: a file that starts like a media file but cannot be opened is
# "truncated or corrupt"; anything else is "not a video file".
_MEDIA_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (4, b"skip"),
    (0, b"\x1a\x45\xdf\xa3"), (0, b"RIFF"), (0, b"OggS"), (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"), (0, b"\x30\x26\xb2\x75"),
)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Public data types


@dataclass(frozen=True)
class AudioInfo:
    """The audio stream of a video file.

    ``start`` is where the stream's first sample sits on the video clock (s; negative
    when the audio begins before the first frame); ``duration`` in s if the container
    says (else None).
    """

    codec: str
    sample_rate: int
    channels: int
    layout: str
    start: float
    duration: float | None


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a file.

    ``width``/``height`` are the coded size; ``rotation`` (degrees counter-clockwise,
    FFmpeg display matrix) says how to turn frames upright, ``display_size`` is the
    size after that. ``fps`` is the average frame rate; ``variable_frame_rate`` is True
    / False when known (from a packet scan, or from the container's nominal vs average
    rate) and None when not. ``duration`` (s) runs from the first frame to the end of
    the last. ``start_time`` is the first frame's absolute pts in s (the origin of the
    video clock). ``num_frames`` is None when unknown.
    """

    path: Path
    container: str
    codec: str
    width: int
    height: int
    rotation: int
    fps: float
    variable_frame_rate: bool | None
    duration: float
    num_frames: int | None
    start_time: float
    audio: AudioInfo | None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) of frames as :func:`iter_frames_at` yields them (autorotated)."""
        if _quarter_turns(self.rotation) % 2:
            return self.height, self.width
        return self.width, self.height


# ---------------------------------------------------------------------------------------
# Opening files, with errors that name the file and the cause


def _check_input_file(path: PathLike) -> Path:
    """The path as a Path, after the checks FFmpeg would report badly."""
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"{path}: no such file")
    if p.is_dir():
        raise NotAVideoError(f"{path}: is a directory, not a video file")
    if p.stat().st_size == 0:
        raise EmptyVideoError(f"{path}: zero-length video (the file is empty)")
    return p


def _looks_like_media(path: Path) -> bool:
    """True if the file starts with a known audio/video container signature."""
    with open(path, "rb") as f:
        head = f.read(16)
    if any(head[at : at + len(magic)] == magic for at, magic in _MEDIA_SIGNATURES):
        return True
    # MPEG-TS: sync byte every 188 bytes.
    with open(path, "rb") as f:
        sync = f.read(189)
    return len(sync) == 189 and sync[0] == 0x47 and sync[188] == 0x47


def _ffmpeg_open_reason(path: Path, error: Exception) -> str:
    """FFmpeg's own explanation of why ``path`` does not open (e.g. 'moov atom not found').

    PyAV keeps FFmpeg's log switched off (it costs time and can deadlock with threads),
    so the detailed reason is only available by trying again with the log captured.
    """
    previous_level, previous_skip = av.logging.get_level(), av.logging.get_skip_repeated()
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_skip_repeated(False)  # else a second failure on the same file logs nothing
    try:
        with av.logging.Capture() as logs, contextlib.suppress(av.FFmpegError):
            av.open(str(path)).close()
    finally:
        av.logging.set_level(previous_level)
        av.logging.set_skip_repeated(previous_skip)
    messages = [message.strip() for _level, _name, message in logs if message.strip()]
    return messages[-1] if messages else _ffmpeg_reason(error)


def _ffmpeg_reason(error: Exception) -> str:
    """One line from a PyAV exception: FFmpeg's strerror (and log line if PyAV kept one)."""
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    log = getattr(error, "log", None)
    if log and len(log) >= 3 and str(log[2]).strip():
        reason = f"{reason} ({str(log[2]).strip()})"
    return reason


def _open_input(path: PathLike) -> av.container.InputContainer:
    """Open ``path`` for reading; raise the package's errors for every way that fails."""
    p = _check_input_file(path)
    try:
        container = av.open(str(p), metadata_errors="replace")
    except av.FFmpegError as error:
        reason = _ffmpeg_open_reason(p, error)
        if _looks_like_media(p):
            raise CorruptVideoError(f"{path}: truncated or corrupt: {reason}") from None
        raise NotAVideoError(
            f"{path}: not a video file (FFmpeg cannot read it: {reason})"
        ) from None
    if container.format.name in _NOT_VIDEO_FORMATS or container.format.name.endswith("_pipe"):
        kind = container.format.long_name or container.format.name
        container.close()
        raise NotAVideoError(f"{path}: not a video file (FFmpeg reads it as {kind})")
    return container


def _video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The main video stream; cover art (attached pictures) does not count."""
    candidates = [
        s
        for s in container.streams.video
        if not (s.disposition & av.stream.Disposition.attached_pic)
    ]
    if not candidates:
        return None
    defaults = [s for s in candidates if s.disposition & av.stream.Disposition.default]
    return (defaults or candidates)[0]


def _audio_stream(container: av.container.InputContainer) -> av.AudioStream | None:
    """The main audio stream (the default-flagged one, else the first)."""
    streams = list(container.streams.audio)
    if not streams:
        return None
    defaults = [s for s in streams if s.disposition & av.stream.Disposition.default]
    return (defaults or streams)[0]


def _require_video_stream(container: av.container.InputContainer, path: PathLike) -> av.VideoStream:
    stream = _video_stream(container)
    if stream is None:
        kinds = ", ".join(sorted({_stream_kind(s) for s in container.streams})) or "nothing"
        raise NotAVideoError(f"{path}: not a video file (no video stream; it holds {kinds})")
    return stream


def _stream_kind(stream: av.stream.Stream) -> str:
    if stream.type == "video" and stream.disposition & av.stream.Disposition.attached_pic:
        return "cover art"
    return stream.type


def _time_origin(container: av.container.InputContainer) -> Fraction:
    """Absolute time (s) that is t = 0 on the video clock (see the package docstring)."""
    stream = _video_stream(container) or _audio_stream(container)
    if stream is not None and stream.start_time is not None and stream.time_base:
        return stream.start_time * stream.time_base
    if container.start_time is not None:
        return Fraction(container.start_time, av.time_base)
    return Fraction(0)


def _quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns for a display rotation (0 if not a multiple of 90)."""
    turns = rotation / 90
    return int(round(turns)) % 4 if abs(turns - round(turns)) < 1e-3 else 0


def _bytes_missing(path: PathLike, stream: av.stream.Stream) -> int:
    """Bytes the container's index (mp4/mov sample tables, ...) expects past the end of file.

    Needed because FFmpeg's threaded decoders and most demuxers end quietly at a cut:
    only the index knows that the file was longer. 0 when the stream has no index.
    """
    entries = stream.index_entries
    if not len(entries):
        return 0
    expected_end = max(entry.pos + entry.size for entry in entries)
    return max(0, expected_end - os.path.getsize(path))


def _raise_if_truncated(path: PathLike, stream: av.stream.Stream, done: str = "") -> None:
    missing = _bytes_missing(path, stream)
    if missing:
        size = os.path.getsize(path)
        raise CorruptVideoError(
            f"{path}: truncated or corrupt: the file ends after {size} bytes but its index "
            f"expects {size + missing}{done}"
        )


# ---------------------------------------------------------------------------------------
# Probing


def probe_video(path: PathLike, *, scan: bool | None = None) -> VideoInfo:
    """Describe a video file; fail with a one-line error if it cannot be used.

    Args:
        path: the video file.
        scan: demux every video packet (no decoding; fast) to get the exact frame count,
            duration and whether the frame rate varies. None (default): only when the
            container does not state the frame count or duration (mkv, webm, ...).

    Raises:
        MissingFileError: the path does not exist.
        NotAVideoError: not a video (directory, text, image, audio only, unreadable).
        EmptyVideoError: an empty file or a video stream without frames.
        CorruptVideoError: truncated or damaged (FFmpeg's reason in the message).
        UnsupportedCodecError: a video or audio codec this FFmpeg build cannot decode.
    """
    p = Path(path)
    with _open_input(path) as container:
        stream = _require_video_stream(container, path)
        for checked in (stream, _audio_stream(container)):
            if checked is not None:
                _require_decoder(path, checked)
                _raise_if_truncated(path, checked)
        origin = _time_origin(container)
        time_base = stream.time_base or Fraction(1, av.time_base)
        num_frames: int | None = stream.frames or None
        duration = float(stream.duration * time_base) if stream.duration else None
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        variable = _variable_rate_from_rates(stream)
        must_scan = scan if scan is not None else (num_frames is None or duration is None)
        rotation, scanned = _first_frame_and_scan(container, stream, path, must_scan)
        if scanned is not None:
            num_frames, duration, scanned_fps, variable = scanned
            fps = scanned_fps or fps
        if duration is None and container.duration is not None:
            duration = max(0.0, container.duration / av.time_base - float(origin))
        if num_frames == 0 or not duration:
            raise EmptyVideoError(f"{path}: zero-length video (no video frames)")
        info = VideoInfo(
            path=p,
            container=container.format.name,
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            rotation=rotation,
            fps=float(fps) if fps else (num_frames or 0) / duration,
            variable_frame_rate=variable,
            duration=duration,
            num_frames=num_frames,
            start_time=float(origin),
            audio=_audio_info(container, origin),
        )
    logger.debug("probed %s: %s", path, info)
    return info


def _variable_rate_from_rates(stream: av.VideoStream) -> bool | None:
    """Heuristic: the nominal (r_frame_rate) and average rates of a CFR stream agree."""
    nominal, average = stream.base_rate, stream.average_rate
    if not nominal or not average:
        return None
    return abs(float(nominal) / float(average) - 1) > 0.01


def _require_decoder(path: PathLike, stream: av.stream.Stream) -> None:
    """FFmpeg opens streams of codecs it cannot decode without a codec context."""
    if stream.codec_context is None:
        raise UnsupportedCodecError(
            f"{path}: its {stream.type} codec cannot be decoded by this FFmpeg build "
            f"(PyAV {av.__version__}); convert the file, e.g. "
            f"`ffmpeg -i {Path(path).name} -c:v libx264 -c:a aac converted.mp4`"
        )


def _audio_info(container: av.container.InputContainer, origin: Fraction) -> AudioInfo | None:
    stream = _audio_stream(container)
    if stream is None:
        return None
    context = stream.codec_context
    time_base = stream.time_base or Fraction(1, av.time_base)
    start = stream.start_time * time_base - origin if stream.start_time is not None else 0
    return AudioInfo(
        codec=context.name,
        sample_rate=context.sample_rate,
        channels=context.layout.nb_channels,
        layout=context.layout.name,
        start=float(start),
        duration=float(stream.duration * time_base) if stream.duration else None,
    )


def _first_frame_and_scan(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    path: PathLike,
    scan: bool,
) -> tuple[int, tuple[int, float, float | None, bool | None] | None]:
    """Decode the first frame (rotation; proves the stream decodes) and optionally scan.

    Returns (rotation, None) or (rotation, (num_frames, duration_s, fps, variable)).
    """
    first: av.VideoFrame | None = None
    pts_list: list[int] = []
    max_pts, last_duration = 0, 0
    packets = 0
    try:
        for packet in container.demux(stream):
            packets += packet.size > 0
            if first is None:
                first = next(iter(packet.decode()), None)
            if packet.pts is not None and not packet.is_discard:
                if not pts_list or packet.pts > max_pts:  # the last frame *displayed*
                    max_pts, last_duration = packet.pts, packet.duration or 0
                pts_list.append(packet.pts)
            if first is not None and not scan:
                break
        if first is None and packets:  # frames held back by the decoder (B-frames, threads)
            first = next(iter(stream.codec_context.decode(None)), None)
    except av.EOFError:
        pass  # the decoder was drained without giving a frame: handled below
    except av.FFmpegError as error:
        raise CorruptVideoError(f"{path}: truncated or corrupt: {_ffmpeg_reason(error)}") from None
    rotation = first.rotation if first is not None else None
    if rotation is None:
        raise EmptyVideoError(f"{path}: zero-length video (no decodable video frame)")
    if not scan:
        return rotation, None
    if not pts_list:
        return rotation, (0, 0.0, None, None)
    return rotation, _scan_summary(sorted(pts_list), last_duration, stream.time_base)


def _scan_summary(
    pts: list[int], last_duration: int, time_base: Fraction
) -> tuple[int, float, float | None, bool | None]:
    """(frames, duration s, average fps, variable?) from sorted packet timestamps."""
    steps = np.diff(np.asarray(pts, dtype=np.int64))
    typical = int(np.median(steps)) if steps.size else 0
    end = pts[-1] + (last_duration or typical)
    duration = float((end - pts[0]) * time_base)
    fps = len(pts) / duration if duration > 0 else None
    # One tick of rounding or 1% is jitter, not a variable rate.
    variable = None
    if steps.size:
        slack = max(1, 0.01 * typical)
        variable = bool(steps.max() - steps.min() > 2 * slack)
    return len(pts), duration, fps, variable
