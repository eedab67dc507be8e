"""VGGish log-mel front end: audio file or waveform -> ``[N, 1, 96, 64]`` examples.

The maths follows ``shared/spec/audio-frontend.md`` §2 step by step: 16 kHz mono, frames
of 400 samples every 160 (no padding), periodic Hann window, ``|rfft|`` of length 512,
64 HTK-mel bands between 125 and 7500 Hz (DC bin zeroed), ``log(mel + 0.01)``, and
non-overlapping examples of 96 frames (0.96 s); an incomplete tail is dropped. Example
``k`` starts at ``k * 0.96`` s and stands for second ``k`` of a clip.

Pieces are public so that callers can reuse them: :func:`to_mono`,
:func:`resample`, :func:`log_mel_spectrogram`, :func:`mel_matrix`,
:func:`frame_examples`, :func:`fit_examples`; :func:`waveform_to_examples` chains them.
Audio files are read by :func:`avsegformer.data.audio_files.read_audio` and
:func:`avsegformer.data.audio_files.wav_to_examples` (also importable from here).

Resampling uses soxr (the reference used resampy's ``kaiser_best``, which pulls numba).
The two agree in the pass band and differ in the 7-8 kHz transition band (soxr rolls off
earlier), which only the top mel bands see (band 62 from ~7.0 kHz, band 63 7.2-7.5 kHz).
Measured against the reference's outputs in ``shared/reference/vggish_frontend.npz``
(noisy test signals at 44.1 kHz stereo, 22.05 kHz mono, 48 kHz stereo): resampled
signals differ by at most 0.027 (RMS 0.006, -32 dB of the signal; below 6 kHz their
spectra agree to 6e-5 relative); the log-mel examples differ by at most 7.2e-4 in bands
0-61, 0.062 in band 62 and 0.49 in band 63 (mean over all values 0.006). White and pink
noise at 22.05/44.1/48 kHz (resampy 0.4.3 run in a scratch environment) give the same
picture (bands 0-61 <= 1.0e-3, band 63 <= 0.53, mean 0.006); two pure tones (440 Hz,
3 kHz) differ by at most 0.05 anywhere. Audio already at
16 kHz (all S4/MS3 wavs) is not resampled and matches the reference to float precision
(float64 maths: 1e-13; float32 maths: 2e-5).

Clip-length policies (:data:`ClipPolicy`, used by :func:`fit_examples`) make the example
count equal to a clip's frame count ``T``:

* ``"reference"``: the AVSS reference (AVSegFormer/AVSBench ``VGGish._preprocess``):
  missing examples are rows of 0.0 (which is *not* silence: silence is log(0.01) =
  -4.605). More than ``T`` examples raise :class:`AudioError` (the reference crashes).
* ``"repeat_last"``: what AVSBench's S4/MS3 ``.pkl`` preprocessing did: missing
  examples are copies of the last one; no example at all, or more than ``T``, raise
  (the script wrote no file in those cases).
* ``"silence"`` (default for new data): missing examples are the log-mel of silence
  (-4.605170 everywhere) and extra examples are dropped.

References: VGGish (Hershey et al., "CNN architectures for large-scale audio
classification", ICASSP 2017); AVSBench (Zhou et al., ECCV 2022).
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .errors import AudioError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
STFT_WINDOW = 400  # 0.025 s at 16 kHz
STFT_HOP = 160  # 0.010 s at 16 kHz
FFT_LENGTH = 512  # next power of two >= STFT_WINDOW
NUM_MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s per example, hop = window (no overlap)
# The reference crashes inside its framing below this many samples.
MIN_SAMPLES = STFT_WINDOW - STFT_HOP
SILENCE_LOG_MEL = math.log(LOG_OFFSET)  # -4.605170...
# 15360 samples per example plus the 240 that the last STFT frame needs beyond them.
SAMPLES_PER_EXAMPLE = EXAMPLE_FRAMES * STFT_HOP

ClipPolicy = Literal["reference", "repeat_last", "silence"]
CLIP_POLICIES: tuple[str, ...] = ("reference", "repeat_last", "silence")
ResampleQuality = Literal["VHQ", "HQ", "MQ", "LQ", "QQ"]
SampleFormat = Literal["int16", "float32", "float64"]

ArrayLike = np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------- pieces
def periodic_hann(length: int = STFT_WINDOW, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / length)``, ``n = 0..length-1``.

    Returns ``[length]`` in ``dtype``, values in [0, 1]. Periodic (the DFT-even
    variant), not the symmetric ``np.hanning``.
    """
    n = torch.arange(length, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2.0 * math.pi * n / length)).to(dtype)


def hertz_to_mel(frequency_hz: np.ndarray | float) -> np.ndarray | float:
    """HTK mel scale: ``1127 ln(1 + f / 700)`` (float64 in, float64 out)."""
    return 1127.0 * np.log(1.0 + np.asarray(frequency_hz, dtype=np.float64) / 700.0)


@lru_cache(maxsize=4)
def _mel_matrix_np(
    num_bands: int, num_bins: int, sample_rate: int, lower_hz: float, upper_hz: float
) -> np.ndarray:
    bins_mel = hertz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_bins))
    edges_mel = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_bands + 2)
    lower, center, upper = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]
    # Triangles in the mel domain, one column per band; no area normalisation.
    rising = (bins_mel[:, None] - lower[None, :]) / (center - lower)[None, :]
    falling = (upper[None, :] - bins_mel[:, None]) / (upper - center)[None, :]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # The DC bin never contributes, even where a band would reach it.
    weights[0, :] = 0.0
    weights.setflags(write=False)
    return weights


def mel_matrix(
    num_bands: int = NUM_MEL_BANDS,
    num_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Linear-spectrum to mel weights ``[num_bins, num_bands]`` (default ``[257, 64]``).

    Row ``i`` is the FFT bin at ``i * sample_rate / (2 (num_bins - 1))`` Hz, column ``j``
    the ``j``-th HTK-mel band (low to high frequency). Values in [0, 1); row 0 is zero.
    Defaults give: sum 230.9136, max 0.99619, 461 non-zero weights.
    """
    weights = _mel_matrix_np(num_bands, num_bins, sample_rate, float(lower_hz), float(upper_hz))
    return torch.tensor(weights, dtype=dtype, device=device)


ChannelLayout = Literal["samples_first", "channels_first"]


def to_mono(
    waveform: ArrayLike,
    dtype: torch.dtype = torch.float64,
    *,
    layout: ChannelLayout = "samples_first",
) -> torch.Tensor:
    """Scale to [-1, 1) and average the channels: ``[L]`` or ``[L, C]`` -> ``[L]``.

    ``waveform``: numpy array or tensor, ``[L]`` mono or multi-channel in ``layout``:
    ``"samples_first"`` ``[L, C]`` (soundfile's and PyAV's packed layout, the default)
    or ``"channels_first"`` ``[C, L]`` (torchaudio's). int16 is divided by 32768 and
    int32 by 2**31 (as the reference reads WAVs as int16); float data is taken as is.
    Scaling and the channel mean are done in float64 (like the reference), then cast to
    ``dtype``. The result stays on the input's device.
    """
    if layout not in ("samples_first", "channels_first"):
        raise AudioError(f"unknown layout {layout!r}; use 'samples_first' or 'channels_first'")
    tensor = torch.as_tensor(waveform)
    if tensor.dtype == torch.int16:
        tensor = tensor.to(torch.float64) / 32768.0
    elif tensor.dtype == torch.int32:
        tensor = tensor.to(torch.float64) / 2147483648.0
    elif tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
        if not bool(torch.isfinite(tensor).all()):
            raise AudioError("waveform contains NaN or infinite samples")
    else:
        raise AudioError(
            f"waveform of dtype {tensor.dtype} is not supported; "
            "pass int16, int32 or floating-point samples"
        )
    if tensor.ndim == 2:
        if layout == "channels_first":
            tensor = tensor.t()
        samples, channels = tensor.shape
        if channels > samples:
            other = "channels_first" if layout == "samples_first" else "samples_first"
            given = tuple(torch.as_tensor(waveform).shape)
            raise AudioError(
                f"waveform of shape {given} read as {layout} has more channels than "
                f"samples; pass layout={other!r} (torchaudio's [channels, samples] is "
                "'channels_first')"
            )
        tensor = tensor.mean(dim=1)
    elif tensor.ndim != 1:
        raise AudioError(
            f"waveform of shape {tuple(tensor.shape)}: expected [samples] or [samples, channels]"
        )
    return tensor.to(dtype)


def resample(
    waveform: ArrayLike,
    orig_rate: int,
    target_rate: int = SAMPLE_RATE,
    *,
    quality: ResampleQuality = "VHQ",
) -> np.ndarray:
    """Resample float audio with soxr; ``[L]`` or ``[L, C]`` -> ``[M]`` or ``[M, C]``.

    ``M = int(L * target_rate / orig_rate)`` exactly (the reference resampler's length
    rule; soxr's own length can differ by one sample, the tail is trimmed or padded
    with zeros). Output is float64 (float32 input stays float32), CPU numpy. See the
    module docstring for how far soxr is from the reference's resampy ``kaiser_best``.
    """
    import soxr

    if orig_rate <= 0 or target_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    array = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else waveform
    array = np.asarray(array)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    out_length = int(array.shape[0] * (float(target_rate) / orig_rate))
    if orig_rate == target_rate:
        return array.copy()
    if out_length < 1:
        raise AudioError(
            f"{array.shape[0]} samples at {orig_rate} Hz are too few to resample to "
            f"{target_rate} Hz"
        )
    out = soxr.resample(np.ascontiguousarray(array), orig_rate, target_rate, quality=quality)
    if out.shape[0] > out_length:
        out = out[:out_length]
    elif out.shape[0] < out_length:
        pad = np.zeros((out_length - out.shape[0],) + out.shape[1:], dtype=out.dtype)
        out = np.concatenate([out, pad], axis=0)
    return out


def log_mel_spectrogram(waveform: ArrayLike, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Log-mel spectrogram of 16 kHz mono audio: ``[L]`` -> ``[F, 64]``.

    ``waveform``: float samples in [-1, 1] at 16 kHz (see :func:`to_mono` and
    :func:`resample`), at least :data:`MIN_SAMPLES` (240) of them. ``F = 1 + (L - 400)
    // 160`` frames (0 when ``L < 400``); row ``f`` covers samples ``160 f .. 160 f +
    399``. Values are ``log(|STFT| @ mel + 0.01)``, >= log(0.01) = -4.605. Computed in
    ``dtype`` on the input's device.
    """
    signal = torch.as_tensor(waveform).to(dtype)
    if signal.ndim != 1:
        raise AudioError(
            f"log_mel_spectrogram expects mono samples [L], got shape {tuple(signal.shape)}"
        )
    length = signal.shape[0]
    if length < MIN_SAMPLES:
        raise AudioError(
            f"audio of {length} samples at {SAMPLE_RATE} Hz is too short: the VGGish front "
            f"end needs at least {MIN_SAMPLES} samples (and {SAMPLES_PER_EXAMPLE + MIN_SAMPLES}"
            " for one 0.96 s example)"
        )
    mel = mel_matrix(dtype=dtype, device=signal.device)
    if length < STFT_WINDOW:
        return signal.new_zeros((0, NUM_MEL_BANDS))
    frames = signal.unfold(0, STFT_WINDOW, STFT_HOP)  # [F, 400], a view
    window = periodic_hann(STFT_WINDOW, dtype).to(signal.device)
    magnitude = torch.fft.rfft(frames * window, n=FFT_LENGTH).abs()  # [F, 257]
    return torch.log(magnitude @ mel + LOG_OFFSET)


def frame_examples(log_mel: torch.Tensor) -> torch.Tensor:
    """Cut ``[F, 64]`` into non-overlapping examples ``[F // 96, 96, 64]`` (tail dropped)."""
    count = log_mel.shape[0] // EXAMPLE_FRAMES
    return log_mel[: count * EXAMPLE_FRAMES].reshape(count, EXAMPLE_FRAMES, log_mel.shape[1])


def fit_examples(
    examples: torch.Tensor,
    num_examples: int,
    policy: ClipPolicy = "silence",
    *,
    source: str | Path | None = None,
) -> torch.Tensor:
    """Make the example count equal to ``num_examples`` (a clip's frame count ``T``).

    ``examples``: ``[N, 1, 96, 64]`` log-mel examples. Returns ``[T, 1, 96, 64]``, same
    dtype and device; unchanged when ``N == T``. ``policy`` is one of
    :data:`CLIP_POLICIES` (module docstring). ``source`` only names the audio in errors.
    """
    if policy not in CLIP_POLICIES:
        raise AudioError(f"unknown clip policy {policy!r}; use one of {', '.join(CLIP_POLICIES)}")
    count = examples.shape[0]
    if count == num_examples:
        return examples
    where = f" of {source}" if source is not None else ""
    seconds = f"{count} examples ({count * 0.96:.2f} s of audio or more)"
    if count > num_examples:
        if policy == "silence":
            return examples[:num_examples]
        raise AudioError(
            f"audio{where} gives {seconds} but the clip has {num_examples} frames; "
            f"policy {policy!r} cannot shorten it (the original code fails here): trim the "
            "audio or use policy='silence', which drops the extra seconds"
        )
    fitted = examples.new_empty((num_examples,) + tuple(examples.shape[1:]))
    fitted[:count] = examples
    if policy == "reference":
        fitted[count:] = 0.0
    elif policy == "silence":
        fitted[count:] = SILENCE_LOG_MEL
    else:  # repeat_last
        if count == 0:
            raise AudioError(
                f"audio{where} is shorter than one 0.96 s example, so there is no example to "
                "repeat (policy 'repeat_last'); use policy='silence'"
            )
        fitted[count:] = examples[count - 1]
    return fitted


# --------------------------------------------------------------------------- pipeline
def waveform_to_examples(
    waveform: ArrayLike,
    sample_rate: int,
    *,
    num_examples: int | None = None,
    policy: ClipPolicy = "silence",
    dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype = torch.float64,
    resample_quality: ResampleQuality = "VHQ",
    layout: ChannelLayout = "samples_first",
) -> torch.Tensor:
    """VGGish input examples of a waveform: ``[L]`` / ``[L, C]`` -> ``[N, 1, 96, 64]``.

    ``waveform``: numpy array or tensor, ``[L]`` mono or multi-channel (channels are
    averaged): ``[L, C]`` as soundfile returns (``layout="samples_first"``, default) or
    ``[C, L]`` as torchaudio returns (``layout="channels_first"``); int16 (scaled by
    1/32768), int32 (1/2**31) or float in [-1, 1]; any ``sample_rate`` (resampled to
    16 kHz with soxr when different). Without ``num_examples``, ``N = F // 96`` with
    ``F`` STFT frames (0 for less than 15600 samples at 16 kHz; :class:`AudioError` for
    less than 240). With ``num_examples = T``, the count is fitted by ``policy``
    (:func:`fit_examples`).

    The maths runs in ``compute_dtype`` (float64 like the reference, or float32 for
    speed) and the result is ``dtype`` (default float32; the model's input). Axis 2 is
    time (10 ms frames), axis 3 the mel band (low to high). Values >= -4.605 (log of
    0.01), except 0.0 rows padded by the ``"reference"`` policy.
    """
    mono = to_mono(waveform, torch.float64, layout=layout)
    if sample_rate != SAMPLE_RATE:
        mono = torch.from_numpy(
            resample(mono.cpu().numpy(), sample_rate, SAMPLE_RATE, quality=resample_quality)
        ).to(mono.device)
    log_mel = log_mel_spectrogram(mono.to(compute_dtype), dtype=compute_dtype)
    examples = frame_examples(log_mel).unsqueeze(1).to(dtype)
    if num_examples is not None:
        examples = fit_examples(examples, num_examples, policy)
    return examples


# ---------------------------------------------------------------------------- reading
# Reading files (read_audio, wav_to_examples) lives in avsegformer.data.audio_files: the
# datasets depend on this front end, not the reverse. The old names still resolve here,
# loaded on first use.
_MOVED_TO_DATA = frozenset({"read_audio", "wav_to_examples"})


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_DATA:
        from .data import audio_files

        return getattr(audio_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
