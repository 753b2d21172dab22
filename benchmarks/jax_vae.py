"""vae_jax timed the ways a user would run it: whole-epoch scan, per-step loop, sweeps, log p(x).

Each ``*_runner`` builds its state and returns a
:class:`benchmarks.timing.Runner`: ``warm_up()``
compiles (ahead of time, so no untimed epoch is spent on it) and ``run()``
trains one epoch (or evaluates) and blocks until the result is ready.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import vae_jax as vj
from benchmarks.timing import Runner
from vae_jax import training


def build(image_shape: Sequence[int], *, hidden_sizes: Sequence[int], latent_dim: int,
          compute_dtype: str = "float32") -> vj.VAE:
    """The benchmark's MLP VAE with a Bernoulli likelihood, its matmuls in ``compute_dtype``."""
    config = vj.ModelConfig(latent_dim=latent_dim, hidden_sizes=tuple(hidden_sizes), likelihood="bernoulli",
                            compute_dtype=compute_dtype)
    return vj.build_model(config, tuple(image_shape))


def _state(model: vj.VAE, data: np.ndarray, seed: int, *, beta: float = 1.0,
           optimizer: optax.GradientTransformation | None = None) -> training.TrainState:
    optimizer = optimizer or optax.adam(1e-3)
    return vj.create_train_state(model, jax.random.key(seed), data[0], optimizer, beta=beta)


# vae_jax.train_epoch compiles with XLA:CPU's copy insertion by region analysis (no per-step
# parameter copies; training.EPOCH_COMPILER_OPTIONS). This turns it off again: XLA's default,
# which copies 7 of the 14 parameter arrays (3.9 MB for 784-512-512-32) at every step. Same numbers
# (bitwise, tests/test_benchmarks.py); CPU only.
PER_STEP_COPIES = {"xla_cpu_copy_insertion_use_region_analysis": False}


def epoch_scan_runner(model: vj.VAE, data: np.ndarray, *, batch_size: int, seed: int,
                      compiler_options: dict | None = None) -> Runner:
    """:func:`vae_jax.train_epoch`: the data on the device, one compiled ``lax.scan`` per epoch.

    ``compiler_options``: XLA options for this computation only (e.g. :data:`PER_STEP_COPIES`).
    """
    step = vj.make_train_step(model.objective)
    box = {"state": _state(model, data, seed), "epoch": 0}
    device_data = jnp.asarray(data)
    key = jax.random.key(seed + 1)

    def warm_up():
        box["epoch_fn"] = vj.train_epoch.lower(step, box["state"], device_data, key,
                                               batch_size=batch_size).compile(compiler_options=compiler_options)

    def run():
        box["epoch"] += 1
        box["state"], metrics = box["epoch_fn"](box["state"], device_data, jax.random.fold_in(key, box["epoch"]))
        return float(metrics["loss"])

    return Runner(warm_up, run, params=lambda: box["state"].params)


def per_step_runner(model: vj.VAE, data: np.ndarray, *, batch_size: int, seed: int) -> Runner:
    """The official Flax example's pattern: a Python loop calling the jitted step on host batches."""
    step = vj.make_train_step(model.objective)
    box = {"state": _state(model, data, seed), "key": jax.random.key(seed + 1)}
    rng = np.random.default_rng(seed)
    num_batches = data.shape[0] // batch_size

    def one_step(batch):
        box["key"], key = jax.random.split(box["key"])
        box["state"], metrics = step(box["state"], batch, key)
        return metrics

    def warm_up():
        jax.block_until_ready(one_step(data[:batch_size]))

    def run():
        order = rng.permutation(data.shape[0])[: num_batches * batch_size].reshape(num_batches, batch_size)
        losses = [one_step(data[indices])["loss"] for indices in order]
        return float(jnp.mean(jnp.stack(losses)))

    return Runner(warm_up, run)


def sweep_runners(model: vj.VAE, data: np.ndarray, *, batch_size: int, betas: Sequence[float],
                  seeds: Sequence[int]) -> dict[str, Runner]:
    """One epoch of ``len(betas) * len(seeds)`` models: ``stacked`` (one vmapped
    :func:`vae_jax.training.train_epoch_stacked`) and ``sequential`` (one
    :func:`vae_jax.train_epoch` after the other, sharing one compilation)."""
    step = vj.make_train_step(model.objective)
    grid = [(beta, seed) for beta in betas for seed in seeds]
    device_data = jnp.asarray(data)
    keys = jnp.stack([jax.random.key(1000 + seed) for _, seed in grid])
    optimizer = optax.adam(1e-3)  # one object: it is static metadata of every state (one compilation)
    states = [_state(model, data, seed, beta=beta, optimizer=optimizer) for beta, seed in grid]
    box = {"stacked": training.stack(states), "sequential": states}

    def warm_up_stacked():
        box["stacked_fn"] = training.train_epoch_stacked.lower(step, box["stacked"], device_data, keys,
                                                               batch_size=batch_size).compile()

    def run_stacked():
        box["stacked"], metrics = box["stacked_fn"](box["stacked"], device_data, keys)
        return float(jnp.mean(metrics["loss"]))

    def warm_up_sequential():
        box["epoch_fn"] = vj.train_epoch.lower(step, box["sequential"][0], device_data, keys[0],
                                               batch_size=batch_size).compile()

    def run_sequential():
        losses = []
        for i, key in enumerate(keys):
            box["sequential"][i], metrics = box["epoch_fn"](box["sequential"][i], device_data, key)
            losses.append(float(metrics["loss"]))
        return float(np.mean(losses))

    return {"stacked": Runner(warm_up_stacked, run_stacked),
            "sequential": Runner(warm_up_sequential, run_sequential)}


def log_marginal_runner(model: vj.VAE, params_fn: Callable, images: np.ndarray, *, num_samples: int,
                        chunk_size: int, batch_size: int, compiler_options: dict | None = None) -> Runner:
    """:meth:`vae_jax.VAE.log_marginal` vmapped over image batches and jitted: one pass over ``images``.

    ``compiler_options`` are XLA options for this computation only, e.g.
    ``{"xla_cpu_experimental_ynn_fusion_type": ""}`` (Eigen instead of YNNPACK for the matmuls).
    """

    def batch_log_marginal(params, keys, x):
        one = lambda key, image: model.log_marginal(params, key, image, num_samples=num_samples,
                                                    chunk_size=chunk_size)
        return jax.vmap(one)(keys, x)

    num_batches = -(-images.shape[0] // batch_size)
    index_batches = np.array_split(np.arange(images.shape[0]), num_batches)
    keys = jax.random.split(jax.random.key(7), images.shape[0])
    inputs = [(keys[index], jnp.asarray(images[index])) for index in index_batches]
    compiled = {}

    def warm_up():
        for batch_keys, batch in inputs:
            if batch.shape not in compiled:
                lowered = jax.jit(batch_log_marginal).lower(params_fn(), batch_keys, batch)
                compiled[batch.shape] = lowered.compile(compiler_options=compiler_options)

    def run():
        params = params_fn()
        values = [compiled[batch.shape](params, batch_keys, batch) for batch_keys, batch in inputs]
        return float(jnp.mean(jnp.concatenate(values)))

    return Runner(warm_up, run)


def _mlp(weights: list, h: jax.Array) -> jax.Array:
    """``h [B, m]`` through ``[(W [m, n], b [n]), ...]``, ReLU between the layers."""
    for i, (w, b) in enumerate(weights):
        h = h @ w + b[None]
        h = jax.nn.relu(h) if i < len(weights) - 1 else h
    return h


def handwritten_elbo(params: dict, x: jax.Array, eps: jax.Array) -> jax.Array:
    """Per-example ELBO ``[B]`` of ``x [B, D]`` (binary) given standard-normal draws ``eps [B, d]``.

    ``params``: ``{"encoder": [(W, b), ...], "decoder": [(W, b), ...]}``; the encoder's
    last layer gives ``[mean, log_std]``. Bernoulli log-likelihood from logits minus the
    analytic KL to N(0, I), written out.
    """
    latent_dim = eps.shape[-1]
    out = _mlp(params["encoder"], x)
    mean, log_std = out[:, :latent_dim], out[:, latent_dim:]
    logits = _mlp(params["decoder"], mean + jnp.exp(log_std) * eps)
    reconstruction = jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)
    kl = -0.5 * jnp.sum(1.0 + 2.0 * log_std - mean**2 - jnp.exp(2.0 * log_std), axis=-1)
    return reconstruction - kl


def handwritten_runner(data: np.ndarray, *, hidden_sizes: Sequence[int], latent_dim: int, batch_size: int,
                       seed: int) -> Runner:
    """The zero-cost-abstraction baseline: the same model and epoch, written by hand.

    Plain batched ``x @ W + b`` layers (no Flax, no per-example ``vmap``):
    :func:`handwritten_elbo`, Optax Adam, and the
    epoch of :func:`vae_jax.train_epoch`: one ``lax.scan`` over the batches of a
    per-epoch permutation gathered from the on-device data. The library's epoch
    scan is compared with this (target: within 3%).
    """
    flat = jnp.asarray(data.reshape(data.shape[0], -1))
    input_dim = flat.shape[1]
    init = jax.nn.initializers.lecun_normal()  # Flax Dense's default, as in the library's model

    def layers(key, widths):
        keys = jax.random.split(key, len(widths) - 1)
        return [(init(k, (m, n)), jnp.zeros(n)) for k, m, n in zip(keys, widths[:-1], widths[1:])]

    key_encoder, key_decoder = jax.random.split(jax.random.key(seed))
    params = {"encoder": layers(key_encoder, [input_dim, *hidden_sizes, 2 * latent_dim]),
              "decoder": layers(key_decoder, [latent_dim, *hidden_sizes[::-1], input_dim])}
    optimizer = optax.adam(1e-3)

    def loss_fn(params, x, key):
        return -jnp.mean(handwritten_elbo(params, x, jax.random.normal(key, (x.shape[0], latent_dim))))

    def step(carry, inputs):
        params, opt_state = carry
        index, key = inputs
        loss, grads = jax.value_and_grad(loss_fn)(params, flat[index], key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    num_batches = flat.shape[0] // batch_size

    @functools.partial(jax.jit, donate_argnums=0)
    def epoch(carry, key):
        key_perm, key_steps = jax.random.split(key)
        order = jax.random.permutation(key_perm, flat.shape[0])[: num_batches * batch_size]
        carry, losses = jax.lax.scan(step, carry, (order.reshape(num_batches, batch_size),
                                                   jax.random.split(key_steps, num_batches)))
        return carry, jnp.mean(losses)

    box = {"carry": (params, optimizer.init(params)), "epoch": 0}
    key = jax.random.key(seed + 1)

    def warm_up():
        box["epoch_fn"] = epoch.lower(box["carry"], key).compile()

    def run():
        box["epoch"] += 1
        box["carry"], loss = box["epoch_fn"](box["carry"], jax.random.fold_in(key, box["epoch"]))
        return float(loss)

    return Runner(warm_up, run, compiled=lambda: box["epoch_fn"])
