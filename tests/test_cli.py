"""One command-line vocabulary: option names, units, what gets written, messages, progress.

Through ``avsegformer.cli.main([...])`` (or a subprocess where the output must not be a
terminal), on tiny generated datasets.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avsegformer import __version__
from avsegformer.checkpoint import read_checkpoint, save_checkpoint
from avsegformer.cli import build_parser
from avsegformer.cli import main as cli
from avsegformer.modeling.build import build_model
from avsegformer.progress import progress_bar
from avsegformer.zoo import get_config
from datasets import make_s4_dataset

FAST = ["img_size=64", "num_workers=0", "batch_size=2", "eval_batch_size=2"]


@pytest.fixture(scope="module")
def s4_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_s4_dataset(tmp_path_factory.mktemp("s4"), videos_per_split=2, size=64, seed=5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = get_config("tiny_s4").with_overrides(FAST)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(build_model(config), folder / "tiny.safetensors", config=config)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"avsegformer {__version__}"


def test_test_takes_the_configuration_the_checkpoint_records(
    s4_root: Path,
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    code = cli(["test", "--checkpoint", str(checkpoint), "--data-root", str(s4_root),
                "--no-progress", "--num-workers", "0"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("tiny_s4 | s4 test")
    # mIoU and F as fractions (the one unit), and nothing written unasked.
    (line,) = [x for x in out.splitlines() if "mIoU" in x]
    miou, fscore = float(line.split()[1]), float(line.split()[3])
    assert 0.0 <= miou <= 1.0 and 0.0 <= fscore <= 1.0 and len(line.split()[1]) == 6
    assert list(tmp_path.iterdir()) == []
    assert "--num-workers is deprecated: use --workers" in caplog.text
    # --json PATH writes the file; --json alone prints JSON (the table goes to stderr).
    code = cli(["test", "--checkpoint", str(checkpoint), "--data-root", str(s4_root),
                "--no-progress", "--workers", "0", "--json", "result.json"])  # fmt: skip
    written = json.loads((tmp_path / "result.json").read_text())
    assert code == 0 and round(written["miou"], 4) == miou
    capsys.readouterr()
    code = cli(["test", "--checkpoint", str(checkpoint), "--data-root", str(s4_root),
                "--no-progress", "--workers", "0", "--json"])  # fmt: skip
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert code == 0 and round(printed["fscore"], 4) == fscore and "mIoU" in captured.err


def test_test_asks_for_the_configuration_when_the_file_has_none(
    s4_root: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "authors_style.pth"
    torch.save(read_checkpoint(checkpoint).state_dict, bare)
    code = cli(["test", "--checkpoint", str(bare), "--data-root", str(s4_root), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "does not record its configuration: name it" in err


def test_the_one_vocabulary_parses_everywhere() -> None:
    parse = build_parser().parse_args
    for command in (["test", "tiny_s4", "--checkpoint", "c", "--data-root", "d"],
                    ["predict", "v.mp4", "--checkpoint", "c"],
                    ["train", "tiny_s4", "--data-root", "d"]):  # fmt: skip
        for spelling in ("bf16", "bfloat16"):
            assert parse([*command, "--precision", spelling]).precision == "bf16"
    bench = parse(["bench", "--precision", "fp32", "bf16"])
    assert bench.precision == ["fp32", "bf16"]
    assert parse(["bench", "--dtypes", "float32"]).precision == ["fp32"]
    assert parse(["bench", "--output", "b.json"]).json == "b.json"
    assert parse(["bench", "--json", "b.json"]).json == "b.json"
    for command in (["test", "tiny_s4", "--checkpoint", "c", "--data-root", "d"],
                    ["synth", "--task", "s4", "--out", "o"],
                    ["train", "tiny_s4", "--data-root", "d"]):  # fmt: skip
        assert parse([*command, "--workers", "3"]).workers == 3
    assert (
        parse(["test", "--checkpoint", "c", "--data-root", "d", "--num-workers", "1"]).workers == 1
    )
    assert parse(["data-check", "root", "--task", "s4", "--json"]).json == "-"
    assert parse(["data-check", "root", "--task", "s4", "--json", "r.json"]).json == "r.json"


def test_train_sets_the_workers_of_the_configuration(s4_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = cli(["train", "tiny_s4", "--data-root", str(s4_root), "--out", str(out),
                "--no-progress", "--val-split", "", "--max-steps", "1", "--workers", "0",
                "--precision", "fp32", "--set", *FAST[:1], "batch_size=2"])  # fmt: skip
    assert code == 0
    recorded = json.loads((out / "config.json").read_text())["train"]
    assert recorded["num_workers"] == 0 and recorded["precision"] == "fp32"
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 1 and summary["epochs"] == 1  # epochs count from 1


def test_data_check_json_file(s4_root: Path, tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    code = cli(["data-check", str(s4_root), "--task", "s4", "--json", str(report),
                "--no-progress"])  # fmt: skip
    assert code == 0 and json.loads(report.read_text())["task"] == "s4"
    assert "report written to" in capsys.readouterr().out


def test_mismatch_errors_show_the_fix_first_and_the_keys_with_v(
    s4_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    avss = get_config("tiny_avss").with_overrides(FAST)
    other = tmp_path / "avss.pth"  # no configuration recorded: the keys must tell
    torch.save(build_model(avss).state_dict(), other)
    args = ["test", "tiny_s4", "--checkpoint", str(other), "--data-root", str(s4_root),
            "--no-progress", "--workers", "0"]  # fmt: skip
    assert cli(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "does not fit the model: the file holds" in line and "71 class(es)" in line
    assert "name the configuration the checkpoint was trained as" in line
    assert line.endswith("(details: add -v)") and "head.fc.4.weight" not in line
    assert cli(["-v", *args]) == 2
    assert "shape mismatch (1): head.fc.4.weight" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Progress


def test_progress_without_a_terminal_is_plain_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="avsegformer.progress")
    with progress_bar(4, "epoch 1/2", "step", terminal=False, interval=0) as bar:
        for _ in range(4):
            bar.update(loss="0.5")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("epoch 1/2: 1/4 steps (25%)") and "loss 0.5" in lines[0]
    assert lines[-1].startswith("epoch 1/2: 4/4 steps (100%)")
    assert not any("\r" in line for line in lines)
    caplog.clear()
    with progress_bar(4, "quiet", "step", terminal=False, enabled=False) as bar:
        bar.update(4)
    assert caplog.records == []


def test_progress_on_a_terminal_is_a_bar() -> None:
    with progress_bar(3, "videos", "video", terminal=True) as bar:
        assert bar._bar is not None  # tqdm draws it
        bar.update(3)


def test_redirected_command_output_has_no_carriage_returns(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "avsegformer.cli", "synth", "--task", "s4", "--out",
         str(tmp_path / "synth"), "--videos", "4", "--size", "64"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\r" not in done.stdout
    assert "wrote 4 synthetic S4 videos" in done.stdout
