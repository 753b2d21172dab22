"""What every surrogate objective shares: the value/gradient attachment and the baseline checks.

A surrogate is a number equal to the objective whose gradient is the estimator
(:func:`attach`). The score-function estimators of both families take the same
baselines, checked once here (:func:`check_baseline`). Imports ``jax`` only.
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient
BASELINES = ("none", "running_mean", "leave_one_out")


def attach(value: jax.Array, surrogate: jax.Array) -> jax.Array:
    """A number equal to ``value`` whose gradient is the gradient of ``surrogate``."""
    return sg(value) + (surrogate - sg(surrogate))


def check_int(n: Any, name: str, minimum: int = 1, why: str = "") -> int:
    """``n`` as an int unless it is not an integer ``>= minimum`` (Python or NumPy; bools refused);
    ``why`` is added to the message."""
    try:
        ok = not isinstance(n, bool) and operator.index(n) >= minimum
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an int >= {minimum}{why}; got {n!r}.")
    return operator.index(n)


def check_baseline(baseline: str, baseline_value: Any, num_samples: Any) -> None:
    """Raises ``ValueError`` for an unknown ``baseline``, a ``baseline_value`` given without
    ``"running_mean"`` (or missing with it), or fewer than 2 draws with ``"leave_one_out"``."""
    if baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; expected one of {BASELINES}.")
    if (baseline == "running_mean") != (baseline_value is not None):
        raise ValueError("baseline_value (a running mean of the ELBO, nats) is required with "
                         f"baseline='running_mean' and not allowed otherwise; got baseline={baseline!r}, "
                         f"baseline_value={baseline_value!r}.")
    loo = baseline == "leave_one_out"
    check_int(num_samples, "num_samples", 2 if loo else 1,
              " (baseline='leave_one_out' needs num_samples >= 2)" if loo else "")


def baseline_values(f: jax.Array, baseline: str, baseline_value: Any) -> jax.Array:
    """The baselines ``c [k]`` of ``k`` draws with (stop-gradiented) signals ``f [k]``: leave-one-out
    (the mean of the other draws' ``f``), ``baseline_value`` (a running mean) or 0."""
    if baseline == "leave_one_out":
        return (jnp.sum(f) - f) / (f.shape[0] - 1)
    if baseline_value is None:
        return jnp.zeros_like(f)
    return jnp.broadcast_to(sg(jnp.asarray(baseline_value, f.dtype)), f.shape)
