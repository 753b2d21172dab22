"""Variational objectives as pure, per-example functions.

``encode(x) -> (mean, log_std)`` and ``decode(z) -> likelihood parameters`` are
plain callables, so any network of any framework (or a closed-form function)
can be used. Every function here works on ONE example ``x``; batch with
``jax.vmap`` at the call site, with one key per example. Bounds and
log-likelihoods are returned as they are (higher is better, nats per example);
``autoencoder_loss`` is what an optimiser minimises. This module imports
``jax`` only.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from vae_jax import distributions as D

Encoder = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
Decoder = Callable[[jax.Array], Any]

KL_MODES = ("analytic", "monte_carlo")


def reparameterize(
    key: jax.Array, mean: jax.Array, log_std: jax.Array, num_samples: int | None = None
) -> jax.Array:
    """Draws ``z = mean + exp(log_std) * eps`` with ``eps ~ N(0, I)``.

    Args:
      key: a PRNG key, used once.
      mean: ``[d]`` posterior means.
      log_std: ``[d]`` posterior log standard deviations.
      num_samples: ``None`` for one draw of shape ``[d]``, else ``k >= 1`` draws.

    Returns:
      ``[d]`` if ``num_samples is None``, else ``[k, d]``.
    """
    _check_posterior(mean, log_std)
    if num_samples is None:
        eps = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
        return mean + jnp.exp(log_std) * eps
    _check_num_samples(num_samples)
    eps = jax.random.normal(key, (num_samples, *jnp.shape(mean)), jnp.result_type(mean))
    return mean[None] + jnp.exp(log_std)[None] * eps


def elbo(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
    beta: float | jax.Array = 1.0,
    num_samples: int = 1,
    kl: str = "analytic",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The (beta-weighted) evidence lower bound for one example.

    ``E_q[log p(x|z)] - beta * KL(q(z|x) || N(0, I))``, with the expectation
    estimated from ``num_samples`` reparameterised draws. With
    ``kl="analytic"`` the KL is the closed form; with ``kl="monte_carlo"`` it is
    the sample average of ``log q(z|x) - log p(z)`` at the same draws (the
    "total" single-sample estimator that score-function and STL studies need).

    Args:
      key: PRNG key for the draws of z.
      x: one observation, e.g. ``[H, W, C]``.
      encode: ``x -> (mean [d], log_std [d])``.
      decode: ``z [d] -> likelihood parameters`` (see
        :func:`vae_jax.distributions.log_likelihood`).
      likelihood: ``"bernoulli"`` | ``"gaussian"`` | ``"gaussian_learned"``.
      beta: weight of the KL term, ``>= 0`` (1 gives the ELBO).
      num_samples: number of draws of z, ``>= 1``.
      kl: ``"analytic"`` or ``"monte_carlo"``.

    Returns:
      ``(value, aux)``: the scalar objective (nats) and a dict of scalars:
      ``reconstruction`` (estimate of ``E_q log p(x|z)``), ``kl`` and
      ``elbo`` (``reconstruction - kl``, the bound at beta = 1).

    Raises:
      ValueError: bad likelihood, beta, num_samples or kl, mismatched shapes,
        or (for concrete inputs) Bernoulli data outside ``[0, 1]``.
    """
    _check_objective_args(x, likelihood)
    _check_beta(beta)
    if kl not in KL_MODES:
        raise ValueError(f"Unknown kl={kl!r}; expected one of {KL_MODES}.")
    mean, log_std = encode(x)
    z = reparameterize(key, mean, log_std, num_samples)
    reconstruction = jnp.mean(jax.vmap(lambda zk: D.log_likelihood(likelihood, x, decode(zk)))(z))
    if kl == "analytic":
        kl_value = D.kl_to_standard_normal(mean, log_std)
    else:
        log_q = jax.vmap(D.gaussian_log_prob, in_axes=(0, None, None))(z, mean, log_std)
        kl_value = jnp.mean(log_q - jax.vmap(D.standard_normal_log_prob)(z))
    aux = {"reconstruction": reconstruction, "kl": kl_value, "elbo": reconstruction - kl_value}
    return reconstruction - beta * kl_value, aux


def log_importance_weights(
    z: jax.Array, x: jax.Array, mean: jax.Array, log_std: jax.Array, decode: Decoder, *, likelihood: str
) -> jax.Array:
    """``log p(x, z_k) - log q(z_k | x)`` for each of ``k`` draws.

    Args:
      z: ``[k, d]`` draws from q.
      x: one observation.
      mean, log_std: ``[d]`` parameters of q(z | x).
      decode: ``z [d] -> likelihood parameters``.
      likelihood: name of the observation model.

    Returns:
      ``[k]`` log importance weights (nats).
    """

    def one(zk):
        log_joint = D.log_likelihood(likelihood, x, decode(zk)) + D.standard_normal_log_prob(zk)
        return log_joint - D.gaussian_log_prob(zk, mean, log_std)

    return jax.vmap(one)(z)


def iwae_bound(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
    num_samples: int,
) -> jax.Array:
    """The importance-weighted bound ``log (1/k) sum_k p(x, z_k) / q(z_k|x)``.

    Equals the Monte-Carlo-KL ELBO for ``num_samples = 1`` (same key), and
    increases towards ``log p(x)`` in expectation as ``k`` grows (Burda et al.).

    Args:
      key: PRNG key for the ``k`` draws.
      x: one observation.
      encode, decode, likelihood: as for :func:`elbo`.
      num_samples: ``k >= 1``.

    Returns:
      Scalar bound in nats.
    """
    _check_objective_args(x, likelihood)
    _check_num_samples(num_samples)
    mean, log_std = encode(x)
    z = reparameterize(key, mean, log_std, num_samples)
    log_w = log_importance_weights(z, x, mean, log_std, decode, likelihood=likelihood)
    return jax.nn.logsumexp(log_w) - math.log(num_samples)


def log_marginal(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
    num_samples: int = 5000,
    chunk_size: int = 500,
) -> jax.Array:
    """Importance-sampled estimate of ``log p(x)`` in bounded memory.

    Draws ``num_samples`` z from q(z|x) in chunks of ``chunk_size`` (a
    ``lax.scan``), combining chunks with a streaming log-sum-exp. Draw ``i``
    uses ``fold_in(key, i)``, so the estimate does not depend on
    ``chunk_size``: chunked and unchunked runs agree to float32 rounding.
    It is the IWAE bound with ``k = num_samples``: biased low, consistent.

    Args:
      key: PRNG key.
      x: one observation.
      encode, decode, likelihood: as for :func:`elbo`.
      num_samples: total number of importance samples, ``>= 1``.
      chunk_size: samples decoded at once, ``>= 1``; memory scales with it.

    Returns:
      Scalar estimate of ``log p(x)`` in nats.

    Raises:
      ValueError: bad likelihood, num_samples or chunk_size, an encoder output
        other than two ``[d]`` arrays, or (for concrete inputs) Bernoulli data
        outside ``[0, 1]``.
    """
    _check_objective_args(x, likelihood)
    _check_num_samples(num_samples)
    _check_num_samples(chunk_size, "chunk_size")
    chunk_size = min(chunk_size, num_samples)
    num_chunks = -(-num_samples // chunk_size)
    mean, log_std = encode(x)
    _check_posterior(mean, log_std)

    def body(carry, chunk):
        running_max, running_sum = carry
        index = chunk * chunk_size + jnp.arange(chunk_size)
        eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), jnp.shape(mean)))(index)
        z = mean[None] + jnp.exp(log_std)[None] * eps
        log_w = log_importance_weights(z, x, mean, log_std, decode, likelihood=likelihood)
        log_w = jnp.where(index < num_samples, log_w, -jnp.inf)
        new_max = jnp.maximum(running_max, jnp.max(log_w))
        new_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(log_w - new_max))
        return (new_max, new_sum), None

    init = (jnp.asarray(-jnp.inf, mean.dtype), jnp.asarray(0.0, mean.dtype))
    (log_max, total), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
    return log_max + jnp.log(total) - math.log(num_samples)


def autoencoder_loss(
    x: jax.Array,
    encode: Callable[[jax.Array], jax.Array],
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
) -> jax.Array:
    """Negative reconstruction log-likelihood of a deterministic autoencoder.

    The baseline the VAE is compared with: ``-log p(x | decode(encode(x)))``,
    i.e. binary cross-entropy for ``"bernoulli"`` and
    ``1/2 ||x - x_hat||^2 + D/2 log(2 pi)`` for ``"gaussian"``.

    Args:
      x: one observation.
      encode: ``x -> code [d]`` (one array, no variance).
      decode: ``code [d] -> likelihood parameters``.
      likelihood: name of the observation model.

    Returns:
      Scalar loss in nats (lower is better).
    """
    _check_objective_args(x, likelihood)
    return -D.log_likelihood(likelihood, x, decode(encode(x)))


def _check_objective_args(x: jax.Array, likelihood: str) -> None:
    D.check_likelihood(likelihood)
    if likelihood == "bernoulli":
        _check_unit_interval(x)


def _check_unit_interval(x: jax.Array) -> None:
    if isinstance(x, jax.core.Tracer):
        return  # values are unknown while tracing; the data loaders check them
    lo, hi = float(jnp.min(x)), float(jnp.max(x))
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"likelihood='bernoulli' needs data in [0, 1]; got values in [{lo:g}, {hi:g}]. "
            "Scale images to [0, 1] (e.g. divide uint8 pixels by 255) or use a Gaussian likelihood."
        )


def _check_beta(beta: float | jax.Array) -> None:
    if isinstance(beta, jax.core.Tracer):
        return
    if not float(beta) >= 0.0:
        raise ValueError(f"beta must be >= 0 (1 gives the ELBO); got {beta}.")


def _check_num_samples(n: int, name: str = "num_samples") -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name} must be a positive int; got {n!r}.")


def _check_posterior(mean: jax.Array, log_std: jax.Array) -> None:
    if jnp.ndim(mean) != 1 or jnp.shape(mean) != jnp.shape(log_std):
        raise ValueError(
            "encode must return (mean, log_std), both of shape [latent_dim] for one example; "
            f"got shapes {jnp.shape(mean)} and {jnp.shape(log_std)}."
        )
