"""The audio-encoder registry and its front ends: a new encoder with its own input.

A tiny raw-waveform encoder is defined and registered here (one call) with a front end
unlike VGGish's log-mels: 0.5 s windows of 8 kHz samples, ``[N, 1, 4000]``, silence 0.
The model's input check, the datasets, the trainer's ``audio="zero"``, the evaluator's
substitutions and the Predictor must all follow it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from avsegformer.audio import SILENCE_LOG_MEL, resample, to_mono
from avsegformer.data import build_dataset
from avsegformer.engine.evaluator import AudioSubstitution, noise_examples
from avsegformer.engine.trainer import Trainer, TrainOptions
from avsegformer.errors import ConfigError, DataError, InputShapeError
from avsegformer.modeling.audio_encoders import (
    audio_front_end,
    build_audio_encoder,
    get_audio_encoder,
    list_audio_encoders,
    register_audio_encoder,
)
from avsegformer.modeling.audio_frontend import VGGISH_LOG_MEL, AudioFrontEnd
from avsegformer.modeling.avsegformer import check_model_inputs
from avsegformer.modeling.build import build_model
from avsegformer.predictor import Predictor
from avsegformer.zoo import get_config
from datasets import make_s4_dataset

RAW_RATE = 8000
RAW_WINDOW = 4000  # 0.5 s


def _raw_windows(
    waveform: Any, sample_rate: int, *, num_examples: int | None = None, policy: str = "silence"
) -> torch.Tensor:
    """Back-to-back 0.5-s windows of 8 kHz mono: ``[N, 1, 4000]``; missing ones are 0."""
    mono = to_mono(waveform, torch.float64)
    if sample_rate != RAW_RATE:
        mono = torch.from_numpy(resample(mono.numpy(), sample_rate, RAW_RATE))
    count = mono.shape[0] // RAW_WINDOW
    examples = mono[: count * RAW_WINDOW].reshape(count, 1, RAW_WINDOW).float()
    if num_examples is not None:
        missing = max(0, num_examples - count)
        examples = torch.cat([examples, torch.zeros(missing, 1, RAW_WINDOW)])[:num_examples]
    return examples


RAW_WAVEFORM = AudioFrontEnd(
    name="raw_8k_half_second",
    description="raw waveform windows",
    example_shape=(1, RAW_WINDOW),
    sample_rate=RAW_RATE,
    window_samples=RAW_WINDOW,
    silence_value=0.0,
    value_range=(-1.0, 1.0),
    waveform_to_examples=_raw_windows,
)


class RawWaveEncoder(nn.Module):
    """``[N, 1, 4000]`` samples -> ``[N, out_dim]``: one strided conv, mean over time."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, kernel_size=64, stride=32)
        self.proj = nn.Linear(8, out_dim)

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        if tuple(samples.shape[1:]) != (1, RAW_WINDOW):
            raise ValueError(f"RawWaveEncoder expects [N, 1, {RAW_WINDOW}], got {samples.shape}")
        return self.proj(torch.relu(self.conv(samples)).mean(dim=2))


register_audio_encoder(
    "test_raw_waveform", RAW_WAVEFORM, lambda cfg: RawWaveEncoder(cfg.audio_dim), replace=True
)

FAST = ["img_size=64", "num_workers=0", "batch_size=2", "eval_batch_size=2", "dropout=0"]


def _raw_config(*extra: str):
    return get_config("tiny_s4").with_overrides(
        [*FAST, "model.audio_encoder=test_raw_waveform", "model.freeze_audio=false", *extra]
    )


@pytest.fixture(scope="module")
def raw_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(_raw_config())


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_s4_dataset(tmp_path_factory.mktemp("s4"), videos_per_split=2, size=64, seed=5)


def _frames(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------ registry
def test_registry_knows_the_builtin_and_the_new_encoder() -> None:
    assert {"vggish", "audio_cnn", "test_raw_waveform"} <= set(list_audio_encoders())
    assert get_audio_encoder("vggish").front_end is VGGISH_LOG_MEL
    assert audio_front_end("test_raw_waveform") is RAW_WAVEFORM
    assert audio_front_end(_raw_config()) is RAW_WAVEFORM
    assert audio_front_end(get_config("tiny_s4")) is VGGISH_LOG_MEL
    with pytest.raises(ConfigError, match=r"already registered"):
        register_audio_encoder("test_raw_waveform", RAW_WAVEFORM, lambda cfg: nn.Identity())


def test_unknown_encoder_is_a_config_error_listing_the_known_ones() -> None:
    cfg = get_config("tiny_s4").with_overrides(["model.audio_encoder=wav2vec9"]).model
    with pytest.raises(ConfigError, match=r"'wav2vec9'.*known: .*vggish.*audio_cnn"):
        build_audio_encoder(cfg)


def test_vggish_front_end_is_the_log_mel_of_avsegformer_audio() -> None:
    # The numbers of shared/spec/audio-frontend.md, not of the code under test.
    assert VGGISH_LOG_MEL.example_shape == (1, 96, 64)
    assert VGGISH_LOG_MEL.sample_rate == 16000 and VGGISH_LOG_MEL.window_samples == 15600
    assert math.isclose(VGGISH_LOG_MEL.silence_value, math.log(0.01))
    assert VGGISH_LOG_MEL.input_layout == "[N, 1, 96, 64]"
    silence = VGGISH_LOG_MEL.silence(3)
    assert silence.shape == (3, 1, 96, 64) and silence.dtype == torch.float32
    # Digital silence through the log-mel maths is the declared silence.
    examples = VGGISH_LOG_MEL.from_waveform(np.zeros(16000 * 2, np.int16), 16000)
    assert torch.allclose(examples, VGGISH_LOG_MEL.silence(2), atol=1e-6)


@pytest.mark.parametrize("name", list_audio_encoders())
def test_every_encoder_takes_what_its_front_end_declares(name: str) -> None:
    entry = get_audio_encoder(name)
    cfg = (
        get_config("tiny_s4")
        .with_overrides([f"model.audio_encoder={name}", "model.audio_widths=16,32,64,128"])
        .model
    )
    encoder = entry.build(cfg).eval()
    front_end = entry.front_end
    rng = np.random.default_rng(0)
    sound = (0.1 * rng.standard_normal(3 * front_end.window_samples)).astype(np.float32)
    made = front_end.from_waveform(sound, front_end.sample_rate, num_examples=2)
    assert tuple(made.shape) == (2, *front_end.example_shape) and made.dtype == front_end.dtype
    silence = front_end.silence(2)
    assert front_end.matches(made) and front_end.matches(silence)
    with torch.no_grad():
        for audio in (made, silence):
            embedding = encoder(audio)
            assert tuple(embedding.shape) == (2, cfg.audio_dim)
            assert bool(torch.isfinite(embedding).all())


# ----------------------------------------------------------------------- the model
def test_input_check_follows_the_front_end(raw_model: nn.Module) -> None:
    assert raw_model.audio_front_end is RAW_WAVEFORM
    model = raw_model.eval()
    with torch.no_grad():
        out = model(_frames(2), RAW_WAVEFORM.silence(2))
    assert out.logits.shape == (2, 1, 64, 64)
    # The old VGGish input is refused, naming the shape it wants and the one it got.
    with pytest.raises(
        InputShapeError, match=r"raw waveform windows \[2, 1, 4000\].*got \[2, 1, 96, 64\]"
    ):
        model(_frames(2), VGGISH_LOG_MEL.silence(2))
    with pytest.raises(InputShapeError, match=r"2 frame.s. but 3 audio"):
        model(_frames(2), RAW_WAVEFORM.silence(3))
    # And a VGGish model refuses the raw windows.
    with pytest.raises(InputShapeError, match=r"log-mel examples \[2, 1, 96, 64\].*\[2, 1, 4000\]"):
        check_model_inputs(_frames(2), RAW_WAVEFORM.silence(2))


def test_a_model_with_the_new_encoder_trains_a_step(raw_model: nn.Module) -> None:
    torch.manual_seed(0)
    model = build_model(_raw_config()).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.audio_encoder.conv.weight.detach().clone()
    sound = np.random.default_rng(1).uniform(-0.5, 0.5, 2 * RAW_WINDOW)
    audio = RAW_WAVEFORM.from_waveform(sound, RAW_RATE)
    out = model(_frames(2), audio)
    (out.logits.square().mean() + out.mask_feature.mean()).backward()
    optimizer.step()
    assert not torch.equal(model.audio_encoder.conv.weight, before)


# -------------------------------------------------------- who asks the front end
def test_dataset_converts_wavs_with_the_front_end(s4_root: Path) -> None:
    raw = build_dataset("s4", s4_root, "val", img_size=64, audio_front_end=RAW_WAVEFORM)
    # 5 s of 16 kHz audio -> ten 0.5-s windows, fitted to the clip's 5 frames.
    assert tuple(raw[0].audio.shape) == (5, 1, RAW_WINDOW)
    vggish = build_dataset("s4", s4_root, "val", img_size=64)
    assert tuple(vggish[0].audio.shape) == (5, 1, 96, 64)
    with pytest.raises(DataError, match=r"pkl.*raw_8k_half_second"):
        build_dataset(
            "s4", s4_root, "val", img_size=64, audio_source="pkl", audio_front_end=RAW_WAVEFORM
        )


def test_evaluator_substitutes_the_front_ends_silence_and_noise(s4_root: Path) -> None:
    dataset = build_dataset("s4", s4_root, "val", img_size=64, audio_front_end=RAW_WAVEFORM)
    _, silent = AudioSubstitution(dataset, "zero")[0]
    assert torch.equal(silent.audio, torch.zeros(5, 1, RAW_WINDOW))
    _, noisy = AudioSubstitution(dataset, "noise", seed=2)[0]
    assert tuple(noisy.audio.shape) == (5, 1, RAW_WINDOW)
    assert 0.03 < float(noisy.audio.std()) < 0.07  # white noise at rms 0.05
    assert tuple(noise_examples(2, seed=0).shape) == (2, 1, 96, 64)


def test_trainer_zero_audio_is_the_front_ends_silence(s4_root: Path, tmp_path: Path) -> None:
    config = _raw_config("train.audio=zero", "freeze_backbone_epochs=0")
    options = TrainOptions(
        s4_root, tmp_path, progress=False, val_split="", max_steps=1, save_every_steps=0
    )
    trainer = Trainer(config, options)
    seen: list[torch.Tensor] = []
    trainer.model.audio_encoder.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone())
    )
    result = trainer.fit()
    assert result.steps == 1 and seen
    for audio in seen:
        assert tuple(audio.shape[1:]) == (1, RAW_WINDOW)
        assert bool((audio == 0.0).all()), "silence of the raw front end is 0"
    assert not bool((seen[0] == SILENCE_LOG_MEL).any()), "not the log-mel silence"


def test_predictor_makes_the_front_ends_input(raw_model: nn.Module) -> None:
    predictor = Predictor(raw_model, device="cpu", img_size=64, optimize=False)
    assert predictor.audio_front_end is RAW_WAVEFORM
    assert predictor.audio_window == 8000  # 0.5 s at the predictor's 16 kHz
    frames = np.zeros((2, 48, 80, 3), np.uint8)
    waveform = np.random.default_rng(3).uniform(-0.3, 0.3, 3 * 16000).astype(np.float32)
    predictions = predictor.predict_clip(frames, waveform, 16000, fps=1.0)
    assert len(predictions) == 2
    assert predictions[0].audio_window == pytest.approx((0.0, 0.5))
