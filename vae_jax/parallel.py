"""Data-parallel training: the batch axis split across devices, parameters replicated.

The step and the epoch scan are those of :mod:`vae_jax.training`; this module
only places arrays on a one-axis :class:`jax.sharding.Mesh` and pins each
step's batch to ``NamedSharding(mesh, P("batch"))``. ``jax.jit`` propagates
the rest: every device computes the gradient of its slice of the batch, and
XLA inserts the all-reduce that averages them, so the updated parameters stay
replicated and equal to single-device training up to float32 rounding (the
random draws are the same, because ``jax_threefry_partitionable`` makes them
independent of the sharding).

The same code runs on one CPU, on every GPU/TPU of a host, and across hosts:
call ``jax.distributed.initialize()`` first (:func:`initialize_from_env` does,
when ``JAX_COORDINATOR_ADDRESS`` is set), then :func:`make_mesh` spans the
devices of every process. Each process passes the same data and keys
(replicated), and, for :func:`shard_batch`, its own rows of the batch
(:func:`local_rows`); only process 0 writes files (:func:`is_writer`)::

    mesh = make_mesh()
    step = make_sharded_train_step(model.objective, mesh)
    state = replicate(create_train_state(model, key, x[0], optax.adam(1e-3)), mesh)
    state, metrics = train_epoch_sharded(step, state, data, key, batch_size=128, mesh=mesh)
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from vae_jax import training
from vae_jax._quiet import first_line

BATCH_AXIS = "batch"
ENVIRONMENT = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")  # read by initialize_from_env


def initialize_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Joins the multi-process job the environment names: ``jax.distributed.initialize()``.

    Only when ``JAX_COORDINATOR_ADDRESS`` (``HOST:PORT`` of process 0, reachable from every
    process) is set; ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (0 .. N-1) then name the job's
    size and this process. Where they are unset, JAX detects them (SLURM, Open MPI, TPU pods).
    Call it before anything touches a device.

    Args:
      environ: the environment (default ``os.environ``).

    Returns:
      Whether this call joined a job (False: no coordinator named, or already joined).

    Raises:
      ValueError: ``JAX_NUM_PROCESSES`` or ``JAX_PROCESS_ID`` is not an integer.
      ConnectionError: the job could not be joined (names the coordinator and JAX's reason).
    """
    environ = os.environ if environ is None else environ
    address = environ.get(ENVIRONMENT[0], "")
    if not address or jax.distributed.is_initialized():
        return False
    numbers = {}
    for name, arg in zip(ENVIRONMENT[1:], ("num_processes", "process_id")):
        text = environ.get(name, "").strip()
        if text and not text.isdigit():
            raise ValueError(f"{name} must be a non-negative integer; got {text!r}.")
        numbers[arg] = int(text) if text else None
    try:
        jax.distributed.initialize(address, **numbers)
    except Exception as e:  # noqa: BLE001  (JAX raises several kinds; the message is what matters)
        raise ConnectionError(f"could not join the job of {ENVIRONMENT[0]}={address} ({first_line(e)}).") from None
    return True


def is_writer() -> bool:
    """Whether this process writes files: process 0 of a multi-process job (the only one of a single process)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process of the job has reached the barrier ``name`` (one process: returns)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def all_agree(ok: bool) -> bool:
    """Whether ``ok`` holds in every process; also a barrier (every process must call it). One process: ``ok``."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def host_local(tree: Any) -> Any:
    """``tree`` with its arrays that span several processes fetched into this process (numpy).

    A replicated array of a multi-process job may enter only computations that every process
    runs; what one process does alone (figures, tracker images) needs its own copy.
    """
    return jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) and not x.is_fully_addressable
                        else x, tree)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"batch"`` over ``devices``.

    Args:
      devices: default ``jax.devices()``: every device of every process
        (after ``jax.distributed.initialize()``), in the order that keeps each
        process's devices contiguous.

    Returns:
      The mesh; its size is the number of data-parallel replicas.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device.")
    return jax.make_mesh((len(devices),), (BATCH_AXIS,), (AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a whole copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """The sharding that splits the batch axis (``axis``; the leading one by default) across ``mesh``."""
    return NamedSharding(mesh, PartitionSpec(*[None] * axis, BATCH_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copies every array leaf of ``tree`` (a TrainState, data, keys) to every device of ``mesh``.

    With several processes, each must pass the same values.
    """
    return jax.tree.map(lambda leaf: _place(leaf, replicated(mesh)), tree)


def local_rows(mesh: Mesh, batch_size: int) -> slice:
    """The rows of a global batch of ``batch_size`` that this process's devices in ``mesh`` hold.

    Raises:
      ValueError: ``batch_size`` does not divide over the mesh.
    """
    _check_divisible(batch_size, mesh)
    held = batch_sharded(mesh).addressable_devices_indices_map((batch_size,)).values()
    per_device, starts = batch_size // mesh.size, sorted(index[0].start or 0 for index in held)
    if starts != list(range(starts[0], starts[0] + len(starts) * per_device, per_device)):
        raise ValueError("this process's devices are not contiguous in the mesh; build it with make_mesh().")
    return slice(starts[0], starts[0] + len(starts) * per_device)


def shard_batch(batch: Any, mesh: Mesh, *, axis: int = 0) -> jax.Array:
    """Splits ``batch [B, ...]`` along ``B`` across the devices of ``mesh``.

    Args:
      batch: this process's examples (all of them with one process; the rows
        :func:`local_rows` names with several); ``B`` must be divisible by the
        number of this process's devices in ``mesh``.
      mesh: from :func:`make_mesh`.
      axis: the batch axis (1 for a chunk of batches ``[S, B, ...]``).

    Returns:
      A global array of ``B * process_count`` examples, one slice per device.
    """
    local_devices = len(mesh.local_devices)
    if np.shape(batch)[axis] % local_devices:
        raise ValueError(f"Batch of {np.shape(batch)[axis]} examples cannot be split evenly across "
                         f"{local_devices} devices; use a multiple of {local_devices}.")
    return _place(batch, batch_sharded(mesh, axis))


def make_sharded_train_step(objective: training.Objective, mesh: Mesh, *,
                            dynamic_binarization: bool = False) -> Callable:
    """:func:`vae_jax.training.make_train_step` with each batch split across ``mesh``.

    Args:
      objective: per-example ``(params, key, x, **hparams) -> (value, aux)`` to maximise.
      mesh: from :func:`make_mesh`; the batch size must be a multiple of its size.
      dynamic_binarization: as for :func:`vae_jax.training.make_train_step`.

    Returns:
      ``train_step(state, batch, key) -> (state, metrics)``, jitted, state
      donated; pass it to :func:`train_epoch_sharded` (or to
      :func:`vae_jax.training.fit` with replicated state and data).
    """
    return shard_train_step(training.make_train_step(objective, dynamic_binarization=dynamic_binarization), mesh)


def shard_train_step(train_step: Callable, mesh: Mesh) -> Callable:
    """Any ``train_step(state, batch, key)`` (e.g. with a running baseline) with its batch split across ``mesh``
    (a batch of pairs such as ``(x [B, ...], y [B])``: each along its leading axis)."""
    sharding = batch_sharded(mesh)

    def step(state: training.TrainState, batch: Any, key: jax.Array):
        _check_divisible(training.num_examples(batch), mesh)
        return train_step(state, jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), batch), key)

    return jax.jit(step, donate_argnums=0)


def train_epoch_sharded(train_step: Callable, state: training.TrainState, data: Any, key: jax.Array, *,
                        batch_size: int, mesh: Mesh) -> tuple[training.TrainState, dict[str, jax.Array]]:
    """:func:`vae_jax.training.train_epoch` data-parallel across ``mesh``.

    State, data and key are replicated (the epoch's permutation is global, so
    the batches are those of single-device training); each step's batch is
    split across the devices.

    Args:
      train_step: from :func:`make_sharded_train_step` with the same ``mesh``.
      state: the current state (donated); already replicated or on one device.
      data: ``[N, H, W, C]`` training images, the same on every process.
      key: PRNG key for the shuffle and the steps.
      batch_size: examples per step, a multiple of the mesh size.
      mesh: from :func:`make_mesh`.

    Returns:
      ``(state, metrics)`` as :func:`vae_jax.training.train_epoch`; the state stays replicated.
    """
    _check_divisible(batch_size, mesh)
    state, data, key = replicate((state, data, key), mesh)
    return training.train_epoch(train_step, state, data, key, batch_size=batch_size)


def _check_divisible(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ValueError(f"batch_size={batch_size} cannot be split evenly across {mesh.size} devices; "
                         f"use a multiple of {mesh.size}.")


def _place(x: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _place(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))
