#!/usr/bin/env bash
# attrtag's GPU path on a fresh GPU machine: install as the README says, then every check.
#
#   bash scripts/gpu_check.sh OUT [--no-install | --wheels DIR] [--cpu-dry-run] [options of scripts/gpu_check.py]
#
# OUT gets install.log, results.jsonl (one JSON line per check, written as each ends),
# summary.md (the tables) and steps.log. The whole run, installing included, keeps within
# gpu_check.py's --budget (450 s by default). Where the package registry cannot be reached,
# attrtag alone is installed over the packages the machine already has (install.log says so).
# --wheels DIR: a machine without a registry (this workplace's lent GPU): the wheels that
# scripts/gpu_carry.py packed, in parts in DIR, replace the machine's own (its CPU
# onnxruntime goes), then attrtag alone; the machine's torch and torchvision stay.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash scripts/gpu_check.sh OUT [--no-install] [--cpu-dry-run] [options of scripts/gpu_check.py]" >&2
    exit 2
fi
out=$1; shift
started=$(date +%s)
install=1; wheels=""; args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) install=0 ;;
        --wheels) [ $# -ge 2 ] || { echo "gpu_check.sh: --wheels needs a folder" >&2; exit 2; }
                  install=2; wheels=$2; shift ;;
        *) args+=("$1") ;;
    esac
    shift
done
if [ -e "$out" ] && [ ! -d "$out" ]; then echo "gpu_check.sh: OUT $out: not a folder" >&2; exit 2; fi
mkdir -p "$out" || exit 2
rm -f "$out/results.jsonl" "$out/steps.log" "$out/summary.md" "$out/install.log"  # a new run's own files
record() {  # one line of results.jsonl: check, status, figure, seconds (JSON made by Python: quotes escaped)
    python3 -c 'import json, sys; c, s, f, t = sys.argv[1:]; print(json.dumps({"check": c, "step": c, "status": s,
        "figure": f, "seconds": int(t)}))' "$1" "$2" "$3" "$4" >> "$out/results.jsonl"
}
why() {  # the last line of install.log that says what went wrong
    grep -E "^(ERROR|gpu_carry)|^ *error: " "$out/install.log" | grep -v "subprocess-exited-with-error" | tail -n 1
}
if [ $install = 2 ]; then
    t0=$(date +%s); site=$(mktemp -d); status=ok
    if python3 scripts/gpu_carry.py join "$wheels" --out "$site" > "$out/install.log" 2>&1 \
        && { python3 -m pip uninstall -y -q onnxruntime >> "$out/install.log" 2>&1 || true; } \
        && python3 -m pip install -q --no-index --no-deps "$site"/*.whl >> "$out/install.log" 2>&1; then
        said="carried wheels ($(ls "$site"/*.whl | wc -l))"
    else
        status=fail; said="carried wheels: $(why)"
    fi
    if ! python3 -m pip install -q --no-deps --no-build-isolation -e . >> "$out/install.log" 2>&1; then
        export PYTHONPATH="$PWD/pipeline:$PWD/export${PYTHONPATH:+:$PYTHONPATH}"
        said="$said; attrtag from PYTHONPATH ($(why))"
    fi
    record install $status "$said, over the machine's torch" $(( $(date +%s) - t0 ))
elif [ $install = 1 ]; then
    t0=$(date +%s)
    if timeout 300 python3 -m pip install -q --retries 1 --timeout 20 -e ".[train,test]" > "$out/install.log" 2>&1; then
        record install ok 'pip install -e ".[train,test]"' $(( $(date +%s) - t0 ))
    elif python3 -m pip install -q --no-deps --no-build-isolation -e . >> "$out/install.log" 2>&1; then
        record install fail "the README's install failed: attrtag alone, on the machine's packages" $(( $(date +%s) - t0 ))
    else
        record install fail "nothing installed (see install.log)" $(( $(date +%s) - t0 ))
    fi
fi
exec python3 scripts/gpu_check.py "$out" --started "$started" --keep-results ${args[@]+"${args[@]}"}
