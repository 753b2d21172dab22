"""Gradient estimators of Gaussian latents as surrogate objectives.

Each estimator is a per-example function ``(key, x, encode, decode, *,
likelihood, ...) -> (value, aux)`` whose ``value`` is numerically the true
objective (the ELBO or IWAE bound estimate, nats) and whose gradient with
respect to the parameters inside ``encode`` and ``decode`` is the estimator.
So it drops into ``jax.grad`` and into :func:`vae_jax.training.make_train_step`
unchanged (via :func:`vae_jax.estimators.make_estimator`), and the step's ``loss``
stays the true objective. ``aux`` repeats the objective as ``"elbo"`` or ``"iwae"``.

- ``pathwise``: reparameterisation gradient of the ELBO (:func:`vae_jax.objectives.elbo`).
- ``score_function``: REINFORCE on the Monte-Carlo ELBO ``f = log p(x,z) - log q(z|x)``:
  surrogate ``f(stop_gradient(z)) + stop_gradient(f - b) * log q(z|x)``, with baseline
  ``b`` none, a running mean (a functional ``baseline_value`` carried in
  ``TrainState.estimator_state`` by :func:`vae_jax.estimators.with_running_baseline`)
  or leave-one-out over k draws.
- ``stl``: sticking the landing (Roeder et al. 2017), pathwise with ``log q`` evaluated
  at stop-gradiented encoder outputs, which removes the zero-mean score term.
- ``iwae``: gradient of the IWAE bound (Burda et al. 2016).
- ``dreg``: doubly reparameterised IWAE gradient for the encoder (Tucker et al. 2018),
  the usual IWAE gradient for the decoder.

Stopping the gradient at the encoder outputs ``(mean, log_std)`` is the same as
stopping it at the encoder parameters (they reach the loss only through those
outputs), so these functions need plain callables, like :mod:`vae_jax.objectives`.
All five also take the posterior objects of :mod:`vae_jax.posteriors` (``pathwise`` and
``iwae`` any of them; ``score_function``, ``stl`` and ``dreg`` those with ``log_prob``, i.e.
hierarchical posteriors with Gaussian factors), stopping the gradient at every array inside
the object but those it shares with the generative model (:class:`vae_jax.posteriors.Shared`: the
ladder's; they keep the pathwise or IWAE gradient); with ``(mean, log_std)`` their computation is
unchanged.
Which bound each estimates and what it takes is its record in
:mod:`vae_jax.estimators.registry`. Imports ``jax`` only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vae_jax import distributions, objectives
from vae_jax._checks import check_positive_int
from vae_jax.estimators._surrogate import attach, baseline_values, check_baseline, sg
from vae_jax.posteriors import has_shared, is_posterior, stop_shared, stop_variational

pathwise = objectives.elbo  # the reparameterisation gradient IS the gradient of the ELBO estimate


def _log_q_of_draws(encoded, estimator: str):
    """``z [k, d] -> log q(z_k | x) [k]`` of a posterior object at given draws (its ``log_prob``)."""
    if not hasattr(encoded, "log_prob"):
        raise ValueError(f"estimator {estimator!r} needs log q(z|x) at given draws: a (mean, log_std) encoder or a "
                         f"posterior object with log_prob (hierarchical, Gaussian factors); "
                         f"{type(encoded).__name__} has none (use 'pathwise' or 'iwae').")
    return jax.vmap(encoded.log_prob)


def _draws_and_stopped_log_weights(key, x, encoded, decode, likelihood, prior, num_samples, estimator):
    """``(z [k, d], log_weights)``: reparameterised draws, and ``z [k, d] -> [k]`` log weights with q's
    parameters stop-gradiented: its encoder outputs, or every array of a posterior object but the
    generative model's (:class:`vae_jax.posteriors.Shared`, see :func:`vae_jax.posteriors.stop_variational`)."""
    if is_posterior(encoded):
        if any(callable(leaf) for leaf in jax.tree_util.tree_leaves(encoded)):
            raise ValueError(f"estimator {estimator!r} stops the gradient at q's arrays in the posterior object, "
                             "and a callable inside it hides its arrays: hold them in jax.tree_util.Partial.")
        z = encoded.sample_and_log_prob(key, num_samples)[0]
        log_q = _log_q_of_draws(stop_variational(encoded), estimator)
        return z, lambda zz: objectives.log_importance_weights(zz, x, None, None, decode, likelihood=likelihood,
                                                               prior=prior, log_q=log_q(zz))
    mean, log_std = encoded
    z = objectives.reparameterize(key, mean, log_std, num_samples)
    return z, lambda zz: objectives.log_importance_weights(zz, x, sg(mean), sg(log_std), decode,
                                                           likelihood=likelihood, prior=prior)


def score_function(key, x, encode, decode, *, likelihood="bernoulli", num_samples=1, baseline="none",
                   baseline_value=None, prior=None):
    """REINFORCE (score-function) gradient of the Monte-Carlo ELBO.

    With ``f_i = log p(x, z_i) - log q(z_i|x)`` at ``k`` draws ``z_i`` (no path
    derivative: ``z`` is stop-gradiented), the surrogate is
    ``mean_i [f_i + stop_gradient(f_i - b_i) * log q(z_i|x)]``: its decoder
    gradient is ``mean_i grad log p(x|z_i)``, its encoder gradient
    ``mean_i (f_i - b_i - 1) grad log q(z_i|x)``; both unbiased when ``b_i`` does
    not depend on ``z_i``.

    Args:
      key, x, encode, decode, likelihood, prior: as for :func:`vae_jax.objectives.elbo`.
      num_samples: ``k >= 1`` draws (``>= 2`` for ``"leave_one_out"``).
      baseline: ``"none"`` (b = 0), ``"running_mean"`` (b = ``baseline_value``, a
        running mean of past ELBO estimates, see :func:`vae_jax.estimators.with_running_baseline`) or
        ``"leave_one_out"`` (``b_i`` = mean of the other draws' ``f_j``).
      baseline_value: scalar (nats), required by and only allowed with ``"running_mean"``.

    Returns:
      ``(value, aux)``: the Monte-Carlo ELBO estimate ``mean_i f_i`` and ``{"elbo": value}``.

    Raises:
      ValueError: unknown baseline, missing/unexpected ``baseline_value``, or
        ``num_samples < 2`` with ``"leave_one_out"``.
    """
    check_baseline(baseline, baseline_value, num_samples)
    objectives._check_objective_args(x, likelihood)
    encoded = encode(x)
    if is_posterior(encoded):
        z = sg(encoded.sample_and_log_prob(key, num_samples)[0])
        log_q = _log_q_of_draws(encoded, score_function.__name__)(z)
        log_w = objectives.log_importance_weights(z, x, None, None, decode, likelihood=likelihood, prior=prior,
                                                  log_q=log_q)
    else:
        mean, log_std = encoded
        z = sg(objectives.reparameterize(key, mean, log_std, num_samples))
        log_w = objectives.log_importance_weights(z, x, mean, log_std, decode, likelihood=likelihood, prior=prior)
        log_q = jax.vmap(distributions.gaussian_log_prob, in_axes=(0, None, None))(z, mean, log_std)
    f = sg(log_w)
    b = baseline_values(f, baseline, baseline_value)
    value = jnp.mean(f)
    return attach(value, jnp.mean(log_w + (f - b) * log_q)), {"elbo": value}


def stl(key, x, encode, decode, *, likelihood="bernoulli", num_samples=1, prior=None):
    """Sticking-the-landing gradient: the total pathwise gradient of the Monte-Carlo
    ELBO with ``log q(z|x)`` evaluated at stop-gradiented ``(mean, log_std)``.

    Unbiased for the ELBO gradient; its encoder gradient is exactly zero when q is
    the true posterior (then ``log p(x, z) - log q(z|x) = log p(x)`` for every z).

    Args:
      key, x, encode, decode, likelihood, prior: as for :func:`vae_jax.objectives.elbo`.
      num_samples: draws of z averaged, ``>= 1``.

    Returns:
      ``(value, aux)``: the Monte-Carlo ELBO estimate and ``{"elbo": value}``.
    """
    objectives._check_objective_args(x, likelihood)
    check_positive_int(num_samples)
    z, log_weights = _draws_and_stopped_log_weights(key, x, encode(x), decode, likelihood, prior, num_samples,
                                                    stl.__name__)
    value = jnp.mean(log_weights(z))
    return value, {"elbo": value}


def iwae(key, x, encode, decode, *, likelihood="bernoulli", num_samples, prior=None):
    """Pathwise gradient of the IWAE bound (:func:`vae_jax.objectives.iwae_bound`).

    Returns:
      ``(value, aux)``: the bound estimate (nats) and ``{"iwae": value}``.
    """
    value = objectives.iwae_bound(key, x, encode, decode, likelihood=likelihood, num_samples=num_samples,
                                  prior=prior)
    return value, {"iwae": value}


def dreg(key, x, encode, decode, *, likelihood="bernoulli", num_samples, prior=None):
    """Doubly reparameterised IWAE gradient (Tucker et al. 2018).

    Encoder: ``sum_i w_i^2 (d log w_i / d z_i) (d z_i / d phi)`` with normalised
    weights ``w_i`` and ``log w_i`` taken with q's parameters stopped; decoder:
    the IWAE gradient ``sum_i w_i grad log p(x, z_i)``. The encoder part is the
    surrogate ``sum_i stop_gradient(w_i^2 g_i) . z_i`` with ``g_i = d log w_i / d z_i``
    computed by an inner ``jax.grad``, which keeps the decoder out of it without
    access to the decoder's parameters.

    Args:
      key, x, encode, decode, likelihood, prior: as for :func:`vae_jax.objectives.elbo`.
      num_samples: ``k >= 1`` (``k = 1`` gives the STL gradient for the encoder).

    Returns:
      ``(value, aux)``: the IWAE bound estimate and ``{"iwae": value}``.
    """
    objectives._check_objective_args(x, likelihood)
    check_positive_int(num_samples)
    encoded = encode(x)
    z, log_weights = _draws_and_stopped_log_weights(key, x, encoded, decode, likelihood, prior, num_samples,
                                                    dreg.__name__)
    log_w = log_weights(sg(z))  # decoder path only (and the score of parameters q shares with p)
    g = jax.grad(lambda zz: jnp.sum(log_weights(zz)))(sg(z))  # [k, d]; row i is d log w_i / d z_i
    weights = jax.nn.softmax(sg(log_w))
    if is_posterior(encoded) and has_shared(encoded):
        # q's own parameters: DReG's w^2 path term. Parameters q shares with p kept their score in log_w,
        # so they take the IWAE path term (weights w), as the IWAE gradient has them.
        own = stop_shared(encoded).sample_and_log_prob(key, num_samples)[0]
        shared = stop_variational(encoded).sample_and_log_prob(key, num_samples)[0]
        path = jnp.sum(sg(jnp.square(weights)[:, None] * g) * own) + jnp.sum(sg(weights[:, None] * g) * shared)
    else:
        path = jnp.sum(sg(jnp.square(weights)[:, None] * g) * z)
    surrogate = jnp.sum(weights * log_w) + path
    value = jax.nn.logsumexp(log_w) - math.log(num_samples)
    return attach(value, surrogate), {"iwae": value}
