"""One compiled train step, whole-epoch ``lax.scan`` training, and evaluation.

An *objective* is a per-example function ``objective(params, key, x, **hparams)
-> (value, aux)`` to MAXIMISE (e.g. :meth:`vae_jax.models.VAE.objective`),
where ``aux`` is a dict of scalars. An example ``x`` is an array, or a tuple of
arrays such as a labelled pair ``(x, y)`` (:mod:`vae_jax.conditional`,
:mod:`vae_jax.semi_supervised`): the data is then the tuple ``(x [N, ...],
y [N, ...])``, indexed, shuffled and padded leaf by leaf. The train step vmaps it over the batch with
one key per example, averages, and takes an Optax step on ``-mean(value)``.
Hyper-parameters such as ``beta`` live in :attr:`TrainState.hparams`, each a
constant or a schedule of the step (:mod:`vae_jax.schedules`), so a sweep is a
stack of states trained by one ``jax.vmap``-ed step.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from tqdm.auto import tqdm

from vae_jax import schedules
from vae_jax._checks import check_hparams, check_positive_int
from vae_jax.data import binarize_dynamic

Objective = Callable[..., tuple[jax.Array, Mapping[str, jax.Array]]]
Metrics = dict[str, Any]
Hook = Callable[[int, Any, list[Metrics]], "str | None"]


class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` plus what the objective needs besides the parameters.

    Attributes:
      hparams: the objective's hyper-parameters (e.g. ``beta``), each a scalar array or a
        schedule of the step (:mod:`vae_jax.schedules`, e.g. a KL warm-up), passed to the
        objective as keyword arguments at their value of the step; a stacked sweep varies
        them along its leading axis. Schedules are part of the state, so a resumed run
        continues them exactly.
      estimator_state: state that a gradient estimator updates as it trains (e.g. the
        running mean ``baseline_value`` of :func:`vae_jax.estimators.with_running_baseline`),
        passed to the objective like ``hparams`` but changed by the step, never by the user.
    """

    hparams: dict = flax.struct.field(default_factory=dict)
    estimator_state: dict = flax.struct.field(default_factory=dict)

    @property
    def kl_warmup_steps(self) -> jax.Array:
        """The warm-up length of a :class:`vae_jax.schedules.LinearWarmup` ``beta`` (int32; 0: none)."""
        beta = self.hparams.get("beta")
        return beta.steps if isinstance(beta, schedules.LinearWarmup) else jnp.zeros((), jnp.int32)

    def hparams_at_step(self) -> dict[str, jax.Array]:
        """Every hyper-parameter at this step (schedules evaluated)."""
        return {name: schedules.value_at(h, self.step) for name, h in self.hparams.items()}

    def objective_kwargs(self) -> dict[str, jax.Array]:
        """The keyword arguments of the objective at this step: hparams and the estimator state."""
        return {**self.hparams_at_step(), **self.estimator_state}


def create_train_state(model: Any, key: jax.Array, example: jax.Array, optimizer: optax.GradientTransformation,
                       *, kl_warmup_steps: int = 0, estimator_state: Mapping[str, Any] | None = None,
                       **hparams: Any) -> TrainState:
    """Initialises ``model`` on one ``example [H, W, C]`` and wraps it with ``optimizer``.

    Args:
      model: anything with ``init(key, x) -> params`` (a VAE or AE).
      key: PRNG key for the initial parameters.
      example: ONE input example (no batch axis), used for shapes only.
      optimizer: an Optax transformation, e.g. ``optax.adam(1e-3)``.
      kl_warmup_steps: shorthand for ``beta=schedules.linear_warmup(beta, steps=kl_warmup_steps)``
        (0: no warm-up); needs a constant ``beta``.
      estimator_state: initial estimator state (e.g. ``{"baseline_value": -200.0}``).
      **hparams: forwarded to the objective on every step: finite scalars or schedules of the
        step (e.g. ``beta=4.0`` or ``beta=schedules.linear_warmup(1.0, steps=1000)``).

    Raises:
      ValueError: a non-finite hyper-parameter, a negative beta or warm-up, a warm-up
        without a constant beta, or an ``example`` whose shape differs from the model's input.
    """
    check_hparams({name: schedules.final_value(h) for name, h in hparams.items()})
    if kl_warmup_steps:
        if "beta" not in hparams or schedules.is_schedule(hparams["beta"]):
            raise ValueError("kl_warmup_steps needs a beta hyper-parameter, a constant (create_train_state(..., "
                             "beta=1.0)); or pass beta=schedules.linear_warmup(...) alone.")
        hparams["beta"] = schedules.linear_warmup(hparams["beta"], steps=kl_warmup_steps)
    elif isinstance(kl_warmup_steps, bool) or kl_warmup_steps != 0:
        raise ValueError(f"kl_warmup_steps must be an int >= 0; got {kl_warmup_steps!r}.")
    example = jnp.asarray(example)
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(example.shape) != tuple(expected):
        raise ValueError(f"example must be ONE input of shape {tuple(expected)}; got shape {example.shape} "
                         "(pass data[0], not a batch).")
    params = model.init(key, example)
    as_arrays = lambda d: {k: v if schedules.is_schedule(v) else jnp.asarray(v, jnp.float32)  # noqa: E731
                           for k, v in (d or {}).items()}
    state = TrainState.create(apply_fn=None, params=params, tx=optimizer, hparams=as_arrays(hparams),
                              estimator_state=as_arrays(estimator_state))
    # An array step (not Python's 0) keeps the step's input types fixed: one compilation.
    return state.replace(step=jnp.zeros((), jnp.int32))


def num_examples(data: Any) -> int:
    """``N``: the leading axis of ``data [N, ...]``, or of the first array of a tuple ``(x [N, ...], y [N, ...])``."""
    return jax.tree.leaves(data)[0].shape[0]


def device_examples(data: Any) -> Any:
    """``data`` on the device: one array ``[N, ...]`` (a list is stacked), or a tuple of arrays that share
    their leading axis ``N`` (e.g. images and labels).

    Raises:
      ValueError: an array without a leading axis, or the arrays of a tuple with different ``N``.
    """
    if not isinstance(data, tuple):
        data = jnp.asarray(data)
        if data.ndim < 1:
            raise ValueError(f"data must be [N, ...] examples; got shape {data.shape}.")
        return data
    data = jax.tree.map(jnp.asarray, data)
    shapes = [leaf.shape for leaf in jax.tree.leaves(data)]
    if not shapes or any(len(s) < 1 or s[0] != shapes[0][0] for s in shapes):
        raise ValueError(f"the arrays of a tuple of examples, e.g. (images, labels), must share their first axis N; "
                         f"got shapes {shapes}.")
    return data


def take(data: Any, index: Any) -> Any:
    """``data[index]``, leaf by leaf for a tuple of arrays."""
    return jax.tree.map(lambda leaf: leaf[index], data)


def batch_objective(objective: Objective, params: Any, key: jax.Array, batch: Any,
                    hparams: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-example ``objective`` vmapped over ``batch [B, ...]`` (or a tuple such as
    ``(x [B, ...], y [B])``, vmapped leaf by leaf) with ``B`` keys.

    Returns:
      ``(values [B], aux)`` with every aux entry ``[B]``.
    """
    keys = jax.random.split(key, num_examples(batch))
    return jax.vmap(lambda k, x: objective(params, k, x, **hparams))(keys, batch)


def make_train_step(objective: Objective, *, dynamic_binarization: bool = False,
                    grad_norm: bool = False) -> Callable:
    """Builds ``train_step(state, batch, key) -> (state, metrics)``, jitted, state donated.

    Args:
      objective: per-example ``(params, key, x, **hparams) -> (value, aux)`` to maximise.
      dynamic_binarization: if True, each step replaces the grey-level batch (the images
        ``x`` of a pair ``(x, y)``) by a fresh Bernoulli draw (pixel intensity = probability)
        from the step's key.
      grad_norm: also report the gradient's global norm. Off by default: it reads
        every gradient once more outside the optimiser's fused update, which cost
        about 15% of the step's memory traffic for an MLP VAE at batch 128.

    Returns:
      The compiled step. ``metrics`` holds the batch means of ``loss`` (=-value)
      and every aux entry (and ``grad_norm``), all scalar arrays.
    """

    def batch_loss(params, state, batch, key):
        values, aux = batch_objective(objective, params, key, batch, state.objective_kwargs())
        return -jnp.mean(values), jax.tree.map(jnp.mean, aux)

    return make_loss_step(batch_loss, dynamic_binarization=dynamic_binarization, grad_norm=grad_norm)


def make_loss_step(batch_loss: Callable, *, dynamic_binarization: bool = False, grad_norm: bool = False
                   ) -> Callable:
    """:func:`make_train_step` for a batch-level loss (e.g. beta-TCVAE's minibatch estimators).

    Args:
      batch_loss: ``(params, state, batch [B, ...], key) -> (loss, aux)``, a scalar to
        minimise and a dict of scalar metrics; ``state`` gives the hyper-parameters.
      dynamic_binarization, grad_norm: as in :func:`make_train_step`.

    Returns:
      ``train_step(state, batch, key) -> (state, metrics)``, jitted, state donated.
    """

    def train_step(state: TrainState, batch: jax.Array, key: jax.Array):
        key_data, key_objective = jax.random.split(key)
        if dynamic_binarization:
            batch = _binarize_images(key_data, batch)
        (loss, aux), grads = jax.value_and_grad(batch_loss, has_aux=True)(state.params, state, batch,
                                                                          key_objective)
        metrics = {"loss": loss, **aux}
        if grad_norm:
            metrics["grad_norm"] = optax.tree.norm(grads)
        return state.apply_gradients(grads=grads), metrics

    return jax.jit(train_step, donate_argnums=0)


def _binarize_images(key: jax.Array, batch: Any) -> Any:
    """A Bernoulli draw of the images: ``batch`` itself, or the ``x`` of a pair ``(x, y, ...)`` (labels stay)."""
    if isinstance(batch, tuple):
        return (binarize_dynamic(key, batch[0]), *batch[1:])
    return binarize_dynamic(key, batch)


# XLA:CPU's copy insertion by region analysis: the epoch's scan then updates the parameters and
# Adam's moments in place instead of copying about half of them at every step (7 of 14 arrays,
# 3.9 MB a step for 784-512-512-32), bitwise the same numbers; 4% more examples per second on
# the 2-core CPU (benchmarks/results/cpu_2026-12-05.json). A DebugOptions field, so other
# backends accept it and ignore it.
EPOCH_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


@functools.partial(jax.jit, static_argnames=("train_step", "batch_size"), donate_argnames=("state",),
                   compiler_options=EPOCH_COMPILER_OPTIONS)
def train_epoch(train_step: Callable, state: TrainState, data: Any, key: jax.Array, *,
                batch_size: int) -> tuple[TrainState, dict[str, jax.Array]]:
    """One epoch over shuffled batches of on-device ``data`` as one ``lax.scan``.

    The last ``N mod batch_size`` examples of each shuffle are left out.

    Args:
      train_step: from :func:`make_train_step`.
      state: the current state (donated).
      data: ``[N, H, W, C]`` training images, or a tuple such as ``(images [N, H, W, C],
        labels [N])`` shuffled together, already on the device.
      key: PRNG key for the shuffle and the steps.
      batch_size: examples per step, ``<= N``.

    Returns:
      ``(state, metrics)``: metrics are the means over the epoch's steps.
    """
    check_positive_int(batch_size, "batch_size")
    n = num_examples(data)
    num_batches = n // batch_size
    if num_batches == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the dataset ({n} examples).")
    key_perm, key_steps = jax.random.split(key)
    order = jax.random.permutation(key_perm, n)[: num_batches * batch_size]
    order = order.reshape(num_batches, batch_size)

    def body(state, inputs):
        index, step_key = inputs
        return train_step(state, take(data, index), step_key)

    state, metrics = jax.lax.scan(body, state, (order, jax.random.split(key_steps, num_batches)))
    return state, jax.tree.map(jnp.mean, metrics)


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      state: the state after the last epoch run.
      history: one dict per completed epoch (the ``history`` passed in, then the new
        rows): ``epoch`` (1-based count), ``train_*`` epoch means of the step's
        metrics, and whatever the hooks added (e.g. ``validation_elbo``).
      stop_reason: ``"max epochs"`` or the reason a hook stopped training.
    """

    state: Any
    history: list[Metrics]
    stop_reason: str


def fit(train_step: Callable, state: TrainState, data: Any, key: jax.Array, *, epochs: int,
        batch_size: int, history: Sequence[Metrics] = (), hooks: Sequence[Hook] = (),
        epoch_fn: Callable | None = None, progress: bool = True, desc: str = "train") -> FitResult:
    """THE epoch loop: compiled epochs, then the hooks, until ``epochs`` or a hook stops it.

    Epoch ``e`` (0-based) trains with ``fold_in(key, e)``, so a run restored from a
    checkpoint after ``len(history)`` epochs and continued here ends bitwise
    identical to one never interrupted.

    Args:
      train_step: from :func:`make_train_step` (or any ``(state, batch, key) -> (state, metrics)``).
      state: the state after ``len(history)`` epochs (donated: do not reuse it).
      data: ``[N, H, W, C]`` training images, a tuple of arrays that share ``N`` (e.g.
        ``(images, labels)`` for :mod:`vae_jax.conditional`), or a source that ``epoch_fn`` reads (e.g.
        :class:`vae_jax.streaming.DiskImages` with :func:`vae_jax.streaming.train_epoch_streaming`).
      key: the run's training key.
      epochs: total number of epochs (including those in ``history``).
      batch_size: examples per step.
      history: the rows of the epochs already run (resume); training starts at epoch
        ``len(history)``.
      hooks: called in order after each epoch as ``hook(epoch, state, history)``, with
        ``epoch`` the number of completed epochs and ``history[-1]`` the new row (hooks
        may add entries to it, e.g. validation metrics). A hook that returns a string
        stops training with that reason. See :mod:`vae_jax.hooks`.
      epoch_fn: ``(train_step, state, data, key, *, batch_size) -> (state, metrics)``;
        default :func:`train_epoch` (e.g. a stacked sweep passes one built on
        :func:`train_epoch_stacked`; metrics may then be arrays, stored as lists).
      progress: show a tqdm bar with the live loss.
      desc: label of the bar.

    Returns:
      :class:`FitResult` ``(state, history, stop_reason)``.

    Raises:
      FloatingPointError: the training loss or the parameters became non-finite
        (names the epoch and its steps).
      ValueError: ``epochs`` or ``batch_size`` is not a positive int, the data is empty, or the
        arrays of a tuple differ in ``N``.
    """
    # Over 60 lines for its docstring only: THE loop's contract (resume, hooks, stop) is stated here once.
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    if isinstance(data, (np.ndarray, jax.Array, list, tuple)):
        data = device_examples(data)  # else a source its epoch_fn reads (e.g. vae_jax.streaming.DiskImages)
    n = num_examples(data) if isinstance(data, tuple) else len(data)
    if n < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the dataset ({n} examples).")
    epoch_fn = epoch_fn or train_epoch
    history = [dict(row) for row in history]
    steps = n // batch_size
    stop_reason = "max epochs"
    bar = tqdm(range(len(history), epochs), initial=len(history), total=epochs, desc=desc,
               disable=not progress, leave=False, unit="epoch")
    for epoch in bar:
        state, metrics = epoch_fn(train_step, state, data, jax.random.fold_in(key, epoch), batch_size=batch_size)
        metrics = {k: np.asarray(v).tolist() for k, v in metrics.items()}
        if not (np.all(np.isfinite(metrics["loss"])) and _all_finite(state.params)):
            raise FloatingPointError(
                f"Non-finite training loss or parameters in epoch {epoch + 1} (steps {epoch * steps + 1}-"
                f"{(epoch + 1) * steps}); lower the learning rate or check the data.")
        history.append({"epoch": epoch + 1, **{f"train_{k}": v for k, v in metrics.items()}})
        for hook in hooks:
            reason = hook(epoch + 1, state, history)
            if reason:
                stop_reason = reason
        bar.set_postfix(loss=f"{np.mean(metrics['loss']):.2f}")
        if stop_reason != "max epochs":
            break
    bar.close()
    return FitResult(state, history, stop_reason)


def _all_finite(tree: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def stack(trees: list[Any]) -> Any:
    """Stacks pytrees (e.g. TrainStates of one model with different seeds or
    ``hparams``) along a new leading axis, for :func:`train_epoch_stacked`.

    TrainStates must share one optimizer object (it is static pytree metadata)."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any) -> list[Any]:
    """Inverse of :func:`stack`: a list of pytrees, one per leading index."""
    n = jax.tree.leaves(tree)[0].shape[0]
    return [jax.tree.map(lambda leaf: leaf[i], tree) for i in range(n)]


@functools.partial(jax.jit, static_argnames=("train_step", "batch_size"), donate_argnames=("states",),
                   compiler_options=EPOCH_COMPILER_OPTIONS)
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
