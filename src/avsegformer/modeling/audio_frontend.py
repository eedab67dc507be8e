"""Audio front ends: what an audio encoder takes, how to make it, and what silence is.

Each registered audio encoder (:mod:`.audio_encoders`) declares one
:class:`AudioFrontEnd`. Everyone who makes or checks audio inputs asks it instead of
repeating constants: the model's input check, the datasets (WAV -> examples), the
:class:`~avsegformer.predictor.Predictor`, the trainer's ``audio="zero"`` and the
evaluator's audio substitutions.

The model takes one *example* per video frame: ``audio`` is ``[N, *example_shape]``.
:data:`VGGISH_LOG_MEL` is the VGGish log-mel example both built-in encoders take; it
points at the one implementation of the log-mel maths in :mod:`avsegformer.audio`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .. import audio as vggish_audio

__all__ = ["VGGISH_LOG_MEL", "AudioFrontEnd", "ExamplesFromWaveform"]


class ExamplesFromWaveform(Protocol):
    """``(waveform [L] or [L, C], sample_rate, *, num_examples, policy)`` -> examples."""

    def __call__(
        self,
        waveform: Any,
        sample_rate: int,
        *,
        num_examples: int | None = ...,
        policy: vggish_audio.ClipPolicy = ...,
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class AudioFrontEnd:
    """The input of an audio encoder: one example per video frame.

    Attributes:
        name: identifier (``"vggish_log_mel"``).
        description: what one example is, in the words of error messages, plural
            (``"log-mel examples"``).
        example_shape: the shape of one example; the model takes
            ``[N, *example_shape]`` (VGGish: ``(1, 96, 64)``: channel, 10-ms frames,
            mel bands).
        sample_rate: Hz of the waveform an example is computed from.
        window_samples: waveform samples (at ``sample_rate``) behind one example
            (VGGish: 15600 = 0.975 s).
        silence_value: the value of every element of the example of digital silence
            (VGGish: ``log(0.01)``).
        value_range: (lowest, highest) value an example can hold (informative; not
            checked on every forward).
        dtype: the dtype examples are made in (the model's float32 weights).
        waveform_to_examples: ``(waveform, sample_rate, *, num_examples, policy)`` ->
            ``[N, *example_shape]`` (``num_examples``: fit the count to the clip's
            frames with the clip ``policy`` of :func:`avsegformer.audio.fit_examples`).

    Audio files are the data layer's business: it decodes them
    (:func:`avsegformer.data.audio_files.examples_from_file`) and hands the waveform to
    :meth:`from_waveform`, which fits the example count to ``num_examples`` (a clip
    policy's ``"silence"`` is this front end's silence).
    """

    name: str
    description: str
    example_shape: tuple[int, ...]
    sample_rate: int
    window_samples: int
    silence_value: float
    value_range: tuple[float, float]
    waveform_to_examples: ExamplesFromWaveform
    dtype: torch.dtype = torch.float32

    @property
    def window_seconds(self) -> float:
        """Seconds of sound behind one example (VGGish: 0.975)."""
        return self.window_samples / self.sample_rate

    @property
    def input_layout(self) -> str:
        """The model's audio argument as text: ``"[N, 1, 96, 64]"``."""
        return "[" + ", ".join(["N", *map(str, self.example_shape)]) + "]"

    def silence(
        self,
        count: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """``count`` examples of digital silence: ``[count, *example_shape]``."""
        return torch.full(
            (count, *self.example_shape),
            self.silence_value,
            dtype=dtype or self.dtype,
            device=device,
        )

    def silence_like(self, audio: torch.Tensor) -> torch.Tensor:
        """Silence with the shape, dtype and device of ``audio`` (``[N, *example_shape]``,
        or with more leading axes, e.g. a batch ``[B, T, *example_shape]``)."""
        return torch.full_like(audio, self.silence_value)

    def from_waveform(
        self,
        waveform: Any,
        sample_rate: int,
        *,
        num_examples: int | None = None,
        policy: vggish_audio.ClipPolicy = "silence",
    ) -> torch.Tensor:
        """Examples ``[N, *example_shape]`` of a waveform ``[L]`` / ``[L, C]`` at
        ``sample_rate`` (resampled when the front end needs another rate)."""
        return self.waveform_to_examples(
            waveform, sample_rate, num_examples=num_examples, policy=policy
        )

    def matches(self, audio: torch.Tensor) -> bool:
        """Whether ``audio`` is ``[N, *example_shape]`` for some ``N``."""
        return tuple(audio.shape[1:]) == self.example_shape and audio.dim() == (
            1 + len(self.example_shape)
        )


def _vggish_from_waveform(
    waveform: Any,
    sample_rate: int,
    *,
    num_examples: int | None = None,
    policy: vggish_audio.ClipPolicy = "silence",
) -> torch.Tensor:
    return vggish_audio.waveform_to_examples(
        waveform, sample_rate, num_examples=num_examples, policy=policy
    )


#: VGGish log-mel examples ``[N, 1, 96, 64]``: 96 frames of 10 ms x 64 mel bands,
#: ``log(mel + 0.01)`` of 0.975 s of 16 kHz audio (:mod:`avsegformer.audio`).
VGGISH_LOG_MEL = AudioFrontEnd(
    name="vggish_log_mel",
    description="log-mel examples",
    example_shape=(1, vggish_audio.EXAMPLE_FRAMES, vggish_audio.NUM_MEL_BANDS),
    sample_rate=vggish_audio.SAMPLE_RATE,
    window_samples=vggish_audio.SAMPLES_PER_EXAMPLE + vggish_audio.MIN_SAMPLES,
    silence_value=vggish_audio.SILENCE_LOG_MEL,
    # The "reference" clip policy pads with 0.0 rows, inside this range.
    value_range=(vggish_audio.SILENCE_LOG_MEL, math.inf),
    waveform_to_examples=_vggish_from_waveform,
)
