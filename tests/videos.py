"""Test videos made with PyAV, whose content encodes time so that alignment can be checked.

Reusable by every test module (``from videos import make_video, decode_index``): the
helpers write real files (H.264 or MPEG-4 video, AAC or PCM audio) with raw PyAV and do
not use :mod:`avsegformer.data.video`, so that bugs in the code under test cannot cancel
out here.

Content:

* **Video**: frame ``i`` shows its index as a 12-bit binary code of black/white vertical
  stripes (most significant bit left) over a dark-grey band at the bottom; survives any
  sane compression and decodes with :func:`decode_index`. Frame ``i`` is displayed from
  ``frame_times[i]`` (default ``i / fps``) plus ``video_start``.
* **Audio**: silence, then sine tones with amplitude 0.5 switching on at the times of
  ``tone_schedule`` (seconds on the same clock as the video, so a tone scheduled at 3.0
  sounds together with the frame shown at 3.0 s, wherever the audio stream starts).
  Every channel carries the same signal, so a channel mean reproduces it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.plane import AudioPlane

INDEX_BITS = 12
TONE_AMPLITUDE = 0.5
# Fine enough for any frame time in the tests and accepted by MPEG-4 part 2 (denominator <= 65535).
VIDEO_TIME_BASE = Fraction(1, 30000)
_CODECS = {"h264": "libx264", "mpeg4": "mpeg4"}


def encode_index_image(index: int, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] frame showing ``index`` (0..4095) as binary stripes; size is (W, H)."""
    width, height = size
    image = np.full((height, width, 3), 40, dtype=np.uint8)
    stripe = width // INDEX_BITS
    bits = [(index >> (INDEX_BITS - 1 - b)) & 1 for b in range(INDEX_BITS)]
    band = height * 3 // 4  # stripes on the top 3/4, a constant band below
    for b, bit in enumerate(bits):
        image[:band, b * stripe : (b + 1) * stripe] = 255 if bit else 0
    return image


def decode_index(frame: np.ndarray) -> int:
    """Inverse of :func:`encode_index_image` on a decoded uint8 [H, W, 3] RGB frame."""
    height, width = frame.shape[:2]
    stripe = width // INDEX_BITS
    band = height * 3 // 4
    grey = frame[:band, : stripe * INDEX_BITS].astype(np.float32).mean(axis=2)
    # Look at stripe centres only, away from ringing at the stripe edges.
    value = 0
    for b in range(INDEX_BITS):
        centre = grey[
            band // 4 : 3 * band // 4, b * stripe + stripe // 4 : (b + 1) * stripe - stripe // 4
        ]
        value = (value << 1) | int(centre.mean() > 128)
    return value


def tone_signal(times: np.ndarray, tone_schedule: Sequence[tuple[float, float]]) -> np.ndarray:
    """float32 samples of the tone schedule at ``times`` (s, any shape).

    Silence before the first tone; each (start_s, hz) tone lasts until the next entry's
    start; a frequency of 0 means silence from that start on.
    """
    signal = np.zeros(times.shape, dtype=np.float64)
    schedule = sorted(tone_schedule)
    for k, (start, hz) in enumerate(schedule):
        end = schedule[k + 1][0] if k + 1 < len(schedule) else np.inf
        on = (times >= start) & (times < end)
        signal[on] = TONE_AMPLITUDE * np.sin(2 * np.pi * hz * (times[on] - start))
    return signal.astype(np.float32)


def tone_onset(samples: np.ndarray, rate: int, threshold: float = TONE_AMPLITUDE / 2) -> float:
    """Seconds of the first sample whose magnitude reaches ``threshold`` (nan if none)."""
    loud = np.flatnonzero(np.abs(samples) >= threshold)
    return float(loud[0]) / rate if loud.size else float("nan")


def make_video(
    path: str | Path,
    seconds: float = 2.0,
    fps: float = 25,
    size: tuple[int, int] = (320, 240),
    audio_layout: str | None = "stereo",
    sample_rate: int = 44100,
    codec: str = "h264",
    tone_schedule: Sequence[tuple[float, float]] = ((1.0, 440.0),),
    *,
    frame_times: Sequence[float] | None = None,
    video_start: float = 0.0,
    audio_start: float = 0.0,
    audio_seconds: float | None = None,
    audio_codec: str = "aac",
    rotation: int = 0,
    faststart: bool = False,
    video_bitrate: int | None = None,
) -> Path:
    """Write a test video and return its path.

    Args:
        path: output file; the container follows the suffix (.mp4, .mkv, .mov, .ts).
        seconds: video length; frames at ``i / fps`` for ``i < round(seconds * fps)``.
        fps: nominal frame rate (also the encoder's rate-control rate).
        size: (width, height); odd sizes use yuv444p with H.264 (4:2:0 needs even sizes).
        audio_layout: "mono", "stereo", "5.1", ... or None for no audio stream.
        sample_rate: audio sample rate in Hz.
        codec: "h264" (libx264) or "mpeg4".
        tone_schedule: (start_s, hz) pairs on the video clock, see :func:`tone_signal`.
        frame_times: explicit display times (s, increasing) for a variable frame rate.
        video_start: time (s) of the first frame's pts (non-zero start time).
        audio_start: time (s) of the first audio sample's pts.
        audio_seconds: audio length (default: ``seconds``).
        audio_codec: "aac", or "pcm_s16le" (.mkv/.mov) for a lossless, planar-free track.
        rotation: display-matrix rotation in degrees counter-clockwise (PyAV convention).
        faststart: put the mp4 index first (then a cut file still opens: "truncated").
        video_bitrate: bit rate in bit/s (default: the encoder's own quality default).
    """
    path = Path(path)
    width, height = size
    times = (
        [i / fps for i in range(round(seconds * fps))] if frame_times is None else list(frame_times)
    )
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        video = container.add_stream(_CODECS[codec], rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height = width, height
        even = width % 2 == 0 and height % 2 == 0
        video.pix_fmt = "yuv420p" if even or codec == "mpeg4" else "yuv444p"
        video.time_base = VIDEO_TIME_BASE
        video.codec_context.time_base = VIDEO_TIME_BASE
        if video_bitrate is not None:
            video.bit_rate = video_bitrate
        if rotation:
            video.set_display_rotation(rotation)
        audio_blocks = iter(())
        if audio_layout is not None:
            audio = container.add_stream(audio_codec, rate=sample_rate, layout=audio_layout)
            audio_blocks = _audio_frames(
                audio, audio_start, audio_seconds or seconds, tone_schedule
            )
        # Interleave: before each video frame, write the audio up to its time (flat memory).
        pending = next(audio_blocks, None)
        for index, t in enumerate(times):
            while pending is not None and float(pending.time) <= t + video_start:
                container.mux(audio.encode(pending))
                pending = next(audio_blocks, None)
            frame = av.VideoFrame.from_ndarray(encode_index_image(index, size), format="rgb24")
            frame.pts = round((t + video_start) / VIDEO_TIME_BASE)
            frame.time_base = VIDEO_TIME_BASE
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio_layout is not None:
            while pending is not None:
                container.mux(audio.encode(pending))
                pending = next(audio_blocks, None)
            container.mux(audio.encode(None))
    return path


def _audio_frames(
    stream: av.AudioStream,
    start: float,
    seconds: float,
    tone_schedule: Sequence[tuple[float, float]],
) -> Iterator[av.AudioFrame]:
    """Float planar frames of the tone signal, first sample at ``start`` s, ``seconds`` long."""
    rate = stream.codec_context.sample_rate
    layout = stream.codec_context.layout
    total = round(seconds * rate)
    first_pts = round(start * rate)
    block = 4096
    for offset in range(0, total, block):
        n = min(block, total - offset)
        times = start + (offset + np.arange(n)) / rate
        mono = tone_signal(times, tone_schedule)
        # Plane by plane: PyAV's from_ndarray fails on exactly 8 channels (7.1, octagonal).
        frame = av.AudioFrame(format="fltp", layout=layout.name, samples=n)
        for channel in range(layout.nb_channels):
            AudioPlane(frame, channel).update(mono)
        frame.sample_rate = rate
        frame.pts = first_pts + offset
        frame.time_base = Fraction(1, rate)
        yield frame


def make_vfr_video(path: str | Path, **kwargs) -> tuple[Path, list[float]]:
    """A variable-frame-rate video: frame intervals cycle through 1/30, 1/10, 1/15, 0.1+1/30 s.

    Returns the path and the display time of every frame (s, from the first frame).
    """
    intervals = [1 / 30, 1 / 10, 1 / 15, 0.1 + 1 / 30]
    times, t, k = [], 0.0, 0
    seconds = kwargs.pop("seconds", 4.0)
    while t < seconds:
        times.append(t)
        t += intervals[k % len(intervals)]
        k += 1
    return make_video(path, seconds=seconds, frame_times=times, **kwargs), times


def make_truncated(source: str | Path, path: str | Path, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``source``'s bytes to ``path``."""
    data = Path(source).read_bytes()
    path = Path(path)
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_text_file(path: str | Path) -> Path:
    """A plain text file (FFmpeg's "tty" demuxer would happily read it as a video)."""
    path = Path(path)
    path.write_text("these are notes, not a video\n" * 50)
    return path


def make_empty_file(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_video_without_frames(path: str | Path) -> Path:
    """A Matroska file with a video stream that holds no frame (and 1 s of audio)."""
    path = Path(path)
    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000, layout="mono")
        for frame in _audio_frames(audio, 0.0, 1.0, ()):
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
        container.mux(video.encode(None))
    return path


def make_audio_only(path: str | Path, seconds: float = 2.0, sample_rate: int = 44100) -> Path:
    """An .m4a (AAC) file with a tone at 1 s and no video stream."""
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=sample_rate, layout="mono")
        for frame in _audio_frames(audio, 0.0, seconds, ((1.0, 440.0),)):
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path
