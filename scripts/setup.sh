#!/usr/bin/env bash
# Sets up a fresh machine: Debian's Fashion-MNIST files (where apt-get exists)
# and a .venv in the repo root with vae_jax and every extra (tests, TFDS, the
# PyTorch baseline, MLflow, Grain). Safe to run again: it only installs what is missing.
#
# It prints a few "setup:" lines. pip runs quietly with its output in a log file
# (.venv/setup-pip.log): a failing install prints the whole log and stops the
# script; a successful one prints only pip's ERROR/WARNING lines (for example a
# dependency conflict), not the build back-end's warnings.
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir="${VAE_JAX_DATA_DIR:-/usr/share/datasets/fashion-mnist}"
if [ ! -f "$data_dir/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing Debian's dataset-fashion-mnist"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "setup: no apt-get here; put the four Fashion-MNIST *-ubyte.gz files in a folder and set VAE_JAX_DATA_DIR" >&2
  fi
else
  echo "setup: Fashion-MNIST found in $data_dir"
fi

# pip "$@" with its output in the log; on failure the log is printed and the script stops.
quiet_pip() {
  local log=.venv/setup-pip.log
  if ! .venv/bin/python -m pip "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: FAILED: pip $* (log above, also in $log)" >&2
    exit 1
  fi
  grep -E '^(ERROR|WARNING):' "$log" | grep -v 'is ignored: it is neither a file nor a directory' >&2 || true
}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
  quiet_pip install -q --upgrade pip
fi
extras="test,tfds,bench,mlflow,streaming"
echo "setup: installing vae_jax with extras [$extras] into .venv (minutes the first time)"
quiet_pip install -q -e ".[$extras]"
echo "setup: done (.venv ready; log of pip in .venv/setup-pip.log)"
