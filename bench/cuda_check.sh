#!/usr/bin/env bash
# One session on a GPU machine: the float32-island study, the benchmark, the CUDA tests and
# the variant study, results under $OUT (default cuda_out/). Runs from the repository root
# with the machine's own CUDA torch (PYTHONPATH=src, nothing installed). Optional:
#   .whl/          wheels of packages the machine lacks (PyAV, soundfile, soxr, cffi, ...)
#   .gpu/shared/   ../shared (AVSEGFORMER_SHARED) when it does not travel: only the AVSBench
#                  sample metadata; the parity fixtures are in tests/reference
#   STAGES="islands bench tests variants"   which parts to run, in order
#   CHOOSE=0       benchmark with the code's CUDA islands, not the study's choice
set -u
OUT=${OUT:-cuda_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if [ -d .gpu/shared ]; then export AVSEGFORMER_SHARED="$PWD/.gpu/shared"; fi
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,driver_version --format=csv \
    | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
ISLANDS_JSON=""
for stage in ${STAGES:-islands bench tests variants}; do
    start=$(date +%s)
    case $stage in
    islands)
        timeout "${ISLANDS_TIMEOUT:-120}" python3 bench/gpu_study.py --sections islands \
            --json "$OUT/islands.json" >"$OUT/islands.log" 2>&1
        tail -12 "$OUT/islands.log"
        if [ "${CHOOSE:-1}" = 1 ] && [ -s "$OUT/islands.json" ]; then
            ISLANDS_JSON=$(python3 bench/gpu_study.py --choose "$OUT/islands.json")
            echo "chosen islands: $ISLANDS_JSON"
        fi ;;
    bench)
        timeout "${BENCH_TIMEOUT:-200}" python3 -m avsegformer.commands.bench --devices cuda \
            --train ${ISLANDS_JSON:+--islands "$ISLANDS_JSON"} --json "$OUT/cuda.json" \
            >"$OUT/bench.log" 2>&1
        grep -i -m5 "error\|warning" "$OUT/bench.log"
        python3 bench/summarize.py "$OUT/cuda.json" | tee "$OUT/summary.txt" ;;
    tests)
        timeout "${TESTS_TIMEOUT:-130}" python3 -m pytest -q -m cuda -p no:cacheprovider \
            tests/test_cuda.py >"$OUT/tests.log" 2>&1
        tail -15 "$OUT/tests.log" ;;
    variants)
        timeout "${VARIANTS_TIMEOUT:-120}" python3 bench/gpu_study.py --sections variants \
            --json "$OUT/variants.json" >"$OUT/variants.log" 2>&1
        tail -22 "$OUT/variants.log" ;;
    esac
    echo "== $stage: $(( $(date +%s) - start )) s"
done
