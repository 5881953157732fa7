#!/usr/bin/env bash
# The GPU check: every test marked `cuda` (amp fp16 with the GradScaler, bf16, compile with triton, a CUDA run resumed
# on CPU and back, nccl with one process, prefetch_mode: cuda) and the GPU rows of benchmarks/bench_step.py (SwinIR x4,
# batch 16, LQ 48: scratch, logits KD, DCKD exact, every fast row, peak memory), written as one markdown report.
#
#   bash scripts/gpu_check.sh OUT_DIR          (from the repository root, with the virtual environment active)
#
# On a CUDA machine it takes under 8 minutes (each stage has its own time limit) and writes OUT_DIR/gpu_check.md,
# with the raw outputs beside it (cuda_tests.xml / .log, bench_step*.md); it also prints the report. Without CUDA it
# prints one line and exits with status 0, writing nothing. PYTHON selects the interpreter (default: python).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${1:?usage: bash scripts/gpu_check.sh OUT_DIR}

device=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "")' \
         2>/dev/null)
if [ -z "$device" ]; then
    version=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'not importable')
    echo "gpu_check: no CUDA device (torch.cuda.is_available() is False with torch $version); nothing run."
    exit 0
fi
mkdir -p "$OUT"
started=$(date +%s)
echo "gpu_check: $device; writing $OUT/gpu_check.md"

# 1. the tests marked cuda (the GPU halves of the device-parametrised tests)
timeout 160 "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda tests --junitxml "$OUT/cuda_tests.xml" \
    > "$OUT/cuda_tests.log" 2>&1
echo $? > "$OUT/cuda_tests.status"

# 2. bench_step.py's GPU rows without compilation, 3. the compile rows (their warm-up compiles every network)
BENCH=("$PYTHON" benchmarks/bench_step.py --device cuda --batch 16 --lq 48 --configs swinir --warmup 2 --iters 5)
timeout 100 "${BENCH[@]}" --methods scratch 'logits KD' 'DCKD exact' 'DCKD exact, channels_last' 'DCKD fast' \
    'DCKD amp bf16' 'DCKD amp fp16' > "$OUT/bench_step.md" 2> "$OUT/bench_step.log"
echo $? > "$OUT/bench_step.status"
timeout 180 "${BENCH[@]}" --methods 'DCKD compile' 'DCKD amp bf16 + compile' > "$OUT/bench_step_compile.md" \
    2> "$OUT/bench_step_compile.log"
echo $? > "$OUT/bench_step_compile.status"

seconds=$(( $(date +%s) - started ))
"$PYTHON" scripts/gpu_check_report.py "$OUT" --device "$device" --seconds "$seconds" > "$OUT/gpu_check.md"
cat "$OUT/gpu_check.md"
