"""Writing videos: :class:`VideoWriter` encodes frames and muxes or encodes a sound track.

Atomic (a temporary sibling renamed on success), H.264 or MPEG-4 part 2, timestamps kept,
any channel count: the writing rules of :mod:`avsegformer.data.video`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from avsegformer.errors import NoAudioStreamError, OutputExistsError, VideoError

from ...fileio import temporary_sibling
from .probe import PathLike, _audio_stream, _ffmpeg_reason, _open_input, _time_origin
from .sound import _planar_frame, iter_audio

__all__ = ["VideoWriter", "aac_accepts", "stereo_downmix_matrix", "write_time_base"]

logger = logging.getLogger(__name__)

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
            replicated edge row/column (see the package docstring).
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
