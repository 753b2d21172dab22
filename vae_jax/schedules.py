"""Hyper-parameter schedules: functions of the step, in Optax's style, carried in the train state.

A schedule is ``schedule(step) -> value`` (``step``: the int32 count of optimiser
steps taken before this one). Any hyper-parameter of
:func:`vae_jax.training.create_train_state` may be a constant or a schedule
(``create_train_state(..., beta=linear_warmup(1.0, steps=W))``), as Optax takes a
learning rate or a schedule. The schedules here are small ``NamedTuple`` s of
arrays, so they are pytrees: they live in ``TrainState.hparams``, are saved with
it in every checkpoint, stack and vmap in a sweep (each model its own value and
length), and a resumed run continues them exactly. Imports ``jax`` only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax._checks import check_hparams


class LinearWarmup(NamedTuple):
    """``value * min((step + 1) / steps, 1)``: a linear rise from ``value / steps`` to ``value``
    over the first ``steps`` steps (the KL warm-up of the VampPrior recipe); ``steps = 0``: ``value``.

    Attributes:
      value: float32 scalar, the value after the warm-up.
      steps: int32 scalar, the warm-up length in steps.
    """

    value: jax.Array
    steps: jax.Array

    def __call__(self, step: jax.Array) -> jax.Array:
        ramp = (step + 1).astype(jnp.float32) / jnp.maximum(self.steps, 1).astype(jnp.float32)
        return self.value * jnp.where(self.steps > 0, jnp.minimum(ramp, 1.0), 1.0)


def linear_warmup(value: float | jax.Array, *, steps: int) -> LinearWarmup:
    """A :class:`LinearWarmup` to ``value`` over ``steps >= 0`` steps.

    Raises:
      ValueError: a non-finite ``value`` or ``steps`` that is not an int ``>= 0``.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"warm-up steps must be an int >= 0; got {steps!r}.")
    check_hparams({"value": value})
    return LinearWarmup(jnp.asarray(value, jnp.float32), jnp.asarray(steps, jnp.int32))


def is_schedule(hparam: Any) -> bool:
    """Whether ``hparam`` is a schedule (callable with the step) rather than a constant."""
    return callable(hparam)


def value_at(hparam: Any, step: jax.Array) -> jax.Array:
    """The value of a constant or a schedule ``hparam`` at ``step``."""
    return hparam(step) if is_schedule(hparam) else hparam


def final_value(hparam: Any) -> Any:
    """The value a schedule settles at (its ``value``), or the constant itself: what value checks see."""
    return getattr(hparam, "value", hparam) if is_schedule(hparam) else hparam
