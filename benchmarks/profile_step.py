"""Where the time of vae_jax's train step goes: matmuls, Adam, and the rest.

    python -m benchmarks.profile_step --batch-sizes 128 1024
    python -m benchmarks.profile_step --compute-dtype bfloat16   # the bf16 policy's step and matmuls

Times, per step and inside one compiled ``lax.scan`` of ``--steps`` steps (as
in :func:`vae_jax.train_epoch`):

- ``matmuls``: the step's 17 matrix multiplies alone (6 forward, 6 weight
  gradients, 5 input gradients: the gradient of a linear chain with the
  model's shapes, nothing else);
- ``adam``: Optax Adam's update of the model's 1.4M parameters;
- ``train step``: :func:`vae_jax.make_train_step` of the benchmark's VAE.

The remainder, ``train step - matmuls - adam``, is the element-wise work
(ReLU, reparameterisation, random draws, Bernoulli log-likelihood, KL) and the
per-operation overhead of XLA's CPU runtime. With ``--compute-dtype bfloat16``
the model is the bf16 policy's and the 17 matmuls are
:func:`vae_jax._mixed_precision.dense_product` (bf16 operands, float32
accumulation, forward and both gradients), so the matmul rate of bf16 on this
CPU is measured beside the step.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import vae_jax as vj
from benchmarks import flops
from benchmarks.timing import median_seconds
from vae_jax._mixed_precision import dense_product


def _scan(step, carry, steps: int):
    """``steps`` applications of ``step(carry, i) -> carry`` as one compiled scan; blocks."""
    run = jax.jit(lambda c: jax.lax.scan(lambda c, i: (step(c, i), None), c, jnp.arange(steps))[0])
    return lambda: jax.block_until_ready(run(carry))


def profile(batch_size: int, *, steps: int, repeats: int, hidden_sizes=(512, 512), latent_dim: int = 32,
            compute_dtype: str = "float32") -> dict:
    """Seconds per step of each component (medians of ``repeats`` scans), and the matmuls' GFLOP/s."""
    model = vj.build_model(vj.ModelConfig(latent_dim=latent_dim, hidden_sizes=tuple(hidden_sizes),
                                          compute_dtype=compute_dtype), (28, 28, 1))
    product = jnp.matmul if compute_dtype == "float32" else functools.partial(dense_product,
                                                                              compute_dtype=compute_dtype)
    data = (np.random.default_rng(0).random((batch_size, 28, 28, 1)) < 0.3).astype(np.float32)
    state = vj.create_train_state(model, jax.random.key(0), data[0], optax.adam(1e-3))
    weights = [p["kernel"] for net in ("encoder", "decoder") for p in state.params[net].values()]
    flat = jnp.asarray(data.reshape(batch_size, -1))
    # A random cotangent: with jnp.sum alone XLA may turn the last weight gradient into a reduction.
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal((batch_size, 784), dtype=np.float32))

    def linear_chain(ws):
        h = flat
        for w in ws[:len(hidden_sizes) + 1]:
            h = product(h, w)
        h = h[:, :latent_dim]
        for w in ws[len(hidden_sizes) + 1:]:
            h = product(h, w)
        return jnp.sum(h * cotangent)

    def matmul_step(ws, i):
        grads = jax.grad(linear_chain)(ws)
        return [w - 1e-9 * g for w, g in zip(ws, grads)]

    def adam_step(carry, i):
        params, opt_state = carry
        updates, opt_state = state.tx.update(params, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    train_step = vj.make_train_step(model.objective)

    def vae_step(state, i):
        return train_step(state, jnp.asarray(data), jax.random.fold_in(jax.random.key(1), i))[0]

    seconds = {name: median_seconds(_scan(fn, carry, steps), repeats=repeats) / steps for name, fn, carry in (
        ("matmuls", matmul_step, weights), ("adam", adam_step, (state.params, state.opt_state)),
        ("train step", vae_step, state))}
    seconds["rest"] = seconds["train step"] - seconds["matmuls"] - seconds["adam"]
    step_flops = batch_size * flops.train_step_flops(784, hidden_sizes, latent_dim)
    return {"batch_size": batch_size, "compute_dtype": compute_dtype, "seconds_per_step": seconds,
            "fraction_of_step": {k: v / seconds["train step"] for k, v in seconds.items()},
            "matmul_gflops": step_flops / seconds["matmuls"] / 1e9,
            "train_step_gflops": step_flops / seconds["train step"] / 1e9}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed scan")
    parser.add_argument("--repeats", type=int, default=5, help="timed scans (the median is kept)")
    parser.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="precision policy of the model and of the matmul probe")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    load = list(os.getloadavg())
    results = [profile(b, steps=args.steps, repeats=args.repeats, compute_dtype=args.compute_dtype)
               for b in args.batch_sizes]
    for r in results:
        parts = ", ".join(f"{k} {1e3 * v:.2f} ms ({r['fraction_of_step'][k]:.0%})"
                          for k, v in r["seconds_per_step"].items() if k != "train step")
        print(f"batch {r['batch_size']}: train step {1e3 * r['seconds_per_step']['train step']:.2f} ms "
              f"({r['train_step_gflops']:.0f} GFLOP/s) = {parts}; matmuls alone {r['matmul_gflops']:.0f} GFLOP/s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(["python -m benchmarks.profile_step", *(
            argv if argv is not None else sys.argv[1:])]), "load_average_1_5_15_min_before": load,
            "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
