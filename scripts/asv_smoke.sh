#!/usr/bin/env bash
# CI smoke run of the asv benchmarks (issue 6): `asv check`, then every benchmark once at tiny sizes
# on the NumPy backend, in the current environment, saving nothing. Exits non-zero if a benchmark
# fails: asv's exit status does not always say so, so its output is searched too.
#
#   scripts/asv_smoke.sh              # NTKFRAME_ASV_BACKENDS=numpy,torch,jax to smoke-test more backends
set -euo pipefail
cd "$(dirname "$0")/../asv_bench"

if ! python -m asv --version >/dev/null 2>&1; then
    python -m pip install --quiet asv
fi
asv() { python -m asv "$@"; }

export NTKFRAME_ASV_QUICK=1
export NTKFRAME_ASV_BACKENDS="${NTKFRAME_ASV_BACKENDS:-numpy}"

asv machine --yes >/dev/null   # asv refuses to run before it knows the machine
asv check --python=same

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
asv run --python=same --quick --dry-run --show-stderr 2>&1 | tee "$log" || status=$?
# a failing benchmark prints "failed" in its result line (and "asv: benchmark failed" with the
# traceback); a benchmark that cannot even be imported or set up shows up as an error
if grep -Eq '(^|[[:space:]])failed([[:space:]]|$)|benchmark failed|Traceback|^[·[:space:]]*Error' "$log"; then
    echo "asv smoke run: some benchmarks failed (see above)" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "asv smoke run: asv exited with status $status" >&2
    exit "$status"
fi
echo "asv smoke run: all benchmarks ran or skipped"
