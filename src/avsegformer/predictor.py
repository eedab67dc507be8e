"""Inference on clips and whole videos: frames + sound -> masks of the sounding objects.

:class:`Predictor` wraps a built :class:`~avsegformer.modeling.avsegformer.AVSegFormer`
(kept apart from the ``nn.Module``, as segment-anything does) and does everything around
it: choosing the frames and the sound, pre-processing both as the model was trained,
batching, mixed precision, and bringing the masks back to the source resolution::

    predictor = Predictor.from_checkpoint("S4_res50_best.pth", name="res50_s4")
    for prediction in predictor.predict_video("clip.mp4", fps=1):
        print(prediction.index, prediction.time, prediction.area_fraction)

Time convention
---------------
With ``fps = f`` samples per second, sample ``k`` stands for the period
``[k/f, (k+1)/f)`` of the video (seconds on the video clock: t = 0 is the first frame,
see :mod:`avsegformer.data.video`), for every period that starts before the end of the
video: k = 0 .. ceil(duration * f) - 1.

* **Frame**: the frame displayed at ``t_k = (k + 15/16) / f``, i.e. the last frame whose
  timestamp is <= t_k (the first frame if none is). This is AVSBench's choice (it kept
  frame ``int(k*F + 15/16*F)`` of each second of an F-fps video; with f = 1 and an
  integer F this is exactly that frame), made by
  :func:`~avsegformer.data.video.sample_times`.
* **Sound**: one VGGish example, 0.96 s of log-mel computed from 0.975 s of 16 kHz mono
  audio (15600 samples: 96 hops of 10 ms plus the 15 ms the last 25-ms STFT window
  reaches beyond them) **starting at k/f**. AVSBench computes examples back to back from
  t = 0, so its example k starts at 0.96*k s and drifts 40 ms per second (160 ms early
  by second 4 of a 5-s clip; 2.4 s by minute 1); starting every window at k/f keeps each
  frame paired with its own moment in a video of any length, while keeping AVSBench's
  "second k <-> example k" at f = 1 (the window of second k is [k, k + 0.975)).
* **Missing sound**: audio that runs out (the last partial period, or an audio track
  shorter than the video) is padded with digital silence (zeros, whose log-mel is
  log(0.01) = -4.605 everywhere); each prediction reports how much of its window was
  padded (``audio_padding``). A video without an audio stream is an error unless
  ``allow_silent=True``, which feeds silence throughout.
* **Overlays** (``avsegformer predict``): every source frame is drawn with the mask of
  the sample whose period contains its timestamp; frames past the last period (a probed
  duration that is slightly short) take the last sample's mask.

Images and masks
----------------
Frames are squashed to ``img_size`` x ``img_size`` (``config.data.img_size``: 512 for
the authors' S4/MS3 models, 224 for AVSS and the tiny ones) with PIL bilinear and
normalised with the backbone's statistics, exactly as the training data
(:mod:`avsegformer.data.images`).
Masks come back at the frame's own resolution:

* binary models (S4, MS3; one output channel): the logit map is resized bilinearly to the
  frame size and thresholded at 0 (= sigmoid > 0.5, AVSBench's rule), so that edges are
  as smooth as the logits allow;
* semantic models (AVSS, 71 classes): argmax at the model's resolution, then a
  nearest-neighbour resize of the class ids (PIL's pixel choice). Resizing 71 logit maps
  to the frame size first would cost 71 x H x W floats per frame (260 MB at 720p) for
  boundaries that move by less than one model pixel, and nearest keeps every id valid.

Memory stays flat in the length of the video: frames are decoded sequentially and only
the frames of the current sampling period (overlays) or the sampled frame are kept; the
audio is streamed in 1-s chunks.

# References: AVSegFormer (Gao et al., arXiv 2307.01146); AVSBench (Zhou et al.,
# ECCV 2022) frame and audio conventions (shared/spec/avsbench-data.md §2.3, §5;
# shared/spec/audio-frontend.md §3).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .audio import SAMPLE_RATE, resample, to_mono
from .data.classes import AVSS_CLASSES
from .data.images import Geometry, PixelNorm, frames_to_tensor
from .data.video import (
    AVSBENCH_FRAME_OFFSET,
    TIME_EPSILON,
    SampledFrame,
    TimedFrame,
    VideoInfo,
    iter_all_frames,
    iter_audio,
    iter_frames_at,
    probe_video,
    sample_times,
)
from .errors import ConfigError, EmptyVideoError, InputShapeError
from .modeling.audio_encoders import audio_front_end
from .modeling.audio_frontend import VGGISH_LOG_MEL
from .modeling.avsegformer import check_model_inputs
from .render import resize_mask
from .settings import Precision, check_img_size
from .tasks import iter_tasks

__all__ = [
    "AUDIO_WINDOW_SAMPLES",
    "AUDIO_WINDOW_SECONDS",
    "ClassArea",
    "FramePrediction",
    "Predictor",
    "Sample",
    "StageTimes",
    "iter_clip_samples",
    "iter_video_samples",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: 16 kHz samples behind one VGGish example: 96 hops of 160 plus the 240 that the last
#: 400-sample STFT window reaches beyond them (audio-frontend.md §2). The default window;
#: a model whose audio front end needs another gets windows of its own length.
AUDIO_WINDOW_SAMPLES = VGGISH_LOG_MEL.window_samples  # 15600
AUDIO_WINDOW_SECONDS = AUDIO_WINDOW_SAMPLES / SAMPLE_RATE  # 0.975
#: Audio is streamed from files in chunks of this many seconds (memory vs call overhead).
_AUDIO_CHUNK_SECONDS = 1.0
#: Class names of binary (S4/MS3) models: id 1 is "whatever is sounding".
BINARY_CLASS_NAMES = ("background", "sounding")


# ---------------------------------------------------------------------------------------
# Data types


@dataclass
class Sample:
    """One model input: the frame shown at the sample time and the sound of its window.

    Attributes:
        index: sample number k (0-based).
        time: t_k = (k + 15/16) / fps, the time (s, video clock) the frame is taken at.
        frame_time: timestamp (s) of the frame actually shown at ``time``.
        frame: uint8 [H, W, 3] RGB, source resolution (upright).
        audio_start: k / fps (s), where the audio window starts.
        waveform: float32 [15600] 16 kHz mono in [-1, 1]: the 0.975 s from
            ``audio_start``, zeros where the audio had run out (another length when
            the samples were made for a model whose front end needs another window).
        audio_padding: seconds of ``waveform`` that are padding (0 .. 0.975).
        period_frames: with ``keep_period_frames``, every source frame whose timestamp lies
            in [k/fps, (k+1)/fps) (the last sample also takes later ones), in order; None
            otherwise.
    """

    index: int
    time: float
    frame_time: float
    frame: np.ndarray
    audio_start: float
    waveform: np.ndarray
    audio_padding: float
    period_frames: list[TimedFrame] | None = None

    @property
    def audio_window(self) -> tuple[float, float]:
        """(start, end) in s of the audio behind this sample's log-mel example."""
        return self.audio_start, self.audio_start + len(self.waveform) / SAMPLE_RATE


@dataclass(frozen=True)
class ClassArea:
    """A class present in a mask: id (palette index), name, pixel count, fraction of the frame."""

    id: int
    name: str
    pixels: int
    fraction: float


@dataclass
class FramePrediction:
    """The segmentation of one sample.

    Attributes:
        index, time, frame_time, audio_window, audio_padding: as in :class:`Sample`
            (``time`` = (k + 15/16) / fps; ``audio_window`` = (k/fps, k/fps + 0.975) s).
        mask: source resolution [H, W]: bool for binary (S4/MS3) models (True = sounding),
            uint8 class ids for semantic (AVSS) models (0 = background; names in
            :attr:`Predictor.class_names`).
        classes: the foreground classes present, by id (binary models: id 1,
            "sounding"), with pixel counts and fractions of the frame.
        area_fraction: fraction of the frame covered by any sounding class, in [0, 1].
        frame: the source frame, uint8 [H, W, 3], if asked for (``return_frames``).
    """

    index: int
    time: float
    frame_time: float
    audio_window: tuple[float, float]
    audio_padding: float
    mask: np.ndarray
    classes: tuple[ClassArea, ...]
    area_fraction: float
    frame: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (no arrays)."""
        return {
            "index": self.index,
            "time": round(self.time, 6),
            "frame_time": round(self.frame_time, 6),
            "audio_window": [round(self.audio_window[0], 6), round(self.audio_window[1], 6)],
            "audio_padding": round(self.audio_padding, 6),
            "area_fraction": round(self.area_fraction, 6),
            "classes": [
                {"id": c.id, "name": c.name, "pixels": c.pixels, "fraction": round(c.fraction, 6)}
                for c in self.classes
            ],
        }


@dataclass
class StageTimes:
    """Seconds spent in each stage, accumulated over calls (for reports and benchmarks).

    ``decode``: frames and audio out of the file (decoding, colour conversion, audio
    resampling and windowing); ``preprocess``: resize + normalise frames, log-mel;
    ``model``: the forward pass (synchronised on CUDA); ``postprocess``: masks back to
    the source resolution and class areas. ``samples`` counts sampled frames.
    """

    decode: float = 0.0
    preprocess: float = 0.0
    model: float = 0.0
    postprocess: float = 0.0
    samples: int = 0

    def as_dict(self) -> dict[str, float]:
        per = 1000.0 / max(self.samples, 1)
        return {
            "decode_s": round(self.decode, 4),
            "preprocess_s": round(self.preprocess, 4),
            "model_s": round(self.model, 4),
            "postprocess_s": round(self.postprocess, 4),
            "samples": self.samples,
            "decode_ms_per_sample": round(self.decode * per, 2),
            "preprocess_ms_per_sample": round(self.preprocess * per, 2),
            "model_ms_per_sample": round(self.model * per, 2),
            "postprocess_ms_per_sample": round(self.postprocess * per, 2),
        }


# ---------------------------------------------------------------------------------------
# Sampling: frames + audio -> Samples (no model involved)


class _AudioWindows:
    """Cuts 15600-sample windows at non-decreasing offsets out of a stream of 16 kHz chunks.

    Holds at most one window plus one chunk; samples past the end of the stream are zeros.
    ``window_samples``: the window length (the model's audio front end's, at 16 kHz).
    """

    def __init__(self, chunks: Iterable[np.ndarray], window_samples: int = AUDIO_WINDOW_SAMPLES):
        self.window_samples = window_samples
        self._chunks = iter(chunks)
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # stream index of self._buffer[0]
        self._exhausted = False
        self.end: int | None = None  # total samples in the stream, once known

    def window(self, start: int) -> tuple[np.ndarray, int]:
        """(float32 [window_samples] from ``start``, number of them that are padding)."""
        if start < self._buffer_start:
            raise ValueError(f"audio windows must not go back ({start} < {self._buffer_start})")
        stop = start + self.window_samples
        pieces = [self._buffer]
        available = self._buffer_start + len(self._buffer)
        while available < stop and not self._exhausted:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._exhausted = True
                self.end = available
                break
            chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
            pieces.append(chunk)
            available += len(chunk)
        buffer = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        # Keep only what this and later windows can still need.
        drop = min(start - self._buffer_start, len(buffer))
        self._buffer = buffer[drop:]
        self._buffer_start += drop
        offset = start - self._buffer_start
        window = self._buffer[offset : offset + self.window_samples]
        padding = self.window_samples - len(window)
        if padding:
            window = np.concatenate([window, np.zeros(padding, np.float32)])
        return np.ascontiguousarray(window, dtype=np.float32), padding

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def _period_of(t: float, fps: float) -> int:
    """Index of the sampling period [k/fps, (k+1)/fps) that contains time ``t``."""
    return math.floor((t + TIME_EPSILON) * fps)


def _assemble_samples(
    frames: Iterable[TimedFrame],
    times: Sequence[float],
    fps: float,
    audio: _AudioWindows,
    *,
    keep_period_frames: bool,
    source: str,
) -> Iterator[Sample]:
    """Samples from frames in display order (see the module docstring for the rules).

    One pass over ``frames``; holds the current period's frames only if
    ``keep_period_frames``, else just the candidate frame.
    """
    count = len(times)
    k = 0
    period: list[TimedFrame] = []
    last: TimedFrame | None = None  # the latest frame seen
    chosen: TimedFrame | None = None  # the frame shown at times[k] (so far)

    def make(k: int, frame: TimedFrame, period_frames: list[TimedFrame] | None) -> Sample:
        start = round(k * SAMPLE_RATE / fps)
        waveform, padding = audio.window(start)
        return Sample(
            index=k,
            time=float(times[k]),
            frame_time=float(frame.t),
            frame=frame.image,
            audio_start=start / SAMPLE_RATE,
            waveform=waveform,
            audio_padding=padding / SAMPLE_RATE,
            period_frames=period_frames,
        )

    warned_past_end = False
    try:
        for current in frames:
            if not warned_past_end and count and _period_of(current.t, fps) >= count:
                # The container stated a shorter duration than its frames span (a header
                # that disagrees with the timestamps): say so rather than drop them quietly.
                logger.warning(
                    "%s: frames continue past the video's stated duration (%.3f s, frame at "
                    "%.3f s); samples stop at %.3f s",
                    source, count / fps, current.t, count / fps,
                )  # fmt: skip
                warned_past_end = True
            # A frame of a later period closes the samples before it.
            while k < count - 1 and _period_of(current.t, fps) > k:
                yield make(k, chosen or current, period if keep_period_frames else None)
                k += 1
                period = []
                chosen = last  # every frame seen so far is before times[k]
            if keep_period_frames:
                period.append(current)
            if current.t <= times[k] + TIME_EPSILON or chosen is None:
                chosen = current  # the last one at or before times[k], else the first after
            last = current
        if last is None:
            raise EmptyVideoError(f"{source}: zero-length video (no frames)")
        for j in range(k, count):
            if j > k and times[j] > last.t + 1.0:
                logger.debug("%s: sample %d at %.3f s is past the last frame", source, j, times[j])
            period_frames = (period if j == k else []) if keep_period_frames else None
            yield make(j, chosen or last, period_frames)
            chosen = last
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
        if audio.end is not None and count:
            padded_from = audio.end / SAMPLE_RATE
            if padded_from < count / fps:
                logger.info(
                    "%s: the audio ends at %.3f s; later audio windows are padded with silence",
                    source, padded_from,
                )  # fmt: skip
        audio.close()


def _check_fps(fps: float) -> float:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be a positive number of samples per second, got {fps!r}")
    return float(fps)


def iter_clip_samples(
    frames: np.ndarray | Sequence[np.ndarray],
    waveform: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    frame_times: Sequence[float] | np.ndarray | None = None,
    fps: float = 1.0,
    duration: float | None = None,
    keep_period_frames: bool = False,
    audio_window: int = AUDIO_WINDOW_SAMPLES,
) -> Iterator[Sample]:
    """Samples of a clip held in memory (time convention: module docstring).

    Args:
        frames: uint8 [T, H, W, 3] RGB (an array or a sequence of [H, W, 3] arrays).
        waveform: the clip's sound, [L] or [L, C] (samples first), float in [-1, 1] or
            int16/int32; sample 0 is at t = 0, the time of the clip's start.
        sample_rate: of ``waveform`` in Hz (resampled to 16 kHz with soxr when different).
        frame_times: display time (s) of each frame, increasing. Default: the frames *are*
            the sampled frames, frame k shown at (k + 15/16) / fps, so there are T samples.
        fps: samples per second.
        duration: clip length in s; default the last frame time plus the median frame
            interval (1 / fps for a single frame).
        audio_window: 16 kHz samples per sample's waveform (``Predictor.audio_window``:
            what the model's audio front end needs; default the VGGish 15600).

    Yields:
        :class:`Sample` for k = 0 .. ceil(duration * fps) - 1.
    """
    fps = _check_fps(fps)
    if isinstance(sample_rate, bool) or not (
        isinstance(sample_rate, int | float | np.integer | np.floating)
        and math.isfinite(sample_rate)
        and sample_rate > 0
    ):
        raise InputShapeError(f"sample_rate must be a positive number (Hz), got {sample_rate!r}")
    images = _as_frame_list(frames)
    if frame_times is None:
        times_of_frames = [(k + AVSBENCH_FRAME_OFFSET) / fps for k in range(len(images))]
        default_duration = len(images) / fps
    else:
        times_of_frames = [float(t) for t in np.asarray(frame_times, dtype=np.float64).reshape(-1)]
        if len(times_of_frames) != len(images):
            raise InputShapeError(
                f"frame_times has {len(times_of_frames)} entries for {len(images)} frames"
            )
        if any(b < a for a, b in zip(times_of_frames, times_of_frames[1:], strict=False)):
            raise InputShapeError("frame_times must not decrease")
        steps = np.diff(times_of_frames)
        step = float(np.median(steps)) if steps.size else 1.0 / fps
        default_duration = times_of_frames[-1] + step
    total = default_duration if duration is None else float(duration)
    if total <= 0:
        raise InputShapeError(f"the clip must last more than 0 s, got {total}")
    mono = to_mono(waveform, torch.float64).numpy()
    if sample_rate != SAMPLE_RATE and len(mono):
        mono = resample(mono, sample_rate, SAMPLE_RATE)
    audio = _AudioWindows([mono.astype(np.float32)], audio_window)
    timed = (TimedFrame(t, image) for t, image in zip(times_of_frames, images, strict=True))
    return _assemble_samples(
        timed,
        sample_times(total, fps),
        fps,
        audio,
        keep_period_frames=keep_period_frames,
        source="clip",
    )


def _check_samples(samples: Sequence[Sample], window_samples: int = AUDIO_WINDOW_SAMPLES) -> None:
    """What :meth:`Predictor.prepare` needs: a non-empty sequence of :class:`Sample`."""
    if isinstance(samples, Sample):
        raise InputShapeError("prepare takes a sequence of samples", hint="pass [sample]")
    if not isinstance(samples, Sequence) or not samples:
        raise InputShapeError(
            f"prepare needs a non-empty sequence of Sample, got {samples!r:.80}",
            hint="make them with iter_clip_samples or iter_video_samples",
        )
    for sample in samples:
        if not isinstance(sample, Sample):
            raise InputShapeError(
                f"prepare takes Sample objects, got a {type(sample).__name__}",
                hint="make them with iter_clip_samples or iter_video_samples",
            )
        frame, waveform = np.asarray(sample.frame), np.asarray(sample.waveform)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputShapeError(
                f"sample {sample.index}: frame must be uint8 [H, W, 3] RGB, got "
                f"{frame.dtype} {list(frame.shape)}"
            )
        if waveform.shape != (window_samples,):
            raise InputShapeError(
                f"sample {sample.index}: waveform must hold {window_samples} samples "
                f"of 16 kHz mono, got shape {list(waveform.shape)}"
            )


def _as_frame_list(frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise InputShapeError(
            f"frames must be uint8 [T, H, W, 3] RGB, got {frames.dtype} {list(frames.shape)}"
        )
    images = list(frames)
    if not images:
        raise InputShapeError("frames is empty: expected uint8 [T, H, W, 3] with T >= 1")
    for image in images:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputShapeError(
                f"frames must be uint8 [T, H, W, 3] RGB, got a frame of {image.dtype} "
                f"{list(image.shape)}"
            )
    return [np.asarray(image) for image in images]


def iter_video_samples(
    path: PathLike,
    *,
    fps: float = 1.0,
    allow_silent: bool = False,
    keep_period_frames: bool = False,
    info: VideoInfo | None = None,
    audio_window: int = AUDIO_WINDOW_SAMPLES,
) -> Iterator[Sample]:
    """Samples of a video file, streamed (time convention: module docstring).

    One decoding pass of the video stream and one of the audio stream, in step; memory
    is the current period's frames (``keep_period_frames``) or one frame, plus ~1 s of
    audio. Without ``keep_period_frames`` only the sampled frames are converted to RGB.

    Args:
        path: any file FFmpeg reads with a video stream (any codec, frame rate, size).
        fps: samples per second.
        allow_silent: a file without an audio stream gets silence (and a warning)
            instead of :class:`~avsegformer.errors.NoAudioStreamError`.
        keep_period_frames: attach every source frame of each period (for overlays).
        info: the file's :func:`~avsegformer.data.video.probe_video` result, if known.
        audio_window: as for :func:`iter_clip_samples`.

    Raises:
        the errors of :func:`~avsegformer.data.video.probe_video` (missing, not a video,
        empty, corrupt) up front; NoAudioStreamError; CorruptVideoError after yielding
        the samples before the damage.
    """
    fps = _check_fps(fps)
    info = info if info is not None else probe_video(path)
    times = sample_times(info.duration, fps)
    chunks = iter_audio(
        path, SAMPLE_RATE, mono=True, chunk_seconds=_AUDIO_CHUNK_SECONDS, allow_silent=allow_silent
    )
    audio = _AudioWindows(chunks, audio_window)
    try:
        if keep_period_frames:
            frames: Iterable[TimedFrame] = iter_all_frames(path)
        else:
            # Only the sampled frames are converted to RGB: most of a 720p decode's cost.
            frames = _as_timed(iter_frames_at(path, times))
    except BaseException:
        audio.close()
        raise
    return _assemble_samples(
        frames, times, fps, audio, keep_period_frames=keep_period_frames, source=str(path)
    )


def _as_timed(sampled: Iterator[SampledFrame]) -> Iterator[TimedFrame]:
    """``SampledFrame``s as ``TimedFrame``s at the chosen frames' own times."""
    try:
        for item in sampled:
            yield TimedFrame(item.t_actual, item.image)
    finally:
        sampled.close()


# ---------------------------------------------------------------------------------------
# The predictor


def _timed(iterator: Iterable[Sample], times: StageTimes) -> Iterator[Sample]:
    """Pass ``iterator`` through, adding the time spent producing items to ``times.decode``."""
    it = iter(iterator)
    while True:
        start = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            times.decode += time.perf_counter() - start
            return
        times.decode += time.perf_counter() - start
        yield item


class Predictor:
    """Segments the sounding objects of clips and videos with an AVSegFormer model.

    Args:
        model: a built AVSegFormer (``build_model``, ``build_model_from_checkpoint``) whose
            ``config`` gives the task and input size; put in eval mode on ``device``.
        device: "cpu", "cuda", "cuda:1"...; default CUDA when available, else CPU.
        dtype: ``torch.float32``, or ``torch.bfloat16`` (CPU or CUDA) / ``torch.float16``
            (CUDA) to run the model under autocast (parts the model keeps in float32
            stay so); any :class:`~avsegformer.settings.Precision` or spelling of one
            (``"bf16"``, ``"auto"``: bfloat16 on CUDA, float32 elsewhere) is taken too.
        img_size: square side frames are resized to (a multiple of 32); default
            ``model.config.data.img_size``.
        batch_size: samples per forward pass (memory grows with it: with overlays a batch
            holds the source frames of ``batch_size`` periods).
        optimize: apply :func:`avsegformer.optimize` for ``device`` and ``dtype`` (the
            model is changed in place; ``False`` keeps its plain forms).
        cuda_graphs: replay the forward as CUDA graphs (default: on CUDA devices; one
            capture per batch shape, the first call of each takes three forwards).

    Attributes:
        binary: True for one-channel (S4/MS3) models, False for semantic (AVSS) ones.
        audio_front_end: what the model's audio encoder takes (``model.audio_front_end``).
        audio_window: 16 kHz samples of sound behind one model input (VGGish: 15600).
        class_names: names by class id (binary: "background", "sounding").
        times: :class:`StageTimes` accumulated over all calls.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | Precision | str = torch.float32,
        img_size: int | None = None,
        batch_size: int = 1,
        optimize: bool = True,
        cuda_graphs: bool | None = None,
    ) -> None:
        precision = Precision.parse(dtype, option="dtype")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        config = getattr(model, "config", None)
        if img_size is None:
            if config is None:
                raise ConfigError("the model has no config: pass img_size=...")
            img_size = int(config.data.img_size)
        check_img_size(img_size, "img_size")
        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        autocast_dtype = precision.compute_dtype(self.device)  # fp16 on a CPU: ConfigError
        self.model = model.to(self.device).eval()
        self.audio_front_end = audio_front_end(model)
        self.audio_window = round(self.audio_front_end.window_seconds * SAMPLE_RATE)
        if optimize:
            from .modeling.optimize import optimize as optimize_model

            graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
            optimize_model(self.model, self.device, autocast_dtype, cuda_graphs=graphs)
        self.config = config
        self.dtype = autocast_dtype
        self.img_size = img_size
        self.batch_size = batch_size
        self.geometry = Geometry("resize", img_size)
        # The statistics the model's backbone declares (ImageNet's for a bare model).
        self.pixel_norm = PixelNorm.for_model(config.model) if config is not None else PixelNorm()
        num_classes = int(getattr(model, "num_classes", None) or config.model.num_classes)
        self.num_classes = num_classes
        self.binary = num_classes == 1
        if self.binary:
            self.class_names: tuple[str, ...] = BINARY_CLASS_NAMES
        elif num_classes == len(AVSS_CLASSES):
            self.class_names = AVSS_CLASSES
        else:
            self.class_names = ("background",) + tuple(f"class_{i}" for i in range(1, num_classes))
        if not self.binary and num_classes > 256:
            raise ConfigError(f"{num_classes} classes do not fit uint8 class maps")
        self.times = StageTimes()

    @classmethod
    def from_checkpoint(cls, path: PathLike, name: str | None = None, **kwargs: Any) -> Predictor:
        """Build the model a checkpoint holds and wrap it.

        ``name``: a registered configuration (``avsegformer.list_models()``), needed for
        the authors' ``.pth`` files (e.g. ``"res50_s4"``); our ``.safetensors`` files
        record theirs. ``kwargs``: the constructor's (device, dtype, img_size, batch_size,
        optimize, cuda_graphs).
        """
        from .checkpoint import build_model_from_checkpoint

        device = kwargs.get("device")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
            kwargs["device"] = device
        # Inference never runs the authors' unused modules: do not hold them in memory.
        model = build_model_from_checkpoint(path, name, device=device, keep_unused_modules=False)
        return cls(model, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        cache_dir: PathLike | None = None,
        offline: bool | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> Predictor:
        """The released model ``name`` (e.g. ``"pvt2_s4"``; see ``avsegformer models``).

        Its weights are downloaded into the cache on first use and verified before they
        are used (:mod:`avsegformer.hub`); later calls read the cache. A checkpoint path
        works too (as :meth:`from_checkpoint`). ``cache_dir``, ``offline``, ``progress``:
        as :func:`avsegformer.hub.download`; ``kwargs``: the constructor's.

        Raises:
            ConfigError: ``name`` has no released weights (or is a backbone file).
            DownloadError: not cached and cannot be fetched (the message says which file
                to place where).
            WeightsVerificationError: the file is not the released one.
        """
        from .hub import released_checkpoint
        from .zoo import get_weights, list_weights

        if os.path.isfile(name):
            return cls.from_checkpoint(name, **kwargs)
        target = get_weights(name).target if name in list_weights() else ""
        if target:
            option = "pretrained_backbone" if target == "backbone" else "pretrained_audio"
            raise ConfigError(
                f"{name!r} is a {target} weight file, not a whole model: use "
                f"build_model(CONFIG, {option}={name!r})"
            )
        path = released_checkpoint(name, cache_dir=cache_dir, offline=offline, progress=progress)
        return cls.from_checkpoint(path, name, **kwargs)

    @property
    def name(self) -> str:
        """The configuration's name ("custom" when unknown)."""
        return self.config.name if self.config is not None else "custom"

    @property
    def task(self) -> str:
        """The task's name: the configuration's, else the first registered task with the
        model's class count ("s4" for a binary model, "avss" for 71 classes; "" if none)."""
        if self.config is not None:
            return str(self.config.task)
        return next((t.name for t in iter_tasks() if t.num_classes == self.num_classes), "")

    # -- the stages ------------------------------------------------------------------------

    def prepare(self, samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's inputs for ``samples``, on the predictor's device.

        Returns:
            frames: float32 [N, 3, S, S] (S = ``img_size``), RGB normalised with the
                backbone's statistics (:attr:`pixel_norm`).
            audio: ``[N, *audio_front_end.example_shape]`` examples made by the model's
                front end; VGGish: float32 [N, 1, 96, 64] log-mel examples (axis 2: 10-ms
                frames of the window, in order; axis 3: mel bands, low to high; silence =
                -4.605).
        """
        _check_samples(samples, self.audio_window)
        images = [
            np.asarray(self.geometry.apply(Image.fromarray(s.frame), is_mask=False))
            for s in samples
        ]
        frames = frames_to_tensor(images, self.pixel_norm)
        front_end = self.audio_front_end
        audio = torch.cat([front_end.from_waveform(s.waveform, SAMPLE_RATE) for s in samples])
        return frames.to(self.device), audio.to(self.device)

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Run the model: ``(frames, audio)`` from :meth:`prepare` -> float32 logits
        [N, C, S, S] (C = 1 for binary models, 71 for AVSS), under autocast in the
        predictor's dtype when it is bfloat16 or float16.

        Raises:
            InputShapeError: not tensors, wrong shapes, N = 0, mismatched N, a dtype the
                model cannot take (float64, float16 on a CPU, integer audio) or another
                device than the predictor's.
            NonFiniteError: NaN or infinite inputs (the model's check,
                ``model.check_inputs``).
        """
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            # Types, shapes, dtypes, devices (no device work); the model itself looks for
            # NaN / inf, once, where its input checks run (eagerly or before a graph replay).
            # Any parameter: its dtype and device are what the inputs must match.
            weight = next(iter(self.model.parameters()), None)
            check_model_inputs(
                frames, audio, weight=weight, finite=False, front_end=self.audio_front_end
            )
            logits = self.model(frames, audio).logits
        return logits.float()

    def postprocess(self, logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """One sample's logits [C, S, S] -> mask at ``size`` = (width, height).

        Binary: bilinear resize of the logit map, then ``> 0`` -> bool [H, W].
        Semantic: argmax at model resolution, nearest resize -> uint8 [H, W] class ids.
        (Why: module docstring.)
        """
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
            given = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise InputShapeError(
                f"postprocess takes one sample's logits [C, S, S], got {given}",
                hint="pass forward(...)[i] for sample i",
            )
        if not (
            isinstance(size, tuple | list)
            and len(size) == 2
            and all(isinstance(v, int | np.integer) and v > 0 for v in size)
        ):
            raise InputShapeError(f"size must be (width, height) in pixels, got {size!r}")
        width, height = size
        if self.binary:
            resized = F.interpolate(
                logits[None, :1], size=(height, width), mode="bilinear", align_corners=False
            )
            return (resized[0, 0] > 0).cpu().numpy()
        classes = logits.argmax(dim=0).to(torch.uint8).cpu().numpy()
        return resize_mask(classes, (width, height))

    def class_areas(self, mask: np.ndarray) -> tuple[tuple[ClassArea, ...], float]:
        """(foreground classes present with pixel counts, fraction of the frame covered)."""
        total = mask.size
        if self.binary:
            counts = {1: int(np.count_nonzero(mask))}
        else:
            histogram = np.bincount(mask.ravel(), minlength=self.num_classes)
            counts = {int(c): int(histogram[c]) for c in np.flatnonzero(histogram) if c != 0}
        classes = tuple(
            ClassArea(c, self.class_names[c], n, n / total) for c, n in counts.items() if n
        )
        return classes, sum(c.pixels for c in classes) / total

    # -- pipelines -------------------------------------------------------------------------

    def predict_samples(
        self, samples: Iterable[Sample], *, return_frames: bool = False
    ) -> Iterator[tuple[Sample, FramePrediction]]:
        """Segment a stream of samples, ``batch_size`` at a time, lazily.

        Yields each sample with its prediction, in order. Time spent producing the
        samples (decoding) and in each stage is added to :attr:`times`.
        """
        batch: list[Sample] = []
        for sample in _timed(samples, self.times):
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield from self._predict_batch(batch, return_frames)
                batch = []
        if batch:
            yield from self._predict_batch(batch, return_frames)

    def _predict_batch(
        self, batch: list[Sample], return_frames: bool
    ) -> Iterator[tuple[Sample, FramePrediction]]:
        clock = time.perf_counter()
        frames, audio = self.prepare(batch)
        prepared = time.perf_counter()
        logits = self.forward(frames, audio)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        forwarded = time.perf_counter()
        self.times.preprocess += prepared - clock
        self.times.model += forwarded - prepared
        self.times.samples += len(batch)
        for sample, sample_logits in zip(batch, logits, strict=True):
            clock = time.perf_counter()
            height, width = sample.frame.shape[:2]
            mask = self.postprocess(sample_logits, (width, height))
            classes, area = self.class_areas(mask)
            prediction = FramePrediction(
                index=sample.index,
                time=sample.time,
                frame_time=sample.frame_time,
                audio_window=sample.audio_window,
                audio_padding=sample.audio_padding,
                mask=mask,
                classes=classes,
                area_fraction=area,
                frame=sample.frame if return_frames else None,
            )
            self.times.postprocess += time.perf_counter() - clock
            yield sample, prediction

    def predict_clip(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        waveform: np.ndarray | torch.Tensor,
        sample_rate: int,
        *,
        frame_times: Sequence[float] | np.ndarray | None = None,
        fps: float = 1.0,
        return_frames: bool = False,
    ) -> list[FramePrediction]:
        """Segment a clip held in memory.

        Args:
            frames: uint8 [T, H, W, 3] RGB, any H x W.
            waveform: [L] or [L, C] samples (float in [-1, 1], or int16), sample 0 at t = 0.
            sample_rate: Hz.
            frame_times: display times (s) of the frames; default: the frames are already
                one per sample (frame k shown at (k + 15/16) / fps), as in AVSBench's
                5-frame clips.
            fps: samples per second.
            return_frames: attach each sampled source frame to its prediction.

        Returns:
            One :class:`FramePrediction` per sample (masks at H x W).
        """
        samples = iter_clip_samples(
            frames,
            waveform,
            sample_rate,
            frame_times=frame_times,
            fps=fps,
            audio_window=self.audio_window,
        )
        return [p for _, p in self.predict_samples(samples, return_frames=return_frames)]

    def predict_video(
        self,
        path: PathLike,
        *,
        fps: float = 1.0,
        allow_silent: bool = False,
        return_frames: bool = False,
    ) -> Iterator[FramePrediction]:
        """Segment a video file, streaming: decode, segment and yield ``batch_size`` samples
        at a time; memory does not grow with the length of the video.

        Errors of :func:`iter_video_samples` (a missing, empty, corrupt or silent file...)
        are raised by this call, before anything is yielded, when they can be seen up
        front; damage found later is raised after the samples before it.
        """
        samples = iter_video_samples(
            path, fps=fps, allow_silent=allow_silent, audio_window=self.audio_window
        )
        return (p for _, p in self.predict_samples(samples, return_frames=return_frames))
