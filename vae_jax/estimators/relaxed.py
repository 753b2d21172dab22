"""Relaxation-based gradient estimators of discrete latents (the contract of :mod:`vae_jax.estimators.discrete`).

- ``gumbel_softmax`` (Concrete) and ``straight_through`` (Gumbel): pathwise gradient
  of the relaxed objective (log-probabilities evaluated at the relaxed sample),
  biased (Jang et al. 2017, Maddison et al. 2017, Bengio et al. 2013).
- ``rebar``, ``relax``: the score term with control variate ``c(z~)`` plus
  ``grad c(z) - grad c(z~)`` through reparameterised ``z`` and the conditional
  ``z~ | b``, with ``c = eta f(s(z / t))`` (REBAR, Tucker et al. 2017) plus a
  network ``r(z)`` (RELAX, Grathwohl et al. 2018). Unbiased for every control
  parameter. Bernoulli only.

The control parameters (log temperature, eta, network) live in the model parameters
(``params["control"]``, see :mod:`vae_jax.estimators.learned`). Their loss
``-||g||^2``, the squared encoder-logit gradient, whose expectation is the variance
plus a term that does not depend on them, enters the surrogate with value 0 and
gradient only for them. Imports ``jax`` only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from vae_jax import discrete, mlp
from vae_jax.estimators._surrogate import attach, check_int, sg
from vae_jax.estimators.discrete import _evaluate, _setup


def _relaxed(key, x, encode, decode, prior_logits, latent, likelihood, temperature, num_samples, straight):
    check_int(num_samples, "num_samples")
    if isinstance(temperature, (int, float)) and not 0 < temperature < math.inf:  # NaN fails too
        raise ValueError(f"temperature must be a finite number > 0; got {temperature}.")
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood)
    z = logits[None] + discrete.noise(key, logits, latent=latent, num_samples=num_samples)
    soft, b = discrete.relax(z, temperature, latent=latent), discrete.hard(sg(z), latent=latent)
    relaxed = soft + sg(b - soft) if straight else soft
    r = jax.vmap(lambda v: log_p(v) - discrete.log_prob(logits, v, latent=latent))(relaxed)
    value = jnp.mean(_evaluate(logits, log_p, b, latent)[1])
    return attach(value, jnp.mean(r)), {"elbo": value, "relaxed_elbo": sg(jnp.mean(r))}


def gumbel_softmax(key, x, encode, decode, *, prior_logits=None, latent="bernoulli", likelihood="bernoulli",
                   temperature=0.5, num_samples=1):
    """Concrete / Gumbel-softmax: pathwise gradient of ``f`` evaluated at the relaxed sample (biased).

    Args:
      temperature: ``t > 0`` of ``sigmoid(z / t)`` / ``softmax(z / t)``.
      num_samples: draws averaged.

    Returns:
      ``(value, {"elbo", "relaxed_elbo"})``: ``value`` is the ELBO estimate at the exact draws
      ``b = hard(z)`` the relaxation rounds to; ``relaxed_elbo`` the relaxed objective.
    """
    return _relaxed(key, x, encode, decode, prior_logits, latent, likelihood, temperature, num_samples, False)


def straight_through(key, x, encode, decode, *, prior_logits=None, latent="bernoulli", likelihood="bernoulli",
                     temperature=1.0, num_samples=1):
    """Straight-through Gumbel: ``f`` at the exact draw, gradient through the relaxed one (biased).

    Returns:
      ``(value, {"elbo", "relaxed_elbo"})`` as for :func:`gumbel_softmax` (here both are ``f(b)``).
    """
    return _relaxed(key, x, encode, decode, prior_logits, latent, likelihood, temperature, num_samples, True)


def _relax_gradient(control, a, b, u, v, f_b, f):
    """The REBAR/RELAX estimate of ``d E_q[f] / d a`` at logits ``a`` (no gradient to ``a`` wanted by callers)."""
    def z_of(aa):  # z = a + logistic noise from u
        return aa + jnp.log(u) - jnp.log1p(-u)

    def z_cond(aa):  # z~ ~ p(z | b), reparameterised by v: u' uniform on the part of (0, 1) that gives b
        l1, l0 = jax.nn.log_sigmoid(aa), jax.nn.log_sigmoid(-aa)
        log_u = jnp.where(b > 0, jnp.logaddexp(l0, jnp.log(v) + l1), jnp.log(v) + l0)
        log_1mu = jnp.where(b > 0, l1 + jnp.log1p(-v), jnp.logaddexp(l1, jnp.log1p(-v) + l0))
        return aa + log_u - log_1mu

    def c(zz):
        out = control["eta"] * f(jax.nn.sigmoid(zz * jnp.exp(-control["log_temperature"])))
        if "net" in control:
            out = out + mlp.apply(control["net"], jax.nn.sigmoid(zz), "tanh")[0]
        return out

    c_cond, dc_cond = jax.value_and_grad(lambda aa: c(z_cond(aa)))(a)
    dc = jax.grad(lambda aa: c(z_of(aa)))(a)
    return (f_b - c_cond) * (b - jax.nn.sigmoid(a)) + dc - dc_cond


def _relax_family(key, x, encode, decode, control, prior_logits, latent, likelihood, with_net, decode_constant):
    name = "RELAX" if with_net else "REBAR"
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood, bernoulli_only=name)
    if not isinstance(control, dict) or not {"log_temperature", "eta"} <= set(control):
        raise ValueError(f"{name} needs control={{'log_temperature', 'eta'{', net' if with_net else ''}}}, "
                         f"see init_control; got {type(control).__name__}.")
    if with_net != ("net" in control):
        raise ValueError(f"{name} {'needs' if with_net else 'takes no'} control['net'].")
    a = sg(logits)
    key_u, key_v = jax.random.split(key)
    tiny = jnp.finfo(a.dtype).tiny
    u = jax.random.uniform(key_u, a.shape, a.dtype, minval=tiny, maxval=1.0)
    v = jax.random.uniform(key_v, a.shape, a.dtype, minval=tiny, maxval=1.0)
    b = (jnp.log(u) - jnp.log1p(-u) + a > 0).astype(a.dtype)
    lp, f_b = _evaluate(logits, log_p, b[None], latent)
    prior = sg(jnp.zeros_like(a) if prior_logits is None else prior_logits)

    def f(bb):  # a function of b alone: the model's parameters are constants of the control variate
        return (discrete.log_joint(x, bb, decode_constant or decode, prior, latent=latent, likelihood=likelihood)
                - discrete.log_prob(a, bb, latent=latent))

    def variance_loss(ctrl):
        return -jnp.sum(jnp.square(_relax_gradient(ctrl, a, b, u, v, f_b[0], f)))

    g = _relax_gradient(sg(control), a, b, u, v, f_b[0], f)
    if decode_constant is None:
        # decode's parameters are closed over: cancel their gradient with a second, stopped-control copy
        # (exact in real arithmetic; float32 leaves ~1e-6 relative noise). Value 0 either way.
        control_term = variance_loss(control) - variance_loss(sg(control))
    else:
        loss = variance_loss(control)
        control_term = loss - sg(loss)
    value = f_b[0]
    surrogate = lp[0] + jnp.sum(sg(g) * logits) + control_term
    return attach(value, surrogate), {"elbo": value, "logit_gradient_sq": sg(jnp.sum(jnp.square(g)))}


def rebar(key, x, encode, decode, *, control, prior_logits=None, latent="bernoulli", likelihood="bernoulli",
          decode_constant=None):
    """REBAR with learned temperature and scale ``eta`` (``control`` from
    :func:`vae_jax.estimators.init_control`). Bernoulli.

    ``g = (f(b) - eta f(s_t(z~))) score(b) + eta grad f(s_t(z)) - eta grad f(s_t(z~))`` at one draw
    ``b = H(z)``, ``z~ ~ p(z | b)``; unbiased for every ``control``. ``control`` gets the gradient of
    ``-||g||^2`` (minimising the encoder-logit gradient's variance).

    Args:
      control: ``{"log_temperature", "eta"}`` (see :func:`vae_jax.estimators.init_control`).
      decode_constant: optional ``decode`` with its parameters stop-gradiented, used in the
        control variate so that ``-||g||^2`` reaches the control parameters only (without it,
        a second stopped copy cancels the decoder's share, at twice the cost).
      Others: as for :func:`reinforce`.

    Returns:
      ``(value, {"elbo", "logit_gradient_sq"})``: ``f(b)`` (nats) and ``||g||^2``.
    """
    return _relax_family(key, x, encode, decode, control, prior_logits, latent, likelihood, False,
                         decode_constant)


def relax(key, x, encode, decode, *, control, prior_logits=None, latent="bernoulli", likelihood="bernoulli",
          decode_constant=None):
    """RELAX: REBAR's control variate plus a learned network ``r(z)`` (``init_control(..., hidden=H)``).

    Returns:
      ``(value, {"elbo", "logit_gradient_sq"})`` as for :func:`rebar`.
    """
    return _relax_family(key, x, encode, decode, control, prior_logits, latent, likelihood, True,
                         decode_constant)
