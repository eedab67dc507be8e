"""Does a model use its audio? Scores with matched, silent, shuffled and noise audio (JSON).

    python bench/audio_reliance.py CONFIG --checkpoint FILE --data-root DIR [--split test]
        [--visual-only FILE] [--json out.json]

Prints mIoU and F for ``--audio matched|zero|shuffled|noise`` (the same evaluation as
``avsegformer test``), the gap matched - shuffled, and two baselines:

* ``visual_only``: a checkpoint of the same model trained with silent audio
  (``--set audio=zero``), evaluated with silent audio;
* ``all_visible_objects`` (synthetic datasets only, read from the generator's
  ``synth_meta`` instance masks): answer "every visible object", the best an audio-agnostic
  model could do when it finds objects perfectly but cannot tell which one sounds.

Works on any dataset in the AVSBench layout, AVSBench itself included (the second baseline
needs the synthetic generator's ground truth and is skipped otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from avsegformer.checkpoint import load_checkpoint, read_checkpoint
from avsegformer.configuration import resolve_config
from avsegformer.data import PixelNorm, build_dataset
from avsegformer.engine.evaluator import AUDIO_MODES, evaluate
from avsegformer.engine.metrics import AVSSMetric, BinaryMetric
from avsegformer.modeling.build import build_model
from avsegformer.zoo import Config


def score(config: Config, checkpoint: str, dataset, audio: str, args) -> dict:
    model = build_model(config)
    load_checkpoint(model, checkpoint)
    result = evaluate(
        model.eval(),
        dataset,
        task=config.task,
        batch_size=args.batch_size,
        videos_per_group=config.train.eval_batch_size,
        audio_mode=audio,
        precision="fp32",
        progress=False,
        seed=args.seed,
    )
    return {"miou": result.miou, "fscore": result.fscore, "seconds": round(result.seconds, 1)}


def all_visible_objects(config: Config, dataset, root: Path, split: str) -> dict | None:
    """Score "segment every visible object" from the generator's instance masks."""
    meta = _synth_meta(root, split)
    if meta is None:
        return None
    size = (config.data.img_size, config.data.img_size)
    task = config.task
    metric = (
        AVSSMetric()
        if task == "avss"
        else BinaryMetric(mode="avsbench", videos_per_group=config.train.eval_batch_size)
    )
    for index in range(len(dataset)):
        sample = dataset[index]
        record = json.loads((meta / f"{sample.video_id}.json").read_text())
        frames = sample.masks.shape[0]
        predictions = []
        for t in range(frames):
            path = meta / record["instance_masks"].format(k=t)
            if not path.is_file():  # AVSS padding frames: nothing visible
                predictions.append(np.zeros(size[::-1], dtype=np.int64))
                continue
            with Image.open(path) as image:
                instances = np.asarray(image.resize(size, Image.NEAREST), dtype=np.int64)
            if task == "avss":
                lookup = np.zeros(instances.max() + 1, dtype=np.int64)
                for obj in record["objects"]:
                    if obj["instance_id"] < len(lookup):
                        lookup[obj["instance_id"]] = obj["avss_id"]
                predictions.append(lookup[instances])
            else:
                predictions.append((instances > 0).astype(np.int64))
        prediction = torch.from_numpy(np.stack(predictions))
        video = torch.full((frames,), index)
        if task == "avss":
            logits = torch.nn.functional.one_hot(prediction, 71).permute(0, 3, 1, 2).float()
            metric.update(logits, sample.masks, video_index=video)
        else:
            keep = sample.gt_flags > 0
            logits = (prediction.float() * 2 - 1) * 10  # confident 0/1 "logits"
            metric.update(logits[keep], sample.masks[keep, 0], video_index=video[keep])
    scores = metric.compute()
    return {"miou": float(scores.miou), "fscore": float(scores.fscore)}


def _synth_meta(root: Path, split: str) -> Path | None:
    for base in (root, *root.iterdir()) if root.is_dir() else ():
        candidate = Path(base) / "synth_meta" / split
        if candidate.is_dir():
            return candidate
    return None


# The project's targets for its small configurations on the synthetic benchmark.
TARGETS: dict[str, dict[str, float]] = {
    "tiny_s4": {"matched_miou_min": 0.80, "shuffled_drop_min": 0.35, "visual_only_max": 0.50},
    "tiny_ms3": {"matched_miou_min": 0.65},
}


def _check_targets(targets: dict[str, float], out: dict) -> dict:
    measured = {
        "matched_miou_min": out["matched"]["miou"],
        "shuffled_drop_min": out["gap_matched_minus_shuffled"],
        "visual_only_max": out["baselines"].get("visual_only", {}).get("miou"),
    }
    checked = {}
    for key, bound in targets.items():
        value = measured[key]
        met = (
            None if value is None else (value <= bound if key.endswith("_max") else value >= bound)
        )
        checked[key] = {"target": bound, "measured": value, "met": met}
    return checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--visual-only", default=None, help="checkpoint trained with audio=zero")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    config = resolve_config(
        args.config,
        args.overrides,
        checkpoint=args.checkpoint,
        recorded=read_checkpoint(args.checkpoint).config,
        name_option="CONFIG",
    ).config
    dataset = build_dataset(
        config.task,
        args.data_root,
        args.split,
        img_size=config.data.img_size,
        pixel_norm=PixelNorm.for_model(config.model),
    )
    out: dict = {
        "config": config.name,
        "checkpoint": args.checkpoint,
        "data_root": args.data_root,
        "split": args.split,
        "videos": len(dataset),
        "img_size": config.data.img_size,
        "torch_threads": torch.get_num_threads(),
    }
    for mode in AUDIO_MODES:
        out[mode] = score(config, args.checkpoint, dataset, mode, args)
    out["gap_matched_minus_shuffled"] = out["matched"]["miou"] - out["shuffled"]["miou"]
    baselines: dict = {}
    if args.visual_only:
        baselines["visual_only"] = score(config, args.visual_only, dataset, "zero", args)
    visible = all_visible_objects(config, dataset, Path(args.data_root), args.split)
    if visible is not None:
        baselines["all_visible_objects"] = visible
    out["baselines"] = baselines
    targets = TARGETS.get(config.name)
    if targets:
        out["targets"] = _check_targets(targets, out)
    out["seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
