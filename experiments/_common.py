"""Shared scaffolding of the experiment modules: configs, data, training, output.

Every experiment is ``python -m experiments.NAME --out DIR [--quick]`` and
writes its PNG figures, a ``results.json`` and the ``config.json`` it ran
with into ``DIR``. The command line is :mod:`experiments._args`, the stored
parts :mod:`experiments._parts`; their names are re-exported here.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
import optax

from experiments._args import (TRACK_DEFAULTS, Option, add_scale_args, finite_float, nonnegative_float,  # noqa: F401
                               nonnegative_int, parse_study, parser, positive_float, positive_int,
                               resolve_defaults, study_main)
from experiments._parts import (Parts, StudyError, _jsonable, check_resume, computed_piece,  # noqa: F401
                               npz_bytes, read_npz)
from vae_jax.runs import write_json
from vae_jax import data as vdata
from vae_jax import models, objectives, scale, streaming, training


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """The options every study has; each study's frozen config adds its own fields.

    Attributes:
      out: the output folder.
      quick: the test suite's tiny size.
      seed: PRNG seed of everything.
      data_dir: the Fashion-MNIST folder (None: the default).
      progress: show progress bars.
    """

    out: Path
    quick: bool
    seed: int
    data_dir: str | None
    progress: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace, **resolved: Any):
        """The config from parsed arguments: each field from ``resolved`` if given there, else from ``args``
        (lists become tuples: the config is frozen)."""
        values = {**vars(args), "progress": not args.no_progress, **resolved}
        return cls(**{f.name: tuple(values[f.name]) if isinstance(values[f.name], list) else values[f.name]
                      for f in dataclasses.fields(cls) if f.name in values})  # else the field's default

    def to_json(self) -> dict[str, Any]:
        """The config as JSON values (tuples as lists, paths as strings)."""
        return _jsonable(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScaledConfig(StudyConfig):
    """A study that takes ``vae-jax train``'s scale options (:func:`add_scale_args`).

    Attributes:
      devices: ``"one"`` or ``"all"`` (data-parallel over every local device), as ``vae-jax train --devices``.
      track: ``"tensorboard"`` (each model's event files in ``OUT/tensorboard/MODEL``) or ``"none"``.
    """

    devices: str = "one"
    track: str = "none"

    def stored_scale_options(self) -> dict[str, str]:
        """What a stored piece of the study depends on of these options: ``devices`` when not ``"one"`` (the
        numbers differ by float32 rounding; the pieces of runs made before the option existed hold none),
        never ``track`` (it changes no number)."""
        return {} if self.devices == "one" else {"devices": self.devices}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingConfig(ScaledConfig):
    """A study that trains models with Adam (the options of :func:`add_training_args`)."""

    epochs: int
    batch_size: int
    learning_rate: float


def load_data(study: StudyConfig, *, quick_train: int = 2000, quick_test: int = 500,
              dataset: str = "fashion_mnist") -> vdata.Dataset:
    """The dataset of ``study.data_dir`` (``study.quick``: the first ``quick_train`` / ``quick_test`` examples)."""
    ds = vdata.load_dataset(dataset, data_dir=study.data_dir)
    if study.quick:
        ds = ds._replace(train=vdata.Split(*(a[:quick_train] for a in ds.train)),
                         test=vdata.Split(*(a[:quick_test] for a in ds.test)))
    return ds


class Trained(NamedTuple):
    """A trained model: the model, its final train state, the per-epoch history and the training seconds."""

    model: Any
    state: training.TrainState
    history: list[dict[str, float]]
    seconds: float


def train_model(config: models.ModelConfig, images: np.ndarray, **kwargs: Any) -> Trained:
    """Builds ``config``'s model and trains it with :func:`train` (``kwargs`` go there)."""
    model = models.build_model(config, images.shape[1:])
    return Trained(model, *train(model, images, **kwargs))


def train(model: Any, images: Any, *, epochs: int, batch_size: int = 128, learning_rate: float = 1e-3,
          seed: int = 0, dynamic_binarization: bool = False, progress: bool = True, desc: str = "train",
          devices: str = "one", track: str = "none", logdir: Path | None = None,
          **hparams: float) -> tuple[training.TrainState, list[dict[str, float]], float]:
    """Trains ``model`` with Adam on ``images [N, H, W, C]``, or on labelled pairs ``(x [N, ...], y [N])``
    (the model's ``init`` takes one ``x``); ``hparams`` go to its objective.

    ``devices``, ``track`` and ``logdir`` as :func:`fit_scaled` takes them.

    Returns:
      ``(state, history, seconds)``: history has one dict of epoch means per epoch; the
      state is on one device (what follows training runs there).
    """
    key_init, key_fit = jax.random.split(jax.random.key(seed))
    first = jax.tree.leaves(images)[0][0]
    state = training.create_train_state(model, key_init, first, optax.adam(learning_rate), **hparams)
    step = training.make_train_step(model.objective, dynamic_binarization=dynamic_binarization)
    return fit_scaled(model, state, step, images, key_fit, epochs=epochs, batch_size=batch_size, seed=seed,
                      progress=progress, desc=desc, devices=devices, track=track, logdir=logdir)


def fit_scaled(model: Any, state: Any, step: Callable, data: Any, key: jax.Array, *, epochs: int,
               batch_size: int, seed: int = 0, hooks: Sequence[Callable] = (), then: Sequence[Callable] = (),
               epoch_fn: Callable | None = None, stacked: Sequence[str] = (), progress: bool = True,
               desc: str = "train", devices: str = "one", track: str = "none", logdir: Path | None = None,
               images: bool = True) -> tuple[Any, list[dict[str, Any]], float]:
    """``training.fit(step, state, data, key, ...)`` on the CLI's path (:mod:`vae_jax.scale`): a study's training.

    ``devices="all"`` trains data-parallel over every local device (the one-device numbers to
    float32 rounding; any step, since a jitted step computes the same function whatever the
    batch's sharding); ``track="tensorboard"`` writes each epoch's row (after ``hooks``, which
    may add entries to it) and reconstructions of ``data[:8]`` and prior samples to
    ``logdir/DESC`` (``desc`` made a folder name; scalars only for ``(x, y)`` pairs, or without ``images``).

    Args:
      model, state, step, data, key: the model (its images), the fresh train state, its
        ``train_step``, the training data and the training key (as ``fit`` takes them).
      epochs, batch_size, progress, desc: as ``fit`` takes them; ``seed``: of the prior samples drawn.
      hooks, then: ``fit``'s hooks run before the trackers, and after them (e.g. a clock that
        leaves the trackers' time out).
      epoch_fn: an epoch over the placed step, state and data (e.g. a stacked sweep's:
        :func:`vae_jax.training.train_epoch_stacked` takes replicated ones); default the placement's.
      stacked: a stacked state's model names, one tracker each (``logdir/NAME``); its rows hold
        a list of one value per model.
      devices, track, logdir: ``vae-jax train``'s options; ``OUT/tensorboard``.
      images: whether the trackers draw reconstructions and prior samples (False: a model without
        ``reconstruct`` and ``sample``, e.g. the VQ-VAE, or data that are not images, e.g. codes).

    Returns:
      ``(state, history, seconds)``: the trained state on one device, ``fit``'s history, the
      training seconds.
    """
    placed = scale.placement(state, step, data, batch_size=batch_size, devices=devices)
    examples = data if images and not isinstance(data, tuple) else None
    trackers = [scale.trackers(Path(logdir or ".") / re.sub(r"[^A-Za-z0-9_.-]+", "_", name), track=track,
                               model=model, examples=examples, seed=seed) for name in (stacked or [desc])]
    views = [_each_model(trackers)] if stacked else trackers[0]
    start = time.perf_counter()
    try:
        state, history, _ = training.fit(placed.step, placed.state, placed.data, key, epochs=epochs,
                                         batch_size=batch_size, hooks=[*hooks, *views, *then],
                                         epoch_fn=epoch_fn or placed.epoch_fn, progress=progress, desc=desc)
        seconds = time.perf_counter() - start
    finally:
        for found in trackers:
            scale.close(found)
    return scale.on_one_device(state), history, seconds


def _each_model(trackers: list[list[Callable]]) -> Callable:
    """One ``fit`` hook of a stacked state that calls ``trackers[i]`` with model ``i``'s state and row."""
    def hook(epoch: int, states: Any, history: list[dict[str, Any]]) -> None:
        for i, found in enumerate(trackers):
            if found:
                row = {k: v[i] if isinstance(v, list) else v for k, v in history[-1].items()}
                state = jax.tree.map(lambda leaf, i=i: leaf[i], states)
                for tracker in found:
                    tracker(epoch, state, [row])
    return hook


def loop_epoch(train_step: Callable, state: training.TrainState, data: Any, key: jax.Array, *,
               batch_size: int) -> tuple[training.TrainState, dict[str, jax.Array]]:
    """:func:`vae_jax.training.train_epoch` as a Python loop of compiled steps (same batches, keys and means):
    an ``epoch_fn`` for ``fit``. For convolutional models on the CPU: inside ``train_epoch``'s ``lax.scan``,
    XLA's CPU convolutions (and their gradients) ran 3-15x slower per step than the same jitted step called
    from Python (measured for the VQ-VAE of ``experiments.vq_vae``)."""
    order, keys = streaming.epoch_order(key, len(jax.tree.leaves(data)[0]), batch_size)
    totals = None
    for rows, step_key in zip(order, keys):
        state, metrics = train_step(state, jax.tree.map(lambda a: a[rows], data), step_key)
        totals = metrics if totals is None else jax.tree.map(jax.numpy.add, totals, metrics)
    return state, jax.tree.map(lambda total: total / len(order), totals)


def batched(fn, params: Any, x: np.ndarray) -> np.ndarray:
    """``fn(params, x_i)`` for every example of ``x``, jitted and vmapped: a numpy array."""
    return np.asarray(jax.jit(jax.vmap(fn, in_axes=(None, 0)))(params, x))


def train_ae_and_vae(config: models.ModelConfig, images: np.ndarray, study: TrainingConfig) -> dict[str, Trained]:
    """Trains an AE and a VAE that differ only in ``kind``: same networks, data, seed and budget.

    Args:
      config: the shared model config (its ``kind`` is replaced).
      images: ``[N, H, W, C]`` training images.
      study: epochs, batch size, learning rate, seed and progress of both trainings.

    Returns:
      ``{"ae": Trained(...), "vae": Trained(...)}`` as :func:`train_model` returns.
    """
    return {kind: train_model(dataclasses.replace(config, kind=kind), images, epochs=study.epochs,
                              batch_size=study.batch_size, learning_rate=study.learning_rate, seed=study.seed,
                              progress=study.progress, desc=f"{kind} d={config.latent_dim}", **scale_kwargs(study))
            for kind in ("ae", "vae")}


def scale_kwargs(study: TrainingConfig) -> dict[str, Any]:
    """:func:`train`'s ``devices``, ``track`` and ``logdir`` (``OUT/tensorboard``) of a study."""
    return dict(devices=study.devices, track=study.track, logdir=study.out / "tensorboard")


def aggregate_posterior_samples(model: models.VAE, params: Any, key: jax.Array, x: np.ndarray) -> np.ndarray:
    """One draw ``z_n ~ q(z | x_n)`` per example of ``x [N, H, W, C]``: ``[N, d]``.

    Together they are N samples of the aggregate posterior ``q(z) = mean_n q(z | x_n)``.
    """
    keys = jax.random.split(key, len(x))
    draw = jax.vmap(lambda k, v: objectives.reparameterize(k, *model.encode(params, v)))
    return np.asarray(jax.jit(draw)(keys, x))


def fitted_gaussian_kl(codes: np.ndarray) -> float:
    """KL(N(m, S) || N(0, I)) in nats for the Gaussian fitted to ``codes [N, d]`` (full covariance).

    ``m`` and ``S`` are the sample mean and (unbiased) covariance; the closed form is
    ``(tr S + m.m - d - log det S) / 2``. Since the Gaussian has the largest entropy for
    given moments, this is a lower bound on the KL of the codes' own distribution to N(0, I).

    Raises:
      ValueError: ``codes`` is not ``[N, d]`` with ``N > d``.
    """
    codes = np.asarray(codes, np.float64)
    if codes.ndim != 2 or codes.shape[0] <= codes.shape[1]:
        raise ValueError(f"codes must be [N, d] with N > d; got shape {codes.shape}.")
    d = codes.shape[1]
    mean = codes.mean(axis=0)
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        return float("inf")
    return float(0.5 * (np.trace(cov) + mean @ mean - d - logdet))


def write_outputs(out: Path, *, config: dict[str, Any], results: dict[str, Any]) -> None:
    """Writes ``config.json`` and ``results.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", _jsonable(config))
    write_json(out / "results.json", _jsonable(results))
