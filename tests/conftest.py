"""Test configuration: strict broadcasting and a fixed, small float32 world."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

# The suite is compile-bound: hundreds of small programs, each run a few times. Two XLA
# options make compiling them cheaper without changing what is computed:
# - backend (LLVM) optimisation level 0: the HLO passes and fusions are unchanged; measured
#   on 146 tests side by side, 37% less CPU time and 23% less wall time;
# - `xla_cpu_use_fusion_emitters=false`: fused element-wise kernels come from XLA's older
#   elemental IR emitter instead of its MLIR fusion emitters (same HLO, same operations;
#   results may differ from a default compile in the last bits, as between any two code
#   generators). A small model's epoch compiled in 0.31 s instead of 0.70 s, and
#   tests/test_cli.py, test_estimators.py and test_hierarchical.py took 31% less CPU time
#   (196 s instead of 284 s) and 142 s instead of 186 s of wall time on 2 cores.
# The library's own runs keep XLA's defaults. Subprocesses (CLI runs, distributed tests)
# inherit the flags.
#
# The flags the suite was started with: saved by the first process to load this file (pytest, or
# the xdist controller), since its workers and subprocesses inherit XLA_FLAGS already changed.
os.environ.setdefault("VAE_JAX_TESTS_ORIGINAL_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
ORIGINAL_XLA_FLAGS = os.environ["VAE_JAX_TESTS_ORIGINAL_XLA_FLAGS"] or None
_SUITE_XLA_FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}
os.environ["XLA_FLAGS"] = " ".join(filter(None, [ORIGINAL_XLA_FLAGS, *(
    f"--{flag}={value}" for flag, value in _SUITE_XLA_FLAGS.items() if flag not in (ORIGINAL_XLA_FLAGS or ""))]))


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
def xla_defaults_subprocess():
    """``run(code) -> stdout``: Python ``code`` in a fresh process (from the repository root) with the
    XLA flags the suite started with, not its cheaper code generation above: for a claim about the
    compiled code or the exact numbers users get."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if ORIGINAL_XLA_FLAGS is not None:
        env["XLA_FLAGS"] = ORIGINAL_XLA_FLAGS
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))

    def run(code: str) -> str:
        proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    return run


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
