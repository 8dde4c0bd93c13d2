#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU (issue 3): the test suite on every CUDA backend, then
# a table of Jacobian-Gram times per backend next to the device's GEMM rate (scripts/gpu_bench.py).
#
#   scripts/gpu_check.sh [OUT_DIR]        # from anywhere; runs the working tree, installs nothing
#
# Needs torch, jax (with its CUDA plugin), cupy, numpy, scipy, pluggy, click, tqdm and pytest; no
# package index. Each step's failure is reported and the script goes on; it exits 1 at the end if
# any step failed. On an H200 it should take 3 to 5 minutes, and timeouts bound it at 7.5:
# GPU_CHECK_BUDGET (s in all, default 450); the benchmark keeps 3 × GPU_BENCH_TIMEOUT of it (s per
# backend, both dtypes, default 50) and each backend's tests get an equal share of what is left
# when they start. OUT_DIR (default: a temporary folder) receives the logs and gpu_table.md.
set -uo pipefail
cd "$(dirname "$0")/.."

export PYTHONPATH=".:plugins${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX must not grab 75 % of the GPU: torch and cupy share it
export CUPY_TF32=0
export PYTHONUNBUFFERED=1
export MPLBACKEND=Agg
OUT_DIR="${1:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"
BUDGET="${GPU_CHECK_BUDGET:-450}"
export GPU_BENCH_TIMEOUT="${GPU_BENCH_TIMEOUT:-50}"
BENCH_RESERVE=$(( 3 * GPU_BENCH_TIMEOUT ))
PY="${PYTHON:-python3}"
failed=()
start=$SECONDS

step() {  # step NAME COMMAND...: run, log, remember a failure, never stop
    local name=$1; shift
    echo "=== $name ($(( SECONDS - start )) s)"
    "$@"
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "!!! $name failed (exit $rc)"
        failed+=("$name (exit $rc)")
    fi
}

step "nvidia-smi" nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step "versions" "$PY" -c "
import torch, jax, cupy, numpy
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())
print('jax', jax.__version__, jax.devices())
print('cupy', cupy.__version__, 'devices', cupy.cuda.runtime.getDeviceCount())
print('numpy', numpy.__version__)"

left=3
for b in torch jax cupy; do
    share=$(( (BUDGET - BENCH_RESERVE - (SECONDS - start)) / left ))
    left=$(( left - 1 ))
    [ "$share" -lt 30 ] && share=30
    step "tests on $b cuda (timeout ${share} s)" env NTKFRAME_TEST_DEVICE=cuda NTKFRAME_TEST_BACKENDS="$b" \
        timeout -k 10 "$share" "$PY" -m pytest -q -p no:cacheprovider --maxfail=25 -k "$b" tests \
        --junitxml="$OUT_DIR/pytest_$b.xml"
done

step "Gram benchmark" "$PY" scripts/gpu_bench.py --device cuda --backends torch,jax,cupy \
    --dtypes float32,float64 --require --out "$OUT_DIR/gpu_table.md"

echo
echo "=== done in $(( SECONDS - start )) s; logs and table in $OUT_DIR"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all steps passed"
