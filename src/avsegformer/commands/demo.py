"""``avsegformer demo``: the whole pipeline on a generated video with sound, in seconds.

1. Generates a synthetic clip (:func:`~avsegformer.data.synthetic.generate_clip`, kind
   ``"switch"``: objects move, one of them sounds, and the sounding one changes every
   1-3 s) and writes it as an H.264 + AAC video.
2. Segments it with the code path of ``avsegformer predict`` (same function, same
   outputs: masks/, overlay.mp4 with the sound, summary.json), by default with the tiny
   S4 model shipped in ``checkpoints/demo_tiny_s4.safetensors``.
3. Scores the predicted masks against the generator's ground truth at the sampled
   frames (foreground IoU per frame, AVSBench's rule; mean = mIoU) and writes
   ``metrics.json``. For scale it also scores a mask of *every* visible object, sounding
   or not: what segmenting objects without listening would give.

``make demo`` runs it after installing into .venv.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..demo import (
    DEMO_CHECKPOINT,
    DEMO_SIZE,
    DEMO_VIDEO_FPS,
    find_demo_checkpoint,
    write_clip_video,
)
from ..errors import ConfigError
from ..fileio import atomic_write_text

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out/)")
    parser.add_argument(
        "--seconds", type=int, default=8, help="length of the generated video (default 8)"
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help=f"model weights (default: {DEMO_CHECKPOINT}, shipped with the repository)",
    )
    parser.add_argument(
        "--model", default=None, help="configuration name for checkpoints that lack one"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated clip")
    parser.add_argument(
        "--size",
        default=f"{DEMO_SIZE[0]}x{DEMO_SIZE[1]}",
        help="frame size WxH of the generated video (default 224x224)",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must look like 320x240, got {text!r}") from None
    if width < 32 or height < 32:
        raise ConfigError(f"--size must be at least 32x32, got {text!r}")
    return width, height


def score_predictions(clip: Any, folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Foreground IoU of each saved mask against the clip's ground truth at its frame."""
    import torch
    from PIL import Image

    from ..engine.metrics import binary_frame_stats

    predicted, truth, every_object, records = [], [], [], []
    for entry in summary["frames"]:
        index = int(round(entry["frame_time"] * DEMO_VIDEO_FPS))
        mask = np.asarray(Image.open(folder / entry["mask"]).convert("RGB")).any(axis=2)
        predicted.append(mask)
        truth.append(clip.binary_masks[index])
        every_object.append(clip.instance_masks[index] > 0)
        records.append({"index": entry["index"], "frame": index, "frame_time": entry["frame_time"]})

    def ious(masks: list[np.ndarray]) -> list[float]:
        # Masks as saturated logits: the metric's sigmoid > 0.5 gives them back exactly.
        logits = torch.from_numpy(np.stack(masks)).float().mul_(20).sub_(10)
        stats = binary_frame_stats(logits, torch.from_numpy(np.stack(truth)))
        return [float(v) for v in stats.iou]

    model_iou, all_objects_iou = ious(predicted), ious(every_object)
    names = {o.instance_id: o.class_name for o in clip.objects}
    for record, iou, baseline in zip(records, model_iou, all_objects_iou, strict=True):
        second = min(int(record["frame_time"]), clip.seconds - 1)
        record["sounding"] = [names[i] for i in clip.sounding[second]]
        record["iou"] = round(iou, 4)
        record["every_object_iou"] = round(baseline, 4)
    return {
        "miou": round(float(np.mean(model_iou)), 4),
        "every_object_miou": round(float(np.mean(all_objects_iou)), 4),
        "frames": records,
    }


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import generate_clip
    from ..fileio import file_sha256
    from ..predictor import Predictor
    from ..video_pipeline import process_video

    started = time.perf_counter()
    if args.seconds < 1:
        raise ConfigError(f"--seconds must be >= 1, got {args.seconds}")
    checkpoint = find_demo_checkpoint(args.checkpoint)
    size = _parse_size(args.size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    predictor = Predictor.from_checkpoint(checkpoint, args.model, device=args.device)
    clip = generate_clip(
        "switch", seconds=args.seconds, fps=DEMO_VIDEO_FPS, size=size, seed=args.seed
    )
    video = write_clip_video(clip, out / "demo_input.mp4")
    folder = out / "prediction"
    summary = process_video(
        predictor,
        video,
        folder,
        fps=1.0,
        overwrite=True,
        checkpoint={"path": str(checkpoint), "sha256": file_sha256(checkpoint)},
        progress=not args.no_progress,
    )
    scores = score_predictions(clip, folder, summary)
    metrics = {
        "miou": scores["miou"],
        "every_object_miou": scores["every_object_miou"],
        "note": "foreground IoU at the sampled frames (AVSBench rule; empty truth scores "
        "the predicted background fraction); every_object_miou: the same for a mask of "
        "every visible object, sounding or not (a reference for a model that ignores the "
        "sound)",
        "model": predictor.name,
        "checkpoint": str(checkpoint),
        "video": str(video),
        "seconds": args.seconds,
        "seed": args.seed,
        "size": list(size),
        "frames": scores["frames"],
        "seconds_taken": round(time.perf_counter() - started, 2),
    }
    metrics_path = out / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")

    print(f"generated video:  {video}  ({args.seconds} s, {size[0]}x{size[1]}, with sound)")
    print(f"overlay:          {folder / 'overlay.mp4'}")
    print(f"masks, summary:   {folder / 'masks'}/, {folder / 'summary.json'}")
    print(
        f"mIoU vs truth:    {scores['miou']:.3f} over {len(scores['frames'])} sampled frames "
        f"(a mask of every object: {scores['every_object_miou']:.3f})  -> {metrics_path}"
    )
    print(f"model {predictor.name} from {checkpoint}; took {metrics['seconds_taken']:.1f} s")
    return 0
