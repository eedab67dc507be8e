#!/usr/bin/env bash
# One session on a GPU machine: the CUDA tests, the study behind the CUDA defaults, and
# the benchmark, results under $OUT (default cuda_out/). Runs from the repository root
# with the machine's own CUDA torch (PYTHONPATH=src, nothing installed). Optional:
#   .whl/     wheels of packages the machine lacks (PyAV, soundfile, soxr, cffi, pycparser)
#   .gpu/shared/  the parity fixtures (AVSEGFORMER_SHARED), when ../shared does not travel
#   STAGES="tests study bench"  which parts to run
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
for stage in ${STAGES:-tests study bench}; do
    start=$(date +%s)
    case $stage in
    tests)
        timeout "${TESTS_TIMEOUT:-150}" python3 -m pytest -q -m cuda -p no:cacheprovider \
            tests/test_cuda.py >"$OUT/tests.log" 2>&1
        tail -25 "$OUT/tests.log" ;;
    study)
        timeout "${STUDY_TIMEOUT:-200}" python3 bench/gpu_study.py --output "$OUT/study.json" \
            >"$OUT/study.log" 2>&1
        tail -32 "$OUT/study.log" ;;
    bench)
        timeout "${BENCH_TIMEOUT:-260}" python3 -m avsegformer.commands.bench --devices cuda \
            --train --output "$OUT/cuda.json" >"$OUT/bench.log" 2>&1
        tail -3 "$OUT/bench.log"
        python3 bench/summarize.py "$OUT/cuda.json" | tee "$OUT/summary.txt" ;;
    esac
    echo "== $stage: $(( $(date +%s) - start )) s"
done
