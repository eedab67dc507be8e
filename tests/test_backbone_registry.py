"""The visual backbone registry.

Adding a backbone is one class plus one registry call: :class:`TinyPyramid` below is
registered as ``"test_pyramid"`` (three levels, its own pixel statistics) and nothing
else in the project is edited; it builds through the configuration path, runs a
forward, trains a step with the project's Trainer, and its statistics reach the data
pipeline and the Predictor. Every registered backbone returns what it declares.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from avsegformer.checkpoint import load_checkpoint, read_checkpoint
from avsegformer.data import PixelNorm
from avsegformer.engine.trainer import Trainer, TrainOptions
from avsegformer.errors import ConfigError
from avsegformer.modeling.backbones.registry import (
    MappedWeights,
    get_backbone,
    list_backbones,
    register_backbone,
    unregister_backbone,
)
from avsegformer.modeling.build import build_backbone, build_model
from avsegformer.predictor import Predictor, Sample
from avsegformer.zoo import get_config
from datasets import make_s4_dataset

# Statistics far from ImageNet's, so that normalising with the wrong ones shows.
TEST_MEAN = (0.25, 0.5, 0.75)
TEST_STD = (0.5, 0.25, 0.125)


class TinyPyramid(nn.Module):
    """Three levels: ``[B, 3, H, W]`` -> ``[B, 8, H/4, W/4]``, ``[B, 16, H/8, W/8]``,
    ``[B, 24, H/16, W/16]``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, kernel_size=4, stride=4)
        self.down1 = nn.Conv2d(8, 16, kernel_size=3, stride=2, padding=1)
        self.down2 = nn.Conv2d(16, 24, kernel_size=3, stride=2, padding=1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        fine = torch.relu(self.stem(images))
        middle = torch.relu(self.down1(fine))
        return [fine, middle, torch.relu(self.down2(middle))]


register_backbone(
    "test_pyramid",
    build=lambda cfg: TinyPyramid(),
    channels=(8, 16, 24),
    strides=(4, 8, 16),
    pixel_mean=TEST_MEAN,
    pixel_std=TEST_STD,
)

# Small and fast: 64x64 frames, no data-loading workers; two encoder levels (three
# backbone levels), so the head is sized from the backbone, not fixed at four.
OVERRIDES = [
    "backbone=test_pyramid",
    "num_levels=2",
    "img_size=64",
    "num_workers=0",
    "batch_size=2",
    "eval_batch_size=2",
    "lr=1e-3",
]


def _normalised(path: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(x / 255 - mean) / std`` of an RGB image file, float64 ``[3, H, W]``."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    return ((pixels - np.array(mean)) / np.array(std)).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_s4_dataset(tmp_path_factory.mktemp("s4"), videos_per_split=2, size=64, seed=5)


def test_a_new_backbone_builds_from_a_configuration_and_runs() -> None:
    config = get_config("tiny_s4").with_overrides(OVERRIDES)
    torch.manual_seed(0)
    model = build_model(config).eval()
    assert isinstance(model.backbone, TinyPyramid)
    # The head takes the declared channels: one projection per level, three levels.
    assert [proj[0].in_channels for proj in model.head.in_proj] == [8, 16, 24]
    assert model.head.level_embed.shape[0] == 2
    frames, audio = torch.randn(3, 3, 64, 96), torch.randn(3, 1, 96, 64)
    with torch.no_grad():
        out = model(frames, audio)
    assert out.logits.shape == (3, 1, 64, 96)
    assert out.mask_feature.shape == (3, 64, 16, 24)
    assert torch.isfinite(out.logits).all()


def test_a_new_backbone_trains_a_step_on_data_normalised_with_its_statistics(
    s4_root: Path, tmp_path: Path
) -> None:
    config = get_config("tiny_s4").with_overrides(OVERRIDES)
    options = TrainOptions(
        s4_root,
        tmp_path,
        progress=False,
        log_every_steps=1,
        val_split="",
        save_every_steps=0,
        max_steps=1,
    )
    trainer = Trainer(config, options)

    # The training data is normalised with the backbone's statistics.
    dataset = trainer.train_set
    assert dataset.pixel_norm == PixelNorm(TEST_MEAN, TEST_STD)
    files = dataset.video_files(0)
    expected = _normalised(files.frames[0], TEST_MEAN, TEST_STD)
    np.testing.assert_allclose(dataset[0].frames[0].numpy(), expected, rtol=0, atol=1e-5)

    before = trainer.model.backbone.stem.weight.detach().clone()
    result = trainer.fit()
    assert result.steps == 1
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == 1 and np.isfinite(losses[0])
    assert not torch.equal(trainer.model.backbone.stem.weight.detach(), before)

    # The saved run records the backbone and loads strictly into a model built from it.
    contents = read_checkpoint(tmp_path / "last.safetensors")
    assert contents.config is not None and contents.config.model.backbone == "test_pyramid"
    assert "backbone.down2.weight" in contents.state_dict
    report = load_checkpoint(build_model(contents.config), tmp_path / "last.safetensors")
    assert report.layout == "model" and not report.missing and not report.unexpected


def test_the_predictor_normalises_with_the_backbones_statistics(s4_root: Path) -> None:
    model = build_model(get_config("tiny_s4").with_overrides(OVERRIDES))
    predictor = Predictor(model, device="cpu", optimize=False)
    assert predictor.pixel_norm == PixelNorm(TEST_MEAN, TEST_STD)
    path = next((s4_root / "s4_data" / "visual_frames" / "test").rglob("*.png"))
    frame = np.asarray(Image.open(path).convert("RGB"))
    sample = Sample(0, 0.0, 0.0, frame, 0.0, np.zeros(15600, np.float32), 0.0)
    frames, _ = predictor.prepare([sample])
    expected = _normalised(path, TEST_MEAN, TEST_STD)
    np.testing.assert_allclose(frames[0].numpy(), expected, rtol=0, atol=1e-5)
    # A built-in backbone keeps ImageNet's statistics.
    imagenet = Predictor(build_model("tiny_s4"), device="cpu", optimize=False)
    assert imagenet.pixel_norm == PixelNorm((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_an_unknown_backbone_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown backbone 'nope'; known: res50, .*pvt_v2_b5"):
        build_model("tiny_s4", overrides=["backbone=nope"], device="meta")


def test_recorded_channels_are_checked_and_an_empty_record_takes_the_backbones() -> None:
    with pytest.raises(ConfigError, match=r"produces channels \(8, 16, 24\)"):
        build_model("tiny_s4", overrides=[*OVERRIDES, "in_channels=8,16,32"], device="meta")
    model = build_model("res50_s4", overrides=["in_channels="], device="meta")
    assert [proj[0].in_channels for proj in model.head.in_proj] == [256, 512, 1024, 2048]


def test_a_backbones_key_filter_maps_its_own_weight_files(tmp_path: Path) -> None:
    def is_pyramid_file(keys) -> bool:
        return "pyramid.stem.weight" in keys

    def strip_prefix(state, own_keys) -> MappedWeights:
        mapped = {k.removeprefix("pyramid."): v for k, v in state.items()}
        ignored = sorted(k for k in state if not k.startswith("pyramid."))
        return MappedWeights({k: v for k, v in mapped.items() if k in own_keys}, ignored)

    register_backbone(
        "test_pyramid_files",
        build=lambda cfg: TinyPyramid(),
        channels=(8, 16, 24),
        strides=(4, 8, 16),
        checkpoint_filter=strip_prefix,
        pretrained_layout="pyramid_file",
        recognises=is_pyramid_file,
    )
    try:
        torch.manual_seed(1)
        source = TinyPyramid()
        state = {f"pyramid.{k}": v for k, v in source.state_dict().items()}
        state["classifier.weight"] = torch.randn(10, 24)
        path = tmp_path / "pyramid.pth"
        torch.save(state, path)
        overrides = [*OVERRIDES, "backbone=test_pyramid_files"]
        model = build_model("tiny_s4", overrides=overrides)
        report = load_checkpoint(model, path, expect_target="backbone")
        assert (report.layout, report.target, report.loaded) == ("pyramid_file", "backbone", 6)
        assert report.ignored == ["classifier.weight"]
        assert torch.equal(model.backbone.down2.weight, source.down2.weight)
    finally:
        unregister_backbone("test_pyramid_files")


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_returns_the_levels_it_declares(name: str) -> None:
    config = get_config("tiny_s4").with_overrides({"model.backbone": name}).model
    spec = get_backbone(name)
    channels, strides = spec.channels_for(config), spec.strides_for(config)
    torch.manual_seed(0)
    backbone = build_backbone(config).eval()
    with torch.no_grad():
        levels = backbone(torch.randn(2, 3, 64, 96))
    assert len(levels) == len(channels) == len(strides)
    for level, width, stride in zip(levels, channels, strides, strict=True):
        assert tuple(level.shape) == (2, width, 64 // stride, 96 // stride)
    assert len(spec.pixel_mean) == len(spec.pixel_std) == 3
