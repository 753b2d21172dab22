"""The GPU check: on a machine with an NVIDIA GPU and a CUDA jaxlib, everything that matters, in one go.

    bash benchmarks/gpu_check.sh OUT_DIR          # or: python -m benchmarks.gpu_check OUT_DIR

Parts, each with its own time limit (under 9 minutes in all), each recorded in
``OUT_DIR/gpu_check.json`` (status, seconds, what it measured):

1. ``step_vs_cpu``: the train step's loss and gradients on the GPU against the same
   step on the CPU (same parameters, batch and keys), float32 and bf16; the
   tolerances allow for the GPU's TF32 matmuls.
2. ``tests``: the accuracy tests on the device (``tests/test_precision.py``,
   ``tests/test_mixed_precision.py``), JUnit XML in
   ``OUT_DIR/tests.xml``.
3. ``benchmark``: the speed table and the stacked sweep against sequential training
   (:mod:`benchmarks.run` at 12,800 examples, 2 repeats; PyTorch on CUDA where its build
   has CUDA, else left out), ``OUT_DIR/gpu.json``.

Without a GPU visible to JAX it stops at once with one line on stderr and exit
status 2. Set ``VAE_JAX_DATA_DIR`` where Fashion-MNIST's IDX files are (the
benchmark trains on them); the step check uses scikit-learn's bundled digits.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

TESTS = ("tests/test_precision.py", "tests/test_mixed_precision.py")
BENCHMARK = ("--examples", "12800", "--repeats", "2", "--sweep-repeats", "2", "--no-progress")
TIME_LIMITS = {"tests": 200, "benchmark": 330}  # seconds (torch.compile warm-ups are slow); < 10 min in all
# TF32 matmuls on the GPU round operands to 10 mantissa bits, bf16 to 7: relative tolerances of a loss.
LOSS_RTOL = {"float32": 2e-3, "bfloat16": 1e-2}
MIN_GRADIENT_COSINE = {"float32": 0.999, "bfloat16": 0.99}


def gpu_problem(backend: str, device_kinds: list[str]) -> str | None:
    """Why this machine cannot run the GPU check (one line), or None where it can."""
    if backend != "gpu":
        return (f"gpu_check: no GPU visible to JAX (backend {backend!r}, devices {device_kinds}); "
                "it needs an NVIDIA GPU and a CUDA jaxlib (pip install -U 'jax[cuda12]'), JAX_PLATFORMS unset.")
    return None


def _loss_and_grads(compute_dtype: str, device: jax.Device, seed: int = 0) -> tuple[float, np.ndarray]:
    """One train step's loss and flattened gradient on ``device``: digits, a small MLP VAE, fixed keys."""
    import optax

    import vae_jax as vj
    from vae_jax import training
    from vae_jax.data import binarize, load_dataset

    images = binarize(load_dataset("digits").train.images[:128], "static", seed=0)
    model = vj.build_model(vj.ModelConfig(latent_dim=8, hidden_sizes=(64, 32), compute_dtype=compute_dtype),
                           images.shape[1:])
    state = vj.create_train_state(model, jax.random.key(seed), images[0], optax.adam(1e-3))

    def loss(params, batch, key):
        values, _ = training.batch_objective(model.objective, params, key, batch, {})
        return -jnp.mean(values)

    params, batch, key = jax.device_put((state.params, jnp.asarray(images), jax.random.key(seed + 1)), device)
    value, grads = jax.jit(jax.value_and_grad(loss))(params, batch, key)
    flat = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)]).astype(np.float64)
    return float(value), flat


def compare_step(device: jax.Device, reference: jax.Device) -> dict:
    """The train step's loss and gradient on ``device`` against ``reference``, in both precisions.

    Returns:
      Per precision: both losses, their relative difference, the gradients' cosine and
      norm ratio, and ``ok`` (within :data:`LOSS_RTOL` and :data:`MIN_GRADIENT_COSINE`).
    """
    out = {}
    for dtype in ("float32", "bfloat16"):
        (loss, grad), (loss_ref, grad_ref) = (_loss_and_grads(dtype, d) for d in (device, reference))
        cosine = float(grad @ grad_ref / (np.linalg.norm(grad) * np.linalg.norm(grad_ref)))
        rel = abs(loss - loss_ref) / abs(loss_ref)
        out[dtype] = {"loss": loss, "loss_reference": loss_ref, "loss_relative_difference": rel,
                      "gradient_cosine": cosine,
                      "gradient_norm_ratio": float(np.linalg.norm(grad) / np.linalg.norm(grad_ref)),
                      "ok": bool(rel <= LOSS_RTOL[dtype] and cosine >= MIN_GRADIENT_COSINE[dtype])}
    return out


def commands(out_dir: pathlib.Path, python: str = sys.executable) -> dict[str, list[str]]:
    """The subprocess of each timed part: the device tests and the benchmark."""
    return {"tests": [python, "-m", "pytest", *TESTS, "-q", "-n", "0", "-p", "no:cacheprovider",
                      f"--junitxml={out_dir / 'tests.xml'}"],
            "benchmark": [python, "-m", "benchmarks.run", *BENCHMARK, "--out", str(out_dir / "gpu.json")]}


def run_part(command: list[str], *, limit: float, log: pathlib.Path) -> dict:
    """Runs ``command`` with its output in ``log``; status "passed", "failed (exit N)" or "timed out"."""
    start = time.perf_counter()
    with log.open("w") as f:
        try:
            code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, timeout=limit).returncode
            status = "passed" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit:.0f} s"
    return {"command": " ".join(command), "status": status, "seconds": time.perf_counter() - start,
            "log": str(log)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=pathlib.Path, help="folder for gpu_check.json, gpu.json, tests.xml, logs")
    args = parser.parse_args(argv)
    problem = gpu_problem(jax.default_backend(), [d.device_kind for d in jax.devices()])
    if problem:
        print(problem, file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "devices": [d.device_kind for d in jax.devices()],
              "jax": jax.__version__, "parts": {}}
    start = time.perf_counter()
    steps = compare_step(jax.devices()[0], jax.devices("cpu")[0])
    report["parts"]["step_vs_cpu"] = {"status": "passed" if all(r["ok"] for r in steps.values()) else "failed",
                                      "seconds": time.perf_counter() - start, **steps}
    for name, command in commands(args.out_dir).items():
        report["parts"][name] = run_part(command, limit=TIME_LIMITS[name], log=args.out_dir / f"{name}.log")
        print(f"gpu_check: {name}: {report['parts'][name]['status']}", flush=True)
    (args.out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    failed = [name for name, part in report["parts"].items() if part["status"] != "passed"]
    print(f"gpu_check: {'FAILED: ' + ', '.join(failed) if failed else 'all passed'}; "
          f"{args.out_dir / 'gpu_check.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
