"""``avsegformer data-check`` and :func:`avsegformer.data.check_dataset`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avsegformer.cli import main
from avsegformer.data import check_dataset
from datasets import make_avss_dataset, make_ms3_dataset, make_s4_dataset


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["data-check", *args, "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_complete_s4_tree_passes(tmp_path, capsys):
    make_s4_dataset(tmp_path, videos_per_split=2)
    code, out, _ = run_cli(capsys, str(tmp_path), "--task", "s4", "--deep")
    assert code == 0
    assert out.strip().endswith("OK")
    report = check_dataset(tmp_path, "s4", progress=False)
    train, val, _ = report.splits
    assert report.ok and train.videos == 2
    assert (train.frames.found, train.frames.expected) == (10, 10)
    assert (train.masks.found, train.masks.expected) == (2, 2)  # train: first frame only
    assert (val.masks.found, val.masks.expected) == (10, 10)
    assert (val.audio.found, val.log_mel_files, val.wav_files) == (2, 2, 2)


def test_complete_ms3_and_avss_trees_pass(tmp_path, capsys):
    make_ms3_dataset(tmp_path, videos_per_split=1)
    make_avss_dataset(tmp_path, videos_per_split=1)
    assert run_cli(capsys, str(tmp_path / "Multi-sources"), "--task", "ms3", "--deep")[0] == 0
    code, out, _ = run_cli(capsys, str(tmp_path), "--task", "avss", "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["root"] == str(tmp_path / "AVSS")
    train = data["splits"][0]
    # v1s 5 frames / 1 mask, v1m 5 / 5, v2 10 / 10
    assert (train["frames"]["expected"], train["masks"]["expected"]) == (20, 16)


@pytest.fixture()
def broken_s4(tmp_path) -> tuple[Path, dict[str, Path]]:
    root = make_s4_dataset(tmp_path, videos_per_split=2)
    data = root / "s4_data"
    frame = sorted((data / "visual_frames/test").rglob("*_3.png"))[0]
    frame.unlink()
    truncated = sorted((data / "gt_masks/val").rglob("*_2.png"))[0]
    truncated.write_bytes(truncated.read_bytes()[:150])
    pkl = sorted((data / "audio_log_mel/train").rglob("*.pkl"))[0]
    pkl.unlink()
    wav = data / "audio_wav" / pkl.relative_to(data / "audio_log_mel").with_suffix(".wav")
    wav.unlink()
    return tmp_path, {"frame": frame, "truncated": truncated, "pkl": pkl, "root": root}


def test_broken_tree_fails_and_names_what_is_missing(broken_s4, capsys):
    parent, paths = broken_s4
    code, out, _ = run_cli(capsys, str(parent), "--task", "s4")
    assert code == 1
    assert "PROBLEMS FOUND" in out
    assert str(paths["frame"].relative_to(paths["root"])) in out
    assert str(paths["pkl"].relative_to(paths["root"])) in out
    # Existence only without --deep: the truncated mask is not noticed.
    assert "unreadable" not in out


def test_deep_check_finds_truncated_files(broken_s4, capsys):
    parent, paths = broken_s4
    code, out, _ = run_cli(capsys, str(parent), "--task", "s4", "--deep", "--json")
    data = json.loads(out)
    assert code == 1 and not data["ok"]
    by_split = {s["split"]: s for s in data["splits"]}
    assert by_split["val"]["unreadable_count"] == 1
    assert str(paths["truncated"].relative_to(paths["root"])) in by_split["val"]["unreadable"][0]
    assert (by_split["test"]["frames"]["found"], by_split["test"]["frames"]["expected"]) == (9, 10)
    assert by_split["train"]["audio"] == {"found": 1, "expected": 2}
    assert by_split["train"]["missing_count"] == 1


def test_split_option_and_listing_limit(broken_s4, capsys):
    parent, _ = broken_s4
    code, out, _ = run_cli(capsys, str(parent), "--task", "s4", "--split", "val", "--json")
    data = json.loads(out)
    assert code == 0 and [s["split"] for s in data["splits"]] == ["val"]
    report = check_dataset(parent, "s4", max_listed=0, progress=False)
    assert not report.ok and report.splits[2].missing == [] and report.splits[2].missing_count == 1


def test_wrong_root_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, str(tmp_path), "--task", "ms3")
    assert code == 2
    assert (
        "ms3_meta_data.csv" in err and "Multi-sources" in err and len(err.strip().splitlines()) == 1
    )
