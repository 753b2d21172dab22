"""A training run in a folder: data, the epoch loop with checkpoints, figures, evaluation.

The functions behind ``vae-jax train / evaluate / sample`` (:mod:`vae_jax.cli`).
Epoch ``e`` (0-based) trains with ``fold_in(key_fit, e)`` and validates with
``fold_in(key_eval, e)``, and every epoch ends in an Orbax checkpoint of the
whole train state, so a run resumed from its latest checkpoint ends bitwise
identical to one never interrupted.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from vae_jax import data as vdata
from vae_jax import evaluation, plotting, training
from vae_jax.checkpoints import RunCheckpoints
from vae_jax.config import RunConfig, load_run_config, read_json, write_json
from vae_jax.models import build_model

_EVAL_SEED_OFFSET = {"validation": 1, "test": 2}  # static binarisation seeds of the held-out splits


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
      log-likelihood); ``metric`` names the history column that ranks checkpoints.
    """
    t = config.train
    model = build_model(config.model, input_shape)
    if config.model.kind == "ae":
        objective, hparams = model.objective, {}
    elif t.objective == "iwae":
        objective, hparams = functools.partial(model.iwae_objective, num_samples=t.num_samples), {}
    else:
        objective, hparams = functools.partial(model.objective, num_samples=t.num_samples), {"beta": t.beta}
    key_init = _keys(t.seed)[0]
    state = training.create_train_state(model, key_init, jnp.zeros(input_shape), optax.adam(t.learning_rate),
                                        **hparams)
    step = training.make_train_step(objective, dynamic_binarization=t.binarization == "dynamic")
    metric = "validation_elbo" if config.model.kind == "vae" else "validation_reconstruction"
    return model, state, step, model.objective, metric


def train(config: RunConfig, out: Path, *, progress: bool = True) -> int:
    """Trains (or resumes) the run in ``out``; returns 0, or 130 when interrupted by Ctrl-C.

    Raises:
      FloatingPointError: the loss or the parameters became non-finite (names the
        epoch and its steps; no checkpoint of the bad state is written).
    """
    t = config.train
    images, splits = load_images(config)
    input_shape = images["train"].shape[1:]
    model, state, step, eval_objective, metric = setup(config, input_shape)
    _, key_fit, key_eval = _keys(t.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**config.to_dict(), "input_shape": list(input_shape),
                                     "sizes": {k: len(v) for k, v in images.items()}})
    meta = {"status": "running", "versions": _versions(), "seconds": 0.0}
    x_train, x_val = jnp.asarray(images["train"]), jnp.asarray(images["validation"])
    steps_per_epoch = len(x_train) // t.batch_size
    with RunCheckpoints(out / "checkpoints", metric=metric, create=True) as ckpts:
        history = []
        if ckpts.latest_epoch:
            state, history = ckpts.restore(state, which="latest")
            if (out / "run.json").is_file():  # keep counting the time of the earlier sessions
                meta["seconds"] = float(read_json(out / "run.json", what="Run metadata").get("seconds", 0.0))
        _write_metrics(out / "metrics.csv", history)

        def finish_epoch(epoch: int, state: training.TrainState, row: dict[str, float]) -> list[dict]:
            val = training.evaluate(eval_objective, state.params, x_val, jax.random.fold_in(key_eval, epoch))
            row = {**row, **{f"validation_{k}": v for k, v in val.items() if k != "objective"}}
            if not np.isfinite(row[metric]):
                raise FloatingPointError(f"Non-finite {metric} after epoch {epoch + 1}; {_kept(ckpts)}")
            ckpts.save(epoch + 1, state, history=history + [row])
            return history + [row]

        start, pending, short_metric = time.perf_counter(), None, metric.removeprefix("validation_")
        bar = tqdm(range(len(history), t.epochs), initial=len(history), total=t.epochs, desc="train",
                   disable=not progress, unit="epoch")
        try:
            for epoch in bar:
                state, metrics = training.train_epoch(step, state, x_train, jax.random.fold_in(key_fit, epoch),
                                                      batch_size=t.batch_size)
                row = {"epoch": epoch + 1, **{f"train_{k}": float(v) for k, v in metrics.items()}}
                if not (np.isfinite(row["train_loss"]) and _all_finite(state.params)):
                    first = epoch * steps_per_epoch + 1
                    raise FloatingPointError(
                        f"Non-finite training loss or parameters in epoch {epoch + 1} (steps {first}-"
                        f"{first + steps_per_epoch - 1}); {_kept(ckpts)} Lower --lr or check the data.")
                pending = (epoch, state, row)
                history, pending = finish_epoch(*pending), None
                _write_metrics(out / "metrics.csv", history)
                value = history[-1][metric]
                bar.set_postfix({"loss": f"{row['train_loss']:.2f}", short_metric: f"{value:.2f}"})
                tqdm.write(f"epoch {epoch + 1}/{t.epochs}: train loss {row['train_loss']:.2f}, "
                           f"{metric.replace('_', ' ')} {value:.2f}")
                write_json(out / "run.json", _meta(meta, history, ckpts, start))
        except KeyboardInterrupt:
            bar.close()
            if pending is not None and (ckpts.latest_epoch or 0) <= pending[0]:
                history = finish_epoch(*pending)
                _write_metrics(out / "metrics.csv", history)
            write_json(out / "run.json", _meta(dict(meta, status="interrupted"), history, ckpts, start))
            print(f"\nInterrupted after {len(history)} complete epochs; {_kept(ckpts)} "
                  f"Continue with the same command and --resume.", flush=True)
            return 130
        except FloatingPointError as e:
            write_json(out / "run.json", _meta(dict(meta, status="failed", error=str(e)), history, ckpts, start))
            raise
        write_json(out / "run.json", _meta(dict(meta, status="finished"), history, ckpts, start))
    write_figures(out, model, state.params, config, images["test"], splits["test"], history, metric)
    best = max(history, key=lambda r: r[metric])
    print(f"{len(history)} epochs: {metric} {history[-1][metric]:.2f} (best {best[metric]:.2f} at epoch "
          f"{best['epoch']}); outputs in {out}")
    return 0


def _keys(seed: int) -> jax.Array:
    """The run's three root keys: initialisation, training epochs, validation."""
    return jax.random.split(jax.random.key(seed), 3)


def _all_finite(tree: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def _kept(ckpts: RunCheckpoints) -> str:
    epoch = ckpts.latest_epoch
    if not epoch:
        return f"no checkpoint was written to {str(ckpts.directory)!r}."
    return f"the checkpoint of epoch {epoch} in {str(ckpts.directory)!r} is intact."


def _versions() -> dict[str, str]:
    return {p: importlib.metadata.version(p) for p in ("vae_jax", "jax", "flax", "optax", "orbax-checkpoint")}


def _meta(meta: dict, history: list[dict], ckpts: RunCheckpoints, start: float) -> dict:
    return {**meta, "epochs_completed": len(history), "latest_checkpoint": ckpts.latest_epoch,
            "best_checkpoint": ckpts.best_epoch, "seconds": meta["seconds"] + time.perf_counter() - start}


def _write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    """Rewrites ``metrics.csv`` from the checkpointed history (atomically, so it always matches)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]) if history else ["epoch"])
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(path)


def write_figures(out: Path, model, params, config: RunConfig, x_test: np.ndarray, test: vdata.Split,
                  history: list[dict[str, float]], metric: str) -> None:
    """Reconstructions, prior samples, learning curves and, for d = 2, the latent space, as PNGs.

    ``x_test [N, H, W, C]`` are the model's (binarised) test inputs, ``test`` the grey images and labels.
    """
    if not history:
        return
    title = f"{config.train.dataset}, {config.model.kind.upper()} d={config.model.latent_dim}, epoch {len(history)}"
    per_example = lambda fn, x: np.asarray(jax.jit(jax.vmap(fn, in_axes=(None, 0)))(params, x))  # noqa: E731
    x, rows = x_test[:16], {"test image": test.images[:16]}
    if not np.array_equal(x, rows["test image"]):
        rows["model input"] = x
    rows["reconstruction"] = per_example(model.reconstruct, x)
    plotting.save_image_rows(rows, out / "reconstructions.png", title=title)
    samples = np.asarray(model.sample(params, jax.random.key(config.train.seed), 64))
    plotting.save_image_grid(samples, out / "prior_samples.png", title=f"decoded z ~ N(0, I): {title}")
    train_key = next(k for k in ("train_elbo", "train_iwae", "train_reconstruction") if k in history[0])
    label = lambda k: k.replace("_", " ").replace("elbo", "ELBO").replace("iwae", "IWAE bound")  # noqa: E731
    plotting.save_curves({label(k): [r[k] for r in history] for k in (train_key, metric)},
                         out / "learning_curves.png", ylabel="nats per example", title=title)
    if config.model.latent_dim == 2:
        n = min(len(x_test), 5000)
        codes = per_example(model.code, x_test[:n])
        names = {"fashion_mnist": vdata.FASHION_MNIST_CLASSES, "digits": tuple("0123456789")}.get(config.train.dataset)
        fig, ax = plotting.plt.subplots(figsize=(6, 5))
        plotting.plot_latent_scatter(ax, codes, test.labels[:n], class_names=names,
                                     prior_contours=config.model.kind == "vae", title=f"test codes: {title}")
        plotting.save_figure(fig, out / "latent_space.png")
        grid = plotting.latent_grid(15)
        plotting.save_image_grid(per_example(model.decode_mean, grid), out / "latent_manifold.png", ncols=15,
                                 title="decoded grid over [-3, 3]^2")


def _restore(run: Path, which: str):
    """``(config, model, params, eval_objective, epochs)`` of the ``which`` checkpoint of ``run``."""
    config, shape = load_run_config(run)
    model, state, _, eval_objective, metric = setup(config, shape)
    with RunCheckpoints(run / "checkpoints", metric=metric) as ckpts:
        state, history = ckpts.restore(state, which=which)
    return config, model, state.params, eval_objective, len(history)


def evaluate_run(run: Path, *, which: str = "best", seed: int = 0, num_samples: int = 0,
                 examples: int = 0, progress: bool = True) -> dict[str, Any]:
    """Test-set ELBO (and with ``num_samples`` the importance-sampled log p(x)), saved to ``evaluation.json``."""
    config, model, params, eval_objective, epoch = _restore(run, which)
    if num_samples and config.model.kind != "vae":
        raise ValueError("--num-samples estimates log p(x), which needs a VAE.")
    images, _ = load_images(config)
    x = images["test"][: examples or None]
    key_elbo, key_marginal = jax.random.split(jax.random.key(seed))
    test = training.evaluate(eval_objective, params, x, key_elbo)
    results = {"checkpoint": which, "epoch": epoch, "test_examples": len(x),
               **{f"test_{k}": v for k, v in test.items() if k != "objective"}}
    if num_samples:
        estimate = evaluation.log_marginal(model, params, x, key_marginal, num_samples=num_samples,
                                           progress=progress)
        results.update(test_log_marginal=estimate.mean, test_log_marginal_stderr=estimate.stderr,
                       num_samples=num_samples)
    write_json(run / "evaluation.json", results)
    return results


def sample_run(run: Path, out: Path, *, which: str = "best", seed: int = 0, n: int = 64) -> Path:
    """Decodes ``n`` draws ``z ~ N(0, I)`` of the run's model into a PNG grid at ``out``."""
    _, model, params, _, epoch = _restore(run, which)
    samples = np.asarray(model.sample(params, jax.random.key(seed), n))
    ncols = max(1, int(round(n ** 0.5)))
    return plotting.save_image_grid(samples, out, ncols=ncols, title=f"{run.name}: {which} checkpoint (epoch {epoch})")
