#!/usr/bin/env bash
# GPU check in one command (issues 3 and 18), for a machine with an NVIDIA GPU:
#   1. the CUDA test suite per backend (torch, jax, cupy), each with its own time limit;
#   2. the Gram table at N = 8192 … 65536 against the device's measured GEMM rate, float32 (TF32 off)
#      and float64 (scripts/gpu_bench.py, one subprocess per backend);
#   3. the moonshot: the exact empirical NTK of N = 100,000 inputs (d = 128, m = 8192) tiled on one
#      device, float32 and float64, streamed to host memory (or a file), with time, peak device memory
#      and agreement with a sampled block recomputed on the CPU.
#
#   scripts/gpu_check.sh              # on the GPU machine: under 8 minutes in all
#   scripts/gpu_check.sh --rehearse   # on any CPU: the same steps at tiny sizes, fake device = cpu,
#                                     # tests collected only (< 2 minutes)
#
# Runs the working tree (PYTHONPATH=.:plugins) and installs nothing: needs torch, jax (with its CUDA
# plugin), cupy, numpy, scipy, pluggy, click, tqdm and pytest, no package index.  Everything goes under
# $OUT if set (else a new temporary folder): a log per step, pytest's junit XML, steps.json (each
# step's status and seconds), and from gpu_bench.py results.json and table.md (the Markdown to paste
# into docs/benchmarks.md).  A failing step is reported and the script goes on; it exits 1 at the
# end if any step failed.  Time limits (s), each overridable: GPU_TEST_LIMIT per backend's tests (60),
# GPU_BENCH_TIMEOUT per backend's Gram table (50), GPU_MOONSHOT_TIMEOUT per moonshot dtype (60):
# 3·60 + 3·50 + 2·60 = 450 s at most, plus ~10 s to start.
set -uo pipefail
cd "$(dirname "$0")/.."

REHEARSE=""
case "${1:-}" in
    --rehearse) REHEARSE="--rehearse" ;;
    "") ;;
    *) echo "usage: scripts/gpu_check.sh [--rehearse]" >&2; exit 2 ;;
esac
export PYTHONPATH=".:plugins${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX must not grab 75 % of the GPU: torch and cupy share it
export CUPY_TF32=0 PYTHONUNBUFFERED=1 MPLBACKEND=Agg
OUT_DIR="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT_DIR"
export OUT="$OUT_DIR"
TEST_LIMIT="${GPU_TEST_LIMIT:-60}"
export GPU_BENCH_TIMEOUT="${GPU_BENCH_TIMEOUT:-50}" GPU_MOONSHOT_TIMEOUT="${GPU_MOONSHOT_TIMEOUT:-60}"
PY="${PYTHON:-python}"
start=$SECONDS
failed=()
records=()

step() {  # step NAME COMMAND...: run with its output logged to $OUT_DIR/NAME.log, remember the outcome
    local name=$1; shift
    local t0=$SECONDS
    echo "=== $name ($(( SECONDS - start )) s)"
    "$@" 2>&1 | tee "$OUT_DIR/$name.log"
    local rc=${PIPESTATUS[0]}
    [ $rc -ne 0 ] && { echo "!!! $name failed (exit $rc)"; failed+=("$name (exit $rc)"); }
    records+=("{\"step\": \"$name\", \"exit\": $rc, \"seconds\": $(( SECONDS - t0 ))}")
}

if [ -z "$REHEARSE" ]; then
    step nvidia-smi nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
fi
step versions "$PY" -c "
import importlib, sys
missing = []
for name in ('numpy', 'torch', 'jax', 'cupy'):
    try:
        mod = importlib.import_module(name)
    except Exception as exc:
        missing.append(name); print(name, 'NOT IMPORTABLE:', exc); continue
    extra = {'torch': lambda: f'cuda {mod.version.cuda}, available {mod.cuda.is_available()}',
             'jax': lambda: f'devices {mod.devices()}',
             'cupy': lambda: f'devices {mod.cuda.runtime.getDeviceCount()}'}.get(name, lambda: '')()
    print(name, mod.__version__, extra)
sys.exit(1 if missing and '$REHEARSE' == '' else 0)"

# 1. tests, per backend: the files that exercise the device (the hot path, the backend, tiles, flow)
for b in torch jax cupy; do
    if [ -n "$REHEARSE" ]; then  # collect only: the command and its files are valid (the CPU suite runs in CI)
        step "tests-$b" env NTKFRAME_TEST_DEVICE=cpu timeout -k 5 "$TEST_LIMIT" "$PY" -m pytest -q -p no:cacheprovider \
            --collect-only -k "$b" tests/test_gram.py "tests/test_${b}_backend.py" tests/test_outofcore.py
    else
        step "tests-$b" env NTKFRAME_TEST_DEVICE=cuda NTKFRAME_TEST_BACKENDS="$b" \
            timeout -k 10 "$TEST_LIMIT" "$PY" -m pytest -q -x -p no:cacheprovider -k "$b" \
            tests/test_gram.py "tests/test_${b}_backend.py" tests/test_outofcore.py tests/test_simulate.py \
            --junitxml="$OUT_DIR/pytest_$b.xml"
    fi
done

# 2 and 3. the Gram table and the moonshot (each backend / dtype in its own subprocess with its limit)
step measurements "$PY" scripts/gpu_bench.py $REHEARSE --out "$OUT_DIR" ${REHEARSE:+--backends torch,jax,cupy}

( IFS=,; echo "[${records[*]}]" ) > "$OUT_DIR/steps.json"
echo
echo "=== done in $(( SECONDS - start )) s; logs, steps.json, results.json and table.md in $OUT_DIR"
if [ ${#failed[@]} -gt 0 ]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all steps passed"
