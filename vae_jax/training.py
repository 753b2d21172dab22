"""One compiled train step, whole-epoch ``lax.scan`` training, and evaluation.

An *objective* is a per-example function ``objective(params, key, x, **hparams)
-> (value, aux)`` to MAXIMISE (e.g. :meth:`vae_jax.models.VAE.objective`),
where ``aux`` is a dict of scalars. The train step vmaps it over the batch with
one key per example, averages, and takes an Optax step on ``-mean(value)``.
Hyper-parameters such as ``beta`` live in :attr:`TrainState.hparams`, so a
sweep is a stack of states trained by one ``jax.vmap``-ed step.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm.auto import tqdm

Objective = Callable[..., tuple[jax.Array, Mapping[str, jax.Array]]]
Metrics = dict[str, float]


class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` plus ``hparams``: a dict of scalar arrays passed to the objective."""

    hparams: dict = flax.struct.field(default_factory=dict)


def create_train_state(model: Any, key: jax.Array, example: jax.Array, optimizer: optax.GradientTransformation,
                       **hparams: float) -> TrainState:
    """Initialises ``model`` on one ``example [H, W, C]`` and wraps it with ``optimizer``.

    Args:
      model: anything with ``init(key, x) -> params`` (a VAE or AE).
      key: PRNG key for the initial parameters.
      example: one input example, used for shapes only.
      optimizer: an Optax transformation, e.g. ``optax.adam(1e-3)``.
      **hparams: scalars forwarded to the objective on every step (e.g. ``beta=4.0``).
    """
    params = model.init(key, jnp.asarray(example))
    hparams = {k: jnp.asarray(v, jnp.float32) for k, v in hparams.items()}
    state = TrainState.create(apply_fn=None, params=params, tx=optimizer, hparams=hparams)
    # An array step (not Python's 0) keeps the step's input types fixed: one compilation.
    return state.replace(step=jnp.zeros((), jnp.int32))


def batch_objective(objective: Objective, params: Any, key: jax.Array, batch: jax.Array,
                    hparams: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-example ``objective`` vmapped over ``batch [B, ...]`` with ``B`` keys.

    Returns:
      ``(values [B], aux)`` with every aux entry ``[B]``.
    """
    keys = jax.random.split(key, batch.shape[0])
    return jax.vmap(lambda k, x: objective(params, k, x, **hparams))(keys, batch)


def make_train_step(objective: Objective, *, dynamic_binarization: bool = False) -> Callable:
    """Builds ``train_step(state, batch, key) -> (state, metrics)``, jitted, state donated.

    Args:
      objective: per-example ``(params, key, x, **hparams) -> (value, aux)`` to maximise.
      dynamic_binarization: if True, each step replaces the grey-level batch by
        a fresh Bernoulli draw (pixel intensity = probability) from the step's key.

    Returns:
      The compiled step. ``metrics`` holds the batch means of ``loss`` (=-value),
      every aux entry, and ``grad_norm``, all scalar arrays.
    """

    def train_step(state: TrainState, batch: jax.Array, key: jax.Array):
        key_data, key_objective = jax.random.split(key)
        if dynamic_binarization:
            batch = jax.random.bernoulli(key_data, batch).astype(batch.dtype)

        def loss_fn(params):
            values, aux = batch_objective(objective, params, key_objective, batch, state.hparams)
            return -jnp.mean(values), jax.tree.map(jnp.mean, aux)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads=grads)
        return new_state, {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}

    return jax.jit(train_step, donate_argnums=0)


@functools.partial(jax.jit, static_argnames=("train_step", "batch_size"), donate_argnames=("state",))
def train_epoch(train_step: Callable, state: TrainState, data: jax.Array, key: jax.Array, *,
                batch_size: int) -> tuple[TrainState, dict[str, jax.Array]]:
    """One epoch over shuffled batches of on-device ``data`` as one ``lax.scan``.

    The last ``N mod batch_size`` examples of each shuffle are left out.

    Args:
      train_step: from :func:`make_train_step`.
      state: the current state (donated).
      data: ``[N, H, W, C]`` training images, already on the device.
      key: PRNG key for the shuffle and the steps.
      batch_size: examples per step, ``<= N``.

    Returns:
      ``(state, metrics)``: metrics are the means over the epoch's steps.
    """
    num_batches = data.shape[0] // batch_size
    if num_batches == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the dataset ({data.shape[0]} examples).")
    key_perm, key_steps = jax.random.split(key)
    order = jax.random.permutation(key_perm, data.shape[0])[: num_batches * batch_size]
    order = order.reshape(num_batches, batch_size)

    def body(state, inputs):
        index, step_key = inputs
        return train_step(state, data[index], step_key)

    state, metrics = jax.lax.scan(body, state, (order, jax.random.split(key_steps, num_batches)))
    return state, jax.tree.map(jnp.mean, metrics)


@functools.partial(jax.jit, static_argnames=("objective", "batch_size"))
def _evaluate(objective, params, data, key, hparams, *, batch_size):
    n = data.shape[0]
    num_batches = -(-n // batch_size)
    padded = jnp.concatenate([data, jnp.zeros((num_batches * batch_size - n, *data.shape[1:]), data.dtype)])
    padded = padded.reshape(num_batches, batch_size, *data.shape[1:])
    weights = (jnp.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)

    def body(totals, inputs):
        batch, mask, batch_key = inputs
        values, aux = batch_objective(objective, params, batch_key, batch, hparams)
        sums = jax.tree.map(lambda v: jnp.sum(jnp.where(mask, v, 0.0)), {"objective": values, **aux})
        return jax.tree.map(jnp.add, totals, sums), None

    zeros = jax.tree.map(lambda v: jnp.zeros((), v.dtype),
                         jax.eval_shape(lambda: batch_objective(objective, params, key, padded[0], hparams)))
    init = {"objective": zeros[0], **zeros[1]}
    totals, _ = jax.lax.scan(body, init, (padded, weights, jax.random.split(key, num_batches)))
    return jax.tree.map(lambda t: t / n, totals)


def evaluate(objective: Objective, params: Any, data: jax.Array, key: jax.Array, *,
             hparams: Mapping[str, Any] | None = None, batch_size: int = 500) -> Metrics:
    """Mean objective and aux over every example of ``data`` (no example dropped).

    Args:
      objective: per-example ``(params, key, x, **hparams) -> (value, aux)``.
      params: model parameters.
      data: ``[N, H, W, C]``; binarise it beforehand if the model expects binary data.
      key: PRNG key for the objective's draws.
      hparams: forwarded to the objective (e.g. ``state.hparams``).
      batch_size: examples evaluated at once (memory only; results do not depend on it
        beyond the random draws).

    Returns:
      Dict of Python floats: ``objective`` and every aux entry (e.g. ``elbo``,
      ``reconstruction``, ``kl``), averaged over the N examples, in nats.
    """
    data = jnp.asarray(data)
    if data.shape[0] == 0:
        raise ValueError("evaluate needs at least one example.")
    hparams = {k: jnp.asarray(v, jnp.float32) for k, v in (hparams or {}).items()}
    out = _evaluate(objective, params, data, key, hparams, batch_size=min(batch_size, data.shape[0]))
    return {k: float(v) for k, v in out.items()}


def fit(train_step: Callable, state: TrainState, data: jax.Array, key: jax.Array, *, epochs: int,
        batch_size: int, progress: bool = True, desc: str = "train",
        on_epoch: Callable[[int, TrainState, Metrics], None] | None = None) -> tuple[TrainState, list[Metrics]]:
    """Trains for ``epochs`` compiled epochs with a progress bar.

    Args:
      train_step: from :func:`make_train_step`.
      state: initial state (donated to the first epoch: do not reuse it).
      data: ``[N, H, W, C]`` training images.
      key: PRNG key; epoch ``e`` uses ``fold_in(key, e)``, so a run can be resumed.
      epochs: number of epochs.
      batch_size: examples per step.
      progress: show a tqdm bar with the live loss.
      desc: label of the bar.
      on_epoch: called as ``on_epoch(epoch, state, metrics)`` after each epoch
        (evaluation, checkpoints, logging).

    Returns:
      ``(state, history)``: the final state and one dict of floats per epoch.

    Raises:
      FloatingPointError: the loss became non-finite (names the epoch).
    """
    data = jnp.asarray(data)
    history = []
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        state, metrics = train_epoch(train_step, state, data, jax.random.fold_in(key, epoch), batch_size=batch_size)
        metrics = {k: float(v) for k, v in metrics.items()}
        if not np.isfinite(metrics["loss"]):
            raise FloatingPointError(
                f"Non-finite loss {metrics['loss']} in epoch {epoch}; lower the learning rate or check the data.")
        history.append(metrics)
        bar.set_postfix(loss=f"{metrics['loss']:.2f}")
        if on_epoch is not None:
            on_epoch(epoch, state, metrics)
    return state, history


def stack(trees: list[Any]) -> Any:
    """Stacks pytrees (e.g. TrainStates of one model with different seeds or
    ``hparams``) along a new leading axis, for :func:`train_epoch_stacked`.

    TrainStates must share one optimizer object (it is static pytree metadata)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any) -> list[Any]:
    """Inverse of :func:`stack`: a list of pytrees, one per leading index."""
    n = jax.tree.leaves(tree)[0].shape[0]
    return [jax.tree.map(lambda leaf: leaf[i], tree) for i in range(n)]


@functools.partial(jax.jit, static_argnames=("train_step", "batch_size"), donate_argnames=("states",))
def train_epoch_stacked(train_step: Callable, states: TrainState, data: jax.Array, keys: jax.Array, *,
                        batch_size: int) -> tuple[TrainState, dict[str, jax.Array]]:
    """:func:`train_epoch` of M stacked models as ONE compiled, vmapped computation.

    Args:
      train_step: from :func:`make_train_step` (shared by all models).
      states: a TrainState whose leaves have a leading axis ``[M]``
        (see :func:`stack`); ``hparams`` such as ``beta`` may differ per model.
      data: ``[N, H, W, C]`` training images, shared.
      keys: ``[M]`` PRNG keys, one per model (its shuffle and draws).
      batch_size: examples per step.

    Returns:
      ``(states, metrics)`` with every metric of shape ``[M]``.
    """
    epoch = functools.partial(train_epoch.__wrapped__, train_step, batch_size=batch_size)
    return jax.vmap(epoch, in_axes=(0, None, 0))(states, data, keys)
