"""Test configuration: strict broadcasting and a fixed, small float32 world."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

# Implicit rank promotion hides ELBO broadcasting bugs ([B] + [B, 1] -> [B, B]).
jax.config.update("jax_numpy_rank_promotion", "raise")
