"""Video and audio files through PyAV (FFmpeg): probe, sample frames, stream audio, write.

Everything here streams: memory does not grow with the length of the video.

Time convention (every function and every timestamp in this module)
    Times are seconds on the *video clock*: ``t = 0`` is the presentation time of the
    video stream's first frame (the stream's ``start_time``; the container's, if the
    stream has none). Files whose timestamps start elsewhere (MPEG-TS starts near 1.4 s,
    edited mp4s at any offset) are shifted so that their first frame is at 0.

Frames
    The frame *displayed at* time ``t`` is the last frame whose presentation timestamp
    is <= ``t`` (+1 µs, so that a float like ``1/3`` picks the frame at exactly 1/3 s).
    Selection uses each frame's own pts, so variable frame rates and non-zero start
    times need no special handling. Times before the first frame get the first frame;
    times after the last frame get the last frame (the AVSBench extraction clamps frame
    indices the same way). Frames are uint8 ``[H, W, 3]`` RGB, rotated upright when the
    file carries a display-matrix rotation (``autorotate=True``, multiples of 90°).

Audio
    Audio sample ``n`` (at the output rate) is the sound at ``t = n / rate`` on the
    video clock: an audio stream that starts after the first frame is preceded by
    zeros, one that starts before it loses the samples before ``t = 0``; gaps in the
    audio timestamps (> 2 ms) are filled with zeros and overlaps dropped, so that sync
    holds for the whole file. The track ends where the audio stream ends (it can be
    shorter or longer than the video); the encoder padding at the end of AAC streams is
    trimmed to the stream's declared duration. Samples are float32 in [-1, 1]
    (integer formats scaled by 1/2^(bits-1)). Mono is the plain mean of all channels
    (LFE included), as the VGGish reference does with ``np.mean(data, axis=1)``.
    Resampling uses soxr (see :func:`iter_audio` for why).

Damaged files
    A truncated or corrupt stream yields every frame / sample decoded before the damage
    and then raises :class:`~avsegformer.errors.CorruptVideoError` naming the file and
    FFmpeg's reason: a clear error beats a silently shortened result, and callers that
    want the partial output already have it. :func:`probe_video` raises it up front.
    A cut is seen through decoder errors or, since FFmpeg's threaded decoders and most
    demuxers stop quietly at a cut, through the container index (mp4/mov sample tables
    pointing past the end of the file); a cut index-less stream (MPEG-TS) just ends.

Writing
    :class:`VideoWriter` encodes H.264 (libx264, yuv420p) or, without libx264, MPEG-4
    part 2, into a temporary file in the destination folder that is renamed on success
    and deleted on failure. yuv420p needs even sizes: odd widths/heights are padded by
    one replicated edge column/row (the file is then one pixel wider/taller). Frames
    keep the timestamps they are given (a variable frame rate survives the round trip);
    frames written without a timestamp are placed at ``index / fps``. mp4 stores the
    step between frames in 32 bits: H.264 is written without B-frames (their pts - dts
    offsets overflow across long gaps) and long or sparse videos get a coarser time base
    (:func:`write_time_base`), so frames hours apart are written, not refused by FFmpeg
    ("Not yet implemented in FFmpeg, patches welcome") after the work.
    Sound of any channel count is read and written (PyAV's own array conversions break
    at 8 planar channels, so planes are read one by one); AAC keeps the layout when it
    has one (up to 16 channels), else the sound is mixed down to stereo.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import av
import numpy as np
import soxr
from av.audio.plane import AudioPlane

from avsegformer.errors import (
    CorruptVideoError,
    EmptyVideoError,
    MissingFileError,
    NoAudioStreamError,
    NotAVideoError,
    OutputExistsError,
    UnsupportedCodecError,
    VideoError,
)

from ...fileio import temporary_sibling

__all__ = [
    "AVSBENCH_FRAME_OFFSET",
    "AudioInfo",
    "SampledFrame",
    "TimedFrame",
    "VideoInfo",
    "VideoWriter",
    "iter_all_frames",
    "iter_audio",
    "iter_frames_at",
    "probe_video",
    "read_audio_track",
    "sample_times",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# A float time like 1/3 must select the frame whose pts is exactly 1/3 s.
TIME_EPSILON = 1e-6
# Audio timestamp jitter below this is rounding (mkv stores milliseconds), not a gap.
AUDIO_GAP_TOLERANCE_S = 0.002
# AVSBench keeps frame int(l*F + 15/16*F) of second l (avsbench-data.md §2.3).
AVSBENCH_FRAME_OFFSET = 15 / 16
# Timestamps of written frames: fine enough for any frame rate, and MPEG-4 part 2 only
# accepts time-base denominators up to 65535.
WRITE_TIME_BASE = Fraction(1, 60000)
# mp4/mov store the time from one frame to the next in 32 bits of the track's timescale
# (never below 1/10000 s: movenc doubles coarser ones): FFmpeg then fails with "Not yet
# implemented in FFmpeg, patches welcome", or moves the frame. Composition offsets
# (pts - dts) are 32-bit too and span several frames with B-frames, so the writer uses
# none (x264 bframes=0) and keeps every frame-to-frame step below this many ticks.
MAX_WRITE_STEP_TICKS = 2**31 - 2**20
# Time bases for long or sparse videos, finest first (all exact for 25/50 fps and
# within a tick for 30000/1001): 1/60000 holds steps up to ~9.9 h, 1/10000 ~59.6 h.
_WRITE_TIME_BASES = tuple(Fraction(1, d) for d in (60000, 30000, 15000, 10000))
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
    """Absolute time (s) that is t = 0 on the video clock (see the module docstring)."""
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


# ---------------------------------------------------------------------------------------
# Audio


_SAMPLE_SCALE = {"i2": 2.0**15, "i4": 2.0**31, "i8": 2.0**63}  # signed int: 1 / 2^(bits-1)
# numpy dtype of each packed PyAV sample format (the planar ones end in "p").
_SAMPLE_DTYPES = {"u8": "u1", "s16": "i2", "s32": "i4", "s64": "i8", "flt": "f4", "dbl": "f8"}


def _planar_rows(frame: av.AudioFrame, dtype: np.dtype) -> np.ndarray:
    """[C, n] samples of a planar audio frame, one row per channel.

    Not ``frame.to_ndarray()``: PyAV (18.x) counts planes up to the first null data
    pointer, which runs past the 8 pointers of an 8-channel frame (7.1, octagonal)
    into unrelated memory (a crash, or an IndexError). Plane ``i < channels`` is valid.
    """
    count = frame.samples
    return np.stack(
        [
            np.frombuffer(AudioPlane(frame, i), dtype=dtype, count=count)
            for i in range(frame.layout.nb_channels)
        ]
    )


def _planar_frame(data: np.ndarray, layout: str | av.AudioLayout) -> av.AudioFrame:
    """A float planar ("fltp") frame from float32 [C, n] (see :func:`_planar_rows` for why
    not ``AudioFrame.from_ndarray``)."""
    frame = av.AudioFrame(format="fltp", layout=layout, samples=data.shape[1])
    for i in range(data.shape[0]):
        AudioPlane(frame, i).update(np.ascontiguousarray(data[i], dtype=np.float32))
    return frame


def _audio_frame_to_float(frame: av.AudioFrame) -> np.ndarray:
    """float32 [C, n] in [-1, 1] from any PyAV sample format, planar or packed, any
    number of channels."""
    channels = frame.layout.nb_channels
    if frame.format.is_planar:
        data = _planar_rows(frame, np.dtype(_SAMPLE_DTYPES[frame.format.name.rstrip("p")]))
    else:  # packed: [1, n*C], channels interleaved
        data = frame.to_ndarray().reshape(-1, channels).T
    kind = data.dtype.str[1:]
    if kind == "u1":  # unsigned 8-bit: 128 is zero
        return ((data.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if kind in _SAMPLE_SCALE:
        return (data.astype(np.float64) / _SAMPLE_SCALE[kind]).astype(np.float32)
    return data.astype(np.float32, copy=False)


class _AlignedAudio:
    """Decoded audio blocks float32 [C, n] at the source rate, aligned to the video clock.

    Implements the alignment rules of the module docstring: leading pad/drop from the
    first frame's pts, zero-filled gaps and dropped overlaps beyond
    AUDIO_GAP_TOLERANCE_S, tail trimmed to the stream's declared end.
    """

    def __init__(
        self, path: PathLike, container: av.container.InputContainer, stream: av.AudioStream
    ):
        self.path = path
        self.container = container
        self.stream = stream
        self.rate: int = stream.codec_context.sample_rate
        self.channels: int = stream.codec_context.layout.nb_channels
        origin = _time_origin(container)
        self._origin = origin
        time_base = stream.time_base or Fraction(1, av.time_base)
        self._end: int | None = None
        if stream.duration and stream.start_time is not None:
            end_s = (stream.start_time + stream.duration) * time_base - origin
            self._end = max(0, round(end_s * self.rate))
        self._tolerance = max(1, round(AUDIO_GAP_TOLERANCE_S * self.rate))

    def blocks(self) -> Iterator[np.ndarray]:
        """Aligned blocks float32 [C, n]; sample 0 of the first block is at t = 0."""
        self.position = 0  # index (source rate, video clock) of the next sample to output
        self.started = False  # a frame has been placed: later pts jitter is tolerated
        damage: str | None = None
        try:
            for packet in self.container.demux(self.stream):
                for frame in packet.decode():
                    yield from self._place(frame)
        except av.FFmpegError as error:
            damage = _ffmpeg_reason(error)
        done = f" (after {self.position / self.rate:.2f} s of audio)"
        if damage is not None:
            raise CorruptVideoError(f"{self.path}: truncated or corrupt audio: {damage}{done}")
        _raise_if_truncated(self.path, self.stream, done)
        if not self.started:
            logger.warning("%s: the audio stream holds no samples", self.path)

    def _place(self, frame: av.AudioFrame) -> list[np.ndarray]:
        """The blocks (0, 1 or 2: silence, then samples) that one decoded frame contributes."""
        if frame.sample_rate != self.rate or frame.layout.nb_channels != self.channels:
            raise VideoError(
                f"{self.path}: audio format changes mid-stream "
                f"({self.rate} Hz x{self.channels} -> {frame.sample_rate} Hz "
                f"x{frame.layout.nb_channels}); convert the file first"
            )
        data = _audio_frame_to_float(frame)
        start = self.position
        if frame.pts is not None and frame.time_base:
            start = round((frame.pts * frame.time_base - self._origin) * self.rate)
            if self.started and abs(start - self.position) <= self._tolerance:
                start = self.position  # timestamp rounding, not a gap
        self.started = True
        blocks = []
        if start > self.position:  # late start or a gap: silence until the frame
            gap = start - self.position
            if self._end is not None:
                gap = min(gap, max(0, self._end - self.position))
            if gap:
                blocks.append(np.zeros((self.channels, gap), np.float32))
                self.position += gap
        if start < self.position:  # early start or overlap: drop what is already covered
            data = data[:, self.position - start :]
        if self._end is not None:
            data = data[:, : max(0, self._end - self.position)]
        if data.shape[1]:
            blocks.append(data)
            self.position += data.shape[1]
        return blocks


class _Rechunker:
    """Regroups arrays along axis 0 into pieces of exactly ``size`` rows (last may be short)."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self._parts: list[np.ndarray] = []
        self._count = 0

    def push(self, data: np.ndarray) -> Iterator[np.ndarray]:
        if len(data):
            self._parts.append(data)
            self._count += len(data)
        while self._count >= self.size:
            joined = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
            yield joined[: self.size]
            rest = joined[self.size :]
            self._parts = [rest] if len(rest) else []
            self._count = len(rest)

    def flush(self) -> Iterator[np.ndarray]:
        if self._count:
            yield np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        self._parts, self._count = [], 0


def iter_audio(
    path: PathLike,
    target_rate: int | None = 16000,
    *,
    mono: bool = True,
    chunk_seconds: float = 10.0,
    allow_silent: bool = False,
    quality: str = "HQ",
) -> Iterator[np.ndarray]:
    """The file's audio track in time order, aligned to the video clock, resampled, in chunks.

    Every chunk has exactly ``round(chunk_seconds * rate)`` samples except the last.
    Memory is one chunk plus the decoder's and resampler's buffers, whatever the length.

    Resampling: soxr's streaming resampler (``ResampleStream``, quality "HQ" by
    default). Chosen over PyAV's ``AudioResampler`` (FFmpeg swresample: short default
    filter, weaker stop band) for accuracy, and because its streamed output is
    bit-identical to a one-shot ``soxr.resample`` of the whole track (a test checks
    this), i.e. identical to what :mod:`avsegformer.audio` computes on a full waveform.
    Total length: ``len_in * target_rate / source_rate`` rounded (to within one sample).

    Args:
        path: a video (or audio) file. Without a video stream, t = 0 is the start of audio.
        target_rate: output rate in Hz; None keeps the stream's own rate (no resampling).
        mono: average all channels (see the module docstring); else keep channels.
        chunk_seconds: length of the yielded chunks.
        allow_silent: a file without audio yields zeros as long as the video (and logs
            a warning) instead of raising NoAudioStreamError.
        quality: soxr quality ("QQ", "LQ", "MQ", "HQ", "VHQ").

    Yields:
        float32 chunks in [-1, 1] (resampling can overshoot slightly): [n] if ``mono``
        else [n, C] (time-major, like soundfile).

    Raises:
        NoAudioStreamError: no audio stream and not ``allow_silent``.
        CorruptVideoError: after yielding the audio decoded before the damage.
        the opening errors of :func:`probe_video`.
    """
    container = _open_input(path)
    stream = _audio_stream(container)
    if stream is None:
        container.close()
        if not allow_silent:
            raise NoAudioStreamError(
                f"{path}: no audio stream",
                hint="pass allow_silent=True to use silence",
                cli_hint="pass --allow-silent to use silence",
            )
        return _silence(path, target_rate or 16000, mono, chunk_seconds)
    stream.thread_type = "AUTO"
    aligned = _AlignedAudio(path, container, stream)
    return _resampled_chunks(aligned, target_rate, mono, chunk_seconds, quality)


def _resampled_chunks(
    aligned: _AlignedAudio,
    target_rate: int | None,
    mono: bool,
    chunk_seconds: float,
    quality: str,
) -> Iterator[np.ndarray]:
    with aligned.container:
        out_rate = target_rate or aligned.rate
        channels = 1 if mono else aligned.channels
        resampler = None
        if out_rate != aligned.rate:
            resampler = soxr.ResampleStream(aligned.rate, out_rate, channels, "float32", quality)
        chunks = _Rechunker(round(chunk_seconds * out_rate))
        damage: CorruptVideoError | None = None
        try:
            for block in aligned.blocks():
                samples = _layout_for_output(block, mono)
                if resampler is not None:
                    samples = resampler.resample_chunk(samples)
                yield from chunks.push(samples)
        except CorruptVideoError as error:
            damage = error  # hand out what was decoded before the damage, then fail
        if resampler is not None:
            empty = np.zeros((0,) if mono else (0, channels), np.float32)
            yield from chunks.push(resampler.resample_chunk(empty, last=True))
        yield from chunks.flush()
        if damage is not None:
            raise damage


def _layout_for_output(block: np.ndarray, mono: bool) -> np.ndarray:
    """[C, n] -> [n] (channel mean, computed in float64) or C-contiguous [n, C]."""
    if mono:
        if block.shape[0] == 1:
            return np.ascontiguousarray(block[0])
        return block.mean(axis=0, dtype=np.float64).astype(np.float32)
    return np.ascontiguousarray(block.T)


def _silence(path: PathLike, rate: int, mono: bool, chunk_seconds: float) -> Iterator[np.ndarray]:
    """Zeros as long as the video (``allow_silent``): [n] or [n, 1] chunks."""
    duration = probe_video(path).duration
    total = round(duration * rate)
    logger.warning("%s: no audio stream; using %.2f s of silence", path, duration)
    size = max(1, round(chunk_seconds * rate))
    for start in range(0, total, size):
        n = min(size, total - start)
        yield np.zeros((n,) if mono else (n, 1), np.float32)


def read_audio_track(
    path: PathLike,
    target_rate: int | None = 16000,
    *,
    mono: bool = True,
    allow_silent: bool = False,
    quality: str = "HQ",
) -> tuple[np.ndarray, int]:
    """The whole audio track at once (for short files): ``(samples, rate)``.

    ``samples`` float32 [n] (``mono``) or [n, C]; ``rate`` in Hz (``target_rate``, or the
    stream's own if None). Same alignment, mixing and errors as :func:`iter_audio`.
    """
    rate = target_rate
    if rate is None:
        with _open_input(path) as container:
            stream = _audio_stream(container)
            rate = stream.codec_context.sample_rate if stream is not None else 16000
    chunks = list(
        iter_audio(
            path, rate, mono=mono, chunk_seconds=60.0, allow_silent=allow_silent, quality=quality
        )
    )
    if not chunks:
        return np.zeros((0,) if mono else (0, 1), np.float32), rate
    return np.concatenate(chunks), rate


# ---------------------------------------------------------------------------------------
# Writing


def _pick_video_codec(preferred: str | None) -> str:
    """libx264 if this FFmpeg has it, else MPEG-4 part 2 (always built in)."""
    for name in ([preferred] if preferred else []) + ["libx264", "mpeg4"]:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError):
            continue
    raise VideoError("no usable video encoder (neither libx264 nor mpeg4) in this FFmpeg build")


_DEFAULT_LAYOUTS = {
    1: "mono",
    2: "stereo",
    3: "3.0",
    4: "quad",
    5: "5.0",
    6: "5.1",
    7: "6.1",
    8: "7.1",
}


def _named_layout(layout: av.AudioLayout) -> str:
    """A layout the AAC encoder accepts: unordered ones ("2 channels") get the usual order."""
    if layout.name.endswith("channels"):
        return _DEFAULT_LAYOUTS.get(layout.nb_channels, layout.name)
    return layout.name


def aac_accepts(layout: str, rate: int) -> bool:
    """Whether FFmpeg's AAC encoder opens with this channel layout and sample rate."""
    context = av.CodecContext.create("aac", "w")
    try:
        context.sample_rate = rate
        context.layout = layout
        context.format = "fltp"
        context.time_base = Fraction(1, rate)
        context.open()
    except (av.FFmpegError, ValueError):
        return False
    finally:
        with contextlib.suppress(Exception):
            context.close()
    return True


# Fallback sample rate when the AAC encoder does not take the source's (e.g. 192 kHz).
_AAC_FALLBACK_RATE = 48000
_LEFT = ("FL", "BL", "SL", "FLC", "TFL", "TBL", "TSL", "BFL", "WL", "SDL", "TTL")
_RIGHT = ("FR", "BR", "SR", "FRC", "TFR", "TBR", "TSR", "BFR", "WR", "SDR", "TTR")


def stereo_downmix_matrix(layout: av.AudioLayout) -> np.ndarray:
    """float32 [2, C]: left = left-side channels + 0.707 x centre ones, right likewise,
    LFE left out (as ITU-R BS.775 downmixes do), each row scaled to sum to 1 so that
    nothing clips. A layout without channel positions ("10 channels") becomes the mean
    of its channels on both sides.
    """
    names = [channel.name for channel in layout.channels]
    matrix = np.zeros((2, len(names)), np.float64)
    for i, name in enumerate(names):
        if name in _LEFT:
            matrix[0, i] = 1.0
        elif name in _RIGHT:
            matrix[1, i] = 1.0
        elif not name.startswith("LFE"):
            matrix[:, i] = math.sqrt(0.5)  # centre, or a position we do not know
    if not matrix.any():
        matrix[:] = 1.0
    matrix /= matrix.sum(axis=1, keepdims=True).clip(min=1e-12)
    return matrix.astype(np.float32)


def write_time_base(duration: float | None) -> Fraction:
    """The finest of the writer's time bases in which a step of ``duration`` s fits mp4's
    32-bit frame durations (no two frames of the video can be further apart than that).

    1/60000 s for anything under ~9.9 h, down to 1/10000 s (steps up to ~59.6 h; a
    longer video still works unless two of its frames are more than that apart).
    """
    if duration is None or not math.isfinite(duration) or duration <= 0:
        return WRITE_TIME_BASE
    for time_base in _WRITE_TIME_BASES:
        if duration / time_base <= MAX_WRITE_STEP_TICKS:
            return time_base
    return _WRITE_TIME_BASES[-1]


def _temporary_sibling(path: Path) -> Path:
    """A hidden name next to ``path`` with the same suffix (FFmpeg picks the format by it)."""
    return temporary_sibling(path, keep_suffix=True)


class VideoWriter:
    """Encode RGB frames and an audio track into a video file, atomically.

    Use as a context manager::

        with VideoWriter("overlay.mp4", fps=info.fps, size=info.display_size) as out:
            out.mux_audio_from("clip.mp4")          # the original sound, before any frame
            for t, image in iter_all_frames("clip.mp4"):
                out.write_frame(render(image), t)   # keeps the source's timing

    The file is written to a hidden temporary name in the same folder and renamed to
    ``path`` when the block ends normally; on an exception it is deleted.

    Args:
        path: output file; the container follows the suffix (.mp4 recommended).
        fps: nominal frame rate (rate control; timestamps of frames written without one).
        size: (width, height) of the frames you will write; odd values are padded by one
            replicated edge row/column (see the module docstring).
        audio_rate: sample rate in Hz of an AAC track fed with :meth:`write_audio`, or None.
        audio_layout: channel layout of that track ("mono", "stereo", "5.1", ...).
        duration: how long the video will last (s), if known: frames more than ~9.9 h
            apart (a long, sparse video) need a coarser time base than 1/60000 s to fit
            mp4's 32-bit frame durations (:func:`write_time_base`); without it such a
            frame is refused with a VideoError.
        codec: video encoder (default libx264, falling back to mpeg4).
        crf: libx264 constant rate factor (lower is better; 18-23 is visually good).
        preset: libx264 speed preset.
        overwrite: replace an existing file (else OutputExistsError).
    """

    def __init__(
        self,
        path: PathLike,
        fps: float,
        size: tuple[int, int],
        *,
        audio_rate: int | None = None,
        audio_layout: str = "stereo",
        duration: float | None = None,
        codec: str | None = None,
        crf: int = 20,
        preset: str = "veryfast",
        overwrite: bool = False,
    ):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{path}: exists already (pass --overwrite to replace it)")
        if fps <= 0 or size[0] <= 0 or size[1] <= 0:
            raise ValueError(f"{path}: need fps > 0 and a positive size (got {fps}, {size})")
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1]))
        self.time_base = write_time_base(duration)
        self._tmp = _temporary_sibling(self.path)
        options = {"movflags": "+faststart"} if self.path.suffix.lower() in {".mp4", ".mov"} else {}
        self._container = av.open(str(self._tmp), "w", options=options)
        try:
            self._video = self._add_video_stream(codec, crf, preset)
            self._audio: av.AudioStream | None = None
            # Where the audio comes from: write_audio ("samples"), or a source file whose
            # packets are copied ("copy") or re-encoded ("reencode") by self._audio_feed.
            self._audio_mode: str | None = None
            self._audio_feed: _AudioFeed | None = None
            self._audio_samples_written = 0
            # Set when the source's channels are mixed down (the encoder cannot keep them).
            self._downmix: np.ndarray | None = None
            #: What happened to the source's sound (for logs and summaries), once known.
            self.audio_note: str | None = None
            #: True when that sound was mixed down or resampled (not kept as it was).
            self.audio_changed = False
            if audio_rate is not None:
                self._audio = self._container.add_stream(
                    "aac", rate=audio_rate, layout=audio_layout
                )
                self._audio_mode = "samples"
        except BaseException:
            self._discard()
            raise
        self._frames_written = 0
        self._last_pts: int | None = None
        self._closed = False

    # -- setup ---------------------------------------------------------------------------

    def _add_video_stream(self, codec: str | None, crf: int, preset: str) -> av.VideoStream:
        name = _pick_video_codec(codec)
        width, height = self.size
        # A sparse video's average rate can be far below 1 fps (and round to 0 here):
        # the nominal rate only steers rate control, the timestamps carry the timing.
        rate = max(Fraction(self.fps).limit_denominator(1001), Fraction(1, 1001))
        options = {}
        if name == "libx264":
            # No B-frames: their pts - dts offsets overflow mp4's 32 bits across the long
            # gaps of sparse videos (see MAX_WRITE_STEP_TICKS); ~10% larger files.
            options = {"crf": str(crf), "preset": preset, "x264-params": "bframes=0"}
        stream = self._container.add_stream(name, rate=rate, options=options)
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        if name != "libx264":
            # MPEG-4 part 2 has no CRF: ~0.2 bit per pixel keeps overlays crisp.
            stream.bit_rate = max(1_000_000, int(0.2 * width * height * max(self.fps, 1.0)))
        logger.debug("%s: encoding %s %dx%d @ %.3f fps", self.path, name, width, height, self.fps)
        return stream

    def mux_audio_from(
        self, source: PathLike, *, copy: bool | None = None, missing_ok: bool = False
    ) -> bool:
        """Carry ``source``'s audio track into the output, aligned to its video clock.

        Call before the first :meth:`write_frame`. The audio packets are copied
        unchanged when the output container accepts the codec (``copy=None`` or True),
        else decoded and re-encoded to AAC at the source's rate and layout
        (``copy=False`` forces that). When the AAC encoder does not take the source's
        layout (e.g. 5.1.4, or 9+ channels without positions) the sound is mixed down to
        stereo (:func:`stereo_downmix_matrix`); a sample rate it does not take (e.g.
        192 kHz) is resampled to 48 kHz. :attr:`audio_note` says what was done.
        Audio before the source's first video frame is
        dropped (copied packets that straddle t = 0 are trimmed by the container's edit
        list), so the sound stays in sync with frames written at their source times.
        Packets are interleaved with the frames as they are written (flat memory).

        Returns:
            True if a track was added; False if ``source`` has no audio and ``missing_ok``.

        Raises:
            NoAudioStreamError: ``source`` has no audio stream and not ``missing_ok``.
        """
        if self._frames_written:
            raise RuntimeError(f"{self.path}: mux_audio_from must come before the first frame")
        if self._audio is not None:
            raise RuntimeError(f"{self.path}: the output has an audio track already")
        container = _open_input(source)
        stream = _audio_stream(container)
        if stream is None:
            container.close()
            if missing_ok:
                logger.info("%s: no audio stream; the output will be silent", source)
                return False
            raise NoAudioStreamError(
                f"{source}: no audio stream",
                hint="pass missing_ok=True to write a silent video",
                cli_hint="pass --allow-silent to write a silent video",
            )
        codec = stream.codec_context.name
        if copy is None:
            copy = codec in _COPYABLE_AUDIO and codec in self._container.supported_codecs
        if copy:
            self._audio = self._container.add_stream_from_template(stream)
            self._audio_feed = _PacketCopy(container, stream, self._audio, self._container)
            self._audio_mode = "copy"
        else:
            source_layout = stream.codec_context.layout
            source_rate = stream.codec_context.sample_rate
            container.close()
            layout = _named_layout(source_layout)
            rate = source_rate if aac_accepts("stereo", source_rate) else _AAC_FALLBACK_RATE
            notes = []
            if not aac_accepts(layout, rate):
                self._downmix = stereo_downmix_matrix(source_layout)
                named = (
                    "" if source_layout.name.endswith("channels") else f" ({source_layout.name})"
                )
                notes.append(
                    f"the {source_layout.nb_channels}-channel sound{named} was mixed down to "
                    "stereo: the AAC encoder does not take that layout"
                )
                layout = "stereo"
            if rate != source_rate:
                notes.append(f"the sound was resampled from {source_rate} Hz to {rate} Hz for AAC")
            self._audio = self._container.add_stream("aac", rate=rate, layout=layout)
            self._audio_feed = _Reencode(source, self, None if rate == source_rate else rate)
            self._audio_mode = "reencode"
            self.audio_note = "; ".join(notes) or f"re-encoded to AAC ({layout})"
            self.audio_changed = bool(notes)
            for note in notes:
                logger.warning("%s: %s", self.path, note)
        if copy:
            self.audio_note = f"copied unchanged ({codec}, {stream.codec_context.layout.name})"
        logger.debug(
            "%s: audio from %s (%s, %s)", self.path, source, codec, "copy" if copy else "aac"
        )
        return True

    # -- writing -------------------------------------------------------------------------

    def write_frame(self, image: np.ndarray, t: float | None = None) -> None:
        """Encode one frame.

        Args:
            image: uint8 [H, W, 3] RGB with (W, H) == ``size``.
            t: presentation time in s (video clock); default ``index / fps``. Times must
               increase; a time that rounds onto the previous frame's is nudged by one
               tick (:attr:`time_base`, 1/60000 s unless the video is long).
        """
        width, height = self.size
        if image.dtype != np.uint8 or image.shape != (height, width, 3):
            raise ValueError(
                f"{self.path}: frames must be uint8 [{height}, {width}, 3] RGB, "
                f"got {image.dtype} {list(image.shape)}"
            )
        if width % 2 or height % 2:
            image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        if t is None:
            t = self._frames_written / self.fps
        pts = round(t / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        if self._last_pts is not None and pts - self._last_pts > MAX_WRITE_STEP_TICKS:
            gap = float((pts - self._last_pts) * self.time_base)
            raise VideoError(
                f"{self.path}: cannot write a frame {gap:.0f} s after the previous one: "
                f"mp4 frame durations are 32-bit ({self.time_base} s ticks; give the writer "
                "the video's duration for a coarser time base)"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = pts
        frame.time_base = self.time_base
        try:
            if self._audio_feed is not None:
                self._audio_feed.feed_until(float(pts * self.time_base))
            self._container.mux(self._video.encode(frame))
        except av.FFmpegError as error:
            raise VideoError(
                f"{self.path}: cannot write the video: {_ffmpeg_reason(error)}"
            ) from None
        self._last_pts = pts
        self._frames_written += 1

    def write_audio(self, samples: np.ndarray) -> None:
        """Append float samples to the AAC track (needs ``audio_rate``; any chunk size).

        ``samples``: float32 [n] (mono) or [n, C] in [-1, 1], C = the layout's channels;
        sample 0 of the first call is at t = 0. Interleave calls with frames for long
        videos (the muxer holds packets until both streams have reached the same time).
        """
        if self._audio_mode != "samples":
            raise RuntimeError(f"{self.path}: no AAC track to write to (pass audio_rate)")
        self._encode_audio(samples)

    def _encode_audio(self, samples: np.ndarray) -> None:
        assert self._audio is not None
        context = self._audio.codec_context
        channels = context.layout.nb_channels
        data = np.asarray(samples, dtype=np.float32)
        data = data[:, None] if data.ndim == 1 else data
        if self._downmix is not None and data.shape[1] == self._downmix.shape[1]:
            data = data @ self._downmix.T
        if data.shape[1] != channels:
            if data.shape[1] == 1:
                data = np.repeat(data, channels, axis=1)
            else:
                raise ValueError(
                    f"{self.path}: audio has {data.shape[1]} channels, the track {channels}"
                )
        if not len(data):
            return
        frame = _planar_frame(data.T, context.layout.name)
        frame.sample_rate = context.sample_rate
        frame.pts = self._audio_samples_written
        frame.time_base = Fraction(1, context.sample_rate)
        try:
            self._container.mux(self._audio.encode(frame))
        except av.FFmpegError as error:
            raise VideoError(
                f"{self.path}: cannot write the audio: {_ffmpeg_reason(error)}"
            ) from None
        self._audio_samples_written += len(data)

    # -- finishing -----------------------------------------------------------------------

    def close(self) -> Path:
        """Flush the encoders, finish the file and rename it to ``path``; returns ``path``."""
        if self._closed:
            return self.path
        try:
            self._container.mux(self._video.encode(None))
            if self._audio_feed is not None:
                self._audio_feed.feed_until(math.inf)
                self._audio_feed.close()
            if self._audio is not None and self._audio_mode != "copy":
                self._container.mux(self._audio.encode(None))
            self._container.close()
            os.replace(self._tmp, self.path)
        except av.FFmpegError as error:
            self._discard()
            raise VideoError(
                f"{self.path}: cannot write the video: {_ffmpeg_reason(error)}"
            ) from None
        except BaseException:
            self._discard()
            raise
        self._closed = True
        logger.debug("wrote %s (%d frames)", self.path, self._frames_written)
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; ``path`` is left untouched."""
        if not self._closed:
            self._discard()

    def _discard(self) -> None:
        self._closed = True
        feed = getattr(self, "_audio_feed", None)
        if feed is not None:
            feed.close()
        try:
            self._container.close()
        except Exception:  # a half-written container may fail to finish; it is deleted anyway
            logger.debug("%s: closing the aborted output failed", self.path, exc_info=True)
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _AudioFeed:
    """Supplies the output's audio progressively, so that packets interleave with frames."""

    def feed_until(self, t: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


# Audio codecs copied without re-encoding (when the output container lists them): the
# ones mp4/mov/mkv muxers handle reliably. FFmpeg lists e.g. pcm_s16le for mp4 but then
# fails to write the trailer, so "supported" alone is not enough.
_COPYABLE_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}
# Audio runs this far ahead of the video being written (s): small, but enough for the
# muxer to interleave without holding many packets.
_AUDIO_LEAD_S = 0.5


class _PacketCopy(_AudioFeed):
    """Copies a source's audio packets unchanged, timestamps shifted to its video clock."""

    def __init__(
        self,
        source: av.container.InputContainer,
        stream: av.AudioStream,
        output_stream: av.AudioStream,
        output: av.container.OutputContainer,
    ):
        self._source = source
        self._output = output
        self._output_stream = output_stream
        self._time_base = stream.time_base
        self._shift = round(_time_origin(source) / stream.time_base)
        self._packets = source.demux(stream)
        self._done = False

    def feed_until(self, t: float) -> None:
        while not self._done:
            packet = next(self._packets, None)
            if packet is None:
                self._done = True
                return
            if packet.dts is None or packet.size == 0:  # demuxer's end-of-stream marker
                continue
            end = (packet.pts if packet.pts is not None else packet.dts) + (packet.duration or 0)
            if end <= self._shift:  # wholly before the first video frame
                continue
            packet.dts -= self._shift
            if packet.pts is not None:
                packet.pts -= self._shift
            packet.stream = self._output_stream
            self._output.mux(packet)
            if float(packet.dts * self._time_base) > t + _AUDIO_LEAD_S:
                return

    def close(self) -> None:
        self._done = True
        self._source.close()


class _Reencode(_AudioFeed):
    """Decodes a source's audio (aligned; source layout, or the writer's downmix; source
    rate unless ``rate``) and encodes it as AAC."""

    def __init__(self, source: PathLike, writer: VideoWriter, rate: int | None = None):
        self._writer = writer
        self._rate = writer._audio.codec_context.sample_rate  # type: ignore[union-attr]
        self._chunks = iter_audio(source, rate, mono=False, chunk_seconds=0.25)
        self._written_s = 0.0

    def feed_until(self, t: float) -> None:
        while self._written_s <= t + _AUDIO_LEAD_S:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._written_s = math.inf
                return
            self._writer._encode_audio(chunk)
            self._written_s += len(chunk) / self._rate

    def close(self) -> None:
        self._chunks.close()
