#!/usr/bin/env bash
# Sets up a fresh machine: Debian's Fashion-MNIST files (where apt-get exists)
# and a .venv in the repo root with vae_jax and every extra (tests, TFDS, the
# PyTorch baseline). Safe to run again: it only installs what is missing.
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
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
extras="test,tfds,bench"
.venv/bin/python -m pip install -q -e ".[$extras]"
echo "setup: done (.venv ready)"
