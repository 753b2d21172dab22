"""Log-densities, likelihoods by name, and the closed-form KL divergence.

Every function works on ONE example (batch with ``jax.vmap``) and returns a
scalar summed over all dimensions, in nats. This module imports ``jax`` only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from vae_jax._checks import LOG_2PI, check_finite

LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
"""Observation models: ``"bernoulli"`` (decoder gives logits), ``"gaussian"``
(decoder gives the mean, sigma = 1), ``"gaussian_learned"`` (decoder gives
``(mean, log_std)``)."""


def bernoulli_log_prob(logits: jax.Array, x: jax.Array) -> jax.Array:
    """Log-probability of ``x`` under independent Bernoullis with ``logits``.

    Computed as ``x * logits - softplus(logits)``, which is finite, with finite
    gradients, for logits of any magnitude (``log sigmoid`` would overflow).
    ``x`` may be fractional (grey levels), which gives the usual cross-entropy.

    Args:
      logits: ``[...]`` unnormalised log-odds, any shape.
      x: ``[...]`` targets in ``[0, 1]``, same shape as ``logits``.

    Returns:
      Scalar: ``sum_j x_j log p_j + (1 - x_j) log(1 - p_j)`` in nats.
    """
    return jnp.sum(x * logits - jax.nn.softplus(logits))


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Log-density of a diagonal Gaussian, including the ``log 2 pi`` constant.

    Args:
      x: ``[...]`` points.
      mean: ``[...]`` means, same shape as ``x``.
      log_std: ``[...]`` log standard deviations, same shape as ``x``, or a scalar.

    Returns:
      Scalar: ``sum_j log N(x_j; mean_j, exp(log_std_j)^2)`` in nats.
    """
    log_std = jnp.broadcast_to(log_std, jnp.shape(x))
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * LOG_2PI)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """Log-density of ``z`` under N(0, I). ``z``: ``[d]``. Returns a scalar (nats)."""
    return jnp.sum(-0.5 * jnp.square(z) - 0.5 * LOG_2PI)


def kl_to_standard_normal(mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """KL(N(mean, diag(exp(log_std))^2) || N(0, I)) in closed form.

    ``-1/2 sum_j (1 + 2 log s_j - m_j^2 - s_j^2)``.

    Args:
      mean: ``[d]`` means of q.
      log_std: ``[d]`` log standard deviations of q.

    Returns:
      Scalar KL in nats; exactly 0 at ``mean = 0, log_std = 0``.
    """
    return -0.5 * jnp.sum(1.0 + 2.0 * log_std - jnp.square(mean) - jnp.exp(2.0 * log_std))


def check_likelihood(likelihood: str) -> None:
    """Raises ``ValueError`` unless ``likelihood`` is one of :data:`LIKELIHOODS`."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}.")


def log_likelihood(likelihood: str, x: jax.Array, params: Any) -> jax.Array:
    """``log p(x | z)`` given the decoder's output ``params`` for one example.

    Args:
      likelihood: one of :data:`LIKELIHOODS`.
      x: ``[...]`` one observation.
      params: the decoder output: logits ``[...]`` (``"bernoulli"``), the mean
        ``[...]`` (``"gaussian"``, sigma = 1), or ``(mean, log_std)``
        (``"gaussian_learned"``), each the shape of ``x``.

    Returns:
      Scalar log-likelihood in nats, summed over all dimensions of ``x``.

    Raises:
      ValueError: unknown likelihood, decoder output of the wrong shape, or (Gaussian
        likelihoods, concrete ``x`` or under :func:`vae_jax.checked`) NaN or inf in ``x``:
        one ``isfinite`` pass over the example, where a NaN would otherwise turn the whole
        bound into NaN without a word. Bernoulli data are checked by the objectives.
    """
    check_likelihood(likelihood)
    if likelihood != "bernoulli":
        check_finite(x, what=f"likelihood={likelihood!r} needs data")
    if likelihood == "gaussian_learned":
        if not (isinstance(params, (tuple, list)) and len(params) == 2):
            raise ValueError(
                "likelihood='gaussian_learned' needs the decoder to return (mean, log_std); "
                f"got {type(params).__name__}."
            )
        mean, log_std = params
        _check_same_shape(x, mean, "decoder mean")
        _check_same_shape(x, log_std, "decoder log_std")
        return gaussian_log_prob(x, mean, log_std)
    if isinstance(params, (tuple, list)):
        raise ValueError(
            f"likelihood={likelihood!r} needs the decoder to return one array the shape of x; "
            "got a tuple (use likelihood='gaussian_learned' for (mean, log_std))."
        )
    _check_same_shape(x, params, "decoder output")
    if likelihood == "bernoulli":
        return bernoulli_log_prob(params, x)
    return gaussian_log_prob(x, params, jnp.zeros(()))


def likelihood_mean(likelihood: str, params: Any) -> jax.Array:
    """The mean of p(x | z) (what one shows as a reconstruction or sample).

    Args:
      likelihood: one of :data:`LIKELIHOODS`.
      params: the decoder output, as for :func:`log_likelihood`.

    Returns:
      ``[...]``: ``sigmoid(logits)`` for Bernoulli, the mean for Gaussians.
    """
    check_likelihood(likelihood)
    if likelihood == "bernoulli":
        return jax.nn.sigmoid(params)
    if likelihood == "gaussian_learned":
        return params[0]
    return params


def _check_same_shape(x: jax.Array, y: jax.Array, what: str) -> None:
    if jnp.shape(x) != jnp.shape(y):
        raise ValueError(
            f"{what} has shape {jnp.shape(y)} but the observation x has shape {jnp.shape(x)}; "
            "they must match (the functions work on one example: vmap over the batch)."
        )
