"""``avsegformer predict`` under faults: nothing lost, nothing half-written, one line per error.

The cases come from a sweep of fault cases (issue 14): a sparse video whose overlay
FFmpeg refused after all the work ("Not yet implemented in FFmpeg, patches welcome", every
mask discarded), 8-channel sound crashing the overlay writer, SIGTERM leaving a hidden
temporary folder, ``--fps nan`` tracebacks, ``--out`` pointing at a file. Videos are tiny
and generated (``tests/videos.py``); the model is the shipped demo checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import avsegformer
from avsegformer.cli import main as cli
from avsegformer.commands.predict import process_video
from avsegformer.data import video as video_module
from avsegformer.data.video import VideoWriter, read_audio_track
from avsegformer.errors import CorruptVideoError, VideoError
from avsegformer.predictor import Predictor
from videos import make_video

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "demo_tiny_s4.safetensors"


def _predict(*args: str | Path) -> int:
    return cli(["predict", *map(str, args), "--checkpoint", str(CHECKPOINT), "--no-progress"])


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


def _hidden(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*")]


def _frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("faults") / "clip.mp4", 2.0, 25, (96, 64))


# ---------------------------------------------------------------------------------------
# The overlay is one output among several


def test_a_failing_overlay_keeps_the_masks_and_the_summary(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, caplog
) -> None:
    def broken(self, image, t=None):
        raise VideoError(f"{self.path}: cannot write the video: Not yet implemented in FFmpeg")

    monkeypatch.setattr(VideoWriter, "write_frame", broken)
    out = tmp_path / "out"
    code = _predict(clip, "--out", out)
    captured = capsys.readouterr()
    # Done, but not everything asked for: a distinct exit status and a loud warning.
    assert code == 1
    assert "1 of 1 input(s) done" in captured.out and "1 without overlay.mp4" in captured.out
    assert "overlay.mp4 is missing" in caplog.text and "Traceback" not in captured.err
    folder = out / "clip"
    assert sorted(p.name for p in folder.iterdir()) == ["masks", "summary.json"]
    assert len(list((folder / "masks").iterdir())) == 2
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["num_samples"] == 2
    assert summary["outputs"]["overlay"] is None
    assert "Not yet implemented" in summary["outputs"]["overlay_error"]
    assert not _hidden(out)


def test_a_sparse_video_hours_long_gets_its_overlay(tmp_path: Path) -> None:
    """Frames 40,000 s apart: x264's B-frame offsets and 1/60000-s ticks overflowed mp4's
    32-bit fields ("Not yet implemented in FFmpeg, patches welcome") after all the work."""
    times = [0.0, 0.04, 0.08, 40000.0, 40000.04]
    source = make_video(
        tmp_path / "sparse.mp4", 1.0, 25, (96, 64), "stereo", 16000, "mpeg4",
        frame_times=times, audio_seconds=2.0,
    )  # fmt: skip
    out = tmp_path / "out"
    assert _predict(source, "--out", out, "--fps", "0.001") == 0
    summary = json.loads((out / "sparse" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["num_samples"] == 41
    assert summary["outputs"]["overlay"] == "overlay.mp4"
    assert _frame_times(out / "sparse" / "overlay.mp4") == pytest.approx(times, abs=1e-3)


def test_the_writer_refuses_a_step_mp4_cannot_hold(tmp_path: Path) -> None:
    """Without the duration the fine time base cannot hold a 40,000-s step: a clear error
    at that frame, not FFmpeg's "patches welcome" at the end (or a frame moved in time)."""
    black = np.zeros((48, 64, 3), np.uint8)
    writer = VideoWriter(tmp_path / "a.mp4", fps=25, size=(64, 48))
    with pytest.raises(VideoError, match="40000 s after the previous one"), writer:
        writer.write_frame(black, 0.0)
        writer.write_frame(black, 40000.0)
    assert not list(tmp_path.iterdir())
    # Given the duration, the writer picks ticks coarse enough for it.
    assert video_module.write_time_base(40000.0) == Fraction(1, 30000)
    assert video_module.write_time_base(3600.0) == video_module.WRITE_TIME_BASE


# ---------------------------------------------------------------------------------------
# Any number of audio channels


@pytest.mark.parametrize(
    ("layout", "codec", "suffix", "channels"),
    [
        ("7.1", "aac", ".mp4", 8),  # copied unchanged (and decoded for the model)
        ("octagonal", "pcm_s16le", ".mkv", 8),  # re-encoded to AAC, 8 channels kept
        ("5.0", "pcm_s16le", ".mkv", 5),
        ("5.1.4", "pcm_s16le", ".mkv", 2),  # 10 channels: AAC takes no such layout
    ],
)
def test_any_channel_count_reaches_the_overlay(
    tmp_path: Path, layout: str, codec: str, suffix: str, channels: int
) -> None:
    source = make_video(
        tmp_path / f"clip{suffix}", 1.0, 25, (96, 64), layout, 48000,
        tone_schedule=((0.5, 440.0),), audio_codec=codec,
    )  # fmt: skip
    out = tmp_path / "out"
    assert _predict(source, "--out", out) == 0
    summary = json.loads((out / "clip" / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["outputs"]["overlay"] == "overlay.mp4"
    sound, rate = read_audio_track(out / "clip" / "overlay.mp4", None, mono=False)
    assert sound.shape[1] == channels and rate == 48000
    # Every channel of the source carries a tone from 0.5 s on: the sound is in place.
    assert np.abs(sound[: int(0.4 * rate)]).max() < 0.05
    assert (np.abs(sound[int(0.6 * rate) :]).max(axis=0) > 0.3).sum() >= min(channels, 7)
    mixed = [note for note in summary["notes"] if "mixed down to stereo" in note]
    assert bool(mixed) == (channels == 2)


def test_planar_audio_of_8_channels_decodes(tmp_path: Path) -> None:
    """PyAV's to_ndarray reads past the 8 plane pointers of such frames (a crash)."""
    source = make_video(
        tmp_path / "c8.mp4", 1.0, 25, (64, 48), "7.1", 48000, tone_schedule=((0.2, 440.0),)
    )
    sound, rate = read_audio_track(source, None, mono=False)
    assert sound.shape[1] == 8 and rate == 48000
    assert (np.abs(sound).max(axis=0) > 0.1).all()  # LFE included: every channel has the tone


# ---------------------------------------------------------------------------------------
# SIGTERM and stale temporaries


def test_sigterm_leaves_the_masks_so_far_and_no_temporaries(tmp_path: Path) -> None:
    source = make_video(tmp_path / "long.mp4", 12.0, 25, (96, 64))
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "avsegformer.cli", "predict", str(source), "--checkpoint",
        str(CHECKPOINT), "--out", str(out), "--fps", "10", "--no-progress",
    ]  # fmt: skip
    package_root = Path(avsegformer.__file__).resolve().parents[1]  # the code under test
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(package_root)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    masks = out / "long" / "masks"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if masks.is_dir() and len(list(masks.glob("*.png"))) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "finished before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr.decode()
    assert not _hidden(out), _hidden(out)  # no .NAME.tmp-* folder or overlay temporary
    summary = json.loads((out / "long" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["num_samples"] >= 3
    assert len(list(masks.glob("*.png"))) == summary["num_samples"]
    assert not (out / "long" / "overlay.mp4").exists()


def test_a_start_sweeps_the_temporaries_of_dead_runs(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = 2**22 + 12345  # above Linux's largest pid: no such process
    stale_folder = out / f".clip.tmp-{dead}-0123abcd"
    (stale_folder / "masks").mkdir(parents=True)
    alive = out / f".other.tmp-{os.getpid()}-0123abcd"  # a running process's: kept
    alive.mkdir()
    assert _predict(clip, "--out", out, "--no-overlay") == 0
    assert not stale_folder.exists() and alive.exists()


# ---------------------------------------------------------------------------------------
# Arguments and outputs checked before any work


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-2", "fast"])
def test_bad_fps_is_refused_when_parsing(value: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _predict("clip.mp4", "--out", tmp_path, f"--fps={value}")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert "--fps" in line and value in line


def test_sampling_faster_than_the_frame_rate_says_so(tmp_path: Path, caplog) -> None:
    source = make_video(tmp_path / "short.mp4", 0.4, 25, (64, 48))
    out = tmp_path / "out"
    assert _predict(source, "--out", out, "--fps", "100", "--no-overlay") == 0
    assert "faster than the video's 25 frames per second" in caplog.text
    assert "40 samples from 10 frames" in caplog.text
    summary = json.loads((out / "short" / "summary.json").read_text())
    assert summary["num_samples"] == 40 and "faster than" in summary["notes"][0]


def test_out_pointing_at_a_file_is_one_line_before_any_work(
    clip: Path, tmp_path: Path, capsys, caplog
) -> None:
    caplog.set_level("INFO", logger="avsegformer")
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    assert _predict(clip, "--out", target) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "results.txt is a file, not a folder" in line
    assert "loaded" not in caplog.text  # refused before the model loaded
    assert target.read_text() == "not a folder"


def test_unwritable_out_is_one_line_before_any_work(clip: Path, capsys) -> None:
    assert _predict(clip, "--out", "/sys/avsegformer-test/out") == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "/sys/avsegformer-test/out cannot be written" in line


def test_an_input_folder_that_is_a_file_in_out_is_one_line(
    clip: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip").write_text("a file where the folder goes")
    assert _predict(clip, "--out", out) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "clip is a file, not a folder" in line


def test_a_checkpoint_folder_is_not_reported_as_missing(clip: Path, tmp_path: Path, capsys):
    code = cli(["predict", str(clip), "--checkpoint", str(tmp_path), "--out", str(tmp_path)])
    assert code == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "is a folder, not a checkpoint file" in line


class _FailsAfter:
    """A predictor whose stream of predictions breaks after ``good`` samples."""

    def __init__(self, predictor: Predictor, good: int) -> None:
        self._predictor, self._good = predictor, good

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)

    def predict_samples(self, samples):
        for k, item in enumerate(self._predictor.predict_samples(samples)):
            if k == self._good:
                raise CorruptVideoError("clip.mp4: truncated or corrupt: damage (after 40 frames)")
            yield item


def test_damage_midway_keeps_the_masks_before_it(clip: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_checkpoint(CHECKPOINT, device="cpu")
    folder = tmp_path / "out" / "clip"
    with pytest.raises(CorruptVideoError):
        process_video(_FailsAfter(predictor, 1), clip, folder)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "incomplete" and "damage" in summary["error"]
    assert summary["num_samples"] == 1 and summary["num_samples_expected"] == 2
    assert [p.name for p in (folder / "masks").iterdir()] == ["000000.png"]
    assert not _hidden(tmp_path)
    # A failure before the first mask leaves nothing behind.
    empty = tmp_path / "out" / "none"
    with pytest.raises(CorruptVideoError):
        process_video(_FailsAfter(predictor, 0), clip, empty)
    assert not empty.exists()
