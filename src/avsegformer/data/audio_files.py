"""Audio files -> waveforms -> VGGish examples: :func:`read_audio`, :func:`wav_to_examples`.

File reading lives here, in the data layer, so that the log-mel front end
:mod:`avsegformer.audio` (pure waveform maths) depends on nothing in :mod:`avsegformer.data`:
the datasets use the front end, never the reverse. WAV, FLAC, OGG and MP3 are read with
soundfile, anything else (mp4, m4a, mkv, webm...) with PyAV through
:mod:`avsegformer.data.video.sound`. ``avsegformer.audio.read_audio`` and
``avsegformer.audio.wav_to_examples`` still name these functions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..audio import (
    ClipPolicy,
    ResampleQuality,
    SampleFormat,
    fit_examples,
    waveform_to_examples,
)
from ..errors import AudioError, EmptyAudioFileError, MissingFileError, NonFiniteDataError
from ..finite import require_finite
from ..modeling.audio_frontend import AudioFrontEnd

__all__ = ["read_audio", "wav_to_examples"]

logger = logging.getLogger(__name__)


def wav_to_examples(
    path: str | Path,
    *,
    num_examples: int | None = None,
    policy: ClipPolicy = "silence",
    dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype = torch.float64,
    resample_quality: ResampleQuality = "VHQ",
) -> torch.Tensor:
    """Read an audio file (WAV or anything PyAV decodes) and return ``[N, 1, 96, 64]``.

    Samples are read as int16 like the reference (``read_audio(path, "int16")``), then
    :func:`waveform_to_examples` with the same options. Errors name ``path``.
    """
    samples, rate = read_audio(path, sample_format="int16")
    try:
        examples = waveform_to_examples(
            samples,
            rate,
            dtype=dtype,
            compute_dtype=compute_dtype,
            resample_quality=resample_quality,
        )
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None
    if num_examples is not None:
        examples = fit_examples(examples, num_examples, policy, source=path)
    return examples


def examples_from_file(
    front_end: AudioFrontEnd,
    path: str | Path,
    *,
    num_examples: int | None = None,
    policy: ClipPolicy = "silence",
) -> torch.Tensor:
    """``front_end``'s examples ``[N, *example_shape]`` of an audio file.

    The file is read as int16 like the reference (``read_audio(path, "int16")``) and
    given to :meth:`AudioFrontEnd.from_waveform`, which fits the count to
    ``num_examples`` (its own silence pads). For VGGish log-mels this is
    :func:`wav_to_examples`. Errors name ``path``.
    """
    samples, rate = read_audio(path, sample_format="int16")
    try:
        return front_end.from_waveform(samples, rate, num_examples=num_examples, policy=policy)
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------- reading
def read_audio(path: str | Path, sample_format: SampleFormat = "int16") -> tuple[np.ndarray, int]:
    """Decode an audio file: returns ``(samples, sample_rate)``.

    ``samples``: ``[L]`` for mono, ``[L, C]`` for ``C`` channels (soundfile's layout),
    dtype ``sample_format``: ``"int16"`` (what the reference reads: soundfile converts
    other PCM/float formats to int16) or ``"float32"``/``"float64"`` in [-1, 1].
    WAV, FLAC, OGG and MP3 go through soundfile; anything else (mp4, m4a, mkv, webm...)
    through :func:`avsegformer.data.video.read_audio_track` (PyAV; first audio stream,
    native rate and channels, aligned to the video clock).

    Raises (all naming ``path``) :class:`~avsegformer.errors.MissingFileError`,
    :class:`~avsegformer.errors.NoAudioStreamError` (a container without audio), another
    :class:`~avsegformer.errors.VideoError` (not decodable),
    :class:`~avsegformer.errors.EmptyAudioFileError` (no samples: 0 bytes or a header
    only) or :class:`~avsegformer.errors.NonFiniteDataError` (float samples that are NaN or
    infinite; int16 reading would otherwise turn them into 0 / full scale silently).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise EmptyAudioFileError(f"{path}: empty audio file (0 bytes); re-extract it")
    import soundfile

    try:
        info = soundfile.info(str(path))
        if info.frames == 0:
            raise EmptyAudioFileError(
                f"{path}: empty audio file (a {info.format} header without samples); re-extract it"
            )
        if info.subtype in ("FLOAT", "DOUBLE"):
            # soundfile turns NaN into 0 and inf into full scale when asked for int16:
            # check the stored floats themselves.
            stored, _ = soundfile.read(str(path), dtype="float64", always_2d=False)
            require_finite(stored, f"audio file {path}", error=NonFiniteDataError)
        samples, rate = soundfile.read(str(path), dtype=sample_format, always_2d=False)
        return samples, int(rate)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        logger.debug("soundfile cannot read %s (%s); trying PyAV", path, exc)
    from .video.sound import read_audio_track

    floats, rate = read_audio_track(path, None, mono=False)  # float32 [L, C]
    if floats.shape[0] == 0:
        raise EmptyAudioFileError(f"{path}: the audio stream holds no decodable samples")
    require_finite(floats, f"audio file {path}", error=NonFiniteDataError)
    samples = floats[:, 0] if floats.shape[1] == 1 else floats
    if sample_format == "int16":
        # Decoded 16-bit sources come back exactly (k / 32768 is exact in float32).
        samples = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
    else:
        samples = samples.astype(sample_format)
    return samples, int(rate)
