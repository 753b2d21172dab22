"""The two costs that decide whether the density table's protocol fits: a training epoch and log p(x).

On the density model (gated dense 784-300-300-40 by default, or plain ReLU
``--architecture mlp``; batch 100): seconds of one training epoch of 50000
images (``vae_jax.training.train_epoch``, dynamic binarisation, the ELBO), and
seconds of log p(x) of 10000 test images with 5000 importance samples each
(``vae_jax.evaluation.log_marginal``), each with its achieved GFLOP/s against
this machine's float32 matmul rate measured in the same run (XLA through JAX,
at the log p(x) decoder's own product shape and at 1024^3). FLOPs count the
matmuls only (:func:`flops`; a gated layer is one ``fan_in x 2 fan_out``
product), so the achieved rates are lower bounds.

``--train-size`` / ``--test-size`` time fewer images and scale to the full
sizes (the cost is linear in them); the JSON records what was timed, the
projection, and the 1-minute load average before and after (on the shared
2-core machine a busy neighbour distorts everything; see DESIGN.md).

    python -m benchmarks.density_cost --out benchmarks/results/density_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.matmul import matmul_rates
from vae_jax import evaluation, models, training

INPUT_DIM, HIDDEN, LATENT, BATCH = 784, (300, 300), 40, 100


def layer_shapes(architecture: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(fan_in, fan_out)`` of every matmul of the encoder and decoder (a gated layer: one
    product of twice the width)."""
    gate = 2 if architecture == "gated_mlp" else 1
    enc = [(INPUT_DIM, gate * HIDDEN[0]), (HIDDEN[0], gate * HIDDEN[1]), (HIDDEN[1], 2 * LATENT)]
    dec = [(LATENT, gate * HIDDEN[1]), (HIDDEN[1], gate * HIDDEN[0]), (HIDDEN[0], INPUT_DIM)]
    return enc, dec


def flops(architecture: str) -> dict[str, int]:
    """Matmul FLOPs per example: ``forward`` (encode + one decode), ``decode`` (one z), and
    ``train`` (forward and backward; the data needs no input gradient)."""
    enc, dec = layer_shapes(architecture)
    fwd = lambda layers: sum(2 * a * b for a, b in layers)  # noqa: E731
    forward = fwd(enc) + fwd(dec)
    return {"forward": forward, "encode": fwd(enc), "decode": fwd(dec),
            "train": 3 * forward - 2 * enc[0][0] * enc[0][1]}


def time_epoch(architecture: str, train_size: int, *, seed: int = 0) -> float:
    """Seconds of one compiled epoch (the second call: compilation excluded) on ``train_size`` images."""
    model = models.build_model(models.ModelConfig(latent_dim=LATENT, hidden_sizes=HIDDEN,
                                                  architecture=architecture), (28, 28, 1))
    data = jnp.asarray(np.random.default_rng(seed).uniform(size=(train_size, 28, 28, 1)).astype(np.float32))
    state = training.create_train_state(model, jax.random.key(seed), data[0], optax.adam(5e-4), beta=1.0)
    step = training.make_train_step(model.objective, dynamic_binarization=True)
    state, _ = training.train_epoch(step, state, data, jax.random.key(1), batch_size=BATCH)
    jax.block_until_ready(state)
    start = time.perf_counter()
    state, _ = training.train_epoch(step, state, data, jax.random.key(2), batch_size=BATCH)
    jax.block_until_ready(state)
    return time.perf_counter() - start


def step_milliseconds(rows=("vae", "iwae5", "iwae50", "vamp"), *, images: int = 2000) -> dict[str, float]:
    """Milliseconds per train step (batch 100, gated net, compilation excluded) of each density-table
    row's objective, in one process: ``vae`` (ELBO), ``iwaeK`` (IWAE bound, k = K), ``vamp``
    (ELBO with the K = 500 VampPrior)."""
    from vae_jax import estimators

    data = jnp.asarray(np.random.default_rng(0).uniform(size=(images, 28, 28, 1)).astype(np.float32))
    out = {}
    for name in rows:
        model = models.build_model(models.ModelConfig(latent_dim=LATENT, hidden_sizes=HIDDEN, architecture="gated_mlp",
                                                      prior="vamp" if name == "vamp" else "standard_normal"),
                                   (28, 28, 1))
        k = int(name[4:]) if name.startswith("iwae") else None
        objective = estimators.make_estimator("iwae", model, num_samples=k) if k else model.objective
        state = training.create_train_state(model, jax.random.key(0), data[0], optax.adam(5e-4),
                                            **({} if k else {"beta": 1.0}))
        step = training.make_train_step(objective, dynamic_binarization=True)
        state, _ = training.train_epoch(step, state, data, jax.random.key(1), batch_size=BATCH)
        jax.block_until_ready(state)
        start = time.perf_counter()
        state, _ = training.train_epoch(step, state, data, jax.random.key(2), batch_size=BATCH)
        jax.block_until_ready(state)
        out[name] = (time.perf_counter() - start) / (images // BATCH) * 1000
    return out


def time_log_marginal(architecture: str, test_size: int, num_samples: int, *, eval_batch_size: int = 50,
                      chunk_size: int = 500, seed: int = 0) -> float:
    """Seconds of ``evaluation.log_marginal`` over ``test_size`` binary images (compilation excluded)."""
    model = models.build_model(models.ModelConfig(latent_dim=LATENT, hidden_sizes=HIDDEN,
                                                  architecture=architecture), (28, 28, 1))
    params = model.init(jax.random.key(seed), jnp.zeros((28, 28, 1)))
    x = (np.random.default_rng(seed).uniform(size=(test_size, 28, 28, 1)) < 0.3).astype(np.float32)
    kwargs = dict(num_samples=num_samples, chunk_size=min(chunk_size, num_samples),
                  batch_size=min(eval_batch_size, test_size), progress=False)
    evaluation.log_marginal(model, params, x[:kwargs["batch_size"]], jax.random.key(1), **kwargs)  # compile
    start = time.perf_counter()
    evaluation.log_marginal(model, params, x, jax.random.key(1), **kwargs)
    return time.perf_counter() - start


def run(*, architecture: str = "gated_mlp", train_size: int = 50000, test_size: int = 10000,
        num_samples: int = 5000, eval_batch_size: int = 50, chunk_size: int = 500,
        matmul_shapes=((25000, 300, 784), (1024, 1024, 1024))) -> dict:
    """Both timings, their projections to 50000 training / 10000 test images, rates and ratios."""
    load_before = os.getloadavg()
    f = flops(architecture)
    rates = matmul_rates(shapes=matmul_shapes, libraries=("jax",), repeats=3, min_seconds=0.2)
    matmul_gflops = max(r["gflops"] for r in rates)
    epoch = time_epoch(architecture, train_size)
    steps = train_size // BATCH
    epoch_flops = steps * BATCH * f["train"]
    lpx = time_log_marginal(architecture, test_size, num_samples, eval_batch_size=eval_batch_size,
                            chunk_size=chunk_size)
    lpx_flops = test_size * (f["encode"] + num_samples * f["decode"])
    out = dict(
        command="python -m benchmarks.density_cost " + " ".join(sys.argv[1:]),
        architecture=architecture, batch_size=BATCH, flops_per_example=f,
        matmul_rates=rates, matmul_gflops=matmul_gflops,
        epoch=dict(train_images=train_size, seconds=epoch, gflops=epoch_flops / epoch / 1e9,
                   fraction_of_matmul_rate=epoch_flops / epoch / 1e9 / matmul_gflops,
                   projected_seconds_50000=epoch * 50000 / train_size),
        log_marginal=dict(test_images=test_size, num_samples=num_samples, eval_batch_size=eval_batch_size,
                          chunk_size=chunk_size, seconds=lpx, flops=lpx_flops, gflops=lpx_flops / lpx / 1e9,
                          fraction_of_matmul_rate=lpx_flops / lpx / 1e9 / matmul_gflops,
                          projected_seconds_10000=lpx * 10000 / test_size,
                          eigen_matmuls=bool(evaluation._USE_EIGEN[0])),
        load_average_1_5_15_before=list(load_before), load_average_1_5_15_after=list(os.getloadavg()),
        cpu_count=os.cpu_count(), jax_version=jax.__version__, backend=jax.default_backend(),
        xla_flags=os.environ.get("XLA_FLAGS", ""))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--architecture", choices=["gated_mlp", "mlp"], default="gated_mlp")
    p.add_argument("--train-size", type=int, default=50000, help="images in the timed epoch (scaled to 50000)")
    p.add_argument("--test-size", type=int, default=10000, help="test images timed (scaled to 10000)")
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--eval-batch-size", type=int, default=50)
    p.add_argument("--chunk-size", type=int, default=500)
    p.add_argument("--step-ratios", action="store_true", help="instead: ms per train step of the VAE, IWAE k=5, "
                   "IWAE k=50 and VampPrior rows, in one process")
    args = p.parse_args(argv)
    if args.step_ratios:
        load = os.getloadavg()[0]
        result = dict(command="python -m benchmarks.density_cost " + " ".join(sys.argv[1:] if argv is None else argv),
                      ms_per_step=step_milliseconds(), load_average_1min=[load, os.getloadavg()[0]])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return result
    for name in ("train_size", "test_size", "num_samples", "eval_batch_size", "chunk_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1.")
    if args.train_size < BATCH:
        raise ValueError(f"--train-size must be >= the batch size {BATCH}.")
    result = run(architecture=args.architecture, train_size=args.train_size, test_size=args.test_size,
                 num_samples=args.num_samples, eval_batch_size=args.eval_batch_size, chunk_size=args.chunk_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("matmul_gflops", "epoch", "log_marginal")}, indent=1))
    return result


if __name__ == "__main__":
    main()
