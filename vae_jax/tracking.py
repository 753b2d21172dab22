"""Experiment tracking: TensorBoard event files and an optional MLflow hook, as ``fit`` hooks.

Both trackers are hooks of :func:`vae_jax.training.fit` (``hook(epoch, state,
history) -> None``) that send each epoch's row (``history[-1]``: train and
validation metrics) to a tracking tool. ``metrics.csv`` stays the record of a
run; a tracker is a view of it, so a tracker never stops or slows a run:

- A writer or server that fails warns once (:class:`TrackingWarning`, naming
  the tracker and the error) and the tracker goes quiet; training goes on.
- :class:`MLflow` talks to its server from a background thread, so a slow or
  unreachable server costs the training loop only a queue append; ``close``
  waits at most ``timeout`` seconds for what is still queued.

TensorBoard files are written with ``tensorboardX`` (no TensorFlow needed) and
read back by TensorBoard itself. MLflow is optional (``pip install
'vae_jax[mlflow]'``).
"""

from __future__ import annotations

import math
import queue
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import numpy as np
from tensorboardX import SummaryWriter

from vae_jax.parallel import host_local
from vae_jax.plotting import tile_images

Images = Callable[[Any], Mapping[str, np.ndarray]]
_MLFLOW_MISSING = "MLflow tracking needs the mlflow package: pip install 'vae_jax[mlflow]'"


class TrackingWarning(UserWarning):
    """A tracker could not write; the run goes on and ``metrics.csv`` keeps every number."""


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a history row, except the epoch counter."""
    out = {}
    for name, value in row.items():
        if name == "epoch" or isinstance(value, (bool, str)) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[name] = number
    return out


class _Quiet:
    """Runs a tracker's calls; the first failure warns once and silences the tracker for good."""

    def __init__(self, name: str):
        self.name, self.failed = name, False

    def call(self, fn: Callable[[], Any]) -> Any:
        if self.failed:
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001  (any tracker error must leave the run alone)
            self.failed = True
            warnings.warn(f"{self.name} tracking stopped ({type(e).__name__}: {e}); training goes on and "
                          "metrics.csv keeps every number.", TrackingWarning, stacklevel=3)
            return None


class TensorBoard:
    """Writes each epoch's scalars (and optionally images) to TensorBoard event files in ``logdir``.

    Args:
      logdir: folder of the event files (e.g. ``RUN/tensorboard``); created if missing.
      images: optional ``images(state) -> {tag: [H, W, C] or [H, W] array in [0, 1]}``, e.g.
        :func:`model_images`; drawn every ``image_every`` epochs.
      image_every: epochs between two image writes (``>= 1``).
      start_epoch: epochs already done when a run resumes. TensorBoard then discards what an
        earlier process logged after that epoch (``purge_step``), so a resumed run's curves have
        no doubled points.
    """

    def __init__(self, logdir: str | Path, *, images: Images | None = None, image_every: int = 1,
                 start_epoch: int = 0):
        if isinstance(image_every, bool) or not isinstance(image_every, int) or image_every < 1:
            raise ValueError(f"image_every must be an int >= 1; got {image_every!r}.")
        self.images, self.image_every = images, image_every
        self._guard = _Quiet("TensorBoard")
        self._writer = self._guard.call(lambda: _summary_writer(logdir, start_epoch))

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> None:
        if self._writer is None:
            return
        self._guard.call(lambda: self._write(epoch, state, history[-1]))

    def _write(self, epoch: int, state: Any, row: Mapping[str, Any]) -> None:
        for name, value in scalars(row).items():
            self._writer.add_scalar(name, value, epoch)
        if self.images is not None and epoch % self.image_every == 0:
            for tag, image in self.images(state).items():
                image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
                self._writer.add_image(tag, image if image.ndim == 3 else image[..., None], epoch,
                                       dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._guard.call(self._writer.close)


def _summary_writer(logdir: str | Path, start_epoch: int):
    Path(logdir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(str(logdir), purge_step=start_epoch + 1 if start_epoch else None)


def model_images(model: Any, examples: np.ndarray, key: Any, *, num_samples: int = 16) -> Images:
    """``images(state)`` for :class:`TensorBoard`: reconstructions of ``examples [N, H, W, C]`` (top
    row: inputs) and decoded prior samples (the same draws every epoch, from ``key``).

    ``model`` needs ``reconstruct(params, x)`` and ``sample(params, key, n)`` (every model of
    :mod:`vae_jax.models` has both).
    """
    examples = np.asarray(examples, np.float32)
    reconstruct = jax.jit(jax.vmap(model.reconstruct, in_axes=(None, 0)))
    sample = jax.jit(lambda params: model.sample(params, key, num_samples))

    def images(state: Any) -> dict[str, np.ndarray]:
        params = host_local(state.params)  # several processes: only process 0 draws them
        recon = np.asarray(reconstruct(params, examples))
        pairs = np.concatenate([examples, recon]).reshape(-1, *examples.shape[1:])
        return {"reconstructions": tile_images(pairs, ncols=len(examples)),
                "prior_samples": tile_images(np.asarray(sample(params)), ncols=int(math.sqrt(num_samples)))}

    return images


class MLflow:
    """Sends a run's parameters, per-epoch metrics and artifacts to an MLflow tracking server.

    Every call is queued and sent by one background thread, in order, so training never waits for
    the server. A failure (server down, slow past MLflow's retries, a rejected value) warns once and
    drops what follows; ``metrics.csv`` keeps everything.

    Args:
      tracking_uri: e.g. ``"http://127.0.0.1:5000"`` or ``"sqlite:///mlflow.db"``.
      experiment: experiment name (created if missing).
      run_name: the MLflow run's name.
      params: flat ``{name: value}`` logged once (e.g. the run's config fields).
      timeout: seconds :meth:`close` waits for the queue to drain.

    Raises:
      ImportError: mlflow is not installed (``pip install 'vae_jax[mlflow]'``).
    """

    def __init__(self, tracking_uri: str, *, experiment: str = "vae_jax", run_name: str | None = None,
                 params: Mapping[str, Any] | None = None, timeout: float = 10.0):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise ImportError(_MLFLOW_MISSING) from e
        self.timeout, self.run_id = float(timeout), None
        self._client = MlflowClient(tracking_uri)
        self._guard = _Quiet(f"MLflow ({tracking_uri})")
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="vae_jax-mlflow", daemon=True)
        self._thread.start()
        self._jobs.put(lambda: self._start(experiment, run_name, dict(params or {})))

    def _start(self, experiment: str, run_name: str | None, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        found = self._client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
        self.run_id = self._client.create_run(experiment_id, run_name=run_name).info.run_id
        if params:
            self._client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                self._guard.call(job)
            finally:
                self._jobs.task_done()

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> None:
        values, stamp = scalars(history[-1]), int(time.time() * 1000)
        self._jobs.put(lambda: self._log_metrics(values, epoch, stamp))

    def _log_metrics(self, values: dict[str, float], step: int, stamp: int) -> None:
        from mlflow.entities import Metric

        self._client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])

    def log_artifact(self, path: str | Path) -> None:
        """Queues a file (a figure, ``metrics.csv``) to be stored with the run."""
        self._jobs.put(lambda: self._client.log_artifact(self.run_id, str(path)))

    def close(self, status: str = "FINISHED") -> bool:
        """Ends the MLflow run and waits up to ``timeout`` seconds for the queue.

        Returns:
          True when everything queued was handled (sent, or dropped after a warned failure).
        """
        self._jobs.put(lambda: self._client.set_terminated(self.run_id, status))
        self._jobs.put(None)
        self._thread.join(self.timeout)
        if self._thread.is_alive():
            warnings.warn(f"MLflow did not answer within {self.timeout:g} s; what was still queued is "
                          "dropped (metrics.csv keeps every number).", TrackingWarning, stacklevel=2)
            return False
        return True
