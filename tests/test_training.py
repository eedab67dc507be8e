"""Training and evaluation end to end on tiny generated datasets (official layouts).

Covers: a few steps lower the loss; resume after a crash ends with the same weights as
an uninterrupted run; two processes (gloo, torchrun) equal one process over the same
global batch; evaluation writes the official mask files; bad inputs give clear errors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from avsegformer.checkpoint import read_checkpoint, save_checkpoint
from avsegformer.cli import main as cli
from avsegformer.data import build_dataset
from avsegformer.data.classes import avss_palette
from avsegformer.engine.evaluator import AudioSubstitution
from avsegformer.engine.trainer import Trainer, TrainOptions
from avsegformer.modeling.build import build_model
from avsegformer.zoo import get_config
from datasets import make_avss_dataset, make_s4_dataset

# Small and fast: 64x64 frames, no data-loading workers, no dropout noise.
FAST = [
    "img_size=64",
    "num_workers=0",
    "batch_size=2",
    "eval_batch_size=2",
    "lr=1e-3",
    "dropout=0",
    "drop_path_rate=0",
]


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_s4_dataset(tmp_path_factory.mktemp("s4"), videos_per_split=4, size=64, seed=3)


@pytest.fixture(scope="module")
def avss_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_avss_dataset(
        tmp_path_factory.mktemp("avss"), videos_per_split=1, frame_size=(96, 64), seed=4
    )


def _config(name: str, *extra: str):
    return get_config(name).with_overrides([*FAST, *extra])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path).state_dict


def test_a_few_steps_lower_the_loss(s4_root: Path, tmp_path: Path) -> None:
    config = _config("tiny_s4", "epochs=8", "freeze_backbone_epochs=0")
    options = TrainOptions(
        s4_root, tmp_path, progress=False, log_every_steps=1, val_split="", save_every_steps=0
    )
    result = Trainer(config, options).fit()
    losses = [r["loss"] for r in json.loads(_jsonl(tmp_path / "log.jsonl")) if r["kind"] == "train"]
    assert result.steps == len(losses) == 16
    first, last = np.mean(losses[:4]), np.mean(losses[-4:])
    assert last < 0.8 * first, f"loss did not go down: {first:.4f} -> {last:.4f}"
    for name in ("config.json", "log.csv", "curves.png", "last.safetensors"):
        assert (tmp_path / name).is_file(), name


def _jsonl(path: Path) -> str:
    return "[" + ",".join(line for line in path.read_text().splitlines() if line) + "]"


class _Crash(RuntimeError):
    pass


def test_resume_after_a_crash_equals_an_uninterrupted_run(s4_root: Path, tmp_path: Path) -> None:
    # Frozen backbone in epoch 0, unfrozen in epoch 1 (a DDP re-wrap point), dropout on.
    config = _config("tiny_s4", "epochs=2", "freeze_backbone_epochs=1", "dropout=0.1")
    straight = TrainOptions(s4_root, tmp_path / "a", progress=False, save_every_steps=1)
    Trainer(config, straight).fit()

    def crash_at_step_3(trainer: Trainer) -> None:
        if trainer.progress.global_step == 3:
            raise _Crash

    crashed = TrainOptions(
        s4_root, tmp_path / "b", progress=False, save_every_steps=1, on_step_end=crash_at_step_3
    )
    with pytest.raises(_Crash):
        Trainer(config, crashed).fit()
    resumed = TrainOptions(s4_root, tmp_path / "b", progress=False, save_every_steps=1, resume=True)
    result = Trainer(config, resumed).fit()
    assert result.steps == 4

    a, b = (
        _weights(tmp_path / "a" / "last.safetensors"),
        _weights(tmp_path / "b" / "last.safetensors"),
    )
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_a = [r for r in json.loads(_jsonl(tmp_path / "a" / "log.jsonl")) if r["kind"] == "train"]
    log_b = [r for r in json.loads(_jsonl(tmp_path / "b" / "log.jsonl")) if r["kind"] == "train"]
    assert [r["step"] for r in log_a] == [r["step"] for r in log_b]
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(s4_root: Path, tmp_path: Path) -> None:
    # BN on running statistics (torch has no CPU SyncBatchNorm) and no dropout: then
    # the only difference between 1 and 2 processes is how the global batch is split.
    common = [
        "train", "tiny_s4", "--data-root", str(s4_root), "--val-split", "", "--max-steps", "3",
        "--no-progress", "--set", *FAST, "batch_size=4", "freeze_backbone_epochs=0",
        "freeze_bn=true", "epochs=3",
    ]  # fmt: skip
    assert cli([*common, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", "-m", "avsegformer.cli",
        *common, "--out", str(tmp_path / "two"),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (
        _weights(tmp_path / "one" / "last.safetensors"),
        _weights(tmp_path / "two" / "last.safetensors"),
    )
    meta = read_checkpoint(tmp_path / "two" / "last.safetensors").metadata
    assert meta["world_size"] == 2 and meta["progress"]["global_step"] == 3
    changed = 0
    for key, value in one.items():
        if key.startswith("extra.rank"):
            continue  # per-process RNG states differ by design
        expected, actual = value, two[key]
        if key.endswith("attn.in_proj_bias"):
            # The key bias has a zero gradient in exact arithmetic (softmax ignores a
            # constant shift); Adam scales its rounding noise up to full steps.
            width = value.shape[0] // 3
            expected, actual = (
                value[[*range(width), *range(2 * width, 3 * width)]],
                actual[[*range(width), *range(2 * width, 3 * width)]],
            )
        # Model weights and the optimizer's moments alike.
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5, msg=key)
        if not key.startswith("extra."):
            changed += int(not torch.equal(value, build_reference_init(key)))
    assert changed > 10  # the comparison is not between two untouched models


_INIT: dict[str, torch.Tensor] = {}


def build_reference_init(key: str) -> torch.Tensor:
    """The untrained weights (same seed as the trainer) to prove training changed them."""
    if not _INIT:
        torch.manual_seed(get_config("tiny_s4").train.seed)
        _INIT.update(build_model(_config("tiny_s4")).state_dict())
    return _INIT[key]


def test_evaluation_is_batch_size_independent_and_writes_official_masks(
    s4_root: Path, tmp_path: Path
) -> None:
    config = _config("tiny_s4")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model(config), tmp_path / "w.safetensors", config=config)
    results = []
    for batch_size in (1, 3):
        out = tmp_path / f"r{batch_size}.json"
        masks = tmp_path / f"masks{batch_size}"
        args = ["test", "tiny_s4", "--checkpoint", str(checkpoint), "--data-root", str(s4_root),
                "--set", *FAST, "--batch-size", str(batch_size), "--json", str(out),
                "--save-masks", str(masks), "--no-progress", "--num-workers", "0"]  # fmt: skip
        assert cli(args) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["miou"] == results[1]["miou"]
    assert results[0]["fscore"] == results[1]["fscore"]
    assert results[0]["num_videos"] == 4 and results[0]["num_frames"] == 20

    dataset = build_dataset("s4", s4_root, "test", img_size=64)
    for index in range(len(dataset)):
        files = dataset.video_files(index)
        entry = dataset.entries[index]
        folder = tmp_path / "masks1" / entry.category / entry.video_id
        names = sorted(p.name for p in folder.iterdir())
        assert names == [f"{entry.video_id}_{i}.png" for i in range(5)], files
        with Image.open(folder / names[0]) as image:
            assert image.mode == "P" and image.size == (64, 64)
            assert set(np.unique(np.asarray(image)).tolist()) <= {0, 255}


def test_evaluation_under_torchrun_equals_one_process(s4_root: Path, tmp_path: Path) -> None:
    config = _config("tiny_s4")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model(config), tmp_path / "w.safetensors", config=config)
    common = ["test", "tiny_s4", "--checkpoint", str(checkpoint), "--data-root", str(s4_root),
              "--set", *FAST, "--no-progress", "--num-workers", "0"]  # fmt: skip
    assert cli([*common, "--json", str(tmp_path / "one.json")]) == 0
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", "-m", "avsegformer.cli",
        *common, "--json", str(tmp_path / "two.json"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert two["num_videos"] == one["num_videos"] == 4 and two["num_frames"] == 20
    assert math.isclose(two["miou"], one["miou"], rel_tol=1e-5)
    assert math.isclose(two["fscore"], one["fscore"], rel_tol=1e-5)


def test_test_command_uses_the_checkpoints_recorded_settings(s4_root: Path, tmp_path: Path) -> None:
    # Trained at img_size=96 (not the registered default): tested at 96 without --set;
    # an explicit override still wins.
    config = _config("tiny_s4", "img_size=96")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model(config), tmp_path / "w.safetensors", config=config)
    base = ["test", "tiny_s4", "--checkpoint", str(checkpoint), "--data-root", str(s4_root),
            "--no-progress", "--num-workers", "0"]  # fmt: skip
    for extra, side in (([], 96), (["--set", "img_size=64"], 64)):
        masks = tmp_path / f"m{side}"
        json_path = tmp_path / f"r{side}.json"  # not the default, in the working directory
        assert cli([*base, "--save-masks", str(masks), "--json", str(json_path), *extra]) == 0
        with Image.open(next(masks.rglob("*.png"))) as image:
            assert image.size == (side, side)


def test_avss_evaluation_writes_palette_masks(avss_root: Path, tmp_path: Path) -> None:
    config = _config("tiny_avss")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_model(config), tmp_path / "w.safetensors", config=config)
    out = tmp_path / "r.json"
    args = ["test", "tiny_avss", "--checkpoint", str(checkpoint), "--data-root", str(avss_root),
            "--set", *FAST, "--json", str(out), "--save-masks", str(tmp_path / "m"),
            "--no-progress", "--num-workers", "0"]  # fmt: skip
    assert cli(args) == 0
    result = json.loads(out.read_text())
    assert len(result["per_class"]) == 71 and result["num_frames"] == 10 * result["num_videos"]
    palette = {tuple(c) for c in avss_palette().tolist()}
    uids = [p.name for p in (tmp_path / "m").iterdir()]
    assert len(uids) == result["num_videos"]
    for uid in uids:
        files = sorted((tmp_path / "m" / uid).iterdir())
        assert [f.name for f in files] == sorted(f"{uid}_{i}.png" for i in range(10))
        with Image.open(files[0]) as image:
            assert image.mode == "RGB" and image.size == (360, 240)
            colours = {tuple(c) for c in np.asarray(image).reshape(-1, 3).tolist()}
        assert colours <= palette


def test_shuffled_audio_feeds_another_clips_audio(s4_root: Path) -> None:
    dataset = build_dataset("s4", s4_root, "test", img_size=64)
    shuffled = AudioSubstitution(dataset, "shuffled", seed=1)
    donors = shuffled.donor
    assert sorted(donors.tolist()) == list(range(len(dataset)))
    for index in range(len(dataset)):
        assert donors[index] != index
        _, sample = shuffled[index]
        assert torch.equal(sample.audio, dataset.load_audio(int(donors[index])))
        assert not torch.equal(sample.audio, dataset.load_audio(index))


def test_bad_inputs_give_one_line_errors(
    s4_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-root"
    code = cli(["train", "tiny_s4", "--data-root", str(missing), "--out", str(tmp_path / "o"),
                "--no-progress", "--set", *FAST])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    # A checkpoint of another configuration (71 classes) given to a 1-class one.
    avss = _config("tiny_avss")
    other = save_checkpoint(build_model(avss), tmp_path / "avss.safetensors", config=avss)
    code = cli(["test", "tiny_s4", "--checkpoint", str(other), "--data-root", str(s4_root),
                "--no-progress", "--set", *FAST])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "tiny_avss" in err and "Traceback" not in err

    # Unknown override key, resume without a run.
    assert cli(["train", "tiny_s4", "--data-root", str(s4_root), "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    code = cli(["train", "tiny_s4", "--data-root", str(s4_root), "--out", str(tmp_path / "x"),
                "--resume", "--set", *FAST])  # fmt: skip
    assert code == 2 and "nothing to resume" in capsys.readouterr().err


# ------------------------------------------------------------------ schedules
SCHEDULE = [*FAST, "scheduler=cosine", "warmup_steps=1", "freeze_backbone_epochs=0"]


def _train_log(run: Path) -> list[dict]:
    return [r for r in json.loads(_jsonl(run / "log.jsonl")) if r["kind"] == "train"]


def _train(s4_root: Path, out: Path, *extra: str) -> int:
    return cli(["train", "tiny_s4", "--data-root", str(s4_root), "--out", str(out),
                "--no-progress", "--val-split", "", *extra])  # fmt: skip


def test_max_steps_ends_where_it_says(s4_root: Path, tmp_path: Path) -> None:
    """2 steps per epoch here: --max-steps runs exactly that many, over as many epochs."""
    longer = _config("tiny_s4", *SCHEDULE[len(FAST) :], "epochs=1")  # 2 steps by epochs
    options = TrainOptions(s4_root, tmp_path / "a", progress=False, val_split="",
                           log_every_steps=1, save_every_steps=0, max_steps=5)  # fmt: skip
    result = Trainer(longer, options).fit()
    assert result.steps == result.total_steps == 5 and result.epochs == 3
    log = _train_log(tmp_path / "a")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert [r["epoch"] for r in log] == [1, 1, 2, 2, 3]  # numbered from 1
    lrs = [r["lr"] for r in log]  # each step's: warm-up, then a cosine ending after step 5
    assert lrs[0] == lrs[1] == 1e-3 and all(
        a > b > 0 for a, b in zip(lrs[1:], lrs[2:], strict=False)
    )
    # Shorter than the configuration's epochs: the schedule ends at max_steps too.
    shorter = _config("tiny_s4", *SCHEDULE[len(FAST) :], "epochs=8")
    options = dataclasses.replace(options, out_dir=tmp_path / "b", max_steps=3)
    result = Trainer(shorter, options).fit()
    assert result.steps == result.total_steps == 3
    summary = json.loads((tmp_path / "b" / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["total_steps"] == 3


def test_resume_with_a_longer_schedule_keeps_training(
    s4_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="avsegformer")
    out = tmp_path / "run"
    assert _train(s4_root, out, "--set", *SCHEDULE, "epochs=2") == 0  # 4 steps
    before = _weights(out / "last.safetensors")
    # The same run again: finished, nothing trained, says so.
    caplog.clear()
    assert _train(s4_root, out, "--resume", "--set", *SCHEDULE, "epochs=2") == 0
    assert "is finished (step 4 of 4)" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in _weights(out / "last.safetensors").items())
    # Longer: the schedule is recomputed for the new end, the weights keep moving.
    caplog.clear()
    assert _train(s4_root, out, "--resume", "--set", *SCHEDULE, "epochs=4") == 0
    assert "schedule changed by epochs=4 (was 2): it now ends at step 8 instead of 4" in caplog.text
    log = _train_log(out)  # a line at the end of each epoch (2 steps)
    assert [r["step"] for r in log] == [2, 4, 6, 8]
    assert all(r["lr"] > 0 for r in log if r["step"] > 4)
    after = _weights(out / "last.safetensors")
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("head.") for k in moved), "the weights did not change"
    # --max-steps moves the end of a resumed run too.
    assert (
        _train(s4_root, out, "--resume", "--max-steps", "10", "--set", *SCHEDULE, "epochs=4") == 0
    )
    assert [r["step"] for r in _train_log(out)] == [2, 4, 6, 8, 10]
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 10


def test_a_zero_learning_rate_is_reported_loudly(
    s4_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="avsegformer.engine.trainer"):
        assert _train(s4_root, tmp_path / "z", "--set", *FAST, "lr=0", "epochs=2") == 0
    assert "the learning rate was 0 for every step of epoch 1 (steps 1-2)" in caplog.text
    assert "the trained weights did not change from step 2 to step 4" in caplog.text


def test_warm_up_longer_than_the_run_is_reported(
    s4_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="avsegformer.engine.trainer"):
        assert _train(s4_root, tmp_path / "w", "--max-steps", "2", "--set", *FAST,
                      "warmup_steps=20") == 0  # fmt: skip
    assert "the warm-up (20 steps) is as long as the whole run (2 steps)" in caplog.text
