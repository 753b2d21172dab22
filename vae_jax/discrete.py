"""Discrete latent variables: factorised Bernoulli and categorical distributions.

Two latent families, named by ``latent``:

- ``"bernoulli"``: ``d`` independent binary units; logits and samples ``[d]``.
- ``"categorical"``: ``G`` independent groups of ``K`` categories; logits ``[G, K]``,
  samples one-hot ``[G, K]``.

Log-probabilities accept fractional (relaxed) samples, which gives the relaxed
objectives of the Concrete / Gumbel-softmax estimators and of REBAR.
Every function works on ONE example (batch with ``jax.vmap``); random ones
take an explicit ``key`` first. Log-probabilities are scalars in nats.

The models built on them (:class:`vae_jax.models.DiscreteVAE`) are in
:mod:`vae_jax.models.discrete`, their gradient estimators in :mod:`vae_jax.estimators`.
Imports ``jax`` only.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from vae_jax import distributions

LATENTS = ("bernoulli", "categorical")


def check_latent(latent: str) -> None:
    """Raises ``ValueError`` unless ``latent`` is one of :data:`LATENTS`."""
    if latent not in LATENTS:
        raise ValueError(f"Unknown latent {latent!r}; expected one of {LATENTS}.")


def check_logits(logits: jax.Array, latent: str) -> None:
    """Raises ``ValueError`` unless ``logits`` is ``[d]`` (Bernoulli) or ``[G, K]``, ``K >= 2`` (categorical)."""
    check_latent(latent)
    want = 1 if latent == "bernoulli" else 2
    if jnp.ndim(logits) != want or (latent == "categorical" and jnp.shape(logits)[-1] < 2):
        raise ValueError(f"latent={latent!r} needs logits of shape {'[d]' if want == 1 else '[G, K >= 2]'} "
                         f"for one example; got shape {jnp.shape(logits)}.")


def log_prob(logits: jax.Array, b: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """Log-probability of ``b`` under the factorised distribution with ``logits``.

    Args:
      logits: ``[d]`` (Bernoulli) or ``[G, K]`` (categorical, unnormalised).
      b: same shape; binary / one-hot, or relaxed values in ``[0, 1]`` (then the
        same formula, linear in ``b``, is evaluated).
      latent: ``"bernoulli"`` or ``"categorical"``.

    Returns:
      Scalar, nats: ``sum_j b_j a_j - softplus(a_j)`` or ``sum_g sum_k b_gk log softmax(a_g)_k``.
    """
    check_latent(latent)
    if latent == "bernoulli":
        return distributions.bernoulli_log_prob(logits, b)
    return jnp.sum(b * jax.nn.log_softmax(logits, axis=-1))


def score(logits: jax.Array, b: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """``d log q(b) / d logits``: ``b - sigmoid(a)`` or ``b - softmax(a)``, the shape of ``logits``."""
    check_latent(latent)
    return b - (jax.nn.sigmoid(logits) if latent == "bernoulli" else jax.nn.softmax(logits, axis=-1))


def entropy(logits: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """Entropy of the factorised distribution, scalar (nats)."""
    check_latent(latent)
    if latent == "bernoulli":
        p = jax.nn.sigmoid(logits)
        return jnp.sum(jax.nn.softplus(logits) - p * logits)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p)


def kl(q_logits: jax.Array, p_logits: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """``KL(q || p)`` between two factorised distributions of one family, scalar (nats)."""
    check_latent(latent)
    if latent == "bernoulli":
        q = jax.nn.sigmoid(q_logits)
        log_q1, log_q0 = jax.nn.log_sigmoid(q_logits), jax.nn.log_sigmoid(-q_logits)
        log_p1, log_p0 = jax.nn.log_sigmoid(p_logits), jax.nn.log_sigmoid(-p_logits)
        return jnp.sum(q * (log_q1 - log_p1) + (1 - q) * (log_q0 - log_p0))
    log_q, log_p = jax.nn.log_softmax(q_logits, axis=-1), jax.nn.log_softmax(p_logits, axis=-1)
    return jnp.sum(jnp.exp(log_q) * (log_q - log_p))


def noise(key: jax.Array, logits: jax.Array, *, latent: str = "bernoulli", num_samples: int | None = None
          ) -> jax.Array:
    """Standard logistic (Bernoulli) or Gumbel (categorical) noise ``[(k,), *logits.shape]``.

    ``z = logits + noise`` is the pre-threshold variable: ``b = H(z)`` (Bernoulli) or
    ``one_hot(argmax z)`` (categorical) is an exact draw of the distribution.
    """
    check_latent(latent)
    shape = jnp.shape(logits) if num_samples is None else (num_samples, *jnp.shape(logits))
    dtype = jnp.result_type(logits)
    if latent == "bernoulli":
        return jax.random.logistic(key, shape, dtype)
    return jax.random.gumbel(key, shape, dtype)


def hard(z: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """The exact sample from the pre-threshold ``z``: ``1[z > 0]`` or ``one_hot(argmax_k z)``, float."""
    check_latent(latent)
    if latent == "bernoulli":
        return (z > 0).astype(z.dtype)
    return jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)


def relax(z: jax.Array, temperature: float | jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """Concrete relaxation of ``hard(z)``: ``sigmoid(z / t)`` or ``softmax(z / t)`` (same shape)."""
    check_latent(latent)
    if latent == "bernoulli":
        return jax.nn.sigmoid(z / temperature)
    return jax.nn.softmax(z / temperature, axis=-1)


def _broadcast(logits, num_samples):
    return logits if num_samples is None else logits[None]


def sample(key: jax.Array, logits: jax.Array, *, latent: str = "bernoulli", num_samples: int | None = None
           ) -> jax.Array:
    """Exact draws ``b ~ q``: ``[(k,), *logits.shape]``, float 0/1 (one-hot for categorical)."""
    return hard(_broadcast(logits, num_samples) + noise(key, logits, latent=latent, num_samples=num_samples),
                latent=latent)


def relaxed_sample(key: jax.Array, logits: jax.Array, *, temperature: float | jax.Array,
                   latent: str = "bernoulli", num_samples: int | None = None) -> tuple[jax.Array, jax.Array]:
    """A Concrete / Gumbel-softmax draw and the exact draw it relaxes, from the same noise.

    Returns:
      ``(soft, b)``, each ``[(k,), *logits.shape]``: ``soft`` is differentiable in
      ``logits`` and tends to ``b`` as ``temperature -> 0``.
    """
    z = _broadcast(logits, num_samples) + noise(key, logits, latent=latent, num_samples=num_samples)
    return relax(z, temperature, latent=latent), hard(z, latent=latent)


def log_joint(x: jax.Array, b: jax.Array, decode: Callable, prior_logits: jax.Array, *,
              latent: str = "bernoulli", likelihood: str = "bernoulli") -> jax.Array:
    """``log p(x, b) = log p(b) + log p(x | b)`` for one example, scalar (nats).

    Args:
      x: one observation (the shape ``decode`` returns).
      b: one latent sample (exact or relaxed), the shape of ``prior_logits``.
      decode: ``b -> `` parameters of p(x|b) (see :func:`vae_jax.distributions.log_likelihood`).
      prior_logits: logits of the factorised prior p(b).
    """
    return log_prob(prior_logits, b, latent=latent) + distributions.log_likelihood(likelihood, x, decode(b))
