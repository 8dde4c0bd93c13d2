#!/usr/bin/env bash
# CI smoke run of the asv benchmarks (issue 6): `asv check`, then every benchmark once at tiny sizes
# on the NumPy backend, in the current environment, then `asv publish` of those results, all in a
# scratch folder (the real results/ and html/ are left alone). Exits non-zero if a benchmark
# fails: asv's exit status does not always say so, so its output is searched too.
# The dashboard is then made to work offline (scripts/asv_offline.py vendors its JavaScript/CSS from
# npm packages, fetched now rather than when it is viewed) and kept in ci-artifacts/asv-html (or
# $NTKFRAME_ASV_HTML_OUT); with NTKFRAME_BROWSER_CHECK=1, headless Chromium loads it from a local
# http server and checks that its graphs render with no network (scripts/browser_check.py).
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

# results and dashboard of the smoke run go to a scratch copy of the config, so that --quick
# timings never reach the real results/ (whose dashboard they would spoil)
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
python - "$scratch" <<'PY'
import json, os, re, sys
here = os.getcwd()
text = re.sub(r"^\s*//.*$", "", open("asv.conf.json").read(), flags=re.M)  # asv allows // comments
conf = json.loads(text)
conf.update(repo=os.path.abspath(os.path.join(here, conf["repo"])),
            benchmark_dir=os.path.join(here, conf["benchmark_dir"]),
            env_dir=os.path.join(sys.argv[1], "env"), results_dir=os.path.join(sys.argv[1], "results"),
            html_dir=os.path.join(sys.argv[1], "html"))
json.dump(conf, open(os.path.join(sys.argv[1], "asv.conf.json"), "w"), indent=1)
PY
conf="$scratch/asv.conf.json"
log="$scratch/run.log"
status=0
asv run --config "$conf" --python=same --quick --show-stderr \
    --set-commit-hash "$(git rev-parse HEAD)" 2>&1 | tee "$log" || status=$?
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
# the dashboard must build from what was saved
asv publish --config "$conf" >/dev/null
test -f "$scratch/html/index.html" || { echo "asv smoke run: asv publish wrote no dashboard" >&2; exit 1; }
echo "asv smoke run: all benchmarks ran or skipped, and asv publish built the dashboard"

# the offline dashboard: vendored libraries (needs npm, or a filled cache, once at publish time)
html_out="${NTKFRAME_ASV_HTML_OUT:-../ci-artifacts/asv-html}"
if python ../scripts/asv_offline.py "$scratch/html"; then
    rm -rf "$html_out" && mkdir -p "$(dirname "$html_out")" && cp -r "$scratch/html" "$html_out"
    echo "asv smoke run: offline dashboard in $(cd "$html_out" && pwd)"
    if [ "${NTKFRAME_BROWSER_CHECK:-}" = 1 ]; then
        python ../scripts/browser_check.py --asv-html "$html_out"
    fi
elif ! command -v npm >/dev/null 2>&1; then
    echo "asv smoke run: npm not found, so the dashboard could not be made offline (see above); skipped"
else
    echo "asv smoke run: scripts/asv_offline.py failed" >&2
    exit 1
fi
