"""Rough cost of the hierarchical and flow VAEs against the density table's one-layer VAE, side by side.

One process builds every model at the protocol sizes (28x28x1 Bernoulli, batch 100, gated
300-300, 40 latents per layer, K = 500 pseudo-inputs) and times, interleaved so that the
machine's load drifts over all of them alike:

- a training step (``vae_jax.training.train_epoch`` of 20 batches, median over ``--reps``
  rounds, per step), and
- log p(x) with 5000 importance samples (``vae_jax.evaluation.log_marginal``, 10 images,
  median over 3 rounds).

Random images stand in for the data (the cost does not depend on the pixels). The numbers
to use are the ratios to ``vae``; on the shared 2-core machine the absolute times are not
meaningful (the JSON records the 1-minute load average before and after). Beside the times,
XLA's own count of floating-point operations (``cost_analysis`` of the compiled programs) of
one training step and of one image's log p(x), the machine-independent cost to scale to a GPU.

The convolutional HVAE rows (``convhvae``, ``convhvae_vamp``: the authors' gated convolutions)
are ~100x the VAE's step on a CPU; a small run of them times fewer steps and samples:

    python -m benchmarks.posterior_cost --out benchmarks/results/posterior_cost.json
    python -m benchmarks.posterior_cost --models vae convhvae convhvae_vamp --steps 2 --reps 3 \
        --marginal-samples 100 --marginal-images 2 --out benchmarks/results/posterior_cost_conv.json
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

from vae_jax import evaluation, models, training
from vae_jax.flow_models import FlowVAE
from vae_jax.hierarchical import HierarchicalVAE

SHAPE, BATCH = (28, 28, 1), 100


def build() -> dict:
    gated = dict(latent_dim=40, hidden_sizes=(300, 300), architecture="gated_mlp")
    conv = dict(latent_dim=40, hidden_sizes=(300,), architecture="conv", num_layers=2)
    return {
        "convhvae": models.build_model(models.ModelConfig(**conv), SHAPE),
        "convhvae_vamp": models.build_model(models.ModelConfig(**conv, prior="vamp", num_components=500), SHAPE),
        "vae": models.build_model(models.ModelConfig(**gated), SHAPE),
        "vamp": models.build_model(models.ModelConfig(**gated, prior="vamp", num_components=500), SHAPE),
        "hvae": HierarchicalVAE(SHAPE, latent_sizes=(40, 40)),
        "hvae_vamp": HierarchicalVAE(SHAPE, latent_sizes=(40, 40), prior="vamp", num_components=500),
        "vae_iaf2": FlowVAE(SHAPE, flow="iaf", flow_steps=2),
        "vae_planar4": FlowVAE(SHAPE, flow="planar", flow_steps=4),
    }


def interleaved(fns: dict, reps: int) -> dict:
    """Median seconds of each ``fn()`` over ``reps`` rounds, all of them once per round."""
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def _flops(fn, *args) -> float:
    """XLA's count of floating-point operations of the compiled ``fn(*args)``."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((analysis[0] if isinstance(analysis, list) else analysis)["flops"])


def step_runner(model, data, flops: dict):
    state = [training.create_train_state(model, jax.random.key(0), data[0], optax.adam(5e-4), beta=1.0)]
    step = training.make_train_step(model.objective, dynamic_binarization=True)
    flops["train_step"] = _flops(lambda s, b: step(s, b, jax.random.key(0)), state[0], data[:BATCH])

    def run():
        state[0], _ = training.train_epoch(step, state[0], data, jax.random.key(1), batch_size=BATCH)
        jax.block_until_ready(state[0].params)

    run()  # compile
    return run


def marginal_runner(model, data, num_samples: int, flops: dict):
    params = model.init(jax.random.key(0), jnp.asarray(data[0]))
    chunk = min(num_samples, 500)  # one chunk, no loop (XLA counts a loop's body once), scaled to num_samples
    flops["log_marginal_per_image"] = num_samples / chunk * _flops(lambda p, x: model.log_marginal(
        p, jax.random.key(1), x, num_samples=chunk, chunk_size=chunk), params, data[0])
    run = lambda: evaluation.log_marginal(model, params, data, jax.random.key(1),  # noqa: E731
                                          num_samples=num_samples, batch_size=len(data), progress=False)
    run()  # compile
    return run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--models", nargs="+", choices=sorted(build()), default=None,
                   help="models to time (default: all but the convolutional ones); vae is always one")
    p.add_argument("--steps", type=int, default=20, help="training steps (of batch 100) per timed epoch")
    p.add_argument("--marginal-samples", type=int, default=5000, help="importance samples of log p(x)")
    p.add_argument("--marginal-images", type=int, default=10, help="test images of the timed log p(x)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    built = build()
    names = ["vae", *(n for n in (args.models or [n for n in built if not n.startswith("conv")]) if n != "vae")]
    rng = np.random.default_rng(0)
    train = jnp.asarray(rng.random((BATCH * args.steps, *SHAPE), dtype=np.float32))
    test = (rng.random((args.marginal_images, *SHAPE)) > 0.5).astype(np.float32)
    flops = {n: {} for n in names}
    load_before = os.getloadavg()[0]
    step = interleaved({n: step_runner(built[n], train, flops[n]) for n in names}, args.reps)
    marginal = interleaved({n: marginal_runner(built[n], test, args.marginal_samples, flops[n]) for n in names}, 3)
    out = {"command": "python -m benchmarks.posterior_cost " + " ".join(argv),
           "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
           "steps_per_epoch": args.steps, "marginal_samples": args.marginal_samples,
           "step_ms": {n: 1e3 * t / args.steps for n, t in step.items()},
           "step_ratio_to_vae": {n: t / step["vae"] for n, t in step.items()},
           f"log_marginal_seconds_per_{args.marginal_images}_images": marginal,
           "log_marginal_ratio_to_vae": {n: t / marginal["vae"] for n, t in marginal.items()},
           "xla_flops": flops,
           "xla_flops_ratio_to_vae": {n: {k: v / flops["vae"][k] for k, v in f.items()} for n, f in flops.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
