"""``avsegformer predict``: outputs, their shapes and timing, overlays in sync, bad inputs.

Videos are made with PyAV by ``tests/videos.py`` (content encodes the frame index;
tones start at known times). Models are tiny with random weights (``tiny_checkpoint``),
or a stub whose mask follows the sound, to check what the overlay shows and when.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from avsegformer.cli import build_parser
from avsegformer.cli import main as cli
from avsegformer.commands.predict import output_names, process_video
from avsegformer.data.classes import avss_palette
from avsegformer.modeling.avsegformer import AVSegFormerOutput
from avsegformer.predictor import Predictor
from avsegformer.zoo import get_config
from test_predictor import tiny_checkpoint
from videos import (
    decode_index,
    make_empty_file,
    make_text_file,
    make_truncated,
    make_video,
)


def _probe(path: Path) -> dict:
    """Frame count, rate, size and audio of a file, read with raw PyAV."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        fps, size = float(video.average_rate), (video.width, video.height)
        indices = [decode_index(f.to_ndarray(format="rgb24")) for f in container.decode(video)]
    with av.open(str(path)) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        rate = channels = seconds = None
        if audio is not None:
            rate, channels = audio.rate, audio.channels
            seconds = sum(frame.samples for frame in container.decode(audio)) / rate
    return {
        "frames": len(indices),
        "indices": indices,
        "fps": fps,
        "size": size,
        "audio_rate": rate,
        "audio_channels": channels,
        "audio_seconds": seconds,
    }


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict_cli")
    videos = root / "videos"
    videos.mkdir()
    good_h264 = make_video(
        videos / "h264_25.mp4", 3.0, 25, (161, 121), "stereo", 44100, "h264", ((1.0, 440.0),)
    )
    good_mpeg4 = make_video(
        videos / "mpeg4_30.mp4", 2.5, 30, (160, 120), "mono", 48000, "mpeg4", ((1.0, 880.0),)
    )
    no_audio = make_video(root / "no_audio.mp4", 2.0, 25, (96, 64), None)
    long = make_video(root / "long.mp4", 4.0, 25, (96, 64), faststart=True)
    truncated = make_truncated(long, root / "truncated.mp4", keep=0.5)
    codec_source = make_video(root / "codec_source.mkv", 2.0, 25, (96, 64), codec="mpeg4")
    unreadable = root / "unknown_codec.mkv"  # a codec id FFmpeg has no decoder for
    unreadable.write_bytes(
        codec_source.read_bytes().replace(b"V_MPEG4/ISO/ASP", b"V_QQQQQ/ISO/ASP")
    )
    return {
        "h264": good_h264,
        "mpeg4": good_mpeg4,
        "no_audio": no_audio,
        "truncated": truncated,
        "text": make_text_file(root / "notes.txt"),
        "empty": make_empty_file(root / "empty.mp4"),
        "missing": root / "missing.mp4",
        "unreadable": unreadable,
        "checkpoint": tiny_checkpoint(root / "tiny_s4.safetensors", img_size=64),
        "checkpoint_avss": tiny_checkpoint(root / "tiny_avss.safetensors", "avss", img_size=64),
    }


def _predict(*args: str | Path) -> int:
    return cli(["predict", *map(str, args), "--no-progress"])


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("avsegformer predict: error:")]


# ---------------------------------------------------------------------------------------
# Outputs


def test_outputs_have_the_source_resolution_frames_and_sound(
    media: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = _predict(
        media["h264"], media["mpeg4"], "--checkpoint", media["checkpoint"], "--out", out
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["h264_25", "mpeg4_30"]
    expected = {"h264_25": (3, (161, 121), 25), "mpeg4_30": (3, (160, 120), 30)}
    digest = hashlib.sha256(media["checkpoint"].read_bytes()).hexdigest()
    for name, (num_samples, size, rate) in expected.items():
        folder = out / name
        source = media["h264" if name == "h264_25" else "mpeg4"]
        # masks/: one binary PNG per sampled frame, at the source resolution
        masks = sorted((folder / "masks").iterdir())
        assert [m.name for m in masks] == [f"{k:06d}.png" for k in range(num_samples)]
        for mask_path in masks:
            with Image.open(mask_path) as image:
                assert image.size == size and image.mode == "P"
                assert set(np.unique(np.asarray(image))) <= {0, 255}
        # overlay.mp4: every source frame, in order, at the source rate, with the sound
        src, overlay = _probe(source), _probe(folder / "overlay.mp4")
        assert overlay["frames"] == src["frames"] and overlay["indices"] == src["indices"]
        assert overlay["fps"] == pytest.approx(rate, rel=1e-3)
        assert overlay["size"] == (size[0] + size[0] % 2, size[1] + size[1] % 2)  # yuv420p
        assert overlay["audio_rate"] == src["audio_rate"]
        assert overlay["audio_channels"] == src["audio_channels"]
        assert overlay["audio_seconds"] == pytest.approx(src["audio_seconds"], abs=0.05)
        # summary.json
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["input"] == str(source)
        assert summary["model"]["name"].startswith("tiny_s4")
        assert summary["checkpoint"]["sha256"] == digest
        assert (summary["fps"], summary["dtype"], summary["device"]) == (1.0, "float32", "cpu")
        assert summary["silent_audio"] is False
        assert (summary["video"]["width"], summary["video"]["height"]) == size
        assert summary["video"]["fps"] == pytest.approx(rate)
        assert summary["video"]["audio"]["sample_rate"] == src["audio_rate"]
        assert len(summary["frames"]) == summary["num_samples"] == num_samples
        for k, frame in enumerate(summary["frames"]):
            assert frame["index"] == k and frame["mask"] == f"masks/{k:06d}.png"
            assert frame["time"] == pytest.approx(k + 15 / 16)
            # AVSBench's frame index, clamped to the last frame (a partial last period)
            index = min(int(k * rate + 15 / 16 * rate), src["frames"] - 1)
            assert frame["frame_time"] == pytest.approx(index / rate, abs=1e-5)
            assert frame["audio_window"] == pytest.approx([k, k + 0.975])
            assert 0 <= frame["area_fraction"] <= 1
            with Image.open(folder / frame["mask"]) as image:
                covered = np.count_nonzero(np.asarray(image)) / (size[0] * size[1])
            assert frame["area_fraction"] == pytest.approx(covered, abs=1e-6)
            assert sum(c["pixels"] for c in frame["classes"]) == round(covered * size[0] * size[1])
        # the last period of the 2.5-s video is half empty: its window is half padding
        if name == "mpeg4_30":
            assert summary["frames"][2]["audio_padding"] == pytest.approx(0.475)
        timings = summary["timings"]
        for key in ("total_s", "decode_s", "preprocess_s", "model_s", "write_s"):
            assert timings[key] > 0, key
        assert timings["samples"] == num_samples
        assert timings["total_s"] >= timings["model_s"] + timings["write_s"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


class SoundGatedStub(nn.Module):
    """Binary 'model' whose mask covers the whole frame iff its audio is not silence."""

    def __init__(self) -> None:
        super().__init__()
        self.config = get_config("res50_s4").with_overrides(["img_size=32"])
        self.num_classes = 1

    def forward(self, frames: torch.Tensor, audio: torch.Tensor) -> AVSegFormerOutput:
        loud = audio.flatten(1).mean(1) > -4.0  # silence is -4.605 everywhere
        logits = torch.where(loud, 10.0, -10.0).view(-1, 1, 1, 1).expand(-1, 1, 32, 32)
        return AVSegFormerOutput(logits, logits)


def test_each_overlay_frame_shows_the_mask_of_its_period(
    media: dict[str, Path], tmp_path: Path
) -> None:
    """The tone starts at 1 s: frames 0-24 (period 0) stay clean, frames 25-74 turn red."""
    predictor = Predictor(SoundGatedStub(), device="cpu")
    summary = process_video(predictor, media["h264"], tmp_path / "gated")
    assert [f["area_fraction"] for f in summary["frames"]] == [0.0, 1.0, 1.0]
    with av.open(str(tmp_path / "gated" / "overlay.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 75
    # The grey band at the bottom (RGB 40, 40, 40) shows the blend clearly.
    band = np.array([f[-10:, :, :].reshape(-1, 3).mean(0) for f in frames])
    red = band[:, 0] - band[:, 1]
    assert (red[:25] < 10).all(), red[:25]
    assert (red[25:] > 60).all(), red[25:]


def test_semantic_models_write_palette_masks(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = _predict(
        media["mpeg4"], "--checkpoint", media["checkpoint_avss"], "--out", out, "--fps", "2"
    )
    assert code == 0
    summary = json.loads((out / "mpeg4_30" / "summary.json").read_text())
    assert summary["model"]["task"] == "avss" and summary["num_samples"] == 5
    palette = {tuple(c) for c in avss_palette()}
    for k in range(5):
        with Image.open(out / "mpeg4_30" / "masks" / f"{k:06d}.png") as image:
            assert image.mode == "RGB" and image.size == (160, 120)
            colours = {tuple(c) for c in np.asarray(image).reshape(-1, 3)}
        assert colours <= palette
        names = {c["name"] for c in summary["frames"][k]["classes"]}
        assert all(name != "background" for name in names)
    assert _probe(out / "mpeg4_30" / "overlay.mp4")["frames"] == 75


def test_no_overlay_and_two_samples_per_second(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--checkpoint", media["checkpoint"], "--out", out, "--fps", "2", "--no-overlay"]
    assert _predict(media["h264"], *args) == 0
    folder = out / "h264_25"
    assert sorted(p.name for p in folder.iterdir()) == ["masks", "summary.json"]
    summary = json.loads((folder / "summary.json").read_text())
    assert [f["time"] for f in summary["frames"]] == pytest.approx(
        [(k + 15 / 16) / 2 for k in range(6)]
    )
    assert [f["audio_window"][0] for f in summary["frames"]] == pytest.approx(
        [k / 2 for k in range(6)]
    )
    assert len(list((folder / "masks").iterdir())) == 6


# ---------------------------------------------------------------------------------------
# Bad inputs


def test_each_bad_input_fails_alone_on_one_line(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    bad = ["no_audio", "truncated", "text", "empty", "missing", "unreadable"]
    inputs = [media["h264"], *(media[name] for name in bad), media["mpeg4"]]
    capsys.readouterr()
    code = _predict(*inputs, "--checkpoint", media["checkpoint"], "--out", out)
    stderr = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in stderr
    errors = _error_lines(stderr)
    assert len(errors) == len(bad), stderr
    causes = {
        "no_audio": "no audio stream",
        "truncated": "truncated",
        "text": "not a video",
        "empty": "zero-length",
        "missing": "no such file",
        "unreadable": "codec cannot be decoded",
    }
    for name in bad:
        (line,) = [e for e in errors if media[name].name in e]
        assert causes[name] in line, line
    # The good inputs, before and after the bad ones, are complete; nothing else is left.
    assert sorted(p.name for p in out.iterdir()) == ["h264_25", "mpeg4_30"]
    for name in ("h264_25", "mpeg4_30"):
        assert (out / name / "overlay.mp4").is_file() and (out / name / "summary.json").is_file()


def test_allow_silent_proceeds_with_silence(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = _predict(
        media["no_audio"], "--checkpoint", media["checkpoint"], "--out", out, "--allow-silent"
    )
    assert code == 0
    summary = json.loads((out / "no_audio" / "summary.json").read_text())
    assert summary["silent_audio"] is True and "silence" in summary["audio_note"]
    assert summary["video"]["audio"] is None and summary["num_samples"] == 2
    overlay = _probe(out / "no_audio" / "overlay.mp4")
    assert overlay["frames"] == 50 and overlay["audio_rate"] is None


def test_existing_output_is_refused_unless_overwrite(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [media["h264"], "--checkpoint", media["checkpoint"], "--out", out, "--no-overlay"]
    assert _predict(*args) == 0
    folder = out / "h264_25"
    first = json.loads((folder / "summary.json").read_text())
    (folder / "keep.txt").write_text("mine")  # the user's notes beside the results
    (folder / "masks" / "notes.txt").write_text("mine too")
    capsys.readouterr()
    assert _predict(*args) != 0
    (line,) = _error_lines(capsys.readouterr().err)
    assert "h264_25" in line and "--overwrite" in line and "complete result" in line
    assert json.loads((folder / "summary.json").read_text()) == first
    # --overwrite replaces what predict wrote, and only that.
    assert _predict(*args, "--overwrite") == 0
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt", "masks", "summary.json"]
    assert (folder / "masks" / "notes.txt").read_text() == "mine too"
    assert sorted(p.name for p in out.iterdir()) == ["h264_25"]


def test_overwrite_never_writes_into_a_folder_predict_did_not_make(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sweep's case: --overwrite deleted unrelated files the user kept there."""
    out = tmp_path / "out"
    (out / "h264_25").mkdir(parents=True)
    (out / "h264_25" / "keep.txt").write_text("mine")
    args = [media["h264"], "--checkpoint", media["checkpoint"], "--out", out, "--no-overlay"]
    for extra in ([], ["--overwrite"]):
        capsys.readouterr()
        assert _predict(*args, *extra) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert "h264_25" in line and "not an avsegformer predict output" in line
        assert sorted(p.name for p in (out / "h264_25").iterdir()) == ["keep.txt"]


def test_directories_are_searched_and_repeated_stems_get_their_own_folders(
    media: dict[str, Path], tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "b" / "deeper").mkdir(parents=True)
    shutil.copy(media["mpeg4"], tree / "a" / "clip.mp4")
    shutil.copy(media["mpeg4"], tree / "b" / "deeper" / "clip.MOV")
    (tree / "b" / "readme.txt").write_text("not a video, and not picked up")
    out = tmp_path / "out"
    args = ["--checkpoint", media["checkpoint"], "--out", out, "--no-overlay"]
    assert _predict(tree, *args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip", "clip-2"]
    inputs = {
        json.loads((out / n / "summary.json").read_text())["input"] for n in ("clip", "clip-2")
    }
    assert inputs == {str(tree / "a" / "clip.mp4"), str(tree / "b" / "deeper" / "clip.MOV")}
    assert output_names([Path("x/a.mp4"), Path("y/a.mkv"), Path("a-2.mp4"), Path("z/a.ts")]) == [
        "a",
        "a-2",
        "a-2-2",
        "a-3",
    ]


def test_a_foreign_pth_checkpoint_needs_model(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Like the authors' ``S4_res50_best.pth``: a bare state dict, configuration by name."""
    from avsegformer.checkpoint import read_checkpoint

    pth = tmp_path / "weights.pth"
    torch.save(read_checkpoint(media["checkpoint"]).state_dict, pth)
    out = tmp_path / "out"
    args = [media["mpeg4"], "--checkpoint", pth, "--out", out, "--no-overlay"]
    capsys.readouterr()
    assert _predict(*args) == 2
    err = capsys.readouterr().err
    assert "weights.pth" in err and "--model NAME" in err and "Traceback" not in err
    assert _predict(*args, "--model", "tiny_s4") == 0
    summary = json.loads((out / "mpeg4_30" / "summary.json").read_text())
    # No configuration in the file: the registered one, with its frame size.
    expected_size = get_config("tiny_s4").data.img_size
    assert summary["model"]["name"] == "tiny_s4" and summary["model"]["img_size"] == expected_size
    assert summary["checkpoint"]["path"] == str(pth)


def test_help_states_the_time_convention() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    text = subparsers.choices["predict"].format_help()
    assert "(k + 15/16)/f" in text and "k/f" in text and "silence" in text
    for option in ("--checkpoint", "--model", "--fps", "--allow-silent", "--overwrite", "--alpha"):
        assert option in text


# ---------------------------------------------------------------------------------------
# Several processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_splits_the_inputs_between_processes(
    media: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [media["h264"], media["mpeg4"], media["no_audio"]]
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", "-m", "avsegformer.cli", "predict",
        *map(str, inputs), "--checkpoint", str(media["checkpoint"]), "--out", str(out),
        "--no-overlay", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    # Rank 0 takes inputs 0 and 2; the silent video fails there, yet rank 1 completes.
    assert result.returncode != 0
    assert "no_audio.mp4: no audio stream" in result.stderr
    ranks = {
        name: json.loads((out / name / "summary.json").read_text())["process"]
        for name in ("h264_25", "mpeg4_30")
    }
    assert ranks == {
        "h264_25": {"rank": 0, "world_size": 2},
        "mpeg4_30": {"rank": 1, "world_size": 2},
    }
    assert sorted(p.name for p in out.iterdir()) == ["h264_25", "mpeg4_30"]
    # Rank 0 reports the whole run (failures gathered from every rank).
    assert "2 of 3 input(s) done" in result.stdout and "1 failed" in result.stdout


# ---------------------------------------------------------------------------------------
# One vocabulary, inputs checked first, messages in the right terms


def test_missing_inputs_fail_before_the_model_loads(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog
) -> None:
    caplog.set_level("INFO", logger="avsegformer")
    out = tmp_path / "out"
    code = _predict(media["missing"], tmp_path / "nope.mp4", "--checkpoint",
                    media["checkpoint"], "--out", out)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "nothing to do" in err and "no such file" in err
    assert "loaded" not in caplog.text  # the checkpoint was never read
    assert not out.exists()
    # One good input among bad ones: the bad one is reported before the model loads.
    caplog.clear()
    code = _predict(media["missing"], media["mpeg4"], "--checkpoint", media["checkpoint"],
                    "--out", out, "--no-overlay")  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert "1 of 2 input(s) done (results in" in captured.out
    assert sum("missing.mp4" in line for line in _error_lines(captured.err)) == 1
    assert "loaded" in caplog.text  # what the first call would have logged had it loaded


def test_nothing_done_does_not_claim_a_folder(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _predict(media["no_audio"], "--checkpoint", media["checkpoint"], "--out", out) == 2
    captured = capsys.readouterr()
    assert "0 of 1 input(s) done; 1 failed" in captured.out and str(out) not in captured.out
    # The command line's words for the fix, not the API's (allow_silent=True).
    assert "--allow-silent" in captured.err and "allow_silent=True" not in captured.err


def test_precision_and_frames_per_batch_with_their_old_spellings(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog
) -> None:
    parse = build_parser().parse_args
    new = parse(["predict", "x.mp4", "--checkpoint", "c", "--precision", "bf16",
                 "--frames-per-batch", "3"])  # fmt: skip
    old = parse(["predict", "x.mp4", "--checkpoint", "c", "--dtype", "bfloat16",
                 "--batch-size", "3"])  # fmt: skip
    assert (new.precision, new.frames_per_batch) == (old.precision, old.frames_per_batch)
    assert (new.precision, new.frames_per_batch) == ("bf16", 3)
    with pytest.raises(SystemExit):
        parse(["predict", "x.mp4", "--checkpoint", "c", "--precision", "half"])
    out = tmp_path / "out"
    code = _predict(media["mpeg4"], "--checkpoint", media["checkpoint"], "--out", out,
                    "--no-overlay", "--dtype", "float32", "--batch-size", "2")  # fmt: skip
    assert code == 0
    assert "--dtype is deprecated: use --precision" in caplog.text
    assert "--batch-size is deprecated: use --frames-per-batch" in caplog.text
    summary = json.loads((out / "mpeg4_30" / "summary.json").read_text())
    assert summary["dtype"] == "float32" and summary["batch_size"] == 2


def test_a_model_name_that_contradicts_the_checkpoint_says_the_fix(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _predict(media["mpeg4"], "--checkpoint", media["checkpoint"], "--out", tmp_path,
                    "--model", "res50_s4")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "holds a 'tiny_s4' model, not a 'res50_s4' one" in line
    assert "drop --model: the checkpoint records tiny_s4" in line and "name=" not in line
