"""How the CUDA choices of ``avsegformer.optimize`` were made: variants side by side.

Runs, in one process on a CUDA device (prints JSON, also to ``--json``):

* ``islands``: bfloat16 binary-mask IoU against the authors' float32 output on the
  parity inputs (``tests/reference/parity``; the weight rule of the tests) for
  candidate float32-island sets, and the bf16 forward speed of res50_s4 at 224 x 40
  with each;
* ``variants``: forward speed of res50_s4 and pvt2_s4 (224 x 40, 512 x 20; fp32 and
  bf16) as the plain modules, optimised without CUDA graphs, optimised, optimised
  with ``grid_sample`` instead of the Triton kernel, and fp32 with TF32 products.

    python bench/gpu_study.py --json study.json   # needs a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _reference import REFERENCE_DIR, apply_weight_rule, load_fixture  # noqa: E402
from avsegformer.commands.bench import _worker  # noqa: E402
from avsegformer.modeling.build import build_model  # noqa: E402
from avsegformer.modeling.optimize import optimize  # noqa: E402
from avsegformer.modeling.precision import Float32Islands  # noqa: E402

CPU_ISLANDS = Float32Islands()
ISLANDS = {
    "cpu": CPU_ISLANDS,
    "none": Float32Islands(False, False, 0, False, 0, False),
    "deform_only": Float32Islands(True, False, 0, False, 0, False),
    "deform_proj": Float32Islands(True, True, 0, False, 0, False),
    "deform_proj_dec2": Float32Islands(True, True, 2, False, 0, False),
    "cpu_without_vggish": dataclasses.replace(CPU_ISLANDS, audio_embeddings=False),
    "cpu_resnet0": dataclasses.replace(CPU_ISLANDS, resnet50_stages=0),
    "cpu_resnet2": dataclasses.replace(CPU_ISLANDS, resnet50_stages=2),
    "cpu_decoder6": dataclasses.replace(CPU_ISLANDS, decoder_attention_layers=6),
    "cpu_resnet4": dataclasses.replace(CPU_ISLANDS, resnet50_stages=4),
}


def choose_islands(report: dict[str, Any], threshold: float = 0.99) -> tuple[str, dict]:
    """The fastest island set (res50_s4, 224 x 40, bf16) whose bf16 masks stay within
    IoU ``threshold`` of the authors' float32 output for every model studied; if none
    does, the one that comes closest."""
    worst = {
        label: min(m["bf16_iou"][label]["vs_authors_fp32"] for m in report["islands"].values())
        for label in ISLANDS
    }
    speed = {
        row["label"].removeprefix("islands="): row.get("frames_per_s") or 0.0
        for row in report.get("variants", [])
        if row["label"].startswith("islands=")
    }
    good = [label for label in ISLANDS if worst[label] >= threshold]
    label = max(good, key=lambda x: speed.get(x, 0.0)) if good else max(worst, key=worst.get)
    return label, dataclasses.asdict(ISLANDS[label])


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.cpu() > 0, b.cpu() > 0
    return float((a & b).sum() / (a | b).sum())


def island_iou(name: str, device: str) -> dict[str, Any]:
    fixture = load_fixture(REFERENCE_DIR / "parity" / f"{name}.npz")
    model = build_model(name, overrides={"model.keep_unused_modules": False}).eval()
    apply_weight_rule(model, salt=fixture["meta"]["salt"])
    frames = torch.from_numpy(fixture["in_frames"].astype(np.float32)).to(device)
    audio = torch.from_numpy(fixture["int_vggish_input"]).to(device)
    reference = torch.from_numpy(fixture["out_pred"])
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    optimize(model, device, torch.float32)
    with torch.inference_mode():
        fp32 = model(frames, audio).logits.float()
    torch.backends.cudnn.allow_tf32 = True
    with torch.inference_mode():
        tf32 = model(frames, audio).logits.float()
    out: dict[str, Any] = {
        "fp32_max_abs_error": float((fp32.cpu() - reference).abs().max()),
        "fp32_iou": iou(fp32, reference),
        "tf32_convolutions_iou": iou(tf32, reference),
        "bf16_iou": {},
    }
    for label, islands in ISLANDS.items():
        optimize(model, device, torch.bfloat16, islands=islands)
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            low = model(frames, audio).logits.float()
        out["bf16_iou"][label] = {
            "vs_authors_fp32": iou(low, reference),
            "vs_cuda_fp32": iou(low, fp32),
        }
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


# (model, size, frames, dtype, variant): the same-run comparisons behind the defaults.
VARIANTS = {
    "plain": {"optimize": False},
    "optimized_no_graphs": {"cuda_graphs": False},
    "optimized": {},
    "optimized_grid_sample": {"sampler": "grid_sample"},
    "optimized_tf32": {"tf32": True},
}
COMPARISONS = [
    ("res50_s4", 224, 40, "bfloat16", ["plain", "optimized_no_graphs", "optimized",
                                       "optimized_grid_sample"]),
    ("res50_s4", 224, 40, "float32", ["optimized", "optimized_grid_sample", "optimized_tf32"]),
    ("res50_s4", 512, 20, "bfloat16", ["optimized", "optimized_grid_sample"]),
    ("res50_s4", 512, 20, "float32", ["optimized", "optimized_tf32"]),
    ("pvt2_s4", 224, 40, "bfloat16", ["optimized_no_graphs", "optimized"]),
    ("pvt2_s4", 224, 40, "float32", ["optimized", "optimized_tf32"]),
    ("pvt2_s4", 512, 20, "bfloat16", ["optimized"]),
    ("pvt2_s4", 512, 20, "float32", ["optimized", "optimized_tf32"]),
]  # fmt: skip


def speed_specs(device: str, section: str) -> list[dict[str, Any]]:
    """The speed cases of a section (on a CPU: a dry run at 64 px, 2 frames)."""
    dry = device == "cpu"
    base = {"kind": "forward", "device": device, "repeats": 1 if dry else 10, "warmup": 2,
            "optimize": True, "cuda_graphs": True, "sampler": "auto", "tf32": False}  # fmt: skip
    specs = []
    for label, islands in ISLANDS.items() if section == "islands" else ():
        case = {"model": "res50_s4", "size": 64 if dry else 224, "frames": 2 if dry else 40}
        specs.append({**base, **case, "dtype": "bfloat16", "label": f"islands={label}",
                      "islands": dataclasses.asdict(islands)})  # fmt: skip
    for model, size, frames, dtype, labels in COMPARISONS if section == "variants" else ():
        for label in labels:
            variant = VARIANTS[label]
            if device == "cpu" and ("sampler" in variant or "cuda_graphs" in variant):
                continue
            specs.append({**base, "model": model, "size": 64 if dry else size,
                          "frames": 2 if dry else frames, "dtype": dtype, **variant,
                          "label": label})  # fmt: skip
    return specs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", dest="output", default=None, metavar="PATH")
    parser.add_argument(
        "--choose",
        metavar="STUDY_JSON",
        help="print the island set chosen from a finished study (JSON) and exit",
    )
    parser.add_argument(
        "--sections", nargs="+", default=["islands", "variants"], choices=["islands", "variants"]
    )
    parser.add_argument(
        "--device", default="cuda", help="cpu: a dry run at 64 px (checks the script)"
    )
    args = parser.parse_args()
    if args.choose:
        label, fields = choose_islands(json.loads(Path(args.choose).read_text()))
        print(label, file=sys.stderr)
        print(json.dumps(fields))
        return 0
    cuda = args.device == "cuda"
    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name() if cuda else "none",
        "torch": torch.__version__,
    }
    report["variants"] = []
    for section in args.sections:
        if section == "islands":
            models = ("res50_s4", "pvt2_s4") if cuda else ("res50_s4",)
            report["islands"] = {name: island_iou(name, args.device) for name in models}
            print(json.dumps(report["islands"], indent=1), flush=True)
        results = _worker({"kind": "suite", "specs": speed_specs(args.device, section)})
        report["variants"] += [
            {
                k: r.get(k)
                for k in (
                    "label",
                    "model",
                    "size",
                    "frames",
                    "dtype",
                    "frames_per_s",
                    "latency_s",
                    "peak_cuda_memory_gib",
                    "error",
                )
            }  # fmt: skip
            for r in results
        ]
    text = json.dumps(report, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    for row in report.get("variants", []):
        fps, gib = row.get("frames_per_s") or 0, row.get("peak_cuda_memory_gib") or 0
        case = f"{row['model']:>9} {row['size']}x{row['frames']:<3} {row['dtype']:>9}"
        print(f"{row['label']:>24} {case} {fps:8.1f} fps {gib:6.2f} GiB {row.get('error') or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
