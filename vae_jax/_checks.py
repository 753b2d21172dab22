"""Input validation shared by every module (imports ``jax`` and ``numpy`` only).

Which calls check what:

* Shape and type checks (``check_positive_int``, ``check_posterior``) hold
  everywhere, traced or not: they raise while tracing.
* Value checks (Bernoulli data in ``[0, 1]`` and finite, ``beta >= 0`` and
  finite) need values. On concrete arrays they raise ``ValueError`` at once.
  Under ``jax.jit`` / ``jax.vmap`` / ``jax.grad`` the values are tracers, so the
  pure functions (:func:`vae_jax.objectives.elbo`, ``iwae_bound``,
  ``log_marginal``, ``autoencoder_loss``, a model's ``objective``) skip them:
  a jitted ``elbo`` of out-of-range data returns a number, not an error.
* The concrete entry points check the data before tracing: the data loaders,
  :func:`vae_jax.training.fit` (via the CLI), :func:`vae_jax.evaluation.evaluate`,
  ``log_marginal`` / ``active_units`` of :mod:`vae_jax.evaluation`,
  :func:`vae_jax.training.create_train_state` (hyper-parameters) and the CLI.
* To keep the value checks inside compiled code, wrap the transformed function
  with :func:`checked` (``jax.experimental.checkify``): the same checks become
  runtime checks of the compiled computation and raise ``ValueError`` after it
  runs, e.g. ``checked(jax.vmap(partial(elbo, encode=e, decode=d)))(keys, xs)``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import threading
from typing import Any, Callable, Mapping

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


_CHECKIFY = threading.local()  # depth > 0 while :func:`checked` traces its function


def _checkify_active() -> bool:
    return getattr(_CHECKIFY, "depth", 0) > 0


@contextlib.contextmanager
def _checkify_tracing():
    _CHECKIFY.depth = getattr(_CHECKIFY, "depth", 0) + 1
    try:
        yield
    finally:
        _CHECKIFY.depth -= 1


def checked(fn: Callable, *, jit: bool = True) -> Callable:
    """``fn`` with the library's value checks kept under ``jax.jit`` / ``jax.vmap``.

    While ``fn`` is traced inside ``checked``, the value checks of the pure
    functions (Bernoulli data finite and in ``[0, 1]``, ``beta`` finite and ``>= 0``)
    are staged as ``jax.experimental.checkify`` checks instead of being skipped;
    after the computation runs, a failed check raises ``ValueError`` with the
    same message as the concrete check (plus where it failed).

    Args:
      fn: a function of arrays (pass strings and callables with
        ``functools.partial``), possibly already ``jax.vmap``-ed or ``jax.grad``-ed.
      jit: compile the checked function with ``jax.jit``.

    Returns:
      A function with ``fn``'s signature and results.

    Example::

        f = checked(jax.vmap(functools.partial(elbo, encode=encode, decode=decode)))
        values, aux = f(keys, xs)  # ValueError if any x is outside [0, 1]
    """
    from jax.experimental import checkify

    def traced(*args, **kwargs):
        with _checkify_tracing():
            return fn(*args, **kwargs)

    run = checkify.checkify(traced, errors=checkify.user_checks)
    run = jax.jit(run) if jit else run

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        error, out = run(*args, **kwargs)
        message = error.get()
        if message:
            raise ValueError(message.strip())
        return out

    return wrapper


def _staged_check(ok: jax.Array, message: str, *fmt_args: jax.Array) -> None:
    """A checkify check (only while :func:`checked` traces); ``{}`` in ``message`` takes ``fmt_args``."""
    from jax.experimental import checkify

    checkify.check(ok, message, *fmt_args)


def check_unit_interval(x: Any, *, what: str = "likelihood='bernoulli' needs data") -> None:
    """``ValueError`` unless every value of a concrete ``x`` is finite and in ``[0, 1]``.

    Tracers pass, except while :func:`checked` traces: then the check is staged
    into the computation.
    """
    check_finite(x, what=what)
    if is_traced(x):
        if _checkify_active():
            x = jnp.asarray(x)
            _staged_check(jnp.all((x >= 0) & (x <= 1)), f"{what} in [0, 1]; got values in [{{}}, {{}}]. "
                          "Scale images to [0, 1] (e.g. divide uint8 pixels by 255) or use a Gaussian likelihood.",
                          jnp.min(x), jnp.max(x))
        return
    x = np.asarray(x)
    if x.size == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{what} in [0, 1]; got values in [{lo:g}, {hi:g}]. "
            "Scale images to [0, 1] (e.g. divide uint8 pixels by 255) or use a Gaussian likelihood.")


def check_finite(x: Any, *, what: str) -> None:
    """``ValueError`` unless every value of a concrete ``x`` is finite (NaN and inf refused).

    Tracers pass, except while :func:`checked` traces: then the check is staged.
    """
    if is_traced(x):
        if _checkify_active():
            finite = jnp.isfinite(jnp.asarray(x))
            _staged_check(jnp.all(finite), f"{what} without NaN or inf; got {{}} non-finite values.",
                          jnp.sum(~finite))
        return
    x = np.asarray(x)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} without NaN or inf; got {int(np.sum(~np.isfinite(x)))} non-finite values.")


def check_finite_nonnegative(value: Any, name: str) -> None:
    """``ValueError`` unless a concrete scalar (or array) ``value`` is finite and ``>= 0``.

    Tracers pass, except while :func:`checked` traces: then the check is staged.
    """
    if is_traced(value):
        if _checkify_active():
            v = jnp.ravel(jnp.asarray(value))
            ok = jnp.isfinite(v) & (v >= 0)
            _staged_check(jnp.all(ok), f"{name} must be finite and >= 0; got {{}}.",
                          v[jnp.argmin(ok)] if v.size else jnp.zeros(()))  # the first bad value, NaN included
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


def check_example(x: jax.Array, input_shape: tuple[int, ...] | None) -> None:
    """``ValueError`` naming ``input_shape`` unless ``x`` is one example of it (``None``: any shape)."""
    if input_shape is not None and tuple(jnp.shape(x)) != tuple(input_shape):
        raise ValueError(f"the model takes ONE example of shape {tuple(input_shape)}; got shape {jnp.shape(x)} "
                         f"(batch with jax.vmap; vae_jax.evaluate and evaluation.log_marginal take "
                         f"[N, {', '.join(map(str, input_shape))}]).")


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


def check_finite_number(value: Any, name: str, *, positive: bool = False) -> float:
    """``value`` as a float, or ``ValueError`` unless it is a finite real number (``> 0`` if ``positive``)."""
    try:
        ok = not isinstance(value, (bool, str)) and math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok or (positive and not float(value) > 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}; got {value!r}.")
    return float(value)


def check_hparams(hparams: Mapping[str, Any] | None) -> None:
    """``ValueError`` unless every concrete hyper-parameter is finite and ``beta >= 0`` (tracers pass)."""
    for name, value in (hparams or {}).items():
        if is_traced(value):
            continue
        if not np.all(np.isfinite(np.asarray(value, np.float64))):
            raise ValueError(f"hyper-parameter {name} must be finite; got {value!r}.")
    if "beta" in (hparams or {}):
        check_finite_nonnegative(hparams["beta"], "beta")
