"""``avsegformer data-check`` and :func:`avsegformer.data.check_dataset`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avsegformer.cli import main
from avsegformer.data import check_dataset
from avsegformer.data.safe_pickle import load_tensor_pickle, write_logmel_pkl
from datasets import make_avss_dataset, make_ms3_dataset, make_s4_dataset, read_csv, write_csv


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


# ------------------------------------------- bad data: reported, never "OK"
@pytest.fixture()
def small_s4(tmp_path) -> Path:
    """One clip in val and one in test (frames 224x224 as released)."""
    return make_s4_dataset(tmp_path, videos_per_split=1, splits=("val", "test"), seed=3)


def deep_json(capsys, root: Path, task: str = "s4", *more: str) -> tuple[int, dict]:
    code, out, _ = run_cli(capsys, str(root), "--task", task, "--deep", "--json", *more)
    return code, json.loads(out)


def test_deep_check_reports_a_nan_log_mel(small_s4, capsys):
    # It used to say OK, and `test` then gave a wrong mIoU with exit 0.
    pkl = sorted((small_s4 / "s4_data/audio_log_mel/val").rglob("*.pkl"))[0]
    examples = load_tensor_pickle(pkl).detach().clone()
    examples[0, 0, 0, :4] = float("nan")
    write_logmel_pkl(pkl, examples)
    code, data = deep_json(capsys, small_s4, "s4", "--split", "val", "test")
    assert code == 1 and not data["ok"]
    val = data["splits"][0]
    assert val["unreadable_count"] == 1
    assert str(pkl.relative_to(small_s4)) in val["unreadable"][0]
    assert "NaN or infinite" in val["unreadable"][0]
    assert data["splits"][1]["ok"]


def test_csv_unknown_split_and_duplicate_rows_are_reported(small_s4, capsys):
    csv_path = small_s4 / "s4_meta_data.csv"
    header, val_row, test_row = read_csv(csv_path)
    write_csv(csv_path, [header, val_row, [*test_row[:3], "Test"], val_row])
    code, out, _ = run_cli(capsys, str(small_s4), "--task", "s4")
    assert code == 1 and "PROBLEMS FOUND" in out
    assert "s4_meta_data.csv: 2 bad rows" in out
    assert "line 3: split 'Test'" in out and "line 4:" in out and "first on line 2" in out
    report = check_dataset(small_s4, "s4", progress=False)
    by_split = {s.split: s for s in report.splits}
    assert by_split["val"].videos == 1  # the repeated row is not counted twice
    assert by_split["val"].frames.expected == 5
    assert by_split["test"].videos == 0 and not by_split["test"].ok  # was "test 0 0/0 OK"
    assert "test: s4_meta_data.csv lists no clip for this split" in out


def test_csv_without_category_column_is_one_line(small_s4, capsys):
    # It used to report 140 missing files at wrong paths.
    csv_path = small_s4 / "s4_meta_data.csv"
    write_csv(csv_path, [[row[0], row[1], row[3]] for row in read_csv(csv_path)])
    code, out, err = run_cli(capsys, str(small_s4), "--task", "s4")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert str(csv_path) in err and "no column 'category'" in err
    assert "columns found: name, offset, split" in err


def test_requested_split_without_clips_is_a_problem(small_s4, capsys):
    code, data = deep_json(capsys, small_s4, "s4", "--split", "train")
    assert code == 1 and not data["ok"] and data["splits"][0]["videos"] == 0


def test_wrong_size_frame_and_mask_are_reported(small_s4, capsys):
    data_dir = small_s4 / "s4_data"
    frame = sorted((data_dir / "visual_frames/val").rglob("*_2.png"))[0]
    Image.open(frame).resize((112, 112)).save(frame)
    mask = sorted((data_dir / "gt_masks/test").rglob("*_4.png"))[0]
    Image.open(mask).resize((448, 448), Image.Resampling.NEAREST).save(mask)
    code, data = deep_json(capsys, small_s4)
    assert code == 1
    by_split = {s["split"]: s for s in data["splits"]}
    assert str(frame.relative_to(small_s4)) in by_split["val"]["unreadable"][0]
    assert "112x112" in by_split["val"]["unreadable"][0]
    assert str(mask.relative_to(small_s4)) in by_split["test"]["unreadable"][0]
    assert "448x448" in by_split["test"]["unreadable"][0]


def test_frames_of_another_common_size_are_a_note_not_an_error(tmp_path, capsys):
    root = make_s4_dataset(tmp_path, videos_per_split=1, splits=("val",), size=48)
    code, out, _ = run_cli(capsys, str(root), "--task", "s4", "--deep", "--split", "val")
    assert code == 0 and out.strip().endswith("OK")
    assert "val: note: 1 clips have frames of another size than the release's 224x224" in out
    assert "48x48: 1" in out


def test_grey_s4_mask_is_an_error_with_count_and_name(small_s4, capsys):
    mask = sorted((small_s4 / "s4_data/gt_masks/val").rglob("*_3.png"))[0]
    grey = np.asarray(Image.open(mask).convert("L")).copy()
    grey[:4, :5] = 128  # 20 grey pixels
    Image.fromarray(grey).save(mask)
    code, out, _ = run_cli(capsys, str(small_s4), "--task", "s4", "--deep")
    assert code == 1 and "PROBLEMS FOUND" in out and "warning" not in out
    assert "val: 1 masks not pure black/white" in out
    assert f"{mask.relative_to(small_s4)}: 20 pixels" in out


def test_off_palette_avss_mask_is_an_error_with_count_and_name(tmp_path, capsys):
    root = make_avss_dataset(tmp_path, subsets=("v1m",), splits=("val",), frame_size=(224, 224))
    mask = sorted((root / "v1m").rglob("labels_rgb/1.png"))[0]
    rgb = np.array(Image.open(mask).convert("RGB"))
    rgb[:3, :3] = (1, 2, 3)
    Image.fromarray(rgb).save(mask)
    code, data = deep_json(capsys, root, "avss", "--split", "val")
    assert code == 1 and not data["ok"]
    split = data["splits"][0]
    assert split["irregular_masks"] == 1
    assert split["irregular_mask_files"] == [f"{mask.relative_to(root)}: 9 pixels"]


@pytest.mark.parametrize("with_pkl", [False, True])
def test_empty_wav_is_an_empty_audio_file_listed_once(tmp_path, capsys, with_pkl):
    audio = ("pkl", "wav") if with_pkl else ("wav",)
    root = make_s4_dataset(tmp_path, videos_per_split=1, splits=("val",), audio=audio)
    wav = sorted((root / "s4_data/audio_wav/val").rglob("*.wav"))[0]
    wav.write_bytes(b"")
    code, data = deep_json(capsys, root, "s4", "--split", "val")
    assert code == 1
    split = data["splits"][0]
    assert split["unreadable_count"] == 1
    assert str(wav.relative_to(root)) in split["unreadable"][0]
    assert "empty audio file" in split["unreadable"][0]
    assert "video" not in split["unreadable"][0]
