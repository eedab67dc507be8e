"""The Predictor: time convention, alignment, pre/post-processing, streaming, errors.

Videos come from ``tests/videos.py``: frame i shows its index as stripes
(``decode_index``), and tones switch on at known times, so that which frame and which
sound reach the model can be checked, not assumed. Models are tiny and randomly
initialised (``tiny_model``; also used by test_predict_cli.py and test_demo.py), or stubs
with known outputs where the post-processing is under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avsegformer.audio import SILENCE_LOG_MEL
from avsegformer.checkpoint import save_checkpoint
from avsegformer.data.classes import AVSS_CLASSES
from avsegformer.data.synthetic import generate_clip
from avsegformer.data.video import iter_all_frames
from avsegformer.errors import (
    ConfigError,
    CorruptVideoError,
    EmptyVideoError,
    InputShapeError,
    MissingFileError,
    NoAudioStreamError,
    NonFiniteError,
    NotAVideoError,
)
from avsegformer.modeling.avsegformer import AVSegFormerOutput
from avsegformer.modeling.build import build_model
from avsegformer.predictor import (
    AUDIO_WINDOW_SAMPLES,
    AUDIO_WINDOW_SECONDS,
    FramePrediction,
    Predictor,
    Sample,
    iter_clip_samples,
    iter_video_samples,
)
from avsegformer.zoo import get_config
from videos import (
    decode_index,
    make_empty_file,
    make_text_file,
    make_truncated,
    make_vfr_video,
    make_video,
    tone_onset,
)


def tiny_model(task: str = "s4", img_size: int = 128) -> nn.Module:
    """The registered ``tiny_<task>`` configuration, randomly initialised, eval mode."""
    torch.manual_seed(0)
    return build_model(f"tiny_{task}", overrides=[f"img_size={img_size}"]).eval()


def tiny_checkpoint(path: Path, task: str = "s4", img_size: int = 128) -> Path:
    """Save :func:`tiny_model` in our safetensors format (it records its configuration)."""
    return save_checkpoint(tiny_model(task, img_size), path)


class StubModel(nn.Module):
    """Returns fixed logits [N, C, S, S] whatever the input, and records autocast state."""

    def __init__(self, logits: torch.Tensor, img_size: int):
        super().__init__()
        base = "res50_avss" if logits.shape[0] > 1 else "res50_s4"
        self.config = get_config(base).with_overrides([f"img_size={img_size}"])
        self.num_classes = logits.shape[0]
        self.register_buffer("fixed", logits)
        self.calls: list[dict] = []

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> AVSegFormerOutput:
        self.calls.append(
            {
                "frames": tuple(frames.shape),
                "audio": audio.clone(),
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_dtype": torch.get_autocast_dtype("cpu"),
            }
        )
        logits = self.fixed.expand(frames.shape[0], *self.fixed.shape)
        return AVSegFormerOutput(logits, logits[:, :1])


def _stub_predictor(logits: torch.Tensor, **kwargs) -> Predictor:
    return Predictor(StubModel(logits, logits.shape[-1]), device="cpu", **kwargs)


def _audio_examples(predictor: Predictor, samples) -> torch.Tensor:
    """The log-mel examples [N, 1, 96, 64] the model receives for ``samples``."""
    return predictor.prepare(list(samples))[1]


def _is_silence(example: torch.Tensor) -> bool:
    return bool(torch.allclose(example, torch.full_like(example, SILENCE_LOG_MEL), atol=1e-3))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predictor_videos")
    tone_at_3 = ((3.0, 440.0),)
    return {
        # 25 fps H.264 + AAC stereo 44.1 kHz, odd size; a tone from t = 3 s.
        "h264_25": make_video(
            root / "h264_25.mp4", 5.0, 25, (161, 121), "stereo", 44100, "h264", tone_at_3
        ),
        # 30 fps MPEG-4 + AAC mono 48 kHz.
        "mpeg4_30": make_video(
            root / "mpeg4_30.mp4", 5.0, 30, (160, 120), "mono", 48000, "mpeg4", tone_at_3
        ),
        # Audio (a tone throughout) stops at 2.5 s; the video lasts 3.5 s.
        "short_audio": make_video(
            root / "short_audio.mp4",
            3.5,
            25,
            (96, 64),
            "mono",
            16000,
            tone_schedule=((0.0, 440.0),),
            audio_seconds=2.5,
        ),
        "silent": make_video(root / "silent.mp4", 2.0, 25, (96, 64), None),
        "vfr": make_vfr_video(root / "vfr.mkv", seconds=4.0, size=(96, 64))[0],
    }


# ---------------------------------------------------------------------------------------
# Time convention and alignment


@pytest.mark.parametrize("name, rate", [("h264_25", 25), ("mpeg4_30", 30)])
def test_sample_k_is_the_frame_shown_at_k_plus_15_16_with_audio_from_k(
    videos: dict[str, Path], name: str, rate: int
) -> None:
    predictor = _stub_predictor(torch.zeros(1, 64, 64))
    samples = list(iter_video_samples(videos[name], fps=1.0))
    assert [s.index for s in samples] == [0, 1, 2, 3, 4]
    for k, sample in enumerate(samples):
        expected = int(k * rate + 15 / 16 * rate)  # AVSBench's frame index (spec §2.3)
        assert decode_index(sample.frame) == expected
        assert sample.time == pytest.approx((k + 15 / 16) / 1.0)
        assert sample.frame_time == pytest.approx(expected / rate, abs=1e-4)
        assert sample.audio_window == pytest.approx((k, k + AUDIO_WINDOW_SECONDS))
        assert sample.waveform.shape == (AUDIO_WINDOW_SAMPLES,)
        assert sample.audio_padding == 0.0
    # Alignment: the tone starts at 3 s, so examples 0-2 are silence and 3-4 are not.
    examples = _audio_examples(predictor, samples)
    assert examples.shape == (5, 1, 96, 64)
    assert [_is_silence(e) for e in examples] == [True, True, True, False, False]
    assert float(examples[3].mean()) > SILENCE_LOG_MEL + 0.5
    # To the millisecond: window 3 starts exactly when the tone does.
    assert tone_onset(samples[3].waveform, 16000) == pytest.approx(0.0, abs=0.002)


@pytest.mark.parametrize(
    "rate, layout", [(8000, "mono"), (22050, "stereo"), (48000, "5.1"), (96000, "stereo")]
)
def test_any_audio_rate_and_layout_is_aligned(tmp_path: Path, rate: int, layout: str) -> None:
    path = make_video(
        tmp_path / "clip.mp4", 2.0, 25, (96, 64), layout, rate, tone_schedule=((1.0, 440.0),)
    )
    first, second = iter_video_samples(path, fps=1.0)
    assert not np.any(np.abs(first.waveform) > 0.05)
    assert tone_onset(second.waveform, 16000) == pytest.approx(0.0, abs=0.002)
    # The channel mean: 0.5 everywhere, except that AAC band-limits the 5.1 LFE channel
    # (a 440 Hz tone leaves it nearly silent: 5 x 0.5 / 6).
    expected = 5 * 0.5 / 6 if layout == "5.1" else 0.5
    assert np.abs(second.waveform).max() == pytest.approx(expected, abs=0.04)


def test_two_samples_per_second_use_overlapping_windows(videos: dict[str, Path]) -> None:
    predictor = _stub_predictor(torch.zeros(1, 64, 64))
    samples = list(iter_video_samples(videos["h264_25"], fps=2.0))
    assert len(samples) == 10
    for k, sample in enumerate(samples):
        t = (k + 15 / 16) / 2
        assert sample.time == pytest.approx(t)
        assert decode_index(sample.frame) == math.floor(t * 25 + 1e-6)
        assert sample.audio_window[0] == pytest.approx(k / 2)
    silent = [_is_silence(e) for e in _audio_examples(predictor, samples)]
    # Windows [k/2, k/2 + 0.975): those ending before 3 s are silent, later ones are not.
    assert silent == [True] * 5 + [False] * 5
    # Window 5 starts at 2.5 s: the tone enters it 0.5 s in (back-to-back 0.96-s
    # examples, AVSBench's way, would put it 0.6 s in).
    assert tone_onset(samples[5].waveform, 16000) == pytest.approx(0.5, abs=0.002)


def test_periods_partition_the_frames_of_a_variable_rate_video(videos: dict[str, Path]) -> None:
    all_frames = [(round(t, 6), decode_index(image)) for t, image in iter_all_frames(videos["vfr"])]
    with_periods = list(iter_video_samples(videos["vfr"], fps=1.0, keep_period_frames=True))
    plain = list(iter_video_samples(videos["vfr"], fps=1.0))
    assert len(with_periods) == len(plain) == 4
    seen = []
    for k, (sample, other) in enumerate(zip(with_periods, plain, strict=True)):
        period = [(round(f.t, 6), decode_index(f.image)) for f in sample.period_frames]
        assert period, f"period {k} is empty"
        assert all(k <= t < k + 1 for t, _ in period)
        seen += period
        # The sampled frame: the last one displayed at or before (k + 15/16) s.
        shown = [i for t, i in all_frames if t <= k + 15 / 16 + 1e-6][-1]
        assert decode_index(sample.frame) == decode_index(other.frame) == shown
        assert other.period_frames is None
    assert seen == all_frames


def test_audio_that_runs_out_is_padded_with_silence(videos: dict[str, Path]) -> None:
    predictor = _stub_predictor(torch.zeros(1, 64, 64))
    samples = list(iter_video_samples(videos["short_audio"], fps=1.0))
    assert len(samples) == 4  # 3.5 s: the last period is partial
    assert [s.audio_padding for s in samples] == pytest.approx([0.0, 0.0, 0.475, 0.975])
    assert not np.any(samples[2].waveform[int(0.5 * 16000) + 160 :])
    assert np.abs(samples[2].waveform[: int(0.45 * 16000)]).max() > 0.3
    silent = [_is_silence(e) for e in _audio_examples(predictor, samples)]
    assert silent == [False, False, False, True]


def test_a_video_without_audio_needs_allow_silent(videos: dict[str, Path]) -> None:
    with pytest.raises(NoAudioStreamError, match="silent.mp4.*no audio stream"):
        list(iter_video_samples(videos["silent"]))
    samples = list(iter_video_samples(videos["silent"], allow_silent=True))
    assert len(samples) == 2
    assert all(not s.waveform.any() for s in samples)


def test_clip_samples_from_memory_follow_the_same_convention() -> None:
    clip = generate_clip("switch", seconds=3, fps=25, size=(96, 64), seed=1)
    samples = list(
        iter_clip_samples(
            clip.frames, clip.waveform, clip.sample_rate, frame_times=clip.frame_times, fps=1.0
        )
    )
    assert [s.frame_time for s in samples] == pytest.approx([0.92, 1.92, 2.92])
    for sample in samples:
        index = round(sample.frame_time * 25)
        np.testing.assert_array_equal(sample.frame, clip.frames[index])
        start = round(sample.audio_start * 16000)
        np.testing.assert_allclose(
            sample.waveform[: 16000 * 3 - start],
            clip.waveform[start : start + AUDIO_WINDOW_SAMPLES],
            atol=1e-6,
        )
    # Without frame_times, the frames are the sampled frames themselves, one per period.
    direct = list(iter_clip_samples(clip.frames[[23, 48, 73]], clip.waveform, 16000))
    assert [s.time for s in direct] == pytest.approx([0.9375, 1.9375, 2.9375])
    for a, b in zip(samples, direct, strict=True):
        np.testing.assert_array_equal(a.frame, b.frame)
        np.testing.assert_array_equal(a.waveform, b.waveform)


# ---------------------------------------------------------------------------------------
# Pre- and post-processing


def test_binary_masks_are_resized_logits_thresholded_at_zero() -> None:
    size = 64
    ramp = torch.arange(size, dtype=torch.float32) - (size - 1) / 2  # 0 between the halves
    logits = ramp.expand(size, size)[None].clone()  # [1, S, S]: right half positive
    predictor = _stub_predictor(logits)
    frames = np.zeros((2, 75, 100, 3), np.uint8)
    predictions = predictor.predict_clip(frames, np.zeros(32000, np.float32), 16000)
    assert len(predictions) == 2
    mask = predictions[0].mask
    assert mask.dtype == np.bool_ and mask.shape == (75, 100)
    expected = np.zeros((75, 100), bool)
    expected[:, 50:] = True
    np.testing.assert_array_equal(mask, expected)
    assert predictions[0].area_fraction == pytest.approx(0.5)
    (area,) = predictions[0].classes
    assert (area.id, area.name, area.pixels) == (1, "sounding", 75 * 50)
    # The model saw squashed square frames.
    assert predictor.model.calls[0]["frames"] == (1, 3, size, size)

    # One hot model pixel: the bilinear logit map crosses 0 on a rounded patch, smaller
    # than the 10x10 block that thresholding first and then upsampling would give.
    hot = torch.full((1, 64, 64), -1.0)
    hot[0, 32, 32] = 1.0
    (spot,) = _stub_predictor(hot).predict_clip(
        np.zeros((1, 640, 640, 3), np.uint8), np.zeros(16000), 16000
    )
    ys, xs = np.nonzero(spot.mask)
    assert 0 < len(ys) < 100
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (320, 329, 320, 329)
    assert not spot.mask[320, 320] and spot.mask[324, 324]  # corners cut, centre set


def test_semantic_masks_are_argmax_then_nearest_resize() -> None:
    size = 64
    logits = torch.zeros(71, size, size)
    logits[17, :, : size // 2] = 5.0  # dog on the left
    logits[7, : size // 2, size // 2 :] = 5.0  # bird top right; background bottom right
    predictor = _stub_predictor(logits)
    frames = np.zeros((1, 90, 121, 3), np.uint8)
    (prediction,) = predictor.predict_clip(frames, np.zeros(16000, np.int16), 16000)
    mask = prediction.mask
    assert mask.dtype == np.uint8 and mask.shape == (90, 121)
    assert set(np.unique(mask)) == {0, 7, 17}
    assert (
        (mask[:, :60] == 17).all() and (mask[:45, 61:] == 7).all() and (mask[45:, 61:] == 0).all()
    )
    names = {c.name: c.pixels for c in prediction.classes}
    assert set(names) == {"dog", "bird"}
    assert sum(names.values()) == np.count_nonzero(mask)
    assert prediction.area_fraction == pytest.approx(np.count_nonzero(mask) / mask.size)


def test_bfloat16_runs_the_model_under_autocast() -> None:
    predictor = _stub_predictor(torch.zeros(1, 64, 64), dtype=torch.bfloat16)
    predictor.predict_clip(np.zeros((1, 32, 32, 3), np.uint8), np.zeros(16000), 16000)
    call = predictor.model.calls[0]
    assert call["autocast"] and call["autocast_dtype"] == torch.bfloat16
    plain = _stub_predictor(torch.zeros(1, 64, 64))
    plain.predict_clip(np.zeros((1, 32, 32, 3), np.uint8), np.zeros(16000), 16000)
    assert not plain.model.calls[0]["autocast"]


@pytest.mark.parametrize("task", ["s4", "avss"])
def test_tiny_models_predict_clips_at_the_source_resolution(task: str) -> None:
    predictor = Predictor(tiny_model(task), device="cpu", batch_size=2)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 121, 161, 3), dtype=np.uint8)
    stereo = (rng.standard_normal((3 * 44100, 2)) * 3000).astype(np.int16)
    predictions = predictor.predict_clip(frames, stereo, 44100, return_frames=True)
    assert [p.index for p in predictions] == [0, 1, 2]
    for k, p in enumerate(predictions):
        assert isinstance(p, FramePrediction)
        assert p.mask.shape == (121, 161)
        assert p.mask.dtype == (np.bool_ if task == "s4" else np.uint8)
        assert p.audio_window == pytest.approx((k, k + 0.975))
        assert p.frame is not None and np.array_equal(p.frame, frames[k])
        assert 0.0 <= p.area_fraction <= 1.0
        if task == "avss":
            assert p.mask.max() < len(AVSS_CLASSES)
            assert all(c.name == AVSS_CLASSES[c.id] for c in p.classes)
    assert predictor.times.samples == 3 and predictor.times.model > 0
    # bfloat16 gives masks of the same kind.
    half = Predictor(predictor.model, device="cpu", dtype=torch.bfloat16)
    (p16,) = half.predict_clip(frames[:1], stereo[:44100], 44100)
    assert p16.mask.shape == (121, 161) and p16.mask.dtype == predictions[0].mask.dtype


def test_from_checkpoint_records_the_configuration(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / "tiny.safetensors", img_size=96)
    predictor = Predictor.from_checkpoint(path, device="cpu")
    assert predictor.img_size == 96 and predictor.binary and predictor.task == "s4"
    assert predictor.name.startswith("tiny_s4")


# ---------------------------------------------------------------------------------------
# Streaming and errors


def test_predict_video_streams(videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import avsegformer.predictor as predictor_module

    pulled: list[float] = []
    original = predictor_module.iter_all_frames

    def counting(path, **kwargs):
        for item in original(path, **kwargs):
            pulled.append(item.t)
            yield item

    monkeypatch.setattr(predictor_module, "iter_all_frames", counting)
    samples = iter_video_samples(videos["h264_25"], fps=1.0, keep_period_frames=True)
    predictor = _stub_predictor(torch.zeros(1, 64, 64))
    stream = predictor.predict_samples(samples)
    sample, first = next(stream)
    # Only the first period and the frame that closes it have been decoded.
    assert first.index == 0 and len(sample.period_frames) == 25
    assert len(pulled) == 26
    assert len(list(stream)) == 4 and len(pulled) == 125


def test_a_file_cut_short_fails_with_its_name(tmp_path: Path) -> None:
    source = make_video(tmp_path / "long.mp4", 3.0, 25, (96, 64), faststart=True)
    cut = make_truncated(source, tmp_path / "cut.mp4", keep=0.6)
    predictor = _stub_predictor(torch.zeros(1, 64, 64))
    with pytest.raises(CorruptVideoError, match="cut.mp4: truncated or corrupt"):
        list(predictor.predict_video(cut))


def test_bad_files_raise_errors_naming_them(tmp_path: Path) -> None:
    predictor = _stub_predictor(torch.zeros(1, 64, 64))
    cases = {
        MissingFileError: tmp_path / "missing.mp4",
        NotAVideoError: make_text_file(tmp_path / "notes.txt"),
        EmptyVideoError: make_empty_file(tmp_path / "empty.mp4"),
    }
    for error, path in cases.items():
        with pytest.raises(error, match=path.name):
            list(predictor.predict_video(path))


def test_bad_arguments_are_refused() -> None:
    stub = StubModel(torch.zeros(1, 64, 64), 64)
    with pytest.raises(ConfigError, match="multiple of 32"):
        Predictor(stub, img_size=100)
    with pytest.raises(ConfigError, match="dtype"):
        Predictor(stub, dtype=torch.float64)
    with pytest.raises(ConfigError, match="float16 autocast needs a CUDA device"):
        Predictor(stub, dtype=torch.float16, device="cpu")
    predictor = Predictor(stub, device="cpu")
    with pytest.raises(ConfigError, match="fps"):
        predictor.predict_clip(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(16000), 16000, fps=0)
    with pytest.raises(InputShapeError, match="uint8"):
        predictor.predict_clip(np.zeros((1, 8, 8, 3), np.float32), np.zeros(16000), 16000)
    with pytest.raises(InputShapeError, match="frame_times"):
        predictor.predict_clip(
            np.zeros((2, 8, 8, 3), np.uint8), np.zeros(16000), 16000, frame_times=[0.0]
        )


def test_tensor_methods_refuse_misuse_with_the_fix() -> None:
    predictor = Predictor(tiny_model(img_size=64), device="cpu")
    rng = np.random.default_rng(0)
    clip = iter_clip_samples(
        rng.integers(0, 256, (2, 40, 50, 3), dtype=np.uint8), np.zeros(32000), 16000
    )
    samples = list(clip)
    frames, audio = predictor.prepare(samples)
    cases = [
        ((frames.double(), audio), "frames are torch.float64"),
        ((frames.half(), audio), "frames are torch.float16"),
        ((frames, audio.long()), "audio must be a floating-point tensor"),
        ((frames[:0], audio[:0]), r"N = 0"),
        ((frames.numpy(), audio), "torch.from_numpy"),
        ((list(frames), audio), "torch.stack"),
        ((frames, audio[:1]), r"2 frame\(s\) but 1 audio example"),
        ((frames[:, :2], audio), r"\[N, 3, H, W\]"),
    ]
    for arguments, match in cases:
        with pytest.raises(InputShapeError, match=match):
            predictor.forward(*arguments)
    with pytest.raises(NonFiniteError, match="audio given to the model"):
        predictor.forward(frames, audio * float("inf"))
    assert predictor.forward(frames, audio).shape == (2, 1, 64, 64)
    with pytest.raises(InputShapeError, match="non-empty sequence of Sample"):
        predictor.prepare([])
    with pytest.raises(InputShapeError, match="pass \\[sample\\]"):
        predictor.prepare(samples[0])
    with pytest.raises(InputShapeError, match="Sample objects, got a ndarray"):
        predictor.prepare([samples[0].frame])
    odd = Sample(0, 0.9, 0.0, samples[0].frame.astype(np.float32), 0.0, samples[0].waveform, 0.0)
    with pytest.raises(InputShapeError, match="sample 0: frame must be uint8"):
        predictor.prepare([odd])
    logits = predictor.forward(frames, audio)
    with pytest.raises(InputShapeError, match=r"forward\(...\)\[i\]"):
        predictor.postprocess(logits, (50, 40))
    with pytest.raises(InputShapeError, match="width, height"):
        predictor.postprocess(logits[0], (50, 0))
    with pytest.raises(InputShapeError, match="sample_rate"):
        predictor.predict_clip(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(16000), 0)
