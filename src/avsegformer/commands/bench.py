"""``avsegformer bench``: forward and training-step benchmarks of the model (prints JSON).

For each (model, frame size x frames, dtype, device) case the model is built (random
weights; like ``Predictor.from_checkpoint``, without the modules the forward never
runs), prepared with :func:`avsegformer.optimize` for the device and dtype as
``Predictor`` and ``avsegformer test`` prepare it (``--no-optimize``: the plain
modules; on CUDA the forward replays CUDA graphs unless ``--no-cuda-graphs``), and
run: warm-up forwards (CUDA graph captures happen there), then timed ones, each
synchronised with the device. Reported: latency, frames/s, peak memory (CPU: resident
memory ``ru_maxrss``, one fresh process per case; CUDA: ``max_memory_allocated``, all
CUDA cases in one process), and FLOPs: counted with ``torch.utils.flop_counter``
(shape-only, on the meta device), both as this implementation executes them and as
the authors' computation order does, against the dense matrix-multiply throughput per
dtype measured in the same run (median of 5 runs, best matrix size): achieved FLOP/s
and its fraction of that peak (``efficiency``).

``--train`` adds training-step cases (``--train-clips`` clips of ``--frames`` frames:
forward, backward and AdamW step under the configuration's loss, as the trainer runs
them, with :func:`avsegformer.optimize` ``for_training=True``); their FLOPs count the
backward too (executed count).

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
import dataclasses
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
# Forward cases (frame side x frames) measured on a GPU by default: those of the
# comparison with the authors' code (AUTHORS_H200).
CUDA_CASES = ("224x5", "224x40", "512x5", "512x20")

# The authors' AVSegFormer (vvvb-github/AVSegFormer) measured on one H200 (torch 2.11,
# CUDA 13.0) with the same weights and inputs, as recorded in this project's GPU issue
# (not measured by this benchmark): frames/s of one forward, fp32 (their pure-PyTorch
# route / their compiled op) and bf16 autocast; training: 20 frames at 224 (4 clips of
# 5), forward + backward, compiled op: frames/s and peak GiB.
AUTHORS_H200: dict[str, Any] = {
    "forward_frames_per_s": {
        "res50_s4@224x5": {"fp32_pytorch": 173, "fp32_compiled": 116, "bf16": 122},
        "res50_s4@224x40": {"fp32_pytorch": 460, "fp32_compiled": 475, "bf16": 591},
        "res50_s4@512x5": {"fp32_pytorch": 89, "fp32_compiled": 80, "bf16": 105},
        "res50_s4@512x20": {"fp32_pytorch": 113, "fp32_compiled": 129, "bf16": 161},
        "pvt2_s4@224x5": {"fp32_pytorch": 90, "fp32_compiled": 51, "bf16": 63},
        "pvt2_s4@224x40": {"fp32_pytorch": 334, "fp32_compiled": 284, "bf16": 359},
        "pvt2_s4@512x5": {"fp32_pytorch": 37, "fp32_compiled": 42, "bf16": 33},
        "pvt2_s4@512x20": {"fp32_pytorch": 72, "fp32_compiled": 83, "bf16": 92},
    },
    "forward_peak_gib": {"res50_s4@224x40": 5.47, "res50_s4@512x20": 13.1},
    "train_224x20": {
        "res50_s4": {"fp32": [176.8, 13.0], "bf16": [182.9, 10.9]},
        "pvt2_s4": {"fp32": [122.2, 13.1], "bf16": [112.1, 11.0]},
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["res50_s4", "pvt2_s4"])
    parser.add_argument(
        "--cases",
        nargs="+",
        default=None,
        metavar="SIZExFRAMES",
        help="forward cases, e.g. 224x5 512x20 (default: --sizes x --frames on CPU, "
        f"{' '.join(CUDA_CASES)} on CUDA)",
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 512], help="frame side")
    parser.add_argument("--frames", type=int, default=5, help="frames per clip")
    from ._common import add_precision_argument

    add_precision_argument(
        parser,
        default=["fp32", "bf16"],
        multiple=True,
        old="--dtypes",
        what="precisions to measure: fp32, bf16, fp16 (CUDA) autocast (default fp32 bf16)",
    )
    parser.add_argument(
        "--devices", nargs="+", default=None, help="default: cpu, plus cuda when available"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per case (default 3 CPU, 10 CUDA; half for training steps)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed runs per case (default 1 CPU, 3 CUDA; 2 for training steps)",
    )
    parser.add_argument(
        "--train", action="store_true", help="also time training steps (forward+backward+AdamW)"
    )
    parser.add_argument(
        "--no-forward", action="store_true", help="skip the forward cases (with --train)"
    )
    parser.add_argument("--train-clips", type=int, default=4, help="clips per training step")
    parser.add_argument(
        "--no-optimize", action="store_true", help="the plain modules (no avsegformer.optimize)"
    )
    parser.add_argument("--no-cuda-graphs", action="store_true", help="CUDA forwards run eagerly")
    parser.add_argument(
        "--sampler",
        choices=["auto", "grid_sample", "gather", "triton"],
        default="auto",
        help="deformable-attention algorithm given to avsegformer.optimize",
    )
    parser.add_argument(
        "--islands",
        default=None,
        metavar="JSON",
        help="float32 islands for avsegformer.optimize, e.g. '{\"resnet50_stages\": 4}' "
        "(fields of avsegformer.modeling.precision.Float32Islands; default: the device's)",
    )
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="run all cases of a device in one process (always on CUDA; on CPU the peak "
        "resident memory is then that of all cases so far)",
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 for float32 matrix products on CUDA (PyTorch's default: "
        "convolutions only)",
    )
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
    from ._common import add_json_argument

    add_json_argument(parser, "the report (it is printed either way)", old="--output")


def parse_case(text: str) -> tuple[int, int]:
    """``"224x40"`` -> ``(224, 40)`` (frame side, frames per forward)."""
    from avsegformer.errors import ConfigError
    from avsegformer.settings import check_img_size

    try:
        size, frames = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"case {text!r} is not SIZExFRAMES, e.g. 224x40") from None
    check_img_size(size, f"case {text!r}: size")
    if frames < 1:
        raise ConfigError(f"case {text!r}: frames must be >= 1, got {frames}")
    return size, frames


def _cases(args: argparse.Namespace, device: str) -> list[tuple[int, int]]:
    if args.cases:
        return [parse_case(c) for c in args.cases]
    if device == "cuda":
        return [parse_case(c) for c in CUDA_CASES]
    return [(size, args.frames) for size in args.sizes]


def run(args: argparse.Namespace) -> int:
    import torch

    from avsegformer.errors import ConfigError
    from avsegformer.settings import Precision

    if "auto" in args.precision:
        raise ConfigError("bench measures named precisions: fp32, bf16 or fp16, not auto")
    # The torch dtype names the JSON records.
    args.dtypes = [str(Precision.parse(p).dtype).removeprefix("torch.") for p in args.precision]

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for device in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--devices {device}: this PyTorch ({torch.__version__}) sees no GPU")
        if not device.startswith(("cpu", "cuda")):
            raise ConfigError(f"--devices {device}: use cpu, cuda or cuda:N")
    for text in args.cases or ():
        parse_case(text)  # a bad case fails before any measurement
    common = {
        "threads": args.threads,
        "allocator": args.allocator,
        "cpu_isa": args.cpu_isa,
        "optimize": not args.no_optimize,
        "cuda_graphs": not args.no_cuda_graphs,
        "sampler": args.sampler,
        "tf32": args.tf32,
    }
    if args.islands:
        from avsegformer.modeling.precision import Float32Islands

        try:
            islands = Float32Islands(**json.loads(args.islands))
        except (ValueError, TypeError) as error:
            names = ", ".join(f.name for f in dataclasses.fields(Float32Islands))
            raise ConfigError(f"--islands {args.islands!r}: {error} (fields: {names})") from None
        common["islands"] = dataclasses.asdict(islands)
    report: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "threads": args.threads or torch.get_num_threads(),
        "allocator": args.allocator,
        "cpu_isa": args.cpu_isa,
        "frames_per_clip": args.frames,
        "optimize": not args.no_optimize,
        "matmul_flops_per_s": {},
        "model_flops": {},
        "cases": [],
    }
    specs: dict[str, list[dict[str, Any]]] = {}
    for device in devices:
        cuda = device.startswith("cuda")
        repeats = args.repeats or (10 if cuda else 3)
        warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
        device_specs = specs.setdefault(device, [])
        for model in args.models:
            if not args.no_forward:
                for size, frames in _cases(args, "cuda" if cuda else "cpu"):
                    for dtype in args.dtypes:
                        device_specs.append({
                            "kind": "forward", "model": model, "size": size, "frames": frames,
                            "dtype": dtype, "device": device, "repeats": repeats,
                            "warmup": warmup, **common,
                        })  # fmt: skip
            if args.train:
                for size in args.sizes:
                    for dtype in args.dtypes:
                        device_specs.append({
                            "kind": "train", "model": model, "size": size,
                            "clips": args.train_clips, "frames": args.frames,
                            "dtype": dtype, "device": device, "repeats": max(3, repeats // 2),
                            "warmup": 2, **common,
                        })  # fmt: skip
    for device, device_specs in specs.items():
        matmul_spec = {"kind": "matmul", "device": device, "dtypes": args.dtypes, **common}
        if device.startswith("cuda") or args.one_process:
            # One process for all CUDA cases: CUDA start-up once, peak memory reset per case.
            results = _in_subprocess({"kind": "suite", "specs": [matmul_spec] + device_specs})
            report["matmul_flops_per_s"][device] = results[0]
            cases = results[1:]
        else:
            report["matmul_flops_per_s"][device] = _in_subprocess(matmul_spec)
            cases = []
            for spec in device_specs:
                logger.info("bench %s", _label(spec))
                cases.append(_in_subprocess(spec))
        for case in cases:
            if not args.no_flops and "error" not in case:
                key = _flops_key(case)
                if key not in report["model_flops"]:
                    report["model_flops"][key] = count_flops(
                        case["model"], _frames_of(case), case["size"], train=case["kind"] == "train"
                    )
            _add_efficiency(case, report)
            _add_authors_ratio(case)
            report["cases"].append(case)
    report["bfloat16_speedup"] = _speedups(report["cases"])
    text = json.dumps(report, indent=2)
    print(text)
    if args.json and args.json != "-":
        from ._common import write_json_output

        write_json_output(args.json, report)
    return 0


def _label(spec: dict[str, Any]) -> str:
    frames = _frames_of(spec)
    return (
        f"{spec['kind']} {spec['model']} {spec['size']}x{frames} {spec['dtype']} {spec['device']}"
    )


def _frames_of(case: dict[str, Any]) -> int:
    return case["frames"] * case.get("clips", 1) if case["kind"] == "train" else case["frames"]


def _flops_key(case: dict[str, Any]) -> str:
    key = f"{case['model']}@{case['size']}x{_frames_of(case)}"
    return f"{key} train" if case["kind"] == "train" else key


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python bench/forward.py`` and of the worker processes."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
        print(json.dumps(_worker(json.loads(argv[1]))))
        return 0
    parser = argparse.ArgumentParser(prog="bench/forward.py", description=__doc__.split("\n")[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return run(parser.parse_args(argv))


# ----------------------------------------------------------------------- reporting
def _add_efficiency(case: dict[str, Any], report: dict[str, Any]) -> None:
    flops = report["model_flops"].get(_flops_key(case))
    matmul = report["matmul_flops_per_s"].get(case["device"], {})
    peak = matmul.get("sustained", {}).get(case["dtype"])
    if not flops or not peak or "latency_s" not in case:
        return
    latency = case["latency_s"]
    counted = flops["reference"] if case["kind"] == "forward" else flops["executed"]
    case["achieved_flops_per_s"] = counted / latency
    case["achieved_tflops_per_s"] = counted / latency / 1e12
    case["efficiency"] = case["achieved_flops_per_s"] / peak
    case["efficiency_vs_best_matmul"] = case["achieved_flops_per_s"] / matmul["best"][case["dtype"]]
    case["efficiency_executed_flops"] = flops["executed"] / latency / peak


def _add_authors_ratio(case: dict[str, Any]) -> None:
    """Ratios to the authors' H200 figures (AUTHORS_H200), for CUDA cases on an H200."""
    if not case["device"].startswith("cuda") or "H200" not in case.get("gpu", ""):
        return
    if "frames_per_s" not in case:
        return
    if case["kind"] == "forward":
        key = f"{case['model']}@{case['size']}x{case['frames']}"
        theirs = AUTHORS_H200["forward_frames_per_s"].get(key)
        if theirs:
            case["authors_best_frames_per_s"] = max(theirs.values())
            case["ratio_to_authors_best"] = case["frames_per_s"] / max(theirs.values())
        peak = AUTHORS_H200["forward_peak_gib"].get(key)
        if peak and "peak_cuda_memory_gib" in case:
            case["memory_ratio_to_authors"] = case["peak_cuda_memory_gib"] / peak
    elif case["size"] == 224 and _frames_of(case) == 20:
        theirs = AUTHORS_H200["train_224x20"].get(case["model"], {})
        if theirs:
            fp32_fps, _ = theirs["fp32"]
            _, same_dtype_gib = theirs["fp32" if case["dtype"] == "float32" else "bf16"]
            case["ratio_to_authors_compiled_fp32"] = case["frames_per_s"] / fp32_fps
            if "peak_cuda_memory_gib" in case:
                case["memory_ratio_to_authors_same_dtype"] = (
                    case["peak_cuda_memory_gib"] / same_dtype_gib
                )


def _speedups(cases: list[dict[str, Any]]) -> dict[str, float]:
    latency = {
        (c["kind"], c["model"], c["size"], _frames_of(c), c["device"], c["dtype"]): c["latency_s"]
        for c in cases
        if "latency_s" in c
    }
    out = {}
    for (kind, model, size, frames, device, dtype), value in latency.items():
        base = latency.get((kind, model, size, frames, device, "float32"))
        if dtype == "bfloat16" and base:
            out[f"{kind} {model}@{size}x{frames} {device}"] = base / value
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


def _worker(spec: dict[str, Any]) -> Any:
    tuned = _tune_allocator() if spec.get("allocator") == "tuned" else False
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    if spec["kind"] == "suite":
        return [_run_spec(s, tuned, in_suite=True) for s in spec["specs"]]
    return _run_spec(spec, tuned)


def _run_spec(spec: dict[str, Any], tuned: bool, in_suite: bool = False) -> Any:
    import torch

    if spec["kind"] == "matmul":
        return _matmul(spec)
    logger.info("bench %s", _label(spec))
    if spec["device"].startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = bool(spec.get("tf32"))
    try:
        result = _forward(spec) if spec["kind"] == "forward" else _train_step(spec)
    except Exception as error:  # in a suite, one failed case must not lose the others
        if not in_suite:
            raise
        import traceback

        logger.error("case %s failed:\n%s", _label(spec), traceback.format_exc())
        result = {**_identity(spec), "error": f"{type(error).__name__}: {str(error)[:300]}"}
    finally:
        if spec["device"].startswith("cuda"):
            import gc

            gc.collect()
            torch.cuda.empty_cache()
    result["allocator_tuned"] = tuned
    result["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return result


def _identity(spec: dict[str, Any]) -> dict[str, Any]:
    keys = ("kind", "model", "size", "frames", "clips", "dtype", "device", "optimize",
            "cuda_graphs", "sampler", "tf32", "islands", "label")  # fmt: skip
    return {k: spec[k] for k in keys if k in spec}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _matmul(spec: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Dense ``n x n`` matmul FLOP/s per dtype: sustained (best over sizes of the median
    of 5 runs, the reference for efficiencies) and the single fastest run."""
    import torch

    device = spec["device"]
    sizes = (2048, 4096, 8192) if device.startswith("cuda") else (1024, 2048, 3072, 4096)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = bool(spec.get("tf32"))
    sustained: dict[str, float] = {}
    best: dict[str, float] = {}
    for name in spec["dtypes"]:
        dtype = getattr(torch, name)
        for n in sizes:
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


def _build(spec: dict[str, Any], training: bool) -> Any:
    """The model of a case on its device, optimised as the spec says."""
    import torch

    from avsegformer.modeling.build import build_model
    from avsegformer.modeling.optimize import optimize

    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    # Built as Predictor.from_checkpoint builds it: without the never-run modules.
    overrides = {"model.keep_unused_modules": False}
    with torch.device(device):
        model = build_model(spec["model"], overrides=overrides)
    model.train(training)
    if spec.get("optimize", True):
        from avsegformer.modeling.precision import Float32Islands

        islands = spec.get("islands")
        optimize(
            model,
            device,
            dtype,
            for_training=training,
            cuda_graphs=device.type == "cuda" and not training and spec.get("cuda_graphs", True),
            sampler=spec.get("sampler", "auto"),
            islands=None if islands is None else Float32Islands(**islands),
        )
    return model


def _timed(spec: dict[str, Any], step: Any) -> dict[str, Any]:
    """Warm-up runs, then timed runs of ``step``, each synchronised with the device."""
    import torch

    device = spec["device"]
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(spec["warmup"]):
        step()
        _sync(device)
    latencies, cpu_share = [], []
    for _ in range(spec["repeats"]):
        _sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        step()
        _sync(device)
        wall = time.perf_counter() - start
        latencies.append(wall)
        cpu_share.append((time.process_time() - cpu) / wall)
    latency = statistics.median(latencies)
    result: dict[str, Any] = {
        "latency_s": latency,
        "latency_min_s": min(latencies),
        "latencies_s": latencies,
        # CPU time / wall time: about the thread count when nothing else competed.
        "cpu_utilisation": statistics.median(cpu_share),
    }
    if cuda:
        result["peak_cuda_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["gpu"] = torch.cuda.get_device_name(device)
        result["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        result["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return result


def _forward(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    device, size, frames = spec["device"], spec["size"], spec["frames"]
    device_type = torch.device(device).type
    dtype = getattr(torch, spec["dtype"])
    model = _build(spec, training=False)
    rss_after_build = _rss_mb()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(frames, 3, size, size, generator=g).to(device)
    audio = torch.randn(frames, *model.audio_front_end.example_shape, generator=g).to(device)

    def forward() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32),
        ):
            model(images, audio)

    timing = _timed(spec, forward)
    result = {
        **_identity(spec), **timing, "frames_per_s": frames / timing["latency_s"],
        "rss_after_build_mb": rss_after_build,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "keep_unused_modules": model.config.model.keep_unused_modules,
        "parameters_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
    }  # fmt: skip
    report = getattr(model, "optimization", None)
    if report is not None:
        keys = ("sampler", "forms", "chunk_bytes", "cuda_graphs", "float32_islands")
        result["optimization"] = {k: v for k, v in report.to_dict().items() if k in keys}
        graphs = model.__dict__.get("forward")
        for counter in ("captures", "replays", "failures"):
            if hasattr(graphs, counter):
                result[f"cuda_graph_{counter}"] = getattr(graphs, counter)
    return result


def _train_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Forward, loss, backward and AdamW step of ``clips x frames`` frames, as the trainer."""
    import torch

    from avsegformer.tasks import get_task

    device, size = spec["device"], spec["size"]
    device_type = torch.device(device).type
    dtype = getattr(torch, spec["dtype"])
    frames = spec["clips"] * spec["frames"]
    model = _build(spec, training=True)
    train = model.config.train
    # Every frame labelled (MS3-style), so all of them are forwarded and scored.
    criterion = get_task("ms3").loss(
        train.loss_type, train.iou_loss_weight, train.mix_loss_weight, spec["frames"]
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=device_type == "cuda")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(frames, 3, size, size, generator=g).to(device)
    audio = torch.randn(frames, *model.audio_front_end.example_shape, generator=g).to(device)
    target = (torch.rand(frames, 1, size, size, generator=g) > 0.7).float().to(device)

    def step() -> None:
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(images, audio)
        loss, _ = criterion(out.logits.float(), out.mask_feature.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    timing = _timed(spec, step)
    return {
        **_identity(spec), **timing, "frames_per_s": frames / timing["latency_s"],
        "frames_per_step": frames,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_parameters": sum(p.numel() for p in trainable),
    }  # fmt: skip


# --------------------------------------------------------------------------- FLOPs
def count_flops(name: str, frames: int, size: int, train: bool = False) -> dict[str, float]:
    """FLOPs of one forward of ``frames`` frames: as executed here, and in the authors'
    order of computation (``train``: of a training step, executed count only).

    Counted on the meta device (no memory, no compute). The reference count runs the
    mask MLP in ``"reference"`` mode and adds back, in closed form, what the two exact
    shortcuts skip: the cross-modal mixer's key/value projection of every pixel, and
    the query generator's attention to its single audio token.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    if train:
        return _count_training_flops(name, frames, size)

    from avsegformer.modeling.build import build_model

    def cpu_sdpa(q, k, v, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_flop_count(q, k, v)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    counts = {}
    for mode in ("folded", "reference"):
        model = build_model(name, device="meta", mlp_mode=mode).eval().requires_grad_(False)
        images = torch.empty(frames, 3, size, size, device="meta")
        audio = torch.empty(frames, *model.audio_front_end.example_shape, device="meta")
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


def _count_training_flops(name: str, frames: int, size: int) -> dict[str, float]:
    """Forward, loss and backward of a training step (the frozen audio encoder has no
    backward), as executed; the optimizer step's element-wise work is not counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from avsegformer.modeling.build import build_model
    from avsegformer.tasks import get_task

    overrides = {"model.keep_unused_modules": False}
    model = build_model(name, device="meta", overrides=overrides).train()
    images = torch.empty(frames, 3, size, size, device="meta")
    audio = torch.empty(frames, *model.audio_front_end.example_shape, device="meta")
    target = torch.empty(frames, 1, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        out = model(images, audio)
        loss, _ = get_task("ms3").loss()(out.logits.float(), out.mask_feature.float(), target)
        loss.backward()
    total = float(counter.get_total_flops())
    return {"executed": total, "reference": total}


if __name__ == "__main__":
    sys.exit(main())
