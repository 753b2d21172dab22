"""Gradient estimators for discrete latents as surrogate objectives (the contract of :mod:`vae_jax.estimators`).

Each estimator is a per-example ``(key, x, encode, decode, *, prior_logits,
latent, likelihood, ...) -> (value, aux)``: ``encode(x)`` gives the logits of
q(b|x) (``[d]`` Bernoulli or ``[G, K]`` categorical), ``decode(b)`` the
parameters of p(x|b), ``prior_logits`` those of the factorised p(b) (learned:
pass them traced from the parameters). ``value`` is numerically the objective
(the Monte-Carlo ELBO, or the k-sample bound for VIMCO), and its gradient is
the estimator, so :func:`make_discrete_estimator` objectives go through
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
- ``gumbel_softmax`` (Concrete) and ``straight_through`` (Gumbel): pathwise gradient
  of the relaxed objective (log-probabilities evaluated at the relaxed sample),
  biased (Jang et al. 2017, Maddison et al. 2017, Bengio et al. 2013).
- ``rebar``, ``relax``: the score term with control variate ``c(z~)`` plus
  ``grad c(z) - grad c(z~)`` through reparameterised ``z`` and the conditional
  ``z~ | b``, with ``c = eta f(s(z / t))`` (REBAR, Tucker et al. 2017) plus a
  network ``r(z)`` (RELAX, Grathwohl et al. 2018). Unbiased for every control
  parameter. Bernoulli only.

Learned estimator parameters live in the model parameters (so in the train
state, updated by the same Optax step, each with its own Adam moments):
``params["baseline"]`` (NVIL) and ``params["control"]`` (REBAR/RELAX: log
temperature, eta, network). Their losses enter the surrogate with value 0 and
gradient only for them: NVIL's ``-(f - c)^2``, REBAR/RELAX's ``-||g||^2``, the
squared encoder-logit gradient, whose expectation is the variance plus a term
that does not depend on the control parameters. :func:`with_estimator_params`
adds them to a model's ``init``. Imports ``jax`` only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from vae_jax import discrete, estimators

sg = jax.lax.stop_gradient
BASELINES = ("none", "running_mean", "leave_one_out")


def _attach(value, surrogate):
    return sg(value) + (surrogate - sg(surrogate))


def _check_int(n, name, minimum=1):
    if not isinstance(n, int) or isinstance(n, bool) or n < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {n!r}.")


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
    if baseline == "leave_one_out":
        c = (jnp.sum(f) - f) / (num_samples - 1)
    else:
        c = jnp.zeros_like(f) if baseline_value is None else jnp.broadcast_to(sg(baseline_value), f.shape)
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
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; expected one of {BASELINES}.")
    if (baseline == "running_mean") != (baseline_value is not None):
        raise ValueError("baseline_value (a running mean of the ELBO, nats) is required with "
                         f"baseline='running_mean' and not allowed otherwise; got baseline={baseline!r}.")
    _check_int(num_samples, "num_samples", 2 if baseline == "leave_one_out" else 1)
    value, _, surrogate = _score_estimate(key, x, encode, decode, prior_logits, latent, likelihood, num_samples,
                                          baseline, baseline_value)
    return _attach(value, surrogate), {"elbo": value}


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
    _check_int(num_samples, "num_samples")
    learned = baseline_fn(x)
    if jnp.shape(learned) != ():
        raise ValueError(f"baseline_fn must return a scalar; got shape {jnp.shape(learned)}.")
    value, f, surrogate = _score_estimate(key, x, encode, decode, prior_logits, latent, likelihood, num_samples,
                                          "none", baseline_value, learned)
    centred = f if baseline_value is None else f - sg(baseline_value)
    loss = jnp.mean(jnp.square(centred - learned))
    return _attach(value, surrogate - loss), {"elbo": value, "baseline_loss": sg(loss)}


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
    _check_int(num_samples, "num_samples", 2)
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
    return _attach(bound, _log_mean_exp(log_w) + jnp.sum(sg(g) * logits)), {"iwae": bound}


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
    _check_int(num_samples, "num_samples")
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood, bernoulli_only="disarm_iw")
    a = sg(logits)
    _, b, b_anti, direction = _antithetic_pairs(key, a, num_samples)
    log_w = _log_weights(logits, log_p, b, latent)
    signal = _swap_one_out(sg(log_w), _evaluate(logits, log_p, b_anti, latent)[1])
    return _bound_with_gradient(log_w, 0.5 * _weighted(signal, direction), logits)


def _antithetic(key, x, encode, decode, prior_logits, latent, likelihood, num_pairs, name, disarm):
    _check_int(num_pairs, "num_pairs")
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood, bernoulli_only=name)
    u, b, b_anti, direction = _antithetic_pairs(key, sg(logits), num_pairs)
    lp, f = _evaluate(logits, log_p, jnp.concatenate([b, b_anti]), latent)
    f_b, f_anti = f[:num_pairs], f[num_pairs:]
    if disarm:
        g = _weighted(0.5 * (f_b - f_anti), direction) / num_pairs
    else:
        g = _weighted(f_anti - f_b, u - 0.5) / num_pairs
    value = jnp.mean(f)
    return _attach(value, jnp.mean(lp) + jnp.sum(sg(g) * logits)), {"elbo": value}


def arm(key, x, encode, decode, *, prior_logits=None, latent="bernoulli", likelihood="bernoulli", num_pairs=1):
    """ARM: ``mean_pairs (f(b~) - f(b)) (u - 1/2)``, ``2 num_pairs`` evaluations of f. Bernoulli latents.

    Returns:
      ``(value, {"elbo": value})``: the Monte-Carlo ELBO over all ``2 num_pairs`` draws (nats).
    """
    return _antithetic(key, x, encode, decode, prior_logits, latent, likelihood, num_pairs, "arm", False)


def disarm(key, x, encode, decode, *, prior_logits=None, latent="bernoulli", likelihood="bernoulli", num_pairs=1):
    """DisARM: ARM Rao-Blackwellised over the pair's noise, ``2 num_pairs`` evaluations. Bernoulli latents.

    Returns:
      ``(value, {"elbo": value})`` as for :func:`arm`; with the same key, the same draws as ARM.
    """
    return _antithetic(key, x, encode, decode, prior_logits, latent, likelihood, num_pairs, "disarm", True)


def _relaxed(key, x, encode, decode, prior_logits, latent, likelihood, temperature, num_samples, straight):
    _check_int(num_samples, "num_samples")
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}.")
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood)
    z = logits[None] + discrete.noise(key, logits, latent=latent, num_samples=num_samples)
    soft, b = discrete.relax(z, temperature, latent=latent), discrete.hard(sg(z), latent=latent)
    relaxed = soft + sg(b - soft) if straight else soft
    r = jax.vmap(lambda v: log_p(v) - discrete.log_prob(logits, v, latent=latent))(relaxed)
    value = jnp.mean(_evaluate(logits, log_p, b, latent)[1])
    return _attach(value, jnp.mean(r)), {"elbo": value, "relaxed_elbo": sg(jnp.mean(r))}


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


def init_control(key: jax.Array, latent_shape: tuple[int, ...], *, hidden: int | None = None,
                 temperature: float = 0.5, eta: float = 1.0) -> dict[str, Any]:
    """Control-variate parameters of REBAR (``hidden=None``) or RELAX (a ``hidden``-unit tanh network).

    Returns:
      ``{"log_temperature": [], "eta": [], ("net": layers)}``, float32.
    """
    control = {"log_temperature": jnp.asarray(math.log(temperature), jnp.float32),
               "eta": jnp.asarray(eta, jnp.float32)}
    if hidden is not None:
        _check_int(hidden, "hidden")
        net = discrete.mlp_init(key, (math.prod(latent_shape), hidden, 1))
        net[-1] = jax.tree.map(lambda w: 0.1 * w, net[-1])
        control["net"] = net
    return control


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
            out = out + discrete.mlp_apply(control["net"], jax.nn.sigmoid(zz), "tanh")[0]
        return out

    c_cond, dc_cond = jax.value_and_grad(lambda aa: c(z_cond(aa)))(a)
    dc = jax.grad(lambda aa: c(z_of(aa)))(a)
    return (f_b - c_cond) * (b - jax.nn.sigmoid(a)) + dc - dc_cond


def _relax_family(key, x, encode, decode, control, prior_logits, latent, likelihood, name, decode_constant):
    logits, log_p = _setup(x, encode, decode, prior_logits, latent, likelihood, bernoulli_only=name)
    if not isinstance(control, dict) or not {"log_temperature", "eta"} <= set(control):
        raise ValueError(f"{name} needs control={{'log_temperature', 'eta'{', net' if name == 'relax' else ''}}}, "
                         f"see init_control; got {type(control).__name__}.")
    if (name == "relax") != ("net" in control):
        raise ValueError(f"{name} {'needs' if name == 'relax' else 'takes no'} control['net'].")
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
    return _attach(value, surrogate), {"elbo": value, "logit_gradient_sq": sg(jnp.sum(jnp.square(g)))}


def rebar(key, x, encode, decode, *, control, prior_logits=None, latent="bernoulli", likelihood="bernoulli",
          decode_constant=None):
    """REBAR with learned temperature and scale ``eta`` (``control`` from :func:`init_control`). Bernoulli.

    ``g = (f(b) - eta f(s_t(z~))) score(b) + eta grad f(s_t(z)) - eta grad f(s_t(z~))`` at one draw
    ``b = H(z)``, ``z~ ~ p(z | b)``; unbiased for every ``control``. ``control`` gets the gradient of
    ``-||g||^2`` (minimising the encoder-logit gradient's variance).

    Args:
      control: ``{"log_temperature", "eta"}`` (see :func:`init_control`).
      decode_constant: optional ``decode`` with its parameters stop-gradiented, used in the
        control variate so that ``-||g||^2`` reaches the control parameters only (without it,
        a second stopped copy cancels the decoder's share, at twice the cost).
      Others: as for :func:`reinforce`.

    Returns:
      ``(value, {"elbo", "logit_gradient_sq"})``: ``f(b)`` (nats) and ``||g||^2``.
    """
    return _relax_family(key, x, encode, decode, control, prior_logits, latent, likelihood, "rebar",
                         decode_constant)


def relax(key, x, encode, decode, *, control, prior_logits=None, latent="bernoulli", likelihood="bernoulli",
          decode_constant=None):
    """RELAX: REBAR's control variate plus a learned network ``r(z)`` (``init_control(..., hidden=H)``).

    Returns:
      ``(value, {"elbo", "logit_gradient_sq"})`` as for :func:`rebar`.
    """
    return _relax_family(key, x, encode, decode, control, prior_logits, latent, likelihood, "relax",
                         decode_constant)


ESTIMATORS: dict[str, Callable] = {"reinforce": reinforce, "nvil": nvil, "vimco": vimco, "arm": arm,
                                   "disarm": disarm, "disarm_iw": disarm_iw, "gumbel_softmax": gumbel_softmax,
                                   "straight_through": straight_through, "rebar": rebar, "relax": relax}
UNBIASED = ("reinforce", "nvil", "arm", "disarm", "rebar", "relax")  # for the ELBO
MULTI_SAMPLE = ("vimco", "disarm_iw")  # unbiased for the k-sample bound (value and gradient)
BERNOULLI_ONLY = ("arm", "disarm", "disarm_iw", "rebar", "relax")
INJECTED = ("prior_logits", "latent", "likelihood", "baseline_fn", "control", "decode_constant")


def baseline_init(key: jax.Array, input_size: int, hidden: int = 100) -> list[dict[str, jax.Array]]:
    """Parameters of NVIL's baseline network ``C_psi``: ``input_size -> hidden (tanh) -> 1``."""
    return discrete.mlp_init(key, (input_size, hidden, 1))


def baseline_apply(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """``C_psi(x)``: a scalar (nats) for one observation ``x`` (flattened)."""
    return discrete.mlp_apply(params, jnp.ravel(x), "tanh")[0]


def init_estimator_params(name: str, model: Any, key: jax.Array, x: jax.Array, *, hidden: int | None = None
                          ) -> dict[str, Any]:
    """The extra parameter groups the estimator ``name`` learns: ``{}``, ``{"baseline"}`` or ``{"control"}``.

    Args:
      name: a key of :data:`ESTIMATORS`.
      model: with ``latent_shape``.
      key: PRNG key.
      x: one example (shapes only).
      hidden: units of NVIL's baseline network (default 100) or of RELAX's ``r(z)`` (default 50).
    """
    if name == "nvil":
        return {"baseline": baseline_init(key, math.prod(jnp.shape(x)), hidden or 100)}
    if name in ("rebar", "relax"):
        return {"control": init_control(key, model.latent_shape, hidden=(hidden or 50) if name == "relax" else None)}
    return {}


@dataclasses.dataclass(frozen=True)
class WithEstimatorParams:
    """``model`` whose ``init`` also returns the estimator's parameter groups (for ``create_train_state``)."""

    model: Any
    name: str
    hidden: int | None = None

    def init(self, key: jax.Array, x: jax.Array) -> dict[str, Any]:
        k_model, k_extra = jax.random.split(key)
        return {**self.model.init(k_model, x), **init_estimator_params(self.name, self.model, k_extra, x,
                                                                         hidden=self.hidden)}

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.model, attr)


def with_estimator_params(model: Any, name: str, *, hidden: int | None = None) -> WithEstimatorParams:
    """Wraps ``model`` so that ``init`` adds :func:`init_estimator_params` (encode/decode unchanged)."""
    if name not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {name!r}; expected one of {tuple(ESTIMATORS)}.")
    return WithEstimatorParams(model, name, hidden)


def make_discrete_estimator(name: str, model: Any, **options: Any) -> Callable:
    """The estimator ``name`` for a discrete-latent ``model`` as an objective for the train step.

    Args:
      name: a key of :data:`ESTIMATORS`.
      model: with ``bind(params) -> (encode, decode, prior_logits)``, ``latent`` and
        ``likelihood`` (a :class:`vae_jax.discrete.DiscreteVAE`). NVIL reads
        ``params["baseline"]``, REBAR/RELAX ``params["control"]`` (see :func:`with_estimator_params`).
      **options: static keyword options of the estimator (``num_samples``, ``num_pairs``,
        ``baseline``, ``temperature``); runtime ones (``baseline_value``) come as ``**hparams``.

    Returns:
      ``surrogate(params, key, x, **hparams) -> (value, aux)`` for one example.

    Raises:
      ValueError: unknown name or option.
    """
    fn = estimators.bind_options(ESTIMATORS, name, options, injected=INJECTED, latent=model.latent,
                                 likelihood=model.likelihood)

    def surrogate(params, key, x, **hparams):
        extra = {}
        if name == "nvil":
            extra["baseline_fn"] = lambda v: baseline_apply(params["baseline"], v)
        elif name in ("rebar", "relax"):
            extra["control"] = params["control"]
            extra["decode_constant"] = model.bind(sg(params)).decode
        encode, decode, prior_logits = model.bind(params)
        return fn(key, x, encode, decode, prior_logits=prior_logits, **extra, **hparams)

    surrogate.model = model  # lets evaluation check the data against the model's likelihood
    return surrogate
