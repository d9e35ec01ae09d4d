#!/usr/bin/env bash
# attrtag's GPU path on a fresh GPU machine: install as the README says, then every check.
#
#   bash scripts/gpu_check.sh OUT [--no-install] [--cpu-dry-run] [options of scripts/gpu_check.py]
#
# OUT gets install.log, results.jsonl (one JSON line per check, written as each ends),
# summary.md (the tables) and steps.log. The whole run, installing included, keeps within
# gpu_check.py's --budget (450 s by default). Where the package registry cannot be reached,
# attrtag alone is installed over the packages the machine already has (install.log says so).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: bash scripts/gpu_check.sh OUT [--no-install] [--cpu-dry-run] [options of scripts/gpu_check.py]" >&2
    exit 2
fi
out=$1; shift
started=$(date +%s)
install=1; args=()
for a in "$@"; do
    if [ "$a" = --no-install ]; then install=0; else args+=("$a"); fi
done
if [ -e "$out" ] && [ ! -d "$out" ]; then echo "gpu_check.sh: OUT $out: not a folder" >&2; exit 2; fi
mkdir -p "$out" || exit 2
rm -f "$out/results.jsonl" "$out/steps.log" "$out/summary.md" "$out/install.log"  # a new run's own files
record() {  # one line of results.jsonl: check, status, figure, seconds (JSON made by Python: quotes escaped)
    python3 -c 'import json, sys; c, s, f, t = sys.argv[1:]; print(json.dumps({"check": c, "step": c, "status": s,
        "figure": f, "seconds": int(t)}))' "$1" "$2" "$3" "$4" >> "$out/results.jsonl"
}
if [ $install = 1 ]; then
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
