"""``avsegformer bench``: forward-pass benchmark of the model (prints JSON).

For each (model, frame size, dtype, device) case a fresh Python process builds the
model (random weights; like ``Predictor.from_checkpoint``, without the modules the
forward never runs), runs warm-up and timed forwards of one clip, and reports its
latency, frames/s and peak resident memory (``ru_maxrss``). The same run measures the
machine's sustained dense matrix-multiply throughput per dtype (median of 5 runs, best
matrix size), and counts the model's FLOPs with
``torch.utils.flop_counter`` (shape-only, on the meta device), both as this
implementation executes them and as the authors' computation order does; efficiency is
achieved FLOP/s (reference count / latency) divided by that matmul throughput.

Also runnable as ``python bench/forward.py``. Timings are never asserted by tests.

Allocator: glibc returns every freed block above 32 MB to the kernel and maps fresh,
zero-filled pages for the next one. The model keeps its large temporaries below that
size (chunked feed-forward and mask head), so the untouched allocator (default) costs
little; ``--allocator tuned`` makes each worker raise glibc's mmap and trim thresholds
(``mallopt``) first, as LD_PRELOADed jemalloc/tcmalloc would, for comparison.

Instruction set: ``--cpu-isa avx2`` caps MKL, oneDNN and ATen's kernels at AVX2 in the
workers (matmul peak and forwards alike), which turns a recent AVX-512 CPU into a
stand-in for the common AVX2 machine; efficiency depends on that balance between
matrix-multiply speed and memory-bound work, so both are worth a look.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16")
# Environment that caps each library's kernels at one instruction set (read at start-up).
_ISA_ENVIRONMENT = {
    "native": {},
    "avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "ATEN_CPU_CAPABILITY": "avx2"},
    "avx512": {"MKL_ENABLE_INSTRUCTIONS": "AVX512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
               "ATEN_CPU_CAPABILITY": "avx512"},
}  # fmt: skip
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["res50_s4", "pvt2_s4"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 512], help="frame side")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument(
        "--devices", nargs="+", default=None, help="default: cpu, plus cuda when available"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards per case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--allocator",
        choices=["default", "tuned"],
        default="default",
        help="'tuned': raise glibc's mmap/trim thresholds in the workers (see module doc)",
    )
    parser.add_argument(
        "--cpu-isa",
        choices=sorted(_ISA_ENVIRONMENT),
        default="native",
        help="cap the CPU kernels at this instruction set in the workers (see module doc)",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--output", help="also write the JSON to this file")


def run(args: argparse.Namespace) -> int:
    import torch

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    common = {"threads": args.threads, "allocator": args.allocator, "cpu_isa": args.cpu_isa}
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "threads": args.threads or torch.get_num_threads(),
        "allocator": args.allocator,
        "cpu_isa": args.cpu_isa,
        "frames_per_clip": args.frames,
        "matmul_flops_per_s": {},
        "model_flops": {},
        "cases": [],
    }
    for device in devices:
        spec = {"kind": "matmul", "device": device, "dtypes": args.dtypes, **common}
        report["matmul_flops_per_s"][device] = _in_subprocess(spec)
    if not args.no_flops:
        for model in args.models:
            for size in args.sizes:
                report["model_flops"][f"{model}@{size}"] = count_flops(model, args.frames, size)
    for model in args.models:
        for size in args.sizes:
            for device in devices:
                for dtype in args.dtypes:
                    spec = {
                        "kind": "forward", "model": model, "size": size, "frames": args.frames,
                        "dtype": dtype, "device": device, "repeats": args.repeats,
                        "warmup": args.warmup, **common,
                    }  # fmt: skip
                    logger.info("bench %s %dx%d %s %s", model, size, size, dtype, device)
                    case = _in_subprocess(spec)
                    _add_efficiency(case, report)
                    report["cases"].append(case)
    report["bfloat16_speedup"] = _speedups(report["cases"])
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python bench/forward.py`` and of the worker processes."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        print(json.dumps(_worker(json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(prog="bench/forward.py", description=__doc__.split("\n")[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return run(parser.parse_args(argv))


# ----------------------------------------------------------------------- reporting
def _add_efficiency(case: dict[str, Any], report: dict[str, Any]) -> None:
    flops = report["model_flops"].get(f"{case['model']}@{case['size']}")
    matmul = report["matmul_flops_per_s"].get(case["device"], {})
    peak = matmul.get("sustained", {}).get(case["dtype"])
    if not flops or not peak:
        return
    latency = case["latency_s"]
    case["achieved_flops_per_s"] = flops["reference"] / latency
    case["efficiency"] = case["achieved_flops_per_s"] / peak
    case["efficiency_vs_best_matmul"] = case["achieved_flops_per_s"] / matmul["best"][case["dtype"]]
    case["efficiency_executed_flops"] = flops["executed"] / latency / peak


def _speedups(cases: list[dict[str, Any]]) -> dict[str, float]:
    latency = {(c["model"], c["size"], c["device"], c["dtype"]): c["latency_s"] for c in cases}
    out = {}
    for (model, size, device, dtype), value in latency.items():
        base = latency.get((model, size, device, "float32"))
        if dtype == "bfloat16" and base:
            out[f"{model}@{size} {device}"] = base / value
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------- workers
def _in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (clean peak-RSS and allocator state)."""
    cmd = [sys.executable, "-m", "avsegformer.commands.bench", "--worker", json.dumps(spec)]
    env = {**os.environ, **_ISA_ENVIRONMENT[spec.get("cpu_isa", "native")]}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker failed for {spec}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only): no page faults on reuse."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    one_gib = 1 << 30
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, one_gib) and libc.mallopt(_M_TRIM_THRESHOLD, one_gib)
    )


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    tuned = _tune_allocator() if spec.get("allocator") == "tuned" else False
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    result = _matmul(spec) if spec["kind"] == "matmul" else _forward(spec)
    if spec["kind"] == "forward":
        result["allocator_tuned"] = tuned
        result["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return result


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _matmul(spec: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Dense ``n x n`` matmul FLOP/s per dtype: sustained (best over sizes of the median
    of 5 runs, the reference for efficiencies) and the single fastest run."""
    import torch

    device = spec["device"]
    sustained: dict[str, float] = {}
    best: dict[str, float] = {}
    for name in spec["dtypes"]:
        dtype = getattr(torch, name)
        for n in (1024, 2048, 3072, 4096):
            a = torch.randn(n, n, device=device).to(dtype)
            b = torch.randn(n, n, device=device).to(dtype)
            torch.mm(a, b)
            _sync(device)
            rates = []
            for _ in range(5):
                start = time.perf_counter()
                torch.mm(a, b)
                _sync(device)
                rates.append(2 * n**3 / (time.perf_counter() - start))
            sustained[name] = max(sustained.get(name, 0.0), statistics.median(rates))
            best[name] = max(best.get(name, 0.0), max(rates))
    return {"sustained": sustained, "best": best}


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _forward(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from avsegformer.modeling.build import build_model

    device, size, frames = spec["device"], spec["size"], spec["frames"]
    dtype = getattr(torch, spec["dtype"])
    # Built as Predictor.from_checkpoint builds it: without the never-run modules.
    overrides = {"model.keep_unused_modules": False}
    model = build_model(spec["model"], overrides=overrides).eval().to(device)
    rss_after_build = _rss_mb()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(frames, 3, size, size, generator=g).to(device)
    audio = torch.randn(frames, 1, 96, 64, generator=g).to(device)

    def forward() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32),
        ):
            model(images, audio)
        _sync(device)

    for _ in range(spec["warmup"]):
        forward()
    latencies, cpu_share = [], []
    for _ in range(spec["repeats"]):
        start, cpu = time.perf_counter(), time.process_time()
        forward()
        wall = time.perf_counter() - start
        latencies.append(wall)
        cpu_share.append((time.process_time() - cpu) / wall)
    latency = statistics.median(latencies)
    result = {
        "model": spec["model"], "size": size, "frames": frames, "dtype": spec["dtype"],
        "device": device, "latency_s": latency, "latency_min_s": min(latencies),
        "latencies_s": latencies, "frames_per_s": frames / latency,
        # CPU time / wall time: about the thread count when nothing else competed.
        "cpu_utilisation": statistics.median(cpu_share),
        "rss_after_build_mb": rss_after_build,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "keep_unused_modules": model.config.model.keep_unused_modules,
        "parameters_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
    }  # fmt: skip
    if device == "cuda":
        result["peak_cuda_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


# --------------------------------------------------------------------------- FLOPs
def count_flops(name: str, frames: int, size: int) -> dict[str, float]:
    """FLOPs of one clip: as executed here, and in the authors' order of computation.

    Counted on the meta device (no memory, no compute). The reference count runs the
    mask MLP in ``"reference"`` mode and adds back, in closed form, what the two exact
    shortcuts skip: the cross-modal mixer's key/value projection of every pixel, and
    the query generator's attention to its single audio token.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    from avsegformer.modeling.build import build_model

    def cpu_sdpa(q, k, v, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_flop_count(q, k, v)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    counts = {}
    for mode in ("folded", "reference"):
        model = build_model(name, device="meta", mlp_mode=mode).eval().requires_grad_(False)
        images = torch.empty(frames, 3, size, size, device="meta")
        audio = torch.empty(frames, 1, 96, 64, device="meta")
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(images, audio)
        counts[mode] = counter.get_total_flops()
        per_module = counter.get_flop_counts()
    cfg = model.config.model  # type: ignore[union-attr]
    c, q, pixels = cfg.embed_dim, cfg.query_num, (size // 4) ** 2
    mixer_reference = frames * (2 * c * c + 2 * pixels * c * 2 * c + 4 * pixels * c + 2 * c * c)
    cross_reference = frames * (4 * q * c * c + 4 * c * c + 4 * q * c)  # q/out over Q, k/v over 1

    def measured(suffix: str) -> int:
        return sum(sum(v.values()) for k, v in per_module.items() if k.endswith(suffix))

    executed_mixer = measured("head.fusion_block")
    executed_cross = sum(
        measured(f"query_generator.layers.{i}.cross_attn") for i in range(cfg.generator_layers)
    )
    reference = (
        counts["reference"]
        - executed_mixer
        + mixer_reference
        - executed_cross
        + cfg.generator_layers * cross_reference
    )
    return {"executed": float(counts["folded"]), "reference": float(reference)}


if __name__ == "__main__":
    sys.exit(main())
