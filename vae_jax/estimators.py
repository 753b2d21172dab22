"""Gradient estimators as surrogate objectives, and their per-draw statistics.

Each estimator is a per-example function ``(key, x, encode, decode, *,
likelihood, ...) -> (value, aux)`` whose ``value`` is numerically the true
objective (the ELBO or IWAE bound estimate, nats) and whose gradient with
respect to the parameters inside ``encode`` and ``decode`` is the estimator.
So it drops into ``jax.grad`` and into :func:`vae_jax.training.make_train_step`
unchanged (via :func:`make_estimator`), and the step's ``loss`` stays the true
objective. ``aux`` repeats the objective as ``"elbo"`` or ``"iwae"``.

- ``pathwise``: reparameterisation gradient of the ELBO (:func:`vae_jax.objectives.elbo`).
- ``score_function``: REINFORCE on the Monte-Carlo ELBO ``f = log p(x,z) - log q(z|x)``:
  surrogate ``f(stop_gradient(z)) + stop_gradient(f - b) * log q(z|x)``, with baseline
  ``b`` none, a running mean (a functional ``baseline_value`` carried in
  ``TrainState.estimator_state`` by :func:`with_running_baseline`) or leave-one-out over k draws.
- ``stl``: sticking the landing (Roeder et al. 2017), pathwise with ``log q`` evaluated
  at stop-gradiented encoder outputs, which removes the zero-mean score term.
- ``iwae``: gradient of the IWAE bound (Burda et al. 2016).
- ``dreg``: doubly reparameterised IWAE gradient for the encoder (Tucker et al. 2018),
  the usual IWAE gradient for the decoder.

Stopping the gradient at the encoder outputs ``(mean, log_std)`` is the same as
stopping it at the encoder parameters (they reach the loss only through those
outputs), so these functions need plain callables, like :mod:`vae_jax.objectives`.
The learned (NVIL) baseline network is not implemented. Imports ``jax`` only.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions, objectives
from vae_jax._checks import check_positive_int

sg = jax.lax.stop_gradient
BASELINES = ("none", "running_mean", "leave_one_out")


def _attach(value: jax.Array, surrogate: jax.Array) -> jax.Array:
    """A number equal to ``value`` whose gradient is the gradient of ``surrogate``."""
    return sg(value) + (surrogate - sg(surrogate))


pathwise = objectives.elbo  # the reparameterisation gradient IS the gradient of the ELBO estimate


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
        running mean of past ELBO estimates, see :func:`with_running_baseline`) or
        ``"leave_one_out"`` (``b_i`` = mean of the other draws' ``f_j``).
      baseline_value: scalar (nats), required by and only allowed with ``"running_mean"``.

    Returns:
      ``(value, aux)``: the Monte-Carlo ELBO estimate ``mean_i f_i`` and ``{"elbo": value}``.

    Raises:
      ValueError: unknown baseline, missing/unexpected ``baseline_value``, or
        ``num_samples < 2`` with ``"leave_one_out"``.
    """
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; expected one of {BASELINES}.")
    if (baseline == "running_mean") != (baseline_value is not None):
        raise ValueError("baseline_value (a running mean of the ELBO, nats) is required with "
                         f"baseline='running_mean' and not allowed otherwise; got baseline={baseline!r}, "
                         f"baseline_value={baseline_value!r}.")
    if baseline == "leave_one_out" and (not isinstance(num_samples, int) or num_samples < 2):
        raise ValueError(f"baseline='leave_one_out' needs num_samples >= 2; got {num_samples!r}.")
    objectives._check_objective_args(x, likelihood)
    check_positive_int(num_samples)
    mean, log_std = encode(x)
    z = sg(objectives.reparameterize(key, mean, log_std, num_samples))
    log_w = objectives.log_importance_weights(z, x, mean, log_std, decode, likelihood=likelihood, prior=prior)
    log_q = jax.vmap(distributions.gaussian_log_prob, in_axes=(0, None, None))(z, mean, log_std)
    f = sg(log_w)
    if baseline == "leave_one_out":
        b = (jnp.sum(f) - f) / (num_samples - 1)
    elif baseline == "running_mean":
        b = sg(jnp.asarray(baseline_value, f.dtype))
    else:
        b = jnp.zeros((), f.dtype)
    value = jnp.mean(f)
    return _attach(value, jnp.mean(log_w + (f - b) * log_q)), {"elbo": value}


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
    mean, log_std = encode(x)
    z = objectives.reparameterize(key, mean, log_std, num_samples)
    value = jnp.mean(objectives.log_importance_weights(z, x, sg(mean), sg(log_std), decode, likelihood=likelihood,
                                                       prior=prior))
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
    mean, log_std = encode(x)
    z = objectives.reparameterize(key, mean, log_std, num_samples)

    def log_weights(zz):
        return objectives.log_importance_weights(zz, x, sg(mean), sg(log_std), decode, likelihood=likelihood,
                                                 prior=prior)

    log_w = log_weights(sg(z))  # decoder path only
    g = jax.grad(lambda zz: jnp.sum(log_weights(zz)))(sg(z))  # [k, d]; row i is d log w_i / d z_i
    weights = jax.nn.softmax(sg(log_w))
    surrogate = jnp.sum(weights * log_w) + jnp.sum(sg(jnp.square(weights)[:, None] * g) * z)
    value = jax.nn.logsumexp(log_w) - math.log(num_samples)
    return _attach(value, surrogate), {"iwae": value}


ESTIMATORS: dict[str, Callable] = {"pathwise": pathwise, "score_function": score_function, "stl": stl,
                                   "iwae": iwae, "dreg": dreg}


def bind_options(registry: Mapping[str, Callable], name: str, options: Mapping[str, Any], *,
                 injected: tuple[str, ...], **fixed: Any) -> Callable:
    """``registry[name]`` with the user's static ``options`` checked and bound, plus ``fixed`` ones.

    Args:
      registry: estimator functions by name.
      name: the estimator asked for.
      options: the user's keyword options; each must be a keyword-only parameter of the
        function that is not in ``injected``.
      injected: parameters that the caller supplies itself (not the user's to set).
      **fixed: bound as well (e.g. ``likelihood``).

    Raises:
      ValueError: unknown name or option.
    """
    if name not in registry:
        raise ValueError(f"Unknown estimator {name!r}; expected one of {tuple(registry)}.")
    fn = registry[name]
    allowed = [p.name for p in inspect.signature(fn).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in injected]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Estimator {name!r} got unknown options {unknown}; it takes {allowed}.")
    return functools.partial(fn, **fixed, **options)


def make_estimator(name: str, model: Any, **options: Any) -> Callable:
    """The estimator ``name`` for ``model`` as an objective for the train step.

    Args:
      name: a key of :data:`ESTIMATORS`.
      model: anything with ``bind(params) -> (encode, decode, prior)`` and
        ``likelihood`` (e.g. a :class:`vae_jax.VAE`, or
        :class:`vae_jax.linear_gaussian.AffineLinearGaussian`).
      **options: static keyword arguments of the estimator (``num_samples``,
        ``baseline``, ``kl``, ``beta``); runtime ones (``baseline_value``,
        ``beta``) may come later as ``**hparams``.

    Returns:
      ``surrogate(params, key, x, **hparams) -> (value, aux)`` for one example.

    Raises:
      ValueError: unknown name or option.
    """
    fn = bind_options(ESTIMATORS, name, options, injected=("likelihood", "prior"), likelihood=model.likelihood)

    def surrogate(params, key, x, **hparams):
        encode, decode, prior = model.bind(params)
        return fn(key, x, encode, decode, prior=prior, **hparams)

    surrogate.model = model  # lets evaluation check the data against the model's likelihood
    return surrogate


def with_running_baseline(train_step: Callable, *, decay: float = 0.9) -> Callable:
    """Wraps a train step so ``state.estimator_state["baseline_value"]`` tracks the ELBO.

    After each step, ``b <- decay * b + (1 - decay) * metrics["elbo"]``: the
    running mean of past batches' ELBO estimates, so the baseline of a step never
    depends on that step's draws. Initialise it with ``create_train_state(...,
    estimator_state={"baseline_value": b0})`` and train an objective from
    ``make_estimator("score_function", model, baseline="running_mean")``.

    Args:
      train_step: ``(state, batch, key) -> (state, metrics)`` with an ``elbo`` metric.
      decay: in ``[0, 1)``.

    Returns:
      The wrapped step, jitted, state donated.
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1); got {decay}.")

    def step(state, batch, key):
        state, metrics = train_step(state, batch, key)
        b = decay * state.estimator_state["baseline_value"] + (1.0 - decay) * metrics["elbo"]
        return state.replace(estimator_state={**state.estimator_state, "baseline_value": b}), metrics

    return jax.jit(step, donate_argnums=0)


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
      estimator: ``(params, key, x, **hparams) -> (value, aux)``, e.g. from :func:`make_estimator`.
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
