"""Test-set evaluation of a trained VAE: importance-sampled log p(x) and active units.

:func:`log_marginal` runs :meth:`vae_jax.models.VAE.log_marginal` (chunked
importance sampling, bounded memory) over a whole dataset in fixed-size,
jitted batches with a progress bar, and returns the per-example estimates with
their mean and standard error. :func:`active_units` counts the latent
dimensions the encoder uses (Burda et al., 2016). Both take the model object
(static under ``jax.jit``) and its ``params``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm


class MarginalEstimate(NamedTuple):
    """Importance-sampled ``log p(x)`` over a dataset, in nats per example.

    Attributes:
      values: ``[N]`` float64 estimates, one per example.
      mean: their mean.
      stderr: standard error of the mean over examples, ``std(values, ddof=1) / sqrt(N)``
        (0 for ``N = 1``); the Monte-Carlo error of each estimate is not included.
    """

    values: np.ndarray
    mean: float
    stderr: float


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "chunk_size"))
def _batch_log_marginal(model, params, batch, keys, *, num_samples, chunk_size):
    fn = functools.partial(model.log_marginal, num_samples=num_samples, chunk_size=chunk_size)
    return jax.vmap(fn, in_axes=(None, 0, 0))(params, keys, batch)


@functools.partial(jax.jit, static_argnames=("model",))
def _batch_posterior_mean(model, params, batch):
    return jax.vmap(lambda x: model.encode(params, x)[0])(batch)


def log_marginal(model: Any, params: Any, data: Any, key: jax.Array, *, num_samples: int = 5000,
                 chunk_size: int = 500, batch_size: int = 100, progress: bool = True,
                 desc: str = "log p(x)") -> MarginalEstimate:
    """Importance-sampled ``log p(x)`` of every example of ``data``.

    Example ``i`` is estimated with ``fold_in(key, i)``, so the values do not
    depend on ``batch_size`` (or on ``chunk_size``). The last batch is padded to
    ``batch_size``, so the computation compiles once.

    Args:
      model: a VAE, or anything with ``log_marginal(params, key, x, *, num_samples,
        chunk_size) -> scalar`` (hashable: it is static under jit).
      params: its parameters.
      data: ``[N, ...]`` examples as the model expects them; binarise beforehand
        for a Bernoulli model (e.g. once, with a fixed seed, for a test set).
      key: PRNG key.
      num_samples: importance samples per example (5000 in the literature).
      chunk_size: samples decoded at once per example; memory scales with
        ``batch_size * chunk_size``.
      batch_size: examples per compiled call.
      progress: show a tqdm bar over batches.
      desc: label of the bar.

    Returns:
      :class:`MarginalEstimate` with per-example values, mean and standard error (nats).

    Raises:
      ValueError: empty data, a bad ``batch_size``/``num_samples``/``chunk_size``, or
        data outside ``[0, 1]`` for a Bernoulli model.
    """
    data = _check_data(model, data)
    _check_positive(batch_size, "batch_size")
    n = data.shape[0]
    batch_size = min(batch_size, n)
    num_batches = -(-n // batch_size)
    values = []
    for b in tqdm(range(num_batches), desc=desc, disable=not progress, leave=False):
        index = np.arange(b * batch_size, (b + 1) * batch_size)
        valid = index < n
        batch = data[np.where(valid, index, 0)]  # padding repeats example 0; dropped below
        keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.asarray(index))
        out = _batch_log_marginal(model, params, jnp.asarray(batch), keys, num_samples=num_samples,
                                  chunk_size=chunk_size)
        values.append(np.asarray(out, np.float64)[valid])
    values = np.concatenate(values)
    stderr = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return MarginalEstimate(values, float(values.mean()), stderr)


def posterior_mean_variance(model: Any, params: Any, data: Any, *, batch_size: int = 1000) -> np.ndarray:
    """Variance over ``data`` of the posterior mean ``E_q[z_u | x]`` of each latent dimension.

    Args:
      model: a VAE, or anything hashable with ``encode(params, x) -> (mean [d], log_std [d])``.
      params: its parameters.
      data: ``[N, ...]`` examples, ``N >= 1``.
      batch_size: examples encoded per compiled call.

    Returns:
      ``[d]`` float64 population variances (``ddof = 0``), in squared latent units.

    Raises:
      ValueError: empty data, a bad ``batch_size``, or data outside ``[0, 1]``
        for a Bernoulli model.
    """
    data = _check_data(model, data)
    _check_positive(batch_size, "batch_size")
    means = [np.asarray(_batch_posterior_mean(model, params, jnp.asarray(data[i:i + batch_size])), np.float64)
             for i in range(0, data.shape[0], batch_size)]
    return np.concatenate(means).var(axis=0)


def active_units(model: Any, params: Any, data: Any, *, threshold: float = 0.01, batch_size: int = 1000) -> int:
    """Number of latent dimensions whose posterior mean varies over ``data`` by more than ``threshold``.

    A unit ``u`` is active if ``Var_x(E_q[z_u | x]) > threshold`` (Burda et al.,
    2016, with threshold 0.01); inactive units have collapsed to the prior.

    Args:
      model, params, data, batch_size: as for :func:`posterior_mean_variance`.
      threshold: variance threshold, ``>= 0``.

    Returns:
      Count in ``[0, latent_dim]``.

    Raises:
      ValueError: a negative or non-finite threshold, or bad data (see
        :func:`posterior_mean_variance`).
    """
    if isinstance(threshold, bool) or not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0; got {threshold!r}.")
    variances = posterior_mean_variance(model, params, data, batch_size=batch_size)
    return int(np.sum(variances > threshold))


def _check_data(model: Any, data: Any) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim < 1 or data.shape[0] == 0:
        raise ValueError(f"data must hold at least one example along axis 0; got shape {data.shape}.")
    if getattr(model, "likelihood", None) == "bernoulli" and (data.min() < 0 or data.max() > 1):
        raise ValueError(f"a Bernoulli model needs data in [0, 1]; got values in [{data.min():g}, "
                         f"{data.max():g}]. Scale and binarise the images first.")
    return data


def _check_positive(n: int, name: str) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name} must be a positive int; got {n!r}.")
