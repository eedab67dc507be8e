"""Extending the project: a new task, backbone or audio encoder is one new file plus one
registry call, and trains end to end (the README's "how to add ..." section)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from avsegformer.data import build_dataset
from avsegformer.engine.evaluator import evaluate
from avsegformer.engine.trainer import Trainer, TrainOptions
from avsegformer.errors import ConfigError, DataError
from avsegformer.modeling.build import build_model
from avsegformer.tasks import get_task, iter_tasks, register_task, task_names
from avsegformer.zoo import get_config
from datasets import make_ms3_dataset
from example_task import FIRST_FRAME_MS3

FAST = ["img_size=64", "num_workers=0", "batch_size=2", "eval_batch_size=2", "dropout=0"]


@pytest.fixture(scope="module")
def ms3_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ms3_dataset(tmp_path_factory.mktemp("ms3"), videos_per_split=2, size=64, seed=5)


def test_a_new_task_is_registered_by_its_file() -> None:
    assert "ms3_first" in task_names() and get_task("ms3_first") is FIRST_FRAME_MS3
    with pytest.raises(ConfigError, match="already registered"):
        register_task(dataclasses.replace(FIRST_FRAME_MS3, title="another"))
    # An unknown name says which ones exist, as a configuration and a data error alike.
    with pytest.raises(ConfigError, match="ms3_first") as raised:
        get_task("ms3_second")
    assert isinstance(raised.value, DataError)


def test_a_new_task_trains_and_is_scored_on_its_own_frames(ms3_root: Path, tmp_path: Path) -> None:
    config = get_config("tiny_ms3").with_overrides([*FAST, "data.task=ms3_first"])
    options = TrainOptions(
        ms3_root, tmp_path / "run", progress=False, val_split="", max_steps=1, save_every_steps=0
    )
    trainer = Trainer(config, options)
    assert trainer.task is FIRST_FRAME_MS3
    result = trainer.fit()
    assert result.steps == 1

    dataset = build_dataset("ms3_first", ms3_root, "test", img_size=64)
    model = build_model(config)
    scores = evaluate(model, dataset, task="ms3_first", batch_size=2, progress=False)
    # One scored frame per clip; plain MS3 scores all five of the same clips.
    assert scores.num_frames == len(dataset)
    plain = evaluate(model, dataset, task="ms3", batch_size=2, progress=False)
    assert plain.num_frames == 5 * len(dataset)


def test_an_unknown_task_in_a_config_is_a_clear_error(ms3_root: Path, tmp_path: Path) -> None:
    config = get_config("tiny_ms3").with_overrides([*FAST, "data.task=ms4"])
    with pytest.raises(ConfigError, match="unknown task 'ms4'; use one of s4, ms3, avss"):
        Trainer(config, TrainOptions(ms3_root, tmp_path / "run", progress=False))


@pytest.mark.parametrize("task", list(iter_tasks()), ids=lambda t: t.name)
def test_every_registered_task_is_complete(task) -> None:
    """Whatever registers a task gives it what the trainer, evaluator and checker ask."""
    assert task.num_classes >= 1 and task.frames_per_clip >= 1
    assert task.reader.layout.metadata_file and task.reader.layout.folders
    loss = task.loss()
    metric = task.metric()
    assert metric is not None and loss.kind == ("binary" if task.binary else "semantic")


def test_a_new_task_backbone_and_audio_encoder_train_together(
    ms3_root: Path, tmp_path: Path
) -> None:
    """The three extension points at once: each added in its own file, none edited."""
    from test_audio_frontend import RawWaveEncoder  # registers "test_raw_waveform"
    from test_backbone_registry import TinyPyramid  # registers "test_pyramid"

    config = get_config("tiny_ms3").with_overrides(
        [
            *FAST,
            "data.task=ms3_first",
            "backbone=test_pyramid",
            "num_levels=2",
            "audio_encoder=test_raw_waveform",
            "freeze_audio=false",
            "lr=1e-3",
            "warmup_steps=0",
        ]
    )
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def record(trainer: Trainer) -> None:
        model = trainer.model
        seen["after"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    options = TrainOptions(
        ms3_root, tmp_path / "run", progress=False, val_split="", max_steps=1,
        save_every_steps=0, on_step_end=record,
    )  # fmt: skip
    trainer = Trainer(config, options)
    assert trainer.task is FIRST_FRAME_MS3
    assert isinstance(trainer.model.backbone, TinyPyramid)
    assert isinstance(trainer.model.vggish, RawWaveEncoder)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.fit().steps == 1
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], seen["after"][k])}
    assert {"backbone", "vggish", "head"} <= changed
