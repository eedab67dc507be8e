"""Benchmark: time to load one AVSBench clip on one CPU core (prints JSON).

Generates small datasets in the official layouts in a temporary folder (with the test
suite's generator, ``tests/datasets.py``), then times ``dataset[i]`` averaged over all
clips and several passes, after one warm-up pass (file-system cache warm, as during
training after the first epoch).

    python bench/data_loading.py [--videos 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from avsegformer.data import build_dataset  # noqa: E402
from datasets import make_avss_dataset, make_s4_dataset  # noqa: E402


def time_per_clip(dataset: torch.utils.data.Dataset, repeats: int) -> float:
    """Mean seconds per ``dataset[i]`` over ``repeats`` passes (after one warm-up pass)."""
    for index in range(len(dataset)):
        dataset[index]
    start = time.perf_counter()
    for _ in range(repeats):
        for index in range(len(dataset)):
            dataset[index]
    return (time.perf_counter() - start) / (repeats * len(dataset))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8, help="clips per split")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, object] = {
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "clips_per_split": args.videos,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_s4_dataset(root, videos_per_split=args.videos, splits=("train", "val"))
        make_avss_dataset(root, videos_per_split=max(1, args.videos // 3), splits=("train", "val"))
        cases = {
            "s4_val_224_ms": ("s4", "val", {"img_size": 224}),
            "s4_val_512_ms": ("s4", "val", {"img_size": 512}),
            "s4_train_224_ms": ("s4", "train", {"img_size": 224}),
            "s4_val_224_from_wav_ms": ("s4", "val", {"img_size": 224, "audio_source": "wav"}),
            "avss_train_224_ms": ("avss", "train", {}),
            "avss_val_224_ms": ("avss", "val", {}),
        }
        for name, (task, split, options) in cases.items():
            dataset = build_dataset(task, root, split, **options)
            results[name] = round(1000 * time_per_clip(dataset, args.repeats), 2)
    results["note"] = (
        "S4 clip = 5 PNG frames + masks (train: 1, val: 5) + log-mel pkl; AVSS clip = 5 or 10 "
        "JPEG frames 320x240 + RGB masks + log-mel computed from audio.wav"
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
