"""Every dataset-level number: mean objective and its terms, log p(x), active units.

:func:`evaluate` averages any per-example objective (the ELBO and its terms,
the IWAE bound of :func:`vae_jax.estimators.make_estimator`) over a whole
dataset in one compiled scan, dropping no example. :func:`log_marginal` runs
:meth:`vae_jax.models.VAE.log_marginal` (chunked importance sampling, bounded
memory) over a whole dataset in fixed-size, jitted batches with a progress bar,
and returns the per-example estimates with their mean and standard error.
:func:`active_units` counts the latent dimensions the encoder uses (Burda et
al., 2016). Both take the model object (static under ``jax.jit``) and its
``params``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from vae_jax._checks import check_dataset, check_hparams, check_positive_int, checked
from vae_jax.runs.files import write_bytes
from vae_jax.training import batch_objective, device_examples, num_examples, take


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


# log p(x) is a few very large [batch * chunk, hidden] x [hidden, D] products: XLA's Eigen matmuls
# run them about 1.6x faster than its default (YNNPACK) fusions on this CPU (benchmarks/results/
# cpu_profile.json, README's benchmark section), while training is slower with Eigen, so only this
# computation is compiled with it. Unknown options are an error in other XLA versions: fall back.
LOG_MARGINAL_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _log_marginal_fn(model, params, batch, keys, *, num_samples, chunk_size):
    fn = functools.partial(model.log_marginal, num_samples=num_samples, chunk_size=chunk_size)
    return jax.vmap(fn, in_axes=(None, 0, 0))(params, keys, batch)


_batch_log_marginal_default = jax.jit(_log_marginal_fn, static_argnames=("model", "num_samples", "chunk_size"))
_batch_log_marginal_eigen = jax.jit(_log_marginal_fn, static_argnames=("model", "num_samples", "chunk_size"),
                                    compiler_options=LOG_MARGINAL_COMPILER_OPTIONS)
_USE_EIGEN: list[bool | None] = [None]  # decided at the first call: importing must not start a backend
# (jax.distributed.initialize() comes after the imports and before any device is used)


def _use_eigen() -> bool:
    """Whether log p(x) compiles with Eigen's matmuls: on CPU, unless this XLA rejected the option."""
    if _USE_EIGEN[0] is None:
        _USE_EIGEN[0] = jax.default_backend() == "cpu"
    return _USE_EIGEN[0]


def _batch_log_marginal(model, params, batch, keys, *, num_samples, chunk_size):
    """``[B]`` log p(x) of ``batch [B, ...]``, one key each; compiled once per shape."""
    if _use_eigen():
        try:
            return _batch_log_marginal_eigen(model, params, batch, keys, num_samples=num_samples,
                                             chunk_size=chunk_size)
        except Exception as e:  # an XLA without the option rejects it at compile time
            if "ynn" not in str(e).lower() and "option" not in str(e).lower():
                raise
            _USE_EIGEN[0] = False
    return _batch_log_marginal_default(model, params, batch, keys, num_samples=num_samples, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("model",))
def _batch_posterior_mean(model, params, batch):
    return jax.vmap(lambda x: model.encode(params, x)[0])(batch)


def _check_examples(model: Any, data: Any) -> Any:
    """``data`` as NumPy (a tuple ``(x, y, ...)`` leaf by leaf), its images ``x`` checked against
    ``model.likelihood`` and (when the model has one) ``model.input_shape``."""
    pair = isinstance(data, tuple)
    x = check_dataset(data[0] if pair else data, likelihood=getattr(model, "likelihood", None))
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        hint = " (one example? add the batch axis: x[None])" if tuple(x.shape) == tuple(expected) else ""
        raise ValueError(f"data must be [N, {', '.join(map(str, expected))}] for this model; got shape "
                         f"{tuple(x.shape)}{hint}.")
    if not pair:
        return x
    data = (x, *(np.asarray(leaf) for leaf in data[1:]))
    device_examples(data)  # the leaves share N
    return data


def log_marginal(model: Any, params: Any, data: Any, key: jax.Array, *, num_samples: int = 5000,
                 chunk_size: int = 500, batch_size: int = 100, progress: bool = True,
                 desc: str = "log p(x)", resume_file: str | os.PathLike | None = None) -> MarginalEstimate:
    """Importance-sampled ``log p(x)`` of every example of ``data``.

    Example ``i`` is estimated with ``fold_in(key, i)``, so the values do not
    depend on ``batch_size`` (or on ``chunk_size``). The last batch is padded to
    ``batch_size``, so the computation compiles once.

    Args:
      model: a VAE, or anything with ``log_marginal(params, key, x, *, num_samples,
        chunk_size) -> scalar`` (hashable: it is static under jit).
      params: its parameters.
      data: ``[N, ...]`` examples as the model expects them, or a tuple such as ``(x [N, ...],
        y [N])`` for a conditional model (``log p(x | y)``); binarise beforehand for a Bernoulli
        model (e.g. once, with a fixed seed, for a test set).
      key: PRNG key.
      num_samples: importance samples per example (5000 in the literature).
      chunk_size: samples decoded at once per example; memory scales with
        ``batch_size * chunk_size``.
      batch_size: examples per compiled call.
      progress: show a tqdm bar over batches.
      desc: label of the bar.
      resume_file: a ``.npz`` file that keeps the values computed so far, written atomically
        after every batch with a fingerprint of the inputs (parameters, data, key, model type
        and settings), and ``seconds``, the computing time of every call that contributed. A
        later call with the same file and the same inputs continues after the last batch
        saved, and its values are bitwise those of one uninterrupted call; a file made from
        other inputs is started afresh. The file stays when the call completes (read its
        ``seconds`` with :func:`resume_file_seconds`).

    Returns:
      :class:`MarginalEstimate` with per-example values, mean and standard error (nats).

    Raises:
      ValueError: empty data, examples of another shape than ``model.input_shape``, a bad
        ``batch_size``/``num_samples``/``chunk_size``, or data outside ``[0, 1]`` for a
        Bernoulli model.
    """
    data = _check_examples(model, data)
    check_positive_int(batch_size, "batch_size")
    n = num_examples(data)
    batch_size = min(batch_size, n)
    num_batches = -(-n // batch_size)
    fingerprint = _fingerprint(model, params, data, key, num_samples, chunk_size, batch_size) if resume_file else None
    values, seconds = _resume(resume_file, fingerprint, batch_size)
    for b in tqdm(range(len(values), num_batches), desc=desc, disable=not progress, leave=False,
                  total=num_batches, initial=len(values)):
        start = time.perf_counter()
        index = np.arange(b * batch_size, (b + 1) * batch_size)
        valid = index < n
        batch = take(data, np.where(valid, index, 0))  # padding repeats example 0; dropped below
        keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.asarray(index))
        out = _batch_log_marginal(model, params, jax.tree.map(jnp.asarray, batch), keys, num_samples=num_samples,
                                  chunk_size=chunk_size)
        values.append(np.asarray(out, np.float64)[valid])
        seconds += time.perf_counter() - start
        if resume_file:
            _save_resume(resume_file, fingerprint, values, seconds)
    values = np.concatenate(values)
    stderr = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return MarginalEstimate(values, float(values.mean()), stderr)


def resume_file_seconds(resume_file: str | os.PathLike) -> float:
    """The computing seconds that :func:`log_marginal`'s calls spent on the values in ``resume_file``."""
    with np.load(resume_file) as f:
        return float(f["seconds"])


def _fingerprint(model, params, data, key, *settings) -> str:
    digest = hashlib.sha256(repr((type(model).__module__, type(model).__qualname__, settings)).encode())
    raw_key = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    for leaf in [*jax.tree.leaves(params), *jax.tree.leaves(data), raw_key]:
        leaf = np.ascontiguousarray(leaf)
        digest.update(repr((leaf.shape, leaf.dtype.str)).encode())
        digest.update(leaf.tobytes())
    return digest.hexdigest()


def _resume(resume_file, fingerprint: str | None, batch_size: int) -> tuple[list[np.ndarray], float]:
    """The batches of values (and seconds) saved in ``resume_file`` for these inputs; none otherwise."""
    if not resume_file or not Path(resume_file).is_file():
        return [], 0.0
    try:
        with np.load(resume_file) as f:
            if str(f["fingerprint"]) != fingerprint:
                return [], 0.0
            done, seconds = f["values"], float(f["seconds"])
    except (OSError, ValueError, KeyError):  # unreadable: computed again
        return [], 0.0
    return [done[i:i + batch_size] for i in range(0, len(done), batch_size)], seconds


def _save_resume(resume_file, fingerprint: str, values: list[np.ndarray], seconds: float) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, fingerprint=fingerprint, values=np.concatenate(values), seconds=seconds)
    write_bytes(resume_file, buffer.getvalue())


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
    data = _check_examples(model, data)
    check_positive_int(batch_size, "batch_size")
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


def _evaluate_sums(objective, params, data, key, hparams, *, batch_size):
    n = num_examples(data)
    num_batches = -(-n // batch_size)

    def pad(leaf):
        leaf = jnp.concatenate([leaf, jnp.zeros((num_batches * batch_size - n, *leaf.shape[1:]), leaf.dtype)])
        return leaf.reshape(num_batches, batch_size, *leaf.shape[1:])

    padded = jax.tree.map(pad, data)
    weights = (jnp.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)

    def body(totals, inputs):
        batch, mask, batch_key = inputs
        values, aux = batch_objective(objective, params, batch_key, batch, hparams)
        sums = jax.tree.map(lambda v: jnp.sum(jnp.where(mask, v, 0.0)), {"objective": values, **aux})
        return jax.tree.map(jnp.add, totals, sums), None

    zeros = jax.tree.map(lambda v: jnp.zeros((), v.dtype),
                         jax.eval_shape(lambda: batch_objective(objective, params, key, take(padded, 0), hparams)))
    init = {"objective": zeros[0], **zeros[1]}
    totals, _ = jax.lax.scan(body, init, (padded, weights, jax.random.split(key, num_batches)))
    return jax.tree.map(lambda t: t / n, totals)


_evaluate = jax.jit(_evaluate_sums, static_argnames=("objective", "batch_size"))


@functools.lru_cache(maxsize=16)
def _evaluate_checked(objective, batch_size):
    # One compilation per objective and batch size, like _evaluate; the objective's own value checks
    # (e.g. Bernoulli data in [0, 1]) run inside it, however the objective was wrapped.
    return checked(functools.partial(_evaluate_sums, objective, batch_size=batch_size))


def as_device_data(data: Any) -> Any:
    """``data`` on the device (an array, or a tuple of arrays that share ``N``) with at least one example."""
    shape = np.shape(data[0] if isinstance(data, tuple) else data)
    if len(shape) < 1 or shape[0] == 0:
        raise ValueError(f"data must hold at least one example along axis 0; got shape {shape}.")
    return device_examples(data)


def evaluate(objective: Any, params: Any, data: Any, key: jax.Array, *, likelihood: str | None = None,
             hparams: Mapping[str, Any] | None = None, batch_size: int = 500, check: bool = True) -> dict[str, float]:
    """Mean objective and aux over every example of ``data`` (no example dropped).

    Args:
      objective: per-example ``(params, key, x, **hparams) -> (value, aux)``, e.g.
        ``model.objective`` or an estimator of :func:`vae_jax.estimators.make_estimator`.
      params: model parameters.
      data: ``[N, H, W, C]``, or a tuple such as ``(x [N, H, W, C], y [N])`` of labelled
        examples (the likelihood check looks at ``x``); binarise the images beforehand if the
        model expects binary data.
      key: PRNG key for the objective's draws.
      likelihood: the model's likelihood, for the data check before anything is compiled
        (``"bernoulli"``: values in ``[0, 1]``); ``None``: finite values only.
      hparams: forwarded to the objective (e.g. ``state.hparams``).
      batch_size: examples evaluated at once (memory only; results do not depend on it
        beyond the random draws).
      check: check the data's values: here, against ``likelihood``, and inside the compiled
        computation the objective's own value checks (those :func:`vae_jax.checked` keeps,
        e.g. Bernoulli data in ``[0, 1]``), whether ``objective`` is a bound method, a
        ``jax.jit`` of one or a lambda around it. ``False`` skips both (and the checks' cost).

    Returns:
      Dict of Python floats: ``objective`` and every aux entry (e.g. ``elbo``,
      ``reconstruction``, ``kl``), averaged over the N examples, in nats.

    Raises:
      ValueError: no example, a bad ``batch_size``, or (with ``check``) bad values.
    """
    check_positive_int(batch_size, "batch_size")
    check_hparams(hparams)
    if check:
        check_dataset(data[0] if isinstance(data, tuple) else data, likelihood=likelihood)
    data = as_device_data(data)
    hparams = {k: jnp.asarray(v, jnp.float32) for k, v in (hparams or {}).items()}
    batch_size = min(batch_size, num_examples(data))
    if check:
        out = _evaluate_checked(objective, batch_size)(params, data, key, hparams)
    else:
        out = _evaluate(objective, params, data, key, hparams, batch_size=batch_size)
    return {k: float(v) for k, v in out.items()}
