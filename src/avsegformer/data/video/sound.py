"""The audio track of a video file: decoded, aligned to the video clock, resampled.

Alignment (leading pad or drop, gaps and overlaps, trimmed tail), channel mixing and
sample scaling follow the audio rules of :mod:`avsegformer.data.video`; resampling uses
soxr (see :func:`iter_audio` for why). Also the planar-frame conversions the writer uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
import soxr
from av.audio.plane import AudioPlane

from avsegformer.errors import CorruptVideoError, NoAudioStreamError, VideoError

from .probe import (
    PathLike,
    _audio_stream,
    _ffmpeg_reason,
    _open_input,
    _raise_if_truncated,
    _time_origin,
    probe_video,
)

__all__ = ["iter_audio", "read_audio_track"]

logger = logging.getLogger(__name__)

# Audio timestamp jitter below this is rounding (mkv stores milliseconds), not a gap.
AUDIO_GAP_TOLERANCE_S = 0.002


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

    Implements the alignment rules of the package docstring: leading pad/drop from the
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
        mono: average all channels (see the package docstring); else keep channels.
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
