"""What estimators learn or track besides the model: NVIL's baseline network, REBAR/RELAX's
control-variate parameters, and the running-mean baseline of the score-function estimators.

Learned groups live in the model parameters (so in the train state, updated by the
same Optax step, each with its own Adam moments): ``params["baseline"]`` (NVIL) and
``params["control"]`` (REBAR/RELAX). :func:`vae_jax.estimators.with_estimator_params`
adds them to a model's ``init``. The running mean is estimator *state*, carried in
``TrainState.estimator_state`` by :func:`with_running_baseline`. Imports ``jax`` only.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from vae_jax import mlp
from vae_jax.estimators._surrogate import check_int


def baseline_init(key: jax.Array, input_size: int, hidden: int = 100) -> mlp.Layers:
    """Parameters of NVIL's baseline network ``C_psi``: ``input_size -> hidden (tanh) -> 1``."""
    return mlp.init(key, (input_size, hidden, 1))


def baseline_apply(params: mlp.Layers, x: jax.Array) -> jax.Array:
    """``C_psi(x)``: a scalar (nats) for one observation ``x`` (flattened)."""
    return mlp.apply(params, jnp.ravel(x), "tanh")[0]


def init_control(key: jax.Array, latent_shape: tuple[int, ...], *, hidden: int | None = None,
                 temperature: float = 0.5, eta: float = 1.0) -> dict[str, Any]:
    """Control-variate parameters of REBAR (``hidden=None``) or RELAX (a ``hidden``-unit tanh network).

    Returns:
      ``{"log_temperature": [], "eta": [], ("net": layers)}``, float32.
    """
    control = {"log_temperature": jnp.asarray(math.log(temperature), jnp.float32),
               "eta": jnp.asarray(eta, jnp.float32)}
    if hidden is not None:
        check_int(hidden, "hidden")
        net = mlp.init(key, (math.prod(latent_shape), hidden, 1))
        net[-1] = jax.tree.map(lambda w: 0.1 * w, net[-1])
        control["net"] = net
    return control


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
