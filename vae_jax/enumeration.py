"""Exact objectives of small discrete-latent models by summing over every configuration.

For ``d`` binary latents (``2^d`` configurations) or ``G`` categorical groups of
``K`` (``K^G``), the ELBO ``sum_b q(b|x) [log p(x, b) - log q(b|x)]``, the
marginal ``log p(x) = logsumexp_b log p(x, b)`` and the ``k``-sample
importance-weighted bound are finite sums, differentiable with ``jax.grad``:
the ground truth that the estimators of :mod:`vae_jax.discrete_estimators`
are tested against. Per example, pure JAX (imports ``jax`` only).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import jax
import jax.numpy as jnp

from vae_jax import discrete

MAX_CONFIGURATIONS = 2 ** 20


def configurations(latent_shape: tuple[int, ...], *, latent: str = "bernoulli") -> jax.Array:
    """Every latent configuration, float32: ``[2^d, d]`` or ``[K^G, G, K]`` (one-hot).

    Ordered like ``itertools.product`` (the last unit / group varies fastest).

    Raises:
      ValueError: a shape that does not fit ``latent``, or more than :data:`MAX_CONFIGURATIONS`.
    """
    discrete.check_logits(jnp.zeros(latent_shape), latent)
    if latent == "bernoulli":
        (d,) = latent_shape
        count, values = 2 ** d, range(2)
    else:
        d, k = latent_shape
        count, values = k ** d, range(k)
    if count > MAX_CONFIGURATIONS:
        raise ValueError(f"{count} configurations of latent_shape={latent_shape} is too many to enumerate "
                         f"(at most {MAX_CONFIGURATIONS}).")
    index = jnp.asarray(list(itertools.product(values, repeat=d)), jnp.int32).reshape(count, d)
    if latent == "bernoulli":
        return index.astype(jnp.float32)
    return jax.nn.one_hot(index, latent_shape[1], dtype=jnp.float32)


def _log_q_and_log_joint(x, logits, decode, prior_logits, latent, likelihood):
    discrete.check_logits(logits, latent)
    if jnp.shape(prior_logits) != jnp.shape(logits):
        raise ValueError(f"prior_logits has shape {jnp.shape(prior_logits)}; the encoder's logits have "
                         f"{jnp.shape(logits)}.")
    b = configurations(tuple(jnp.shape(logits)), latent=latent)
    log_q = jax.vmap(lambda v: discrete.log_prob(logits, v, latent=latent))(b)
    log_p = jax.vmap(lambda v: discrete.log_joint(x, v, decode, prior_logits, latent=latent, likelihood=likelihood))(b)
    return log_q, log_p


def exact_elbo(x: jax.Array, encode: Callable, decode: Callable, *, prior_logits: jax.Array,
               latent: str = "bernoulli", likelihood: str = "bernoulli") -> jax.Array:
    """``E_q(b|x)[log p(x, b) - log q(b|x)]`` exactly (nats); ``jax.grad`` of it is the exact gradient.

    Args:
      x: one observation.
      encode: ``x -> `` logits of q(b|x), ``[d]`` or ``[G, K]``.
      decode: ``b -> `` parameters of p(x|b).
      prior_logits: logits of p(b), the shape of the encoder's logits.
      latent, likelihood: as in :mod:`vae_jax.discrete`.
    """
    log_q, log_p = _log_q_and_log_joint(x, encode(x), decode, prior_logits, latent, likelihood)
    return jnp.sum(jnp.exp(log_q) * (log_p - log_q))


def exact_log_marginal(x: jax.Array, decode: Callable, *, prior_logits: jax.Array, latent: str = "bernoulli",
                       likelihood: str = "bernoulli") -> jax.Array:
    """``log p(x) = logsumexp_b log p(x, b)`` exactly (nats)."""
    _, log_p = _log_q_and_log_joint(x, jnp.zeros_like(prior_logits), decode, prior_logits, latent, likelihood)
    return jax.nn.logsumexp(log_p)


def exact_iwae(x: jax.Array, encode: Callable, decode: Callable, *, prior_logits: jax.Array, num_samples: int,
               latent: str = "bernoulli", likelihood: str = "bernoulli") -> jax.Array:
    """The ``k``-sample bound ``E[log (1/k) sum_i w_i]``, ``w_i = p(x, b_i) / q(b_i|x)``, exactly (nats).

    Sums over all ``C^k`` ordered tuples of the ``C`` configurations, so keep ``C^k`` small.

    Raises:
      ValueError: ``num_samples`` not a positive int, or ``C^k`` above :data:`MAX_CONFIGURATIONS`.
    """
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int; got {num_samples!r}.")
    log_q, log_p = _log_q_and_log_joint(x, encode(x), decode, prior_logits, latent, likelihood)
    count = log_q.shape[0] ** num_samples
    if count > MAX_CONFIGURATIONS:
        raise ValueError(f"{log_q.shape[0]}^{num_samples} = {count} tuples is too many to enumerate.")
    log_w = log_p - log_q
    # Broadcast one axis per draw: tuple (i_1..i_k) has weight prod q and bound log mean_j w_{i_j}.
    total_log_q, terms = jnp.zeros(()), []
    for j in range(num_samples):
        shape = [1] * num_samples
        shape[j] = -1
        total_log_q = total_log_q + log_q.reshape(shape)
        terms.append(jnp.broadcast_to(log_w.reshape(shape), (log_q.shape[0],) * num_samples))
    bound = jax.nn.logsumexp(jnp.stack(terms), axis=0) - math.log(num_samples)
    return jnp.sum(jnp.exp(total_log_q) * bound)
