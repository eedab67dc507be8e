"""``avsegformer demo``: generated video with sound -> predict's outputs -> mIoU vs truth."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from avsegformer.cli import main as cli
from avsegformer.commands.demo import DEMO_CHECKPOINT, find_demo_checkpoint, score_predictions
from avsegformer.data.synthetic import generate_clip
from avsegformer.errors import MissingFileError
from test_predictor import tiny_checkpoint


def test_demo_writes_the_video_the_predictions_and_the_miou(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors", img_size=64)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--seconds", "3", "--checkpoint", str(checkpoint)]
    assert cli([*args, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "prediction" / "overlay.mp4") in printed and "mIoU" in printed

    with av.open(str(out / "demo_input.mp4")) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert (video.width, video.height, float(video.average_rate)) == (224, 224, 25.0)
    summary = json.loads((out / "prediction" / "summary.json").read_text())
    assert summary["num_samples"] == 3 and summary["silent_audio"] is False
    assert len(list((out / "prediction" / "masks").iterdir())) == 3

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 <= metrics["every_object_miou"] <= 1.0
    assert [f["frame"] for f in metrics["frames"]] == [23, 48, 73]  # int(25k + 15/16*25)
    assert metrics["miou"] == pytest.approx(
        np.mean([f["iou"] for f in metrics["frames"]]), abs=1e-3
    )
    assert all(len(f["sounding"]) == 1 for f in metrics["frames"])  # "switch": one source

    # Runs again into the same folder (its own outputs are replaced).
    assert cli([*args, "--no-progress"]) == 0


def test_scores_are_computed_against_the_truth_of_the_sampled_frame(tmp_path: Path) -> None:
    clip = generate_clip("switch", seconds=2, fps=25, size=(64, 48), seed=3)
    (tmp_path / "masks").mkdir()
    frames = []
    for k, index in enumerate((23, 48)):
        mask = clip.binary_masks[index] if k == 0 else ~clip.binary_masks[index]
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "masks" / f"{k}.png")
        frames.append({"index": k, "frame_time": index / 25, "mask": f"masks/{k}.png"})
    scores = score_predictions(clip, tmp_path, {"frames": frames})
    assert [f["iou"] for f in scores["frames"]] == [1.0, 0.0]
    assert scores["miou"] == 0.5


def test_a_missing_demo_checkpoint_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.safetensors"
    assert cli(["demo", "--out", str(tmp_path / "o"), "--checkpoint", str(missing)]) == 2
    assert f"{missing}: checkpoint file not found" in capsys.readouterr().err
    # The default is looked up in the working directory, then in the repository.
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEMO_CHECKPOINT).parent.mkdir()
    (tmp_path / DEMO_CHECKPOINT).write_bytes(b"")
    assert find_demo_checkpoint(None) == DEMO_CHECKPOINT
    # Neither here nor in the repository: says what is missing and what to do.
    import avsegformer.demo as demo  # where find_demo_checkpoint reads it

    monkeypatch.setattr(demo, "DEMO_CHECKPOINT", Path("checkpoints") / "absent.safetensors")
    with pytest.raises(
        MissingFileError, match="absent.safetensors: the demo checkpoint is missing"
    ):
        find_demo_checkpoint(None)
