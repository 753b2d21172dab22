"""Test configuration: strict broadcasting and a fixed, small float32 world."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

# The suite is compile-bound: hundreds of small programs, each run a few times. XLA's
# backend (LLVM) optimisation level 0 compiles them faster and computes the same maths
# (the HLO passes and fusions are unchanged); measured on 146 tests side by side, 37%
# less CPU time and 23% less wall time. Subprocesses (CLI runs, distributed tests)
# inherit it.
ORIGINAL_XLA_FLAGS = os.environ.get("XLA_FLAGS")
if "xla_backend_optimization_level" not in (ORIGINAL_XLA_FLAGS or ""):
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [ORIGINAL_XLA_FLAGS, "--xla_backend_optimization_level=0"]))


# Many tests compile the same programs again: each CLI run, study or notebook kernel builds
# a fresh jitted step of the same shapes, in this process, an xdist worker or a subprocess.
# A compilation cache shared by the whole session (made here by the controlling process,
# inherited by workers and subprocesses, deleted at exit) compiles each program once. It
# stores executables keyed by their HLO, flags and versions, so every number is the one a
# fresh compile gives. Measured on tests/test_cli.py alone: 23% less CPU time.
if "PYTEST_XDIST_WORKER" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache_dir = tempfile.mkdtemp(prefix="vae_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ.update({"JAX_COMPILATION_CACHE_DIR": _cache_dir,
                       "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                       "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"})

import jax  # noqa: E402
import pytest  # noqa: E402

# Implicit rank promotion hides ELBO broadcasting bugs ([B] + [B, 1] -> [B, B]).
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def fast_compilation():
    """XLA with most optimisations off (HLO passes too), for one compile-bound test: a quick study
    compiles dozens of programs that then run for well under a second each, and unoptimised
    compilation about halves its time. The numbers are the same computations, evaluated
    without fusion (so not bitwise those of an optimised run)."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture
def tensorboard_events():
    """``events(folder) -> {"scalars": {tag: [(step, value), ...]}, "images": [tag, ...]}``: what TensorBoard's
    own reader finds in a folder of event files (the truth for the trackers' output)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def events(folder) -> dict:
        found = EventAccumulator(str(folder))
        found.Reload()
        tags = found.Tags()
        return {"scalars": {tag: [(e.step, e.value) for e in found.Scalars(tag)] for tag in tags["scalars"]},
                "images": tags["images"]}

    return events
