"""Training and evaluation never give a silent wrong result, lose work or print a traceback.

The cases of the fault sweep (issue 14): NaN training, an existing run folder, bad clips
(also in DataLoader workers), unwritable outputs, bad ``--set`` values, a resume on other
data, a full disk. Tiny configuration, 64x64 generated clips, a few steps each.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from avsegformer.checkpoint import read_checkpoint, save_checkpoint
from avsegformer.cli import main as cli
from avsegformer.engine import trainer as trainer_module
from avsegformer.engine.trainer import Trainer, TrainOptions
from avsegformer.modeling.build import build_model
from avsegformer.zoo import get_config
from datasets import make_s4_dataset

FAST = ["img_size=64", "num_workers=0", "batch_size=2", "eval_batch_size=2", "lr=1e-3",
        "dropout=0", "drop_path_rate=0", "freeze_backbone_epochs=0", "warmup_steps=0"]  # fmt: skip
READ_ONLY = "/sys/avsegformer-test"  # EACCES even for root


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_s4_dataset(tmp_path_factory.mktemp("s4"), videos_per_split=4, size=64, seed=5)


@pytest.fixture
def bad_root(s4_root: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A copy of the dataset with frame 1 of one train clip and one test clip damaged;
    returns (root, train clip name, test clip name)."""
    root = tmp_path / "bad" / "Single-source"
    shutil.copytree(s4_root, root)
    names = {}
    for split in ("train", "test"):
        frame = sorted((root / "s4_data" / "visual_frames" / split).glob("*/*/*_1.png"))[0]
        frame.write_bytes(b"not a png at all")
        names[split] = frame.parent.name
    return root, names["train"], names["test"]


def _train(root: Path, out: Path, *extra: str) -> int:
    return cli(["train", "tiny_s4", "--data-root", str(root), "--out", str(out),
                "--no-progress", *extra])  # fmt: skip


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _strict_json_lines(path: Path) -> list[dict]:
    """Every line parsed as standard JSON (a bare NaN/Infinity fails)."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{path}: {name} is not valid JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _checkpoint(tmp_path: Path) -> Path:
    config = get_config("tiny_s4").with_overrides(FAST)
    torch.manual_seed(0)
    return save_checkpoint(build_model(config), tmp_path / "w.safetensors", config=config)


# ---------------------------------------------------------------------- NaN training
def test_nan_training_stops_and_keeps_the_last_good_checkpoint(
    s4_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert _train(s4_root, out, "--max-steps", "2", "--set", *FAST) == 0
    last, best = _digest(out / "last.safetensors"), _digest(out / "best.safetensors")
    capsys.readouterr()
    code = _train(s4_root, out, "--resume", "--max-steps", "8", "--set", *FAST, "lr=1e6")
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert "training stopped at step" in line and "(epoch" in line
    assert "the loss is nan" in line or "the gradient norm is" in line or "weight tensors" in line
    assert "(step 2) is kept" in line and "nonfinite=skip" in line
    # Nothing non-finite replaced the good checkpoints.
    assert _digest(out / "last.safetensors") == last
    assert _digest(out / "best.safetensors") == best
    weights = read_checkpoint(out / "last.safetensors").state_dict
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    records = _strict_json_lines(out / "log.jsonl")
    assert records[-1]["kind"] == "stopped"
    summary = json.loads((out / "train_summary.json").read_text(), parse_constant=_refuse)
    assert summary["status"] == "stopped" and summary["last_checkpoint_step"] == 2


def _refuse(name: str) -> None:
    raise AssertionError(f"{name} in JSON")


def test_a_nan_model_is_never_scored(s4_root: Path, tmp_path: Path) -> None:
    config = get_config("tiny_s4").with_overrides(FAST)
    model = build_model(config)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    from avsegformer.data import build_dataset
    from avsegformer.engine.evaluator import evaluate
    from avsegformer.errors import NonFiniteError

    dataset = build_dataset("s4", s4_root, "val", img_size=64)
    with pytest.raises(NonFiniteError, match="NaN or infinite"):
        evaluate(model, dataset, task="s4", progress=False)


def test_skip_policy_skips_and_counts_non_finite_steps(s4_root: Path, tmp_path: Path) -> None:
    config = get_config("tiny_s4").with_overrides([*FAST, "nonfinite=skip", "epochs=2"])
    options = TrainOptions(s4_root, tmp_path, progress=False, val_split="", log_every_steps=1)
    trainer = Trainer(config, options)
    criterion = trainer.criterion

    def nan_at_step_2(*args, **kwargs):
        loss, parts = criterion(*args, **kwargs)
        if trainer.progress.global_step == 1:  # the second step
            loss = loss * float("nan")
        return loss, parts

    trainer.criterion = nan_at_step_2  # type: ignore[assignment]
    result = trainer.fit()
    assert result.steps == 4 and result.nonfinite_skipped_steps == 1
    records = _strict_json_lines(tmp_path / "log.jsonl")
    skipped = [r for r in records if r.get("skipped_steps")]
    assert [r["step"] for r in skipped] == [2] and skipped[0]["loss"] is None
    summary = json.loads((tmp_path / "train_summary.json").read_text(), parse_constant=_refuse)
    assert summary["nonfinite_skipped_steps"] == 1
    weights = read_checkpoint(tmp_path / "last.safetensors").state_dict
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_skipping_stops_after_a_streak_of_non_finite_steps(
    s4_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from avsegformer.errors import NonFiniteError

    monkeypatch.setattr(trainer_module, "MAX_CONSECUTIVE_NONFINITE", 3)
    config = get_config("tiny_s4").with_overrides([*FAST, "nonfinite=skip", "epochs=4"])
    trainer = Trainer(config, TrainOptions(s4_root, tmp_path, progress=False, val_split=""))
    criterion = trainer.criterion

    def always_inf(*args, **kwargs):
        loss, parts = criterion(*args, **kwargs)
        return loss * float("inf"), parts

    trainer.criterion = always_inf  # type: ignore[assignment]
    with pytest.raises(NonFiniteError, match="3 non-finite steps in a row"):
        trainer.fit()


def test_gradient_scaler_overflows_are_skipped_and_counted(s4_root: Path, tmp_path: Path) -> None:
    # float16 autocast needs CUDA; the scaler's overflow handling is the same on CPU: a
    # scale so large that the scaled gradients overflow (the loss itself stays finite).
    config = get_config("tiny_s4").with_overrides(FAST)
    options = TrainOptions(s4_root, tmp_path, progress=False, val_split="", max_steps=3)
    trainer = Trainer(config, options)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    criterion = trainer.criterion

    def large_loss(*args, **kwargs):
        loss, parts = criterion(*args, **kwargs)
        return loss * 1e6, parts

    trainer.criterion = large_loss  # type: ignore[assignment]
    result = trainer.fit()  # the default policy "stop" does not stop on overflows
    assert result.steps == 3
    assert result.overflow_skipped_steps == 3 and result.nonfinite_skipped_steps == 0
    assert trainer.scaler.get_scale() == 2.0**124  # halved at each overflow
    summary = json.loads((tmp_path / "train_summary.json").read_text(), parse_constant=_refuse)
    assert summary["overflow_skipped_steps"] == 3


# ------------------------------------------------------------------ the run folder
def test_an_existing_run_needs_resume_or_overwrite(
    s4_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    common = ["--max-steps", "1", "--val-split", "", "--set", *FAST]
    assert _train(s4_root, out, *common) == 0
    before = _digest(out / "last.safetensors")
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    capsys.readouterr()
    assert _train(s4_root, out, *common) == 2
    line = _one_line(capsys.readouterr().err)
    assert "holds a training run" in line and "--resume" in line and "--overwrite" in line
    assert _digest(out / "last.safetensors") == before

    # A stale temporary of a killed save (dead pid) is swept; the user's files stay.
    stale = out / ".last.safetensors.tmp-999999999-0123abcd"
    stale.write_bytes(b"half a checkpoint")
    assert _train(s4_root, out, *common, "--overwrite", "--set", "seed=7") == 0
    assert not stale.exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine").is_dir()
    assert _digest(out / "last.safetensors") != before
    assert len(_strict_json_lines(out / "log.jsonl")) == 1  # the new run's only

    a_file = tmp_path / "file"
    a_file.write_text("x")
    capsys.readouterr()
    assert _train(s4_root, a_file, *common) == 2
    assert "is a file, not a folder" in _one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------ bad clips
@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_bad_clip_is_one_line_also_from_a_worker(
    bad_root: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    workers: str,
) -> None:  # fmt: skip
    root, train_clip, test_clip = bad_root
    code = _train(root, tmp_path / "run", "--workers", workers, "--max-steps", "4",
                  "--val-split", "", "--set", *FAST[1:], "img_size=64")  # fmt: skip
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and f"{train_clip}_1.png" in line and "--skip-bad-clips" in line
    assert "Caught" not in line and "worker" not in line

    code = cli(["test", "tiny_s4", "--checkpoint", str(_checkpoint(tmp_path)), "--data-root",
                str(root), "--no-progress", "--workers", workers, "--set", *FAST])  # fmt: skip
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and f"{test_clip}_1.png" in line and "--skip-bad-clips" in line


def test_skip_bad_clips_goes_on_and_lists_them(
    bad_root: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    root, train_clip, test_clip = bad_root
    result = tmp_path / "r.json"
    code = cli(["test", "tiny_s4", "--checkpoint", str(_checkpoint(tmp_path)), "--data-root",
                str(root), "--no-progress", "--workers", "1", "--skip-bad-clips",
                "--json", str(result), "--set", *FAST])  # fmt: skip
    assert code == 1
    scores = json.loads(result.read_text())
    assert scores["num_videos"] == 3
    assert [r["video_id"] for r in scores["skipped_clips"]] == [test_clip]
    assert f"{test_clip}_1.png" in scores["skipped_clips"][0]["reason"]
    assert "SKIPPED 1 clip" in capsys.readouterr().out

    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        code = _train(root, out, "--skip-bad-clips", "--max-steps", "4", "--val-split", "",
                      "--set", *FAST)  # fmt: skip
    assert code == 1
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 4
    assert [r["video_id"] for r in summary["skipped_clips"]] == [train_clip]
    assert summary["skipped_clips"][0]["times"] == 2  # met in both epochs
    assert "1 clip skipped in training" in caplog.text


def test_a_nan_in_a_data_file_is_a_bad_clip_not_a_diverged_run(
    s4_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A NaN log-mel file is a data fault (NonFiniteDataError: both a DataError and a
    # NonFiniteError): reported as the file, skippable, never as a non-finite loss.
    from avsegformer.data import S4Dataset
    from avsegformer.data.safe_pickle import load_tensor_pickle, write_logmel_pkl

    root = tmp_path / "nan" / "Single-source"
    shutil.copytree(s4_root, root)
    dataset = S4Dataset(root, "test", img_size=64)
    pkl = dataset.video_files(0).log_mel
    poisoned = load_tensor_pickle(pkl).detach().clone()
    poisoned[1, 0, 3, 3] = float("nan")
    write_logmel_pkl(pkl, poisoned)
    args = ["test", "tiny_s4", "--checkpoint", str(_checkpoint(tmp_path)), "--data-root",
            str(root), "--no-progress", "--workers", "1", "--set", *FAST]  # fmt: skip
    assert cli(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert pkl.name in line and "NaN or infinite" in line and "--skip-bad-clips" in line
    result = tmp_path / "r.json"
    assert cli([*args, "--skip-bad-clips", "--json", str(result)]) == 1
    (skipped,) = json.loads(result.read_text())["skipped_clips"]
    assert skipped["video_id"] == pkl.stem and "NaN or infinite" in skipped["reason"]


# -------------------------------------------------------------- unwritable outputs
def test_unwritable_outputs_are_refused_before_the_work(
    s4_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from avsegformer.engine import evaluator

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated although the output cannot be written")

    monkeypatch.setattr(evaluator, "evaluate", no_evaluation)
    base = ["test", "tiny_s4", "--checkpoint", str(_checkpoint(tmp_path)), "--data-root",
            str(s4_root), "--no-progress", "--workers", "0", "--set", *FAST]  # fmt: skip
    for extra in (["--json", f"{READ_ONLY}/out.json"], ["--save-masks", f"{READ_ONLY}/m"]):
        assert cli([*base, *extra]) == 2
        assert READ_ONLY in _one_line(capsys.readouterr().err)
    monkeypatch.setattr(Trainer, "fit", no_evaluation)
    assert _train(s4_root, Path(READ_ONLY) / "run", "--set", *FAST) == 2
    assert "cannot be written" in _one_line(capsys.readouterr().err)


# ----------------------------------------------------------------- --set values
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("batch_size=0", "train.batch_size=0 is out of range; it must be >= 1"),
        ("lr=nan", "train.lr=nan is not a finite number"),
        ("lr=-1", "train.lr=-1 is out of range; it must be >= 0"),
        ("epochs=-1", "train.epochs=-1 is out of range"),
        ("epochs=0", "train.epochs=0 is out of range"),
        ("dropout=1.5", "model.dropout=1.5 is out of range; it must be in [0, 1)"),
        ("eval_every=0", "train.eval_every=0"),
        ("num_workers=-2", "train.num_workers=-2"),
    ],
)
def test_bad_set_values_are_refused_before_reading_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, expected: str
) -> None:
    missing = tmp_path / "no-data"  # an error about the data would come later
    assert _train(missing, tmp_path / "o", "--set", value) == 2
    assert expected in _one_line(capsys.readouterr().err)


# ------------------------------------------------------------ resume on other data
def test_resume_on_another_data_root_is_reported(
    s4_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    common = ["--val-split", "", "--set", *FAST]
    assert _train(s4_root, out, "--max-steps", "1", *common) == 0
    other = make_s4_dataset(tmp_path / "other", videos_per_split=2, size=64, seed=9)
    with caplog.at_level(logging.WARNING):
        assert _train(other, out, "--resume", "--max-steps", "2", *common) == 0
    assert f"--data-root {other.resolve()}" in caplog.text
    assert f"trained on {s4_root.resolve()}" in caplog.text
    assert "training clips: 2 now, 4 recorded" in caplog.text


# ------------------------------------------------------------------- disk full
def test_disk_full_during_a_save_is_one_line_and_keeps_the_last_checkpoint(
    s4_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    out = tmp_path / "run"
    saves = []
    real_save = trainer_module.save_checkpoint

    def second_save_fails(*args, **kwargs):
        saves.append(args[1])
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", second_save_fails)
    code = _train(s4_root, out, "--max-steps", "3", "--save-every", "1", "--val-split", "",
                  "--set", *FAST)  # fmt: skip
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and "No space left on device" in line
    assert read_checkpoint(out / "last.safetensors").metadata["progress"]["global_step"] == 1
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]


def test_safetensors_disk_full_becomes_an_os_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    def full(*args, **kwargs):
        raise RuntimeError("Error while serializing: I/O error: No space left (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(OSError) as caught:
        save_checkpoint({"w": torch.zeros(2)}, tmp_path / "x.safetensors")
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
