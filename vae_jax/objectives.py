"""Variational objectives as pure, per-example functions.

``encode(x) -> (mean, log_std)`` and ``decode(z) -> likelihood parameters`` are
plain callables, so any network of any framework (or a closed-form function)
can be used. ``encode`` may instead return a posterior object of
:mod:`vae_jax.posteriors` (a flow or hierarchical q(z|x), anything with
``sample_and_log_prob(key, k) -> (z [k, d], log_q [k])``): every objective here
takes it unchanged in signature, with the Monte-Carlo KL ``log q - log p``; the
``(mean, log_std)`` tuple keeps its path (closed-form KL) exactly as before. Every function here works on ONE example ``x``; batch with
``jax.vmap`` at the call site, with one key per example. Bounds and
log-likelihoods are returned as they are (higher is better, nats per example);
``autoencoder_loss`` is what an optimiser minimises. This module imports
``jax`` only.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax.posteriors import is_posterior
from vae_jax._checks import (check_finite_nonnegative, check_positive_int, check_posterior,
                             check_unit_interval)

Encoder = Callable[[jax.Array], Any]  # x -> (mean [d], log_std [d]) or a posterior object
Decoder = Callable[[jax.Array], Any]
PriorLogProb = Callable[[jax.Array], jax.Array]

KL_MODES = ("auto", "analytic", "monte_carlo")


class Bound(NamedTuple):
    """A model's pure functions with its parameters bound: what every objective takes.

    Attributes:
      encode: ``x -> (mean [d], log_std [d])`` (VAE), a posterior object (:mod:`vae_jax.posteriors`:
        flow and hierarchical models) or ``x -> code [d]`` (AE).
      decode: ``z [d] ->`` the parameters of p(x | z).
      prior: ``log p(z)`` of one ``z [d]``, or ``None`` for N(0, I).
    """

    encode: Callable[[jax.Array], Any]
    decode: Callable[[jax.Array], Any]
    prior: Callable[[jax.Array], jax.Array] | None = None


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
    check_posterior(mean, log_std)
    if num_samples is None:
        eps = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
        return mean + jnp.exp(log_std) * eps
    check_positive_int(num_samples)
    eps = jax.random.normal(key, (num_samples, *jnp.shape(mean)), jnp.result_type(mean))
    return mean[None] + jnp.exp(log_std)[None] * eps


def _mean_over_draws(fn: Callable[[jax.Array], jax.Array], z: jax.Array) -> jax.Array:
    """Mean of ``fn(z_k)`` over the draws ``z [K, d]``.

    One draw is called directly rather than through a size-1 ``vmap``: under the
    train step's batch ``vmap`` that extra unit axis gave the decoder's backward pass
    transposed layouts and copies (3% more bytes moved per step for an MLP VAE at
    batch 128, by XLA's cost analysis).
    """
    if z.shape[0] == 1:
        return fn(z[0])
    return jnp.mean(jax.vmap(fn)(z))


def elbo(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
    beta: float | jax.Array = 1.0,
    num_samples: int = 1,
    kl: str = "auto",
    prior: PriorLogProb | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The (beta-weighted) evidence lower bound for one example.

    ``E_q[log p(x|z)] - beta * KL(q(z|x) || p(z))``, with the expectation
    estimated from ``num_samples`` reparameterised draws. With
    ``kl="analytic"`` the KL is the closed form (standard normal prior only); with
    ``kl="monte_carlo"`` it is the sample average of ``log q(z|x) - log p(z)`` at
    the same draws (the "total" single-sample estimator that score-function and
    STL studies need, and the only one for priors without a closed-form KL).
    ``"auto"`` is analytic for the standard normal prior, Monte Carlo otherwise.
    A posterior object (flow, hierarchical) always takes the Monte-Carlo KL at
    its draws (``"auto"`` or ``"monte_carlo"``; ``"analytic"`` raises).

    Args:
      key: PRNG key for the draws of z.
      x: one observation, e.g. ``[H, W, C]``.
      encode: ``x -> (mean [d], log_std [d])`` or a posterior object (see
        :mod:`vae_jax.posteriors`; then ``z`` is its ``[d]`` vector, e.g. all layers).
      decode: ``z [d] -> likelihood parameters`` (see
        :func:`vae_jax.distributions.log_likelihood`).
      likelihood: ``"bernoulli"`` | ``"gaussian"`` | ``"gaussian_learned"``.
      beta: weight of the KL term, ``>= 0`` (1 gives the ELBO).
      num_samples: number of draws of z, ``>= 1``.
      kl: ``"auto"``, ``"analytic"`` or ``"monte_carlo"``.
      prior: ``log p(z)`` of one ``z [d]`` (e.g. :mod:`vae_jax.priors`); ``None`` is N(0, I).

    Returns:
      ``(value, aux)``: the scalar objective (nats) and a dict of scalars:
      ``reconstruction`` (estimate of ``E_q log p(x|z)``), ``kl`` and
      ``elbo`` (``reconstruction - kl``, the bound at beta = 1).

    Raises:
      ValueError: bad likelihood, beta, num_samples or kl, mismatched shapes,
        or (for concrete inputs) Bernoulli data outside ``[0, 1]``.
    """
    _check_objective_args(x, likelihood)
    check_finite_nonnegative(beta, "beta")
    if kl not in KL_MODES:
        raise ValueError(f"Unknown kl={kl!r}; expected one of {KL_MODES}.")
    if kl == "analytic" and prior is not None:
        raise ValueError("kl='analytic' needs the standard normal prior (prior=None); use kl='monte_carlo'.")
    encoded = encode(x)
    if is_posterior(encoded):
        if kl == "analytic":
            raise ValueError("kl='analytic' needs a (mean, log_std) encoder; a posterior object takes "
                             "kl='auto' or 'monte_carlo'.")
        z, log_q = encoded.sample_and_log_prob(key, num_samples)
        reconstruction = _mean_over_draws(lambda zk: distributions.log_likelihood(likelihood, x, decode(zk)), z)
        kl_value = jnp.mean(log_q - jax.vmap(_scalar_prior(prior))(z))
        aux = {"reconstruction": reconstruction, "kl": kl_value, "elbo": reconstruction - kl_value}
        return reconstruction - beta * kl_value, aux
    mean, log_std = encoded
    z = reparameterize(key, mean, log_std, num_samples)
    reconstruction = _mean_over_draws(lambda zk: distributions.log_likelihood(likelihood, x, decode(zk)), z)
    if kl in ("auto", "analytic") and prior is None:
        kl_value = distributions.kl_to_standard_normal(mean, log_std)
    else:
        log_q = jax.vmap(distributions.gaussian_log_prob, in_axes=(0, None, None))(z, mean, log_std)
        kl_value = jnp.mean(log_q - jax.vmap(_scalar_prior(prior))(z))
    aux = {"reconstruction": reconstruction, "kl": kl_value, "elbo": reconstruction - kl_value}
    return reconstruction - beta * kl_value, aux


def _scalar_prior(prior: PriorLogProb | None) -> PriorLogProb:
    """``prior`` (N(0, I) for None), refusing one that returns anything but a scalar ``log p(z)``
    per ``z [d]`` (a per-dimension vector would be summed nowhere and broadcast into a wrong number)."""
    if prior is None:
        return distributions.standard_normal_log_prob

    def log_prob(z: jax.Array) -> jax.Array:
        value = prior(z)
        if jnp.ndim(value) != 0:
            raise ValueError(f"prior must return log p(z) of one z [{z.shape[-1]}] as a scalar; it returned "
                             f"shape {jnp.shape(value)} (sum over the dimensions?).")
        return value

    return log_prob


def log_importance_weights(
    z: jax.Array, x: jax.Array, mean: jax.Array | None, log_std: jax.Array | None, decode: Decoder, *,
    likelihood: str, prior: PriorLogProb | None = None, log_q: jax.Array | None = None,
) -> jax.Array:
    """``log p(x, z_k) - log q(z_k | x)`` for each of ``k`` draws.

    Args:
      z: ``[k, d]`` draws from q.
      x: one observation.
      mean, log_std: ``[d]`` parameters of a diagonal Gaussian q(z | x); unused (pass None)
        when ``log_q`` is given.
      decode: ``z [d] -> likelihood parameters``.
      likelihood: name of the observation model.
      prior: ``log p(z)`` of one ``z [d]``; ``None`` is N(0, I).
      log_q: ``[k]`` log q(z_k | x) of the draws, as a posterior object's
        ``sample_and_log_prob`` returns them (flows have no cheap log q of a given z).

    Returns:
      ``[k]`` log importance weights (nats).
    """
    prior_log_prob = _scalar_prior(prior)

    def log_joint(zk):
        return distributions.log_likelihood(likelihood, x, decode(zk)) + prior_log_prob(zk)

    if log_q is not None:
        return jax.vmap(log_joint)(z) - log_q
    if mean is None or log_std is None:
        raise ValueError("log_importance_weights needs mean and log_std of a Gaussian q, or the draws' log_q=.")

    def one(zk):
        return log_joint(zk) - distributions.gaussian_log_prob(zk, mean, log_std)

    return jax.vmap(one)(z)


def iwae_bound(
    key: jax.Array,
    x: jax.Array,
    encode: Encoder,
    decode: Decoder,
    *,
    likelihood: str = "bernoulli",
    num_samples: int,
    prior: PriorLogProb | None = None,
) -> jax.Array:
    """The importance-weighted bound ``log (1/k) sum_k p(x, z_k) / q(z_k|x)``.

    Equals the Monte-Carlo-KL ELBO for ``num_samples = 1`` (same key), and
    increases towards ``log p(x)`` in expectation as ``k`` grows (Burda et al.).

    Args:
      key: PRNG key for the ``k`` draws.
      x: one observation.
      encode, decode, likelihood, prior: as for :func:`elbo`.
      num_samples: ``k >= 1``.

    Returns:
      Scalar bound in nats.
    """
    _check_objective_args(x, likelihood)
    check_positive_int(num_samples)
    encoded = encode(x)
    if is_posterior(encoded):
        z, log_q = encoded.sample_and_log_prob(key, num_samples)
        log_w = log_importance_weights(z, x, None, None, decode, likelihood=likelihood, prior=prior, log_q=log_q)
        return jax.nn.logsumexp(log_w) - math.log(num_samples)
    mean, log_std = encoded
    z = reparameterize(key, mean, log_std, num_samples)
    log_w = log_importance_weights(z, x, mean, log_std, decode, likelihood=likelihood, prior=prior)
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
    prior: PriorLogProb | None = None,
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
      encode, decode, likelihood, prior: as for :func:`elbo`.
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
    check_positive_int(num_samples)
    check_positive_int(chunk_size, "chunk_size")
    chunk_size = min(chunk_size, num_samples)
    num_chunks = -(-num_samples // chunk_size)
    log_weights, dtype = _chunk_log_weights(key, x, encode(x), decode, likelihood=likelihood, prior=prior)

    def body(carry, chunk):
        running_max, running_sum = carry
        index = chunk * chunk_size + jnp.arange(chunk_size)
        log_w = jnp.where(index < num_samples, log_weights(index), -jnp.inf)
        new_max = jnp.maximum(running_max, jnp.max(log_w))
        new_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(log_w - new_max))
        return (new_max, new_sum), None

    init = (jnp.asarray(-jnp.inf, dtype), jnp.asarray(0.0, dtype))
    (log_max, total), _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
    return log_max + jnp.log(total) - math.log(num_samples)


def _chunk_log_weights(key, x, encoded, decode, *, likelihood, prior):
    """``(log_weights(index [c]) -> [c], dtype)``: the log weights of draws number ``index``,
    draw ``i`` from ``fold_in(key, i)`` alone (so chunking does not change them)."""
    if is_posterior(encoded):
        def posterior_weights(index):
            z, log_q = jax.vmap(lambda i: encoded.sample_and_log_prob(jax.random.fold_in(key, i), 1))(index)
            return log_importance_weights(z[:, 0], x, None, None, decode, likelihood=likelihood, prior=prior,
                                          log_q=log_q[:, 0])

        return posterior_weights, jnp.result_type(encoded.mean)
    mean, log_std = encoded
    check_posterior(mean, log_std)

    def gaussian_weights(index):
        eps = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), jnp.shape(mean)))(index)
        z = mean[None] + jnp.exp(log_std)[None] * eps
        return log_importance_weights(z, x, mean, log_std, decode, likelihood=likelihood, prior=prior)

    return gaussian_weights, mean.dtype


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
    return -distributions.log_likelihood(likelihood, x, decode(encode(x)))


def _check_objective_args(x: jax.Array, likelihood: str) -> None:
    distributions.check_likelihood(likelihood)
    if likelihood == "bernoulli":
        check_unit_interval(x)
