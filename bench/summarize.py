"""Print a benchmark JSON (``avsegformer bench --json PATH``) as a table, one line a case.

python bench/summarize.py bench/results/cuda.json
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> int:
    with open(path) as f:
        report = json.load(f)
    peaks = report.get("matmul_flops_per_s", {})
    for device, peak in peaks.items():
        rates = ", ".join(f"{k} {v / 1e12:.1f}" for k, v in peak.get("sustained", {}).items())
        print(f"matmul peak {device}: {rates} TFLOP/s")
    header = (
        f"{'kind':7} {'model':9} {'case':8} {'dtype':9} {'frames/s':>9} {'latency':>9} "
        f"{'peak GiB':>8} {'TFLOP/s':>8} {'eff':>6} {'vs authors':>10} {'mem ratio':>9}"
    )
    print(header)
    for c in report["cases"]:
        c.setdefault("kind", "forward")
        frames = c["frames"] * c.get("clips", 1)
        case = f"{c['size']}x{frames}"
        if "error" in c:
            print(f"{c['kind']:7} {c['model']:9} {case:8} {c['dtype']:9} {c['error']}")
            continue
        memory = c.get("peak_cuda_memory_gib", c.get("peak_rss_mb", 0) / 1024)
        ratio = c.get("ratio_to_authors_best", c.get("ratio_to_authors_compiled_fp32"))
        mem_ratio = c.get("memory_ratio_to_authors", c.get("memory_ratio_to_authors_same_dtype"))
        print(
            f"{c['kind']:7} {c['model']:9} {case:8} {c['dtype']:9} {c['frames_per_s']:9.1f} "
            f"{c['latency_s'] * 1e3:7.1f}ms {memory:8.2f} {c.get('achieved_tflops_per_s', 0):8.1f} "
            f"{c.get('efficiency', 0):6.3f} "
            f"{'' if ratio is None else f'{ratio:.2f}x':>10} "
            f"{'' if mem_ratio is None else f'{mem_ratio:.2f}':>9}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
