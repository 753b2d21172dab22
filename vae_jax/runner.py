"""A training run in a folder: data, the epoch loop with checkpoints, figures, evaluation.

The functions behind ``vae-jax train / evaluate / sample`` (:mod:`vae_jax.cli`).
Epoch ``e`` (0-based) trains with ``fold_in(key_fit, e)`` and validates with
``fold_in(key_eval, e)``, and every epoch ends in an Orbax checkpoint of the
whole train state, so a run resumed from its latest checkpoint ends bitwise
identical to one never interrupted.

:func:`train` holds the run folder (:class:`vae_jax.runs.RunFolder`: its lock,
taken before anything in the folder is read or written, and its check) for its
whole life and trains with :func:`vae_jax.runs.resumable_fit`; the run's config
(all but ``epochs`` and ``data_dir``) is bound to every checkpoint.
:func:`evaluate_run` and :func:`sample_run` only read checkpoints (under the
checkpoint folder's shared lock), so they may run beside a train.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from vae_jax import data as vdata
from vae_jax import estimators, evaluation, family_runs, hooks, plotting, runs, scale, training
from vae_jax._checks import check_positive_int
from vae_jax.build import training_objective, validate
from vae_jax.checkpoints import RunCheckpoints
from vae_jax.config import RESUMABLE_CHANGES, ModelConfig, RunConfig, TrainConfig
from vae_jax.models import build_model
from vae_jax.runs import load_run_config, write_json

_EVAL_SEED_OFFSET = {"validation": 1, "test": 2}  # static binarisation seeds of the held-out splits
_ARTIFACTS = ("metrics.csv", "learning_curves.png", "reconstructions.png", "prior_samples.png")  # sent to MLflow


def load_images(config: RunConfig) -> tuple[dict[str, np.ndarray], dict[str, vdata.Split]]:
    """The run's images as the model sees them, and the original splits.

    Training images are binarised as configured (``dynamic``: left grey, the
    step draws); validation and test images get one seeded draw for
    ``dynamic`` / ``static``, so their ELBO is comparable across epochs.

    Returns:
      ``(images, splits)``: dicts over ``"train"``, ``"validation"``, ``"test"``
      of the model's float32 ``[N, H, W, C]`` inputs and of the grey-level
      :class:`vae_jax.data.Split` (images and int32 labels).
    """
    t = config.train
    ds = vdata.load_dataset(t.dataset, validation_size=t.validation_size, seed=t.seed, data_dir=t.data_dir or None)
    splits = {"train": vdata.Split(*(a[: t.train_size or None] for a in ds.train)),
              "validation": ds.validation, "test": ds.test}
    held_out_mode = "static" if t.binarization == "dynamic" else t.binarization
    images = {name: vdata.binarize(split.images, t.binarization if name == "train" else held_out_mode,
                                   seed=t.seed + _EVAL_SEED_OFFSET.get(name, 0))
              for name, split in splits.items()}
    if len(images["train"]) < t.batch_size:
        raise ValueError(f"batch_size {t.batch_size} exceeds the {len(images['train'])} training examples.")
    return images, splits


def setup(config: RunConfig, input_shape: tuple[int, ...]):
    """The model, a fresh train state, the jitted train step and the validation objective.

    Returns:
      ``(model, state, train_step, eval_objective, metric)``: ``eval_objective``
      is the ELBO at beta = 1 with one draw (an AE: its reconstruction
      log-likelihood; a conditional VAE, M2 or VQ-VAE: :func:`vae_jax.family_runs.setup`);
      ``metric`` names the history column that ranks checkpoints.
    """
    t = config.train
    model, objective, hparams, estimator_state = training_objective(config, build_model(config.model, input_shape))
    key_init = _keys(t.seed)[0]
    example = jnp.zeros(input_shape)
    state = training.create_train_state(model, key_init, example, optax.adam(t.learning_rate),
                                        estimator_state=estimator_state, **hparams)
    if family_runs.is_family(config):
        return (model, *family_runs.setup(config, model, state, objective, key_init))
    # Trace the objective once: an estimator that does not fit the model raises its ValueError here.
    jax.eval_shape(lambda p: objective(p, key_init, example, **state.objective_kwargs()), state.params)
    step = training.make_train_step(objective, dynamic_binarization=t.binarization == "dynamic")
    if estimator_state:
        step = estimators.with_running_baseline(step)
    metric = "validation_elbo" if config.model.kind == "vae" else "validation_reconstruction"
    return model, state, step, model.objective, metric


class _RunLog:
    """``run.json`` (status, epochs, checkpoints, versions, seconds) and the one line printed per epoch.

    As a hook it runs right after the checkpoint (Ctrl-C held back), so ``run.json``
    always names the checkpoints that exist; :func:`vae_jax.runs.resumable_fit`
    calls :meth:`write` with the final status.
    """

    def __init__(self, out: Path, metric: str, epochs: int, seconds: float):
        self.out, self.metric, self.epochs = out, metric, epochs
        self.meta = {"status": "running", "versions": _versions(), "seconds": seconds}
        self.start = time.perf_counter()

    def write(self, history: list[dict], **status: Any) -> None:
        best = max(history, key=lambda r: r[self.metric])["epoch"] if history else None  # as the checkpoints rank
        meta = {**self.meta, **status, "epochs_completed": len(history),
                "latest_checkpoint": history[-1]["epoch"] if history else None, "best_checkpoint": best,
                "seconds": self.meta["seconds"] + time.perf_counter() - self.start}
        write_json(self.out / "run.json", meta)

    def __call__(self, epoch: int, state: training.TrainState, history: list[dict]) -> None:
        row = history[-1]
        tqdm.write(f"epoch {epoch}/{self.epochs}: train loss {row['train_loss']:.2f}, "
                   f"{self.metric.replace('_', ' ')} {row[self.metric]:.2f}")
        self.write(history)


def train(config: RunConfig, out: Path, *, resume: bool = False, checkpoint: str = "latest",
          progress: bool = True) -> int:
    """Trains (or with ``resume`` continues) the run in ``out``; returns 0, or 130 when interrupted by Ctrl-C.

    Args:
      config: the run's config (with ``resume``: the saved one, ``epochs`` may differ).
      out: the run folder, locked and checked once (:class:`vae_jax.runs.RunFolder`) for the whole call.
      resume: continue the run in ``out`` from a checkpoint.
      checkpoint: with ``resume``: ``"latest"`` or ``"latest-intact"`` (the newest
        checkpoint that verifies; the corrupt newer ones move to ``checkpoints.corrupt/``).
      progress: show the progress bar.

    Raises:
      FloatingPointError: the loss or the parameters became non-finite (names the
        epoch and its steps; no checkpoint of the bad state is written).
      ValueError: the folder does not fit (see :func:`vae_jax.runs.check_run_folder`).
      RunLockedError: another process writes the folder.
      CheckpointError: the checkpoint to resume from is corrupt, or one could not be written.
      ConfigMismatchError: the checkpoints were trained with another config.
    """
    with runs.RunFolder(out, resume=resume) as run:
        return train_run(run, config, checkpoint=checkpoint, progress=progress)


def train_run(run: runs.RunFolder, config: RunConfig, *, checkpoint: str = "latest", progress: bool = True) -> int:
    """:func:`train` in a run folder already locked and checked (``vae-jax train --resume`` reads its
    config.json under the lock first)."""
    out, t = run.path, config.train
    if checkpoint not in ("latest", "latest-intact") or (checkpoint != "latest" and not run.resume):
        raise ValueError(f"train --checkpoint must be 'latest' or 'latest-intact', with --resume; got {checkpoint!r}.")
    runs.check_epochs(out, run.epochs, t.epochs)
    images, splits = load_images(config)
    data = family_runs.run_data(config, images, splits)
    config = family_runs.resolve_config(config, len(images["train"]))
    input_shape = images["train"].shape[1:]
    model, state, step, eval_objective, metric = setup(config, input_shape)
    state = family_runs.start_state(config, model, state, data["train"])
    placed = scale.placement(state, step, data["train"], batch_size=t.batch_size, devices=t.devices,
                             data_source=t.data_source, folder=out)
    _, key_fit, key_eval = _keys(t.seed)
    flat = {f"{part}.{k}": v for part, fields in config.to_dict().items() for k, v in fields.items()}
    examples = None if family_runs.is_family(config) else images["validation"]  # families: scalars only
    trackers = scale.trackers(out / "tensorboard", track=t.track, model=model, examples=examples,
                              seed=t.seed, start=max(run.epochs, default=0), mlflow_uri=t.mlflow_uri, params=flat,
                              run_name=out.name)
    log = _RunLog(out, metric, t.epochs, runs.previous_seconds(out / "run.json") if run.resume else 0.0)
    saved = {**config.to_dict(), "input_shape": list(input_shape), "sizes": {k: len(v) for k, v in images.items()}}
    if not run.resume and run.writer:
        log.write([], status="starting")  # first: marks the folder as this run's
        write_json(out / "config.json", saved)
    # Several processes: each trains, validates and checkpoints; process 0 alone logs and writes files.
    plan = runs.FitPlan(placed.step, placed.data, key_fit, t.epochs, t.batch_size, metric,
                        hooks.Validate(eval_objective, data["validation"], key_eval), config=bound_config(config),
                        defaults=DEFAULTS,
                        logs=(runs.CSVLog(out / "metrics.csv"), log, *trackers) if run.writer else (),
                        progress=progress and run.writer, epoch_fn=placed.epoch_fn)
    artifacts = tuple(out / name for name in _ARTIFACTS)
    try:
        result = runs.resumable_fit(run, placed.state, plan, checkpoint=checkpoint,
                                    status=log.write if run.writer else None,
                                    on_resume=_say_resumed(out, saved) if run.writer else None)
    except runs.Interrupted as stop:
        scale.close(trackers, status="KILLED", artifacts=artifacts)
        then = ("Continue with the same command and --resume." if stop.epochs else
                "Run the same command again (without --resume) to start over.")
        print(f"\nInterrupted after {stop.epochs} complete epochs; {stop.kept} {then}", flush=True)
        return 130
    if run.writer:
        _finish(out, config, model, result, images, splits, metric, data["test"])
    scale.close(trackers, status="FINISHED", artifacts=artifacts)
    return 0


def bound_config(config: RunConfig) -> dict[str, Any]:
    """What a run's checkpoints are bound to: its config without the fields ``--resume`` may change."""
    return runs.bound_config(config.to_dict(), RESUMABLE_CHANGES)


# Every field at its default: a field added after a run started, held at its default, is no change.
DEFAULTS = runs.bound_config(RunConfig(ModelConfig(), TrainConfig()).to_dict(), RESUMABLE_CHANGES)


def _say_resumed(out: Path, saved: dict[str, Any]):
    """``on_resume`` (after the checkpoint verified against the config): writes ``config.json`` (its
    ``epochs`` may have changed) and ``metrics.csv`` (the restored history), and says what was moved aside."""
    def on_resume(history: list[dict], moved: list[int]) -> None:
        write_json(out / "config.json", saved)
        runs.write_csv(out / "metrics.csv", history)
        if moved:
            print(f"Resuming from the checkpoint of epoch {len(history)}; the corrupt checkpoint(s) of epoch "
                  f"{', '.join(map(str, moved))} moved to {str(out / 'checkpoints.corrupt')!r}.", flush=True)
    return on_resume


def _finish(out: Path, config: RunConfig, model: Any, result: runs.Fitted, images: dict, splits: dict,
            metric: str, test: Any) -> None:
    """The run's figures and its summary line."""
    history = result.history
    params = scale.on_one_device(result.state.params)  # process 0's alone; not drawn again on every device
    if family_runs.is_family(config):
        family_runs.save_figures(out, model, params, config, test, history, metric)
    else:
        plotting.save_run_figures(out, model, params, config, images["test"], splits["test"], history, metric)
    if config.model.latent != "gaussian":
        print(f"No latent-space figures: the {config.model.latent_dim} {config.model.latent} latents have no "
              "continuous 2-D code to scatter or grid to decode (reconstructions use q's most probable b).",
              flush=True)
    best = history[result.best_epoch - 1]
    print(f"{len(history)} epochs: {metric} {history[-1][metric]:.2f} (best {best[metric]:.2f} at epoch "
          f"{best['epoch']}); outputs in {out}")


def _keys(seed: int) -> jax.Array:
    """The run's three root keys: initialisation, training epochs, validation."""
    return jax.random.split(jax.random.key(seed), 3)


def _versions() -> dict[str, str]:
    return {p: importlib.metadata.version(p) for p in ("vae_jax", "jax", "flax", "optax", "orbax-checkpoint")}


class LoadedRun(NamedTuple):
    """A trained run as :func:`load_run` gives it.

    Attributes:
      config: its :class:`vae_jax.config.RunConfig`.
      model: the model the config builds (``model.bind(params)`` gives its pure functions).
      params: the checkpoint's parameters.
      objective: the per-example objective the run is evaluated with, ``(params, key, x) -> (value, aux)``.
      epoch: the epochs the checkpoint had trained.
      input_shape: ``(H, W, C)`` of one image.
    """

    config: RunConfig
    model: Any
    params: Any
    objective: Any
    epoch: int
    input_shape: tuple[int, ...]


def load_run(run: str | Path, which: str = "best") -> LoadedRun:
    """The ``which`` checkpoint (``"best"``, ``"latest"`` or ``"latest-intact"``) of the run folder ``run``
    that ``vae-jax train`` wrote, for use from Python; read only, so it may run beside a train.

    Raises:
      FileNotFoundError, ValueError: as ``vae-jax evaluate`` reports them (no run, a corrupt checkpoint,
        a config that differs from the one the checkpoints were trained with).
    """
    run = Path(run)
    config, shape = load_run_config(run)
    model, state, _, eval_objective, metric = setup(validate(config), shape)
    with RunCheckpoints(run / "checkpoints", metric=metric, config=bound_config(config), defaults=DEFAULTS, read_only=True) as ckpts:
        state, history = ckpts.restore(state, which=which)
    return LoadedRun(config, model, state.params, eval_objective, len(history), tuple(shape))


def load_test_set(config: RunConfig, examples: int = 0) -> Any:
    """The run's test set as it is evaluated (binarised with the run's fixed seed where it trains on
    binary pixels; with labels for a labelled kind), its first ``examples`` (0: all)."""
    images, splits = load_images(config)
    return training.take(family_runs.run_data(config, images, splits)["test"], slice(0, examples or None))


def evaluate_run(run: Path, *, which: str = "best", seed: int = 0, num_samples: int = 0,
                 examples: int = 0, progress: bool = True) -> dict[str, Any]:
    """Test-set ELBO (and with ``num_samples`` the importance-sampled log p(x)), saved to ``evaluation.json``.

    Raises:
      FloatingPointError: a result is not finite (nothing is written).
    """
    run = Path(run)
    config, model, params, eval_objective, epoch, shape = load_run(run, which)
    if num_samples and config.model.kind not in ("vae", "conditional"):
        raise ValueError("--num-samples estimates log p(x), which needs a VAE (or log p(x|y), of a conditional VAE).")
    x = load_test_set(config, examples)
    key_elbo, key_marginal = jax.random.split(jax.random.key(seed))
    test = evaluation.evaluate(eval_objective, params, x, key_elbo)
    results = {"checkpoint": which, "epoch": epoch, "test_examples": training.num_examples(x),
               **{f"test_{k}": v for k, v in test.items() if k != "objective"},
               **family_runs.extra_test_numbers(config, model, params, x)}
    if num_samples:
        # float32 whatever the run's compute_dtype (same parameters): the reference number
        model = build_model(dataclasses.replace(config.model, compute_dtype="float32"), shape)
        estimate = evaluation.log_marginal(model, params, x, key_marginal, num_samples=num_samples,
                                           progress=progress)
        results.update(test_log_marginal=estimate.mean, test_log_marginal_stderr=estimate.stderr,
                       num_samples=num_samples)
    bad = [k for k, v in results.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"The {', '.join(bad)} of the checkpoint of epoch {epoch} in {str(run)!r} "
                                 "is not finite; nothing was written.")
    write_json(run / "evaluation.json", results, allow_nan=False)
    return results


def sample_path(run: Path, out: Path | None) -> Path:
    """The PNG ``sample`` writes: ``out`` (``.png`` added when it has no suffix), ``out/samples.png`` when
    ``out`` is a folder, or ``RUN/samples.png``.

    Raises:
      ValueError: ``out`` names another suffix, or lies under a file.
    """
    path = Path(out) if out is not None else Path(run) / "samples.png"
    if path.is_dir():
        path = path / "samples.png"
    if not path.suffix:
        path = path.with_suffix(".png")
    if path.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file or a folder; got {str(out)!r}.")
    if path.is_dir():
        raise ValueError(f"--out {str(path)!r} is a folder; name a .png file.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--out {str(path)!r} lies under the file {str(parent)!r}.")
            break
    return path


def sample_run(run: Path, out: Path | None = None, *, which: str = "best", seed: int = 0, n: int = 64) -> Path:
    """Decodes ``n`` draws ``z ~ p(z)`` of the run's model into a PNG grid (a conditional VAE or M2: one
    row per class, :func:`vae_jax.family_runs.sample_grid`); returns the path written.

    ``out`` as :func:`sample_path` resolves it. The PNG is written to a temporary
    file and renamed, so a full disk leaves no empty or partial PNG.
    """
    run, n = Path(run), check_positive_int(n, "n")
    path = sample_path(run, out)
    config, model, params, _, epoch, _ = load_run(run, which)
    samples, ncols = family_runs.sample_grid(config, model, params, jax.random.key(seed), n)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        plotting.save_image_grid(samples, tmp, ncols=ncols, title=f"{run.name}: {which} checkpoint (epoch {epoch})")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
