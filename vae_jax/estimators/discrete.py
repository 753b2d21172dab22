"""Gradient estimators of discrete latents as surrogate objectives (the contract of
:mod:`vae_jax.estimators.gaussian`).

Each estimator is a per-example ``(key, x, encode, decode, *, prior_logits,
latent, likelihood, ...) -> (value, aux)``: ``encode(x)`` gives the logits of
q(b|x) (``[d]`` Bernoulli or ``[G, K]`` categorical), ``decode(b)`` the
parameters of p(x|b), ``prior_logits`` those of the factorised p(b) (learned:
pass them traced from the parameters). ``value`` is numerically the objective
(the Monte-Carlo ELBO, or the k-sample bound for VIMCO and DisARM-IW), and its
gradient is the estimator, so the objectives of
:func:`vae_jax.estimators.make_estimator` go through
:func:`vae_jax.training.make_train_step` and
:func:`vae_jax.estimators.gradient_statistics` unchanged.

With ``f(b) = log p(x, b) - log q(b|x)``, the decoder (and prior) gradient is
always ``mean_i grad log p(x, b_i)`` over the exact draws an estimator
evaluates; the encoder gradient is an estimate ``g`` of
``d/d logits E_q[f(b)]`` (``f`` held fixed: its own zero-mean score term is left
out), attached as ``sum(stop_gradient(g) * logits)``:

- ``reinforce``: ``mean_i (f_i - c_i) score(b_i)``, baseline ``c`` none, running mean
  (``baseline_value``) or leave-one-out over ``k`` draws (Williams 1992).
- ``nvil``: ``c = baseline_value + C_psi(x)``, a learned input-dependent baseline
  (Mnih & Gregor 2014), fitted by minimising ``(f - c)^2``.
- ``vimco``: the k-sample bound, per-draw leave-one-out signals with the
  geometric mean in place of the left-out weight (Mnih & Rezende 2016).
- ``arm``, ``disarm``: antithetic pairs ``b = 1[u < s(a)]``, ``b~ = 1[1 - u < s(a)]``;
  ARM ``(f(b~) - f(b)) (u - 1/2)`` (Yin & Zhou 2019), DisARM its conditional
  expectation ``1/2 (f(b) - f(b~)) (-1)^b~ 1[b != b~] s(|a|)`` (Dong, Mnih & Tucker 2020);
  ``num_pairs`` independent pairs averaged. Bernoulli only.
- ``disarm_iw``: DisARM for the k-sample bound (the DisARM paper's multi-sample form,
  "local DisARM"): k antithetic pairs, each draw's signal the bound minus the bound
  with that draw swapped for its partner. Bernoulli only.
- the relaxation-based ones (Gumbel-softmax, straight-through, REBAR, RELAX) are in
  :mod:`vae_jax.estimators.relaxed`.

NVIL's learned baseline lives in the model parameters (see
:mod:`vae_jax.estimators.learned`); its loss ``-(f - c)^2`` enters the surrogate with
value 0 and gradient only for the baseline. Imports ``jax`` only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vae_jax import discrete
from vae_jax.estimators._surrogate import attach, baseline_values, check_baseline, check_int, sg


def _setup(x, encode, decode, prior_logits, latent, likelihood, *, bernoulli_only=None):
    """``(logits, log_p)``: the encoder's logits and ``b -> log p(x, b)`` (gradient to the decoder only)."""
    discrete.check_latent(latent)
    if bernoulli_only and latent != "bernoulli":
        raise ValueError(f"{bernoulli_only} is defined for Bernoulli latents; got latent={latent!r}.")
    logits = encode(x)
    discrete.check_logits(logits, latent)
    prior = jnp.zeros_like(logits) if prior_logits is None else prior_logits
    if jnp.shape(prior) != jnp.shape(logits):
        raise ValueError(f"prior_logits has shape {jnp.shape(prior)}; the encoder's logits have {jnp.shape(logits)}.")
    return logits, lambda b: discrete.log_joint(x, b, decode, prior, latent=latent, likelihood=likelihood)


def _evaluate(logits, log_p, b, latent):
    """``(log p [k], f [k])`` at draws ``b [k, ...]``: ``log p`` differentiable in the decoder, ``f`` constant."""
    lp = jax.vmap(log_p)(b)
    lq = jax.vmap(lambda v: discrete.log_prob(sg(logits), v, latent=latent))(b)
    return lp, sg(lp) - lq


def _weighted(w, s):
    """``sum_i w_i s_i`` for ``w [k]`` and ``s [k, ...]``."""
    return jnp.tensordot(w, s, axes=1)


def _score_estimate(key, x, encode, decode, prior_logits, latent, likelihood, num_samples, baseline,
                    baseline_value, learned=None):
    """REINFORCE core; ``learned``: the scalar ``C_psi(x)`` of NVIL, added to the baseline (stopped)."""
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood)
    b = discrete.sample(key, sg(logits), latent=latent, num_samples=num_samples)
    lp, f = _evaluate(logits, log_p, b, latent)
    c = baseline_values(f, baseline, baseline_value)
    if learned is not None:
        c = c + sg(learned)
    scores = jax.vmap(lambda v: discrete.score(sg(logits), v, latent=latent))(b)
    g = _weighted(f - c, scores) / num_samples
    value = jnp.mean(f)
    return value, f, jnp.mean(lp) + jnp.sum(sg(g) * logits)


def reinforce(key, x, encode, decode, *, prior_logits=None, latent="bernoulli", likelihood="bernoulli",
              num_samples=1, baseline="none", baseline_value=None):
    """REINFORCE: encoder gradient ``mean_i (f_i - c_i) d log q(b_i) / d logits``.

    Args:
      key: PRNG key of the ``k`` draws.
      x: one observation.
      encode, decode, prior_logits, latent, likelihood: see the module docstring.
      num_samples: ``k >= 1`` draws (``>= 2`` for ``"leave_one_out"``).
      baseline: ``"none"``, ``"running_mean"`` (``c = baseline_value``, see
        :func:`vae_jax.estimators.with_running_baseline`) or ``"leave_one_out"``.
      baseline_value: scalar (nats), required by and only allowed with ``"running_mean"``.

    Returns:
      ``(value, {"elbo": value})``: the Monte-Carlo ELBO ``mean_i f_i`` (nats).
    """
    check_baseline(baseline, baseline_value, num_samples)
    value, _, surrogate = _score_estimate(key, x, encode, decode, prior_logits, latent, likelihood, num_samples,
                                          baseline, baseline_value)
    return attach(value, surrogate), {"elbo": value}


def nvil(key, x, encode, decode, *, baseline_fn, prior_logits=None, latent="bernoulli", likelihood="bernoulli",
         num_samples=1, baseline_value=None):
    """NVIL: REINFORCE with the learned input-dependent baseline ``c = baseline_value + C_psi(x)``.

    Args:
      baseline_fn: ``x -> C_psi(x)``, a scalar (e.g. :func:`baseline_apply` closed over
        ``params["baseline"]``); its parameters get the gradient of ``-mean_i (f_i - c)^2``.
      baseline_value: optional running mean of the ELBO (nats), centring the signal as in the paper.
      Others: as for :func:`reinforce`.

    Returns:
      ``(value, {"elbo", "baseline_loss"})``: the Monte-Carlo ELBO and ``mean_i (f_i - c)^2``.
    """
    check_int(num_samples, "num_samples")
    learned = baseline_fn(x)
    if jnp.shape(learned) != ():
        raise ValueError(f"baseline_fn must return a scalar; got shape {jnp.shape(learned)}.")
    value, f, surrogate = _score_estimate(key, x, encode, decode, prior_logits, latent, likelihood, num_samples,
                                          "none", baseline_value, learned)
    centred = f if baseline_value is None else f - sg(baseline_value)
    loss = jnp.mean(jnp.square(centred - learned))
    return attach(value, surrogate - loss), {"elbo": value, "baseline_loss": sg(loss)}


def vimco(key, x, encode, decode, *, prior_logits=None, latent="bernoulli", likelihood="bernoulli", num_samples):
    """VIMCO gradient of the k-sample bound ``L = log mean_i w_i``, ``w_i = p(x, b_i) / q(b_i|x)``.

    Encoder: ``sum_i (L - L_-i) score(b_i) - sum_i w~_i grad log q(b_i)`` where ``L_-i`` replaces
    ``log w_i`` by the mean of the others' (geometric mean); decoder: ``sum_i w~_i grad log p(x, b_i)``.

    Args:
      num_samples: ``k >= 2``.
      Others: as for :func:`reinforce`.

    Returns:
      ``(value, {"iwae": value})``: the k-sample bound estimate (nats).
    """
    check_int(num_samples, "num_samples", 2)
    k = num_samples
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood)
    b = discrete.sample(key, sg(logits), latent=latent, num_samples=k)
    log_w = _log_weights(logits, log_p, b, latent)
    lw = sg(log_w)
    signal = _swap_one_out(lw, (jnp.sum(lw) - lw) / (k - 1))  # w_i replaced by the others' geometric mean
    g = _weighted(signal, jax.vmap(lambda v: discrete.score(sg(logits), v, latent=latent))(b))
    return _bound_with_gradient(log_w, g, logits)


def _log_weights(logits, log_p, b, latent):
    """``log p(x, b_i) - log q(b_i|x)`` at draws ``b [k, ...]``, differentiable in the decoder and ``logits``."""
    return jax.vmap(log_p)(b) - jax.vmap(lambda v: discrete.log_prob(logits, v, latent=latent))(b)


def _log_mean_exp(lw, axis=-1):
    return jax.nn.logsumexp(lw, axis=axis) - math.log(lw.shape[axis])


def _swap_one_out(lw, replacement):
    """``[k]``: the k-sample bound of ``lw [k]`` minus the bound with ``lw_i`` replaced by ``replacement_i``."""
    swapped = jnp.where(jnp.eye(lw.shape[0], dtype=bool), replacement[:, None], lw[None, :])  # row i: i swapped
    return _log_mean_exp(lw) - _log_mean_exp(swapped, axis=1)


def _bound_with_gradient(log_w, g, logits):
    """The k-sample bound of ``log_w`` (value), with its gradient through ``log_w`` plus ``g`` for ``logits``."""
    bound = _log_mean_exp(sg(log_w))
    return attach(bound, _log_mean_exp(log_w) + jnp.sum(sg(g) * logits)), {"iwae": bound}


def _antithetic_pairs(key, a, num_pairs):
    """``(b, b_anti, direction)``, each ``[num_pairs, d]``: ``b = 1[u < s(a)]``, ``b~ = 1[1 - u < s(a)]`` and
    DisARM's ``(-1)^b~ 1[b != b~] s(|a|)`` (so ``1/2 (f(b) - f(b~)) direction`` estimates ``d E f / d a``)."""
    u = jax.random.uniform(key, (num_pairs, *a.shape), a.dtype)
    prob = jax.nn.sigmoid(a)[None]
    b, b_anti = (u < prob).astype(a.dtype), (1.0 - u < prob).astype(a.dtype)
    direction = jnp.where(b != b_anti, jnp.where(b_anti > 0, -1.0, 1.0), 0.0) * jax.nn.sigmoid(jnp.abs(a))[None]
    return u, b, b_anti, direction


def disarm_iw(key, x, encode, decode, *, prior_logits=None, latent="bernoulli", likelihood="bernoulli",
              num_samples):
    """DisARM for the k-sample bound (Dong, Mnih & Tucker 2020, "DisARM-IW", the paper's local DisARM).

    ``k`` antithetic pairs ``(b_i, b~_i)``; the bound ``L = log mean_i w(b_i)`` of the first draws is
    the value. Encoder: ``sum_i 1/2 (L - L_i~) (-1)^b~_i 1[b_i != b~_i] s(|a|)``, where ``L_i~`` is
    the bound with ``b_i`` swapped for its partner ``b~_i`` (DisARM of ``b_i -> L`` with the other
    draws held fixed), plus the direct term ``-sum_i w~_i grad log q(b_i)``; decoder:
    ``sum_i w~_i grad log p(x, b_i)``. ``2 k`` evaluations of f. Bernoulli latents.

    Args:
      num_samples: ``k >= 1`` pairs, the k of the bound (``k = 1``: DisARM of the ELBO).
      Others: as for :func:`reinforce`.

    Returns:
      ``(value, {"iwae": value})``: the k-sample bound estimate at the draws ``b_i`` (nats).
    """
    check_int(num_samples, "num_samples")
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood, bernoulli_only="DisARM-IW")
    a = sg(logits)
    _, b, b_anti, direction = _antithetic_pairs(key, a, num_samples)
    log_w = _log_weights(logits, log_p, b, latent)
    signal = _swap_one_out(sg(log_w), _evaluate(logits, log_p, b_anti, latent)[1])
    return _bound_with_gradient(log_w, 0.5 * _weighted(signal, direction), logits)


def _antithetic(key, x, encode, decode, prior_logits, latent, likelihood, num_pairs, name, disarm):
    check_int(num_pairs, "num_pairs")
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood, bernoulli_only=name)
    u, b, b_anti, direction = _antithetic_pairs(key, sg(logits), num_pairs)
    lp, f = _evaluate(logits, log_p, jnp.concatenate([b, b_anti]), latent)
    f_b, f_anti = f[:num_pairs], f[num_pairs:]
    if disarm:
        g = _weighted(0.5 * (f_b - f_anti), direction) / num_pairs
    else:
        g = _weighted(f_anti - f_b, u - 0.5) / num_pairs
    value = jnp.mean(f)
    return attach(value, jnp.mean(lp) + jnp.sum(sg(g) * logits)), {"elbo": value}


def arm(key, x, encode, decode, *, prior_logits=None, latent="bernoulli", likelihood="bernoulli", num_pairs=1):
    """ARM: ``mean_pairs (f(b~) - f(b)) (u - 1/2)``, ``2 num_pairs`` evaluations of f. Bernoulli latents.

    Returns:
      ``(value, {"elbo": value})``: the Monte-Carlo ELBO over all ``2 num_pairs`` draws (nats).
    """
    return _antithetic(key, x, encode, decode, prior_logits, latent, likelihood, num_pairs, "ARM", False)


def disarm(key, x, encode, decode, *, prior_logits=None, latent="bernoulli", likelihood="bernoulli", num_pairs=1):
    """DisARM: ARM Rao-Blackwellised over the pair's noise, ``2 num_pairs`` evaluations. Bernoulli latents.

    Returns:
      ``(value, {"elbo": value})`` as for :func:`arm`; with the same key, the same draws as ARM.
    """
    return _antithetic(key, x, encode, decode, prior_logits, latent, likelihood, num_pairs, "DisARM", True)
