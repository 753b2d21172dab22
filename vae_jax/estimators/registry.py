"""THE list of gradient estimators: one record each, and the objective built from a record.

Every fact about an estimator (the bound it estimates, the latent kinds it takes,
the parameters it learns, the arguments the library supplies to it) is in its
:class:`Estimator` record in :data:`ESTIMATORS`; :func:`make_estimator`, the run
config's check (:func:`vae_jax.build.validate`) and the command line's choices
read them from here. Imports ``jax`` only.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from vae_jax import discrete as discrete_latents
from vae_jax.estimators import discrete, gaussian, relaxed
from vae_jax.estimators._surrogate import sg
from vae_jax.estimators.learned import baseline_apply, baseline_init, init_control

BOUNDS = ("elbo", "iwae")  # the ELBO, and the k-sample (importance-weighted) bound
GAUSSIAN = ("gaussian",)
DISCRETE = discrete_latents.LATENTS
STATE_ARGS = ("baseline_value",)  # come from TrainState.estimator_state, never from the user
_GAUSSIAN_INJECTED = ("likelihood", "prior")
_DISCRETE_INJECTED = ("prior_logits", "latent", "likelihood", "baseline_fn", "control", "decode_constant")


@dataclasses.dataclass(frozen=True)
class Estimator:
    """One gradient estimator.

    Attributes:
      name: its name (``make_estimator(name, ...)``, ``vae-jax train --estimator name``).
      fn: per example, ``(key, x, encode, decode, *, injected..., options...) -> (value, aux)``;
        ``value`` is the bound's estimate, its gradient the estimator.
      bound: ``"elbo"`` or ``"iwae"`` (the k-sample bound): the objective whose gradient it estimates.
      latents: the latent kinds it supports.
      unbiased: whether its gradient is unbiased for ``bound``.
      learned: the parameter group it learns in the model's parameters (``"baseline"``,
        ``"control"``) or ``None``; see :func:`init_estimator_params`.
      hidden: default units of its learned network (``None``: it has none).
      min_num_samples: the fewest draws it works with.
      pathwise: it is the reparameterisation gradient of ``bound`` (what trains that bound
        when no estimator is named).
      any_posterior: it also takes the posterior objects of flow and hierarchical models
        (:mod:`vae_jax.posteriors`), not only ``(mean, log_std)``.
      needs_log_prob: it evaluates ``log q`` at given draws, so of the posterior objects it takes
        only those with ``log_prob`` (hierarchical, Gaussian factors; not flows).
    """

    name: str
    fn: Callable
    bound: str
    latents: tuple[str, ...]
    unbiased: bool = True
    learned: str | None = None
    hidden: int | None = None
    min_num_samples: int = 1
    pathwise: bool = False
    any_posterior: bool = False
    needs_log_prob: bool = False

    def takes_posterior(self, flow: bool) -> bool:
        """Whether it takes the posterior objects of a hierarchical model (``flow=False``) or of a model
        with a flow posterior (``flow=True``)."""
        return self.any_posterior and not (flow and self.needs_log_prob)

    @property
    def injected(self) -> tuple[str, ...]:
        """Keyword arguments :func:`make_estimator` supplies from the model (not the user's to set)."""
        return _GAUSSIAN_INJECTED if self.latents == GAUSSIAN else _DISCRETE_INJECTED

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options a user may set (``num_samples``, ``num_pairs``, ``baseline``, ``beta``, ...)."""
        return tuple(p.name for p in inspect.signature(self.fn).parameters.values()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in (*self.injected, *STATE_ARGS))

    def takes(self, option: str) -> bool:
        """Whether ``option`` (e.g. ``"beta"``, ``"num_samples"``, ``"num_pairs"``) is one of its options."""
        return option in self.options


ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (
    Estimator("pathwise", gaussian.pathwise, "elbo", GAUSSIAN, pathwise=True, any_posterior=True),
    Estimator("score_function", gaussian.score_function, "elbo", GAUSSIAN, any_posterior=True, needs_log_prob=True),
    Estimator("stl", gaussian.stl, "elbo", GAUSSIAN, any_posterior=True, needs_log_prob=True),
    Estimator("iwae", gaussian.iwae, "iwae", GAUSSIAN, pathwise=True, any_posterior=True),
    Estimator("dreg", gaussian.dreg, "iwae", GAUSSIAN, any_posterior=True, needs_log_prob=True),
    Estimator("reinforce", discrete.reinforce, "elbo", DISCRETE),
    Estimator("nvil", discrete.nvil, "elbo", DISCRETE, learned="baseline", hidden=100),
    Estimator("vimco", discrete.vimco, "iwae", DISCRETE, min_num_samples=2),
    Estimator("arm", discrete.arm, "elbo", ("bernoulli",)),
    Estimator("disarm", discrete.disarm, "elbo", ("bernoulli",)),
    Estimator("disarm_iw", discrete.disarm_iw, "iwae", ("bernoulli",)),
    Estimator("gumbel_softmax", relaxed.gumbel_softmax, "elbo", DISCRETE, unbiased=False),
    Estimator("straight_through", relaxed.straight_through, "elbo", DISCRETE, unbiased=False),
    Estimator("rebar", relaxed.rebar, "elbo", ("bernoulli",), learned="control"),
    Estimator("relax", relaxed.relax, "elbo", ("bernoulli",), learned="control", hidden=50),
)}


def get(name: str) -> Estimator:
    """The record of ``name``; ``ValueError`` naming the choices if there is none."""
    if name not in ESTIMATORS:
        raise ValueError(f"Unknown estimator {name!r}; expected one of {tuple(ESTIMATORS)}.")
    return ESTIMATORS[name]


def names(latent: str | None = None) -> tuple[str, ...]:
    """Every estimator's name, or those that support ``latent``."""
    return tuple(n for n, e in ESTIMATORS.items() if latent is None or latent in e.latents)


def pathwise_estimator(bound: str) -> str:
    """The name of the reparameterisation gradient of ``bound`` (``"elbo"`` or ``"iwae"``)."""
    return next(n for n, e in ESTIMATORS.items() if e.pathwise and e.bound == bound)


def check_latent(record: Estimator, latent: str) -> None:
    """``ValueError`` unless ``record`` supports ``latent``, naming the estimators that do."""
    if latent not in record.latents:
        which = ("Gaussian latents" if record.latents == GAUSSIAN else "discrete latents"
                 if record.latents == DISCRETE else f"{' and '.join(record.latents).capitalize()} latents only")
        raise ValueError(f"estimator {record.name!r} is for {which}, not latent={latent!r}; choose from "
                         f"{', '.join(names(latent))}.")


def check_options(record: Estimator, options: Mapping[str, Any]) -> None:
    """``ValueError`` for an option ``record`` does not take."""
    unknown = sorted(set(options) - set(record.options))
    if unknown:
        raise ValueError(f"Estimator {record.name!r} got unknown options {unknown}; it takes {list(record.options)}.")


def make_estimator(name: str, model: Any, **options: Any) -> Callable:
    """The estimator ``name`` for ``model`` as an objective for the train step.

    Args:
      name: a key of :data:`ESTIMATORS`.
      model: with ``bind(params)`` and ``likelihood``: a Gaussian-latent model
        (``bind -> (encode, decode, prior)``, e.g. :class:`vae_jax.VAE`,
        :class:`vae_jax.linear_gaussian.AffineLinearGaussian`) or a discrete one with
        ``latent`` (``bind -> (encode, decode, prior_logits)``, a
        :class:`vae_jax.models.DiscreteVAE`; NVIL reads ``params["baseline"]``,
        REBAR/RELAX ``params["control"]``, see :func:`with_estimator_params`).
      **options: static keyword options of the estimator (``num_samples``, ``num_pairs``,
        ``baseline``, ``temperature``, ``beta``, ``kl``); runtime ones (``baseline_value``,
        ``beta``) may come later as ``**hparams``.

    Returns:
      ``surrogate(params, key, x, **hparams) -> (value, aux)`` for one example.

    Raises:
      ValueError: unknown name, a latent kind the estimator does not take, or an unknown option.
    """
    record = get(name)
    check_latent(record, getattr(model, "latent", "gaussian"))
    check_options(record, options)
    if record.latents == GAUSSIAN:
        fn = functools.partial(record.fn, likelihood=model.likelihood, **options)

        def surrogate(params, key, x, **hparams):
            encode, decode, prior = model.bind(params)
            return fn(key, x, encode, decode, prior=prior, **hparams)

        return surrogate
    fn = functools.partial(record.fn, latent=model.latent, likelihood=model.likelihood, **options)

    def discrete_surrogate(params, key, x, **hparams):
        encode, decode, prior_logits = model.bind(params)
        return fn(key, x, encode, decode, prior_logits=prior_logits, **_learned_args(record, model, params),
                  **hparams)

    return discrete_surrogate


def _learned_args(record: Estimator, model: Any, params: Any) -> dict[str, Any]:
    if record.learned == "baseline":
        return {"baseline_fn": functools.partial(baseline_apply, params["baseline"])}
    if record.learned == "control":
        return {"control": params["control"], "decode_constant": model.bind(sg(params)).decode}
    return {}


def init_estimator_params(name: str, model: Any, key: jax.Array, x: jax.Array, *, hidden: int | None = None
                          ) -> dict[str, Any]:
    """The extra parameter groups the estimator ``name`` learns: ``{}``, ``{"baseline"}`` or ``{"control"}``.

    Args:
      name: a key of :data:`ESTIMATORS`.
      model: with ``latent_shape``.
      key: PRNG key.
      x: one example (shapes only).
      hidden: units of its learned network (default: the record's ``hidden``).
    """
    record = get(name)
    if record.learned == "baseline":
        return {"baseline": baseline_init(key, math.prod(jnp.shape(x)), hidden or record.hidden)}
    if record.learned == "control":
        units = (hidden or record.hidden) if record.hidden else None
        return {"control": init_control(key, model.latent_shape, hidden=units)}
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
    get(name)
    return WithEstimatorParams(model, name, hidden)
