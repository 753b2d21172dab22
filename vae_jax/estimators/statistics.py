"""Mean, variance and signal-to-noise ratio of an estimator's gradient over independent draws.

Imports ``jax`` only.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp


class GradientStatistics(NamedTuple):
    """Statistics of one parameter group's gradient over ``N`` independent draws.

    Attributes:
      mean: pytree like the group's parameters: mean gradient over draws.
      variance: pytree: unbiased (ddof = 1) variance over draws, elementwise.
      snr: pytree: ``|mean| / std`` elementwise (0 where both are 0, inf where only std is).
        For a parameter whose true mean is 0 it still averages ``sqrt(2 / (pi N))``.
      total_variance: scalar, ``sum`` of the elementwise variances (trace of the covariance).
      mean_snr: scalar, the elementwise SNR averaged over the group's parameters
        (finite values only: a float32 variance that underflows to 0 gives inf).
      norm_snr: scalar, ``sqrt(max(||mean||^2 - total_variance / N, 0) / total_variance)``:
        the norm of the mean gradient over the root total variance, bias-corrected
        (``E ||mean||^2 = ||true mean||^2 + trace / N``), so it has no noise floor.
    """

    mean: Any
    variance: Any
    snr: Any
    total_variance: jax.Array
    mean_snr: jax.Array
    norm_snr: jax.Array


def _snr(mean, variance):
    std = jnp.sqrt(jnp.where(variance > 0, variance, 1.0))
    return jnp.where(variance > 0, jnp.abs(mean) / std, jnp.where(mean == 0, 0.0, jnp.inf))


def _summarise(grads: Any) -> GradientStatistics:
    num_draws = jax.tree.leaves(grads)[0].shape[0]
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    variance = jax.tree.map(lambda g: jnp.var(g, axis=0, ddof=1), grads)
    snr = jax.tree.map(_snr, mean, variance)
    total = sum(jnp.sum(v) for v in jax.tree.leaves(variance))
    finite = [jnp.isfinite(s) for s in jax.tree.leaves(snr)]
    mean_snr = (sum(jnp.sum(jnp.where(f, s, 0.0)) for f, s in zip(finite, jax.tree.leaves(snr)))
                / sum(jnp.sum(f) for f in finite))
    squared_norm = sum(jnp.sum(jnp.square(m)) for m in jax.tree.leaves(mean))
    signal = jnp.sqrt(jnp.maximum(squared_norm - total / num_draws, 0.0))
    return GradientStatistics(mean, variance, snr, total, mean_snr, _snr(signal, total))


@functools.partial(jax.jit, static_argnames=("estimator", "num_draws", "chunk_size"))
def _draw_gradients(estimator, params, key, x, hparams, *, num_draws, chunk_size):
    def objective(p, draw_key):
        keys = jax.random.split(draw_key, x.shape[0])
        values, _ = jax.vmap(lambda k, xi: estimator(p, k, xi, **hparams))(keys, x)
        return jnp.mean(values)

    def draw(k):
        return jax.grad(objective)(params, k)

    keys = jax.random.split(key, num_draws)
    return jax.vmap(draw)(keys) if chunk_size is None else jax.lax.map(draw, keys, batch_size=chunk_size)


@jax.jit
def _summarise_groups(grads):
    # Jitted apart from the draws so that it compiles once per parameter shape, not per estimator.
    return {group: _summarise(g) for group, g in grads.items()}


def gradient_statistics(estimator: Callable, params: Mapping[str, Any], key: jax.Array, x: jax.Array, *,
                        num_draws: int, hparams: Mapping[str, Any] | None = None,
                        chunk_size: int | None = None) -> dict[str, GradientStatistics]:
    """Mean, variance and SNR of an estimator's gradient over ``num_draws`` keys.

    The draws are one jitted computation: ``jax.vmap`` over the draws' keys of
    ``jax.grad`` of the batch-mean ``estimator`` on the fixed batch ``x`` (each
    draw splits its key into one key per example, as the train step does); the
    ``[num_draws, ...]`` gradients are then summarised by a second jitted call.

    Args:
      estimator: ``(params, key, x, **hparams) -> (value, aux)``, e.g. from :func:`vae_jax.estimators.make_estimator`.
      params: a dict of parameter groups, e.g. ``{"encoder": ..., "decoder": ...}``.
      key: PRNG key of the draws.
      x: ``[B, ...]`` a fixed batch.
      num_draws: independent gradient draws, ``>= 2``.
      hparams: forwarded to the estimator (e.g. ``{"baseline_value": b}``).
      chunk_size: if set, vmap over chunks of this many draws at a time
        (``jax.lax.map``), which bounds memory; results do not depend on it.

    Returns:
      ``{group: GradientStatistics}`` for each top-level key of ``params``: the
      gradient of the mean objective (ascent direction), per parameter leaf and aggregated.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict of groups such as {{'encoder', 'decoder'}}; "
                         f"got {type(params).__name__}.")
    if not isinstance(num_draws, int) or num_draws < 2:
        raise ValueError(f"num_draws must be an int >= 2 (variances need two draws); got {num_draws!r}.")
    if jnp.ndim(x) < 1 or jnp.shape(x)[0] < 1:
        raise ValueError(f"x must be a batch [B, ...] with B >= 1; got shape {jnp.shape(x)}.")
    hparams = {k: jnp.asarray(v, jnp.float32) for k, v in (hparams or {}).items()}
    grads = _draw_gradients(estimator, dict(params), key, jnp.asarray(x), hparams, num_draws=num_draws,
                            chunk_size=chunk_size)
    return _summarise_groups(grads)
