#!/usr/bin/env bash
# The GPU check (docs/benchmarks.md, "GPU / TPU"): on a machine with an NVIDIA GPU and a CUDA
# jaxlib, the step against the CPU's, the accuracy tests on the device, the speed table and the
# stacked sweep, in under 10 minutes, written to OUT_DIR. Without a GPU: one line, exit status 2.
#   bash benchmarks/gpu_check.sh OUT_DIR        (PYTHON=... to use another interpreter than .venv's)
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR" >&2
    exit 2
fi
case "$1" in /*) out="$1" ;; *) out="$PWD/$1" ;; esac   # relative to where it was started
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m benchmarks.gpu_check "$out"
