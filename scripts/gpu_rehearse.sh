#!/usr/bin/env bash
# Rehearse the lent GPU machine's check on this CPU machine, before spending device time on it.
#
#   bash scripts/gpu_rehearse.sh OUT [VENV]
#
# Builds (once) a virtual environment like that machine's image: Python 3.12, torch 2.11.0
# (+cu130), torchvision 0.26.0, numpy 2.5.2, onnx 1.23.1, onnxscript 0.7.2 and the CPU build of
# onnxruntime 1.30.0 (versions from the device library's KINDS.md; about 3 GB, a few minutes from
# the registry), packs the carried wheels (scripts/gpu_carry.py prepare), copies the parts where
# the device calls put them, and runs `gpu_check.sh OUT --wheels DIR --cpu-dry-run` in it: the
# same join, install over the machine's packages and steps as there, at CPU sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then echo "usage: bash scripts/gpu_rehearse.sh OUT [VENV]" >&2; exit 2; fi
out=$1; venv=${2:-/tmp/attrtag-gpu-replica}
python312=$(command -v python3.12 || true)
if [ -z "$python312" ]; then echo "gpu_rehearse.sh: needs python3.12 (the machine's Python)" >&2; exit 2; fi
if [ ! -x "$venv/bin/python" ]; then
    "$python312" -m venv "$venv"
    "$venv/bin/python" -m pip install -q "torch==2.11.0" "torchvision==0.26.0" "numpy==2.5.2" "onnx==1.23.1" \
        "onnxscript==0.7.2" "onnxruntime==1.30.0" pillow pyyaml tqdm jinja2 matplotlib pytest scipy \
        opencv-python-headless setuptools wheel huggingface_hub safetensors
fi
python3 scripts/gpu_carry.py prepare > /dev/null
stash=$(mktemp -d)
cp .carry/carry.tar.xz.part-* "$stash"/
PATH="$venv/bin:$PATH" bash scripts/gpu_check.sh "$out" --wheels "$stash" --cpu-dry-run
rm -rf "$stash"
