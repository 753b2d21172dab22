"""Input validation shared by every module (imports ``jax`` and ``numpy`` only).

Checks on values (a range, finiteness) need concrete arrays: under ``jax.jit`` /
``jax.vmap`` the values are tracers, so the value checks here are skipped and the
concrete entry points (data loaders, :func:`vae_jax.training.fit`,
:func:`vae_jax.evaluation.evaluate`, the CLI) check the data before tracing.
Shape and type checks hold everywhere.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


def check_positive_int(n: Any, name: str = "num_samples") -> int:
    """``n`` as an int, or ``ValueError`` unless it is a positive integer (Python or NumPy, not bool)."""
    try:
        ok = not isinstance(n, bool) and operator.index(n) >= 1
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a positive int; got {n!r}.")
    return operator.index(n)


def is_traced(x: Any) -> bool:
    """Whether ``x`` is a tracer (its values are unknown until run)."""
    return isinstance(x, jax.core.Tracer)


def check_unit_interval(x: Any, *, what: str = "likelihood='bernoulli' needs data") -> None:
    """``ValueError`` unless every value of a concrete ``x`` is finite and in ``[0, 1]`` (tracers pass)."""
    if is_traced(x):
        return
    x = np.asarray(x)
    if x.size == 0:
        return
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} without NaN or inf; got {int(np.sum(~np.isfinite(x)))} non-finite values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{what} in [0, 1]; got values in [{lo:g}, {hi:g}]. "
            "Scale images to [0, 1] (e.g. divide uint8 pixels by 255) or use a Gaussian likelihood.")


def check_finite_nonnegative(value: Any, name: str) -> None:
    """``ValueError`` unless a concrete scalar (or array) ``value`` is finite and ``>= 0`` (tracers pass)."""
    if is_traced(value):
        return
    v = np.asarray(value, dtype=np.float64)
    if not (np.all(np.isfinite(v)) and np.all(v >= 0.0)):
        raise ValueError(f"{name} must be finite and >= 0; got {value!r}.")


def check_posterior(mean: jax.Array, log_std: jax.Array) -> None:
    """``ValueError`` unless ``mean`` and ``log_std`` are both ``[d]`` (one example)."""
    if jnp.ndim(mean) != 1 or jnp.shape(mean) != jnp.shape(log_std):
        raise ValueError(
            "encode must return (mean, log_std), both of shape [latent_dim] for one example; "
            f"got shapes {jnp.shape(mean)} and {jnp.shape(log_std)}.")


def check_dataset(data: Any, *, likelihood: str | None = None) -> np.ndarray:
    """``data`` as a NumPy array with at least one example; finite and in ``[0, 1]`` for a Bernoulli model."""
    data = np.asarray(data)
    if data.ndim < 1 or data.shape[0] == 0:
        raise ValueError(f"data must hold at least one example along axis 0; got shape {data.shape}.")
    if likelihood == "bernoulli":
        check_unit_interval(data, what="a Bernoulli model needs data")
    elif not np.all(np.isfinite(data)):
        raise ValueError("data holds NaN or inf values.")
    return data
