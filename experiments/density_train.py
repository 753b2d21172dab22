"""Training and evaluating one row of the density table, resumably, in ``OUT/models/NAME``.

A row trains through :func:`vae_jax.runs.resumable_fit` (the lock, the folder
check, the checkpoints bound to the study's configuration, early stopping
counted after the warm-up, the time limit), then its best checkpoint is
evaluated (test ELBO, log p(x) with per-image values, active units) into
``result.json``. :func:`interim` evaluates the best checkpoint so far of a
row that another process is still training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import time
import zlib
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from experiments import _common
from experiments._density_io import load
from experiments.density_config import ROWS, StudyConfig, model_config
from vae_jax import checkpoints, estimators, evaluation, hooks, models, runs, scale, training

METRIC = "validation_objective"
ROW_LAYOUT = runs.Layout("status.json", frozenset({
    runs.LOCK_FILE, "status.json", "history.csv", "checkpoints", "checkpoints.lock", "checkpoints.corrupt",
    "result.json", "test_log_px.npy", "interim.json", "interim_test_log_px.npy", "tensorboard", scale.IMAGES_FILE}))


def write_json(path: Path, obj: Any) -> None:
    """:func:`vae_jax.runs.write_json` of ``obj`` made JSON-safe (records, numpy and JAX scalars)."""
    runs.write_json(path, _common._jsonable(obj))


class Status:
    """Rewrites ``status.json`` every epoch: epochs so far, best validation value, resume command."""

    def __init__(self, path: Path, base: dict):
        self.path, self.base = path, base

    def __call__(self, epoch: int, state, history: list[dict]) -> None:
        best = max(history, key=lambda row: row[METRIC])
        write_json(self.path, dict(self.base, state="training", epochs=epoch, best_epoch=best["epoch"],
                                   best_validation_objective=best[METRIC],
                                   last_epoch_seconds=history[-1].get("seconds"), updated=time.ctime()))


class EpochTimer:
    """Adds ``seconds`` (wall clock since the previous epoch's hooks, this process) to each row."""

    def __init__(self):
        self.last = time.perf_counter()

    def __call__(self, epoch: int, state, history: list[dict]) -> None:
        now = time.perf_counter()
        history[-1]["seconds"] = now - self.last
        self.last = now


def environment() -> dict:
    """Package versions, machine and load average, for the results files."""
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return dict(versions=versions, python=platform.python_version(), machine=platform.machine(),
                processor=platform.processor(), hostname=socket.gethostname(), cpu_count=os.cpu_count(),
                jax_backend=jax.default_backend(), jax_devices=[str(d) for d in jax.devices()],
                xla_flags=os.environ.get("XLA_FLAGS", ""), load_average_1_5_15=list(os.getloadavg()))


def objectives_for(model, name: str):
    """``(train objective, validation objective, validation hparams)`` of row ``name``."""
    row = ROWS[name]
    if row.objective == "elbo":
        return model.objective, model.objective, {"beta": 1.0}
    bound = estimators.make_estimator("iwae", model, num_samples=row.num_samples)
    return bound, bound, {}


def row_setup(name: str, cfg: StudyConfig, train: np.ndarray) -> tuple:
    """``(model, keys, warmup_epochs, initial state)`` of a row; ``train`` ``[N, 28, 28, 1]``.

    ``keys`` are its four PRNG keys (init, fit, validation, test), the same
    wherever the row is trained or evaluated (so an interim evaluation uses the
    final one's draws); the initial state carries the row's warm-up and beta and
    is also the template its checkpoints are restored into.
    """
    row = ROWS[name]
    model = models.build_model(model_config(cfg, name), train.shape[1:])
    keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), zlib.crc32(name.encode()) % (2 ** 31)), 4)
    warmup_epochs = cfg.warmup_epochs if row.warmup else 0
    state = training.create_train_state(model, keys[0], train[0], optax.adam(cfg.learning_rate),
                                        kl_warmup_steps=warmup_epochs * (len(train) // cfg.batch_size),
                                        **({"beta": 1.0} if row.objective == "elbo" else {}))
    return model, keys, warmup_epochs, state


def bound_config(cfg: StudyConfig, name: str) -> dict[str, Any]:
    """What row ``name``'s checkpoints are bound to: the row and the whole study configuration."""
    return {"row": name, "study": json.loads(json.dumps(cfg.to_dict()))}


def run_model(name: str, cfg: StudyConfig, data: tuple, out: Path, *, resume: bool, command: str,
              resume_command: str, progress: bool, track: str = "none") -> dict:
    """Trains (or resumes) one row, evaluates its best checkpoint and writes ``result.json``.

    ``cfg.devices`` and ``cfg.data_source`` place the training, ``track="tensorboard"`` adds
    event files in ``OUT/models/NAME/tensorboard``, as ``vae-jax train`` does (:mod:`vae_jax.scale`).

    Raises:
      SystemExit: the row's folder does not fit (finished or checkpointed without ``resume``).
      RunLockedError: another process trains the row.
    """
    folder = out / "models" / name
    if (folder / "result.json").is_file():
        if not resume:
            raise SystemExit(f"{folder} already holds a finished model; pass --resume to keep it, or another --out.")
        return json.loads((folder / "result.json").read_text())
    train, validation, test = data
    model, (_, key_fit, key_val, key_test), warmup_epochs, initial = row_setup(name, cfg, train)
    base = dict(name=name, label=ROWS[name].title(cfg.num_components), resume_command=resume_command,
                steps_per_epoch=len(train) // cfg.batch_size,
                kl_warmup_steps=warmup_epochs * (len(train) // cfg.batch_size))
    start = time.perf_counter()
    try:
        with runs.RunFolder(folder, resume=resume and bool(runs.checkpoint_epochs(folder)), layout=ROW_LAYOUT) as run:
            trackers = scale.trackers(folder / "tensorboard", track=track, model=model, examples=validation,
                                      seed=cfg.seed, start=max(run.epochs, default=0))
            try:
                fitted = runs.resumable_fit(run, *_plan(name, cfg, model, initial, (train, validation), key_fit,
                                                        key_val, warmup_epochs, base, folder, progress, trackers),
                                            on_resume=lambda history, moved: print(
                                                f"{name}: resumed after epoch {len(history)}", flush=True))
            finally:
                scale.close(trackers)
    except ValueError as e:  # the folder check: one line, as before
        raise SystemExit(str(e).replace("add --resume", "pass --resume")) from None
    train_seconds = time.perf_counter() - start
    write_json(folder / "status.json", dict(base, state="evaluating", epochs=len(fitted.history),
                                            stop_reason=fitted.stop_reason, updated=time.ctime()))
    result = evaluate_row(name, model, scale.on_one_device(fitted.best_state.params), validation, test, key_test, cfg,
                          progress=progress, values_path=folder / "test_log_px.npy")
    result.update(_result_fields(name, cfg, fitted, warmup_epochs, train_seconds), command=command,
                  resume_command=resume_command, model_config=model_config(cfg, name))
    write_json(folder / "result.json", result)
    write_json(folder / "status.json", dict(base, state="finished", epochs=len(fitted.history),
                                            stop_reason=fitted.stop_reason, updated=time.ctime()))
    return result


def _plan(name: str, cfg: StudyConfig, model, initial, data: tuple, key_fit, key_val, warmup_epochs: int, base: dict,
          folder: Path, progress: bool, trackers: list) -> tuple[Any, runs.FitPlan]:
    """The row's initial state placed on ``cfg.devices`` (:func:`vae_jax.scale.placement`) and its
    :class:`vae_jax.runs.FitPlan`: validation with common random numbers every epoch, early stopping
    counted after the warm-up, the CSV log, ``status.json`` and the trackers beside each checkpoint."""
    train, validation = data
    objective, val_objective, val_hparams = objectives_for(model, name)
    placed = scale.placement(initial, training.make_train_step(objective, dynamic_binarization=True), train,
                             batch_size=cfg.batch_size, devices=cfg.devices, data_source=cfg.data_source,
                             folder=folder)
    return placed.state, runs.FitPlan(
        placed.step, placed.data, key_fit, cfg.epochs, cfg.batch_size, METRIC,
        hooks.Validate(val_objective, validation, key_val, hparams=val_hparams, same_draws=True),
        config=bound_config(cfg, name), before=(EpochTimer(),),
        logs=(runs.CSVLog(folder / "history.csv"), Status(folder / "status.json", base), *trackers),
        early_stopping=hooks.EarlyStopping(METRIC, patience=cfg.patience, count_from=warmup_epochs),
        max_minutes=cfg.max_minutes, progress=progress, desc=name, epoch_fn=placed.epoch_fn)


def _result_fields(name: str, cfg: StudyConfig, fitted: runs.Fitted, warmup_epochs: int,
                   train_seconds: float) -> dict:
    """What ``result.json`` says about the training of a row (beside its test numbers)."""
    row, history = ROWS[name], fitted.history
    finished = fitted.stop_reason.startswith("early stopping") or fitted.stop_reason == "max epochs"
    return dict(label=row.title(cfg.num_components), prior=row.prior, kl_warmup_epochs=warmup_epochs,
                iwae_k=row.iwae_k, epochs=len(history), best_epoch=fitted.best_epoch,
                stop_reason=fitted.stop_reason, best_validation_objective=max(r[METRIC] for r in history),
                train_seconds_this_process=train_seconds,
                train_seconds_total=float(sum(r.get("seconds", 0.0) for r in history)),
                protocol=bool(cfg.full_protocol and finished), config=cfg.to_dict(), environment=environment(),
                history=history)


def evaluate_row(name, model, params, validation, test, key, cfg: StudyConfig, *, progress,
                 values_path: Path) -> dict:
    """Test ELBO, test log p(x) (mean, standard error), active units, seconds.

    The per-image log p(x) ``[len(test)]`` go to ``values_path`` (``.npy``): the
    rows share the test images and their draws of binarisation, so two rows'
    difference has a paired standard error (``paired_differences``) far
    below either row's own. Until then the values computed so far are kept in
    ``values_path`` with the suffix ``.partial.npz`` (after every batch), so an
    evaluation stopped by the end of a session resumes where it was instead of
    starting again (an hour for the hierarchical rows); ``log_px_seconds``
    counts the computing time of every process that contributed (``eval_seconds``: this
    process's whole evaluation).
    """
    start = time.perf_counter()
    key_elbo, key_px = jax.random.split(key)
    test_elbo = evaluation.evaluate(model.objective, params, test, key_elbo)["elbo"]
    load_before = os.getloadavg()[0]
    partial = values_path.with_suffix(".partial.npz")
    log_px = evaluation.log_marginal(model, params, test, key_px, num_samples=cfg.num_samples,
                                     chunk_size=cfg.chunk_size, batch_size=cfg.eval_batch_size,
                                     progress=progress, desc=f"{name} log p(x)", resume_file=partial)
    np.save(values_path, log_px.values)
    log_px_seconds = evaluation.resume_file_seconds(partial)
    partial.unlink()
    return dict(name=name, test_elbo=test_elbo, test_log_px_mean=log_px.mean, test_log_px_stderr=log_px.stderr,
                test_images=len(test), num_samples=cfg.num_samples,
                active_units=evaluation.active_units(model, params, test), latent_dim=model.latent_dim,
                log_px_seconds=log_px_seconds, eval_seconds=time.perf_counter() - start,
                load_average_1min_during_log_px=[load_before, os.getloadavg()[0]],
                test_log_px_values=values_path.name)


def interim(name: str, saved: StudyConfig, out: Path, args: argparse.Namespace, *, command: str) -> dict:
    """Evaluates the best checkpoint so far of an unfinished model, beside the process that trains it.

    The checkpoints are read under their shared lock (``read_only``), so training
    goes on. ``saved`` is the run's configuration; ``--num-samples`` and
    ``--test-size`` may shrink this evaluation only. Writes
    ``OUT/models/NAME/interim.json``, labelled as what it is: NOT a row of the
    table (training had not stopped; a later checkpoint may be better).
    """
    folder = out / "models" / name
    if (folder / "result.json").is_file():
        raise SystemExit(f"{name} has finished: its test numbers are in {folder / 'result.json'}.")
    if not (folder / "checkpoints").is_dir():
        raise SystemExit(f"{name} has no checkpoints under {folder}; train it first.")
    cfg = dataclasses.replace(saved, num_samples=args.num_samples or saved.num_samples,
                              test_size=args.test_size or saved.test_size)
    train, validation, test = load(cfg, args)
    model, (*_, key_test), _, template = row_setup(name, cfg, train)  # the final evaluation's key: same draws
    with checkpoints.RunCheckpoints(folder / "checkpoints", metric=METRIC, config=bound_config(saved, name),
                                    read_only=True) as ckpt:
        state, history = ckpt.restore(template, which="best")
        best_epoch, latest_epoch = ckpt.best_epoch, ckpt.latest_epoch
    result = evaluate_row(name, model, state.params, validation, test, key_test, cfg, progress=not args.no_progress,
                          values_path=folder / "interim_test_log_px.npy")
    result.update(state="interim", label=ROWS[name].title(cfg.num_components), best_epoch=best_epoch,
                  epochs_when_evaluated=latest_epoch, best_validation_objective=max(r[METRIC] for r in history),
                  note="NOT a row of the table: training had not stopped; the best checkpoint so far",
                  command=command, environment=environment(), evaluated=time.ctime())
    write_json(folder / "interim.json", result)
    return result
