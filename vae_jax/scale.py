"""The scale options as one code path: where a training's epochs run, and what watches them.

``vae-jax train`` (:mod:`vae_jax.runner`) and the studies (``experiments``) take
the same three options and pass them here:

- ``devices``: ``"one"`` (the default device: one ``lax.scan`` per epoch) or
  ``"all"`` (data-parallel over every device of every process, :mod:`vae_jax.parallel`);
- ``data_source``: ``"memory"`` or ``"disk"`` (the training images written once as
  uint8 and streamed through Grain, :mod:`vae_jax.streaming`);
- ``track``: ``"tensorboard"`` (event files) or ``"none"``; and an MLflow server.

:func:`placement` returns the state, step, data and ``epoch_fn`` that
:func:`vae_jax.training.fit` (or :func:`vae_jax.runs.resumable_fit`) trains with;
every combination sees the batches and draws of the one-device in-memory run.
:func:`trackers` returns the tracking hooks. In a job of several processes
(:func:`vae_jax.parallel.initialize_from_env`) every process trains, and only
process 0 writes files: the image file, and every tracker.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np

from vae_jax import parallel

DEVICES = ("one", "all")
DATA_SOURCES = ("memory", "disk")
TRACKS = ("tensorboard", "none")
IMAGES_FILE = "train_images.npy"  # the streamed copy of the training images, in the run's folder


class Placement(NamedTuple):
    """What :func:`vae_jax.training.fit` trains with: ``fit(step, state, data, ..., epoch_fn=epoch_fn)``."""

    state: Any
    step: Callable
    data: Any
    epoch_fn: Callable | None


def placement(state: Any, step: Callable, train: np.ndarray, *, batch_size: int, devices: str = "one",
              data_source: str = "memory", folder: str | Path | None = None) -> Placement:
    """Places a fresh train state, its jitted step and the training images for ``devices`` and ``data_source``.

    Args:
      state: the fresh train state (also the template checkpoints restore into: it is replicated
        with ``devices="all"``).
      step: ``train_step(state, batch, key)``, e.g. :func:`vae_jax.training.make_train_step`.
      train: ``[N, H, W, C]`` training images in [0, 1].
      batch_size: examples per step (with ``"all"``: a multiple of the number of devices).
      devices: ``"one"`` or ``"all"``.
      data_source: ``"memory"`` or ``"disk"`` (writes ``folder/train_images.npy`` once).
      folder: the run's folder (``data_source="disk"``).

    Raises:
      ValueError: an unknown option; a batch that does not divide over the devices; a job of
        several processes with ``devices="one"``; ``"disk"`` without a folder, or with images
        that are not 8-bit levels (uint8 would change them).
    """
    if devices not in DEVICES or data_source not in DATA_SOURCES:
        raise ValueError(f"devices must be one of {DEVICES} and data_source one of {DATA_SOURCES}; got "
                         f"{devices!r}, {data_source!r}.")
    if devices == "one" and jax.process_count() > 1:
        raise ValueError(f"This process is one of {jax.process_count()} (JAX_COORDINATOR_ADDRESS is set); "
                         "train with --devices all.")
    data = disk_images(train, Path(folder or "") / IMAGES_FILE) if data_source == "disk" else train
    if devices == "one":
        return Placement(state, step, data, None if data_source == "memory" else _streaming().train_epoch_streaming)
    mesh = parallel.make_mesh()
    if batch_size % mesh.size:
        raise ValueError(f"batch_size={batch_size} does not divide over the {mesh.size} devices; use a "
                         f"multiple of {mesh.size}.")
    if data_source == "memory":  # replicated once, not at every epoch
        data, epoch_fn = parallel.replicate(train, mesh), functools.partial(parallel.train_epoch_sharded, mesh=mesh)
    else:
        epoch_fn = functools.partial(_streaming().train_epoch_streaming, mesh=mesh)
    return Placement(parallel.replicate(state, mesh), parallel.shard_train_step(step, mesh), data, epoch_fn)


def disk_images(train: np.ndarray, path: Path) -> Any:
    """``train`` as a :class:`vae_jax.streaming.DiskImages` of ``path``, written once (by process 0).

    Raises:
      ValueError: the images are not k/255 levels.
    """
    streaming = _streaming()
    if not np.array_equal(np.rint(train * 255) / np.float32(255), train):
        raise ValueError("data_source='disk' stores 8-bit pixels (uint8); these training images are not "
                         "k/255 levels, so they would change: use data_source='memory'.")
    if parallel.is_writer() and not path.is_file():
        streaming.write_images(path, [train], num=len(train))
    parallel.barrier("training images written")
    return streaming.DiskImages(path)


def _streaming():
    from vae_jax import streaming  # Grain is an extra: imported only by the runs that stream

    return streaming


def trackers(logdir: str | Path, *, track: str, model: Any, examples: np.ndarray | None, seed: int, start: int = 0,
             mlflow_uri: str = "", params: Mapping[str, Any] | None = None, run_name: str | None = None) -> list:
    """The tracking hooks of a training (none of them can stop it); none outside process 0.

    Args:
      logdir: TensorBoard's folder (e.g. ``RUN/tensorboard``).
      track: ``"tensorboard"`` or ``"none"``.
      model, examples, seed: the images drawn each epoch: reconstructions of ``examples[:8]`` (e.g.
        validation images) and 16 prior samples (``jax.random.key(seed)``); ``examples=None``: scalars
        only (a model without those images, e.g. a conditional VAE, M2 or VQ-VAE).
      start: epochs already done (a resumed run: TensorBoard drops what an earlier process logged later).
      mlflow_uri, params, run_name: an MLflow server (``""``: none), the parameters logged once, the run's name.

    Raises:
      ValueError: an unknown ``track``; ``mlflow_uri`` without the mlflow package.
    """
    if track not in TRACKS:
        raise ValueError(f"track must be one of {TRACKS}; got {track!r}.")
    found = []
    if not parallel.is_writer() or (track == "none" and not mlflow_uri):
        return found
    from vae_jax import tracking  # tensorboardX takes seconds to import: only for the runs that track

    if track == "tensorboard":
        images = (None if examples is None else
                  tracking.model_images(model, examples[:8], jax.random.key(seed), num_samples=16))
        found.append(tracking.TensorBoard(logdir, images=images, start_epoch=start))
    if mlflow_uri:
        try:
            found.append(tracking.MLflow(mlflow_uri, run_name=run_name, params=params))
        except ImportError as e:
            raise ValueError(str(e)) from None
    return found


def on_one_device(tree: Any) -> Any:
    """``tree`` (a trained state, its parameters) on one device of this process, for what follows training
    (evaluation, figures): a state replicated over every device would be computed on each of them again."""
    return jax.device_put(parallel.host_local(tree), jax.local_devices()[0])


def close(trackers: list, *, status: str = "FINISHED", artifacts: tuple[Path, ...] = ()) -> None:
    """Flushes the trackers; MLflow also gets the files of ``artifacts`` that exist (the CSV, figures)."""
    for tracker in trackers:
        if hasattr(tracker, "log_artifact"):  # MLflow
            for path in artifacts:
                if Path(path).is_file():
                    tracker.log_artifact(path)
            tracker.close(status)
        else:
            tracker.close()
