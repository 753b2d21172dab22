"""What a ``vae-jax`` run of a conditional VAE, M2 or VQ-VAE needs besides a VAE's.

:mod:`vae_jax.runner` calls these at its few places that differ by ``kind``:
the run's data (labelled pairs ``(x, y)`` for ``conditional`` and ``m2``, with
all but ``num_labelled`` training labels hidden for ``m2`` and its training
examples paired), M2's ``alpha`` and ``labelled_share`` resolved from the data,
the train step and validation objective, the VQ-VAE's codebook started from
data, the extra test numbers, the figures and the samples.
For ``vae`` and ``ae`` every function leaves the run as it was.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import plotting, training, vq
from vae_jax.config import RunConfig
from vae_jax.data import Split
from vae_jax.models.families import KINDS
from vae_jax.semi_supervised import UNLABELLED, paired_examples, paper_alpha, paper_share

LABELLED = ("conditional", "m2")
_METRIC = {"conditional": "validation_elbo", "m2": "validation_bound", "vq": "validation_reconstruction"}
_LABELLING_SEED = 29  # mixed with --seed: which training labels M2 keeps


def resolve_config(config: RunConfig, num_train: int) -> RunConfig:
    """``config`` with M2's ``alpha = 0`` replaced by the paper's ``0.1 N / num_labelled`` and its
    ``labelled_share = 0`` by the paper's ``num_labelled / N``, for ``N = num_train`` (saved so: a resumed
    run, ``evaluate`` and ``sample`` read the values it trained with)."""
    t = config.train
    if config.model.kind != "m2":
        return config
    alpha = t.alpha or paper_alpha(num_train, t.num_labelled)
    share = t.labelled_share or paper_share(num_train, t.num_labelled)
    return dataclasses.replace(config, train=dataclasses.replace(t, alpha=alpha, labelled_share=share))


def choose_labelled(labels: np.ndarray, num_labelled: int, seed: int) -> np.ndarray:
    """``[N]`` bool: the ``num_labelled`` examples that keep their label, balanced over the classes.

    A seeded permutation ranks each class's examples; the chosen are the first ranks of every class
    in turn (class counts differ by at most one while every class has examples left).
    """
    order = np.random.default_rng([seed, _LABELLING_SEED]).permutation(len(labels))
    rank = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        rank[members] = np.arange(len(members))
    chosen = order[np.lexsort((labels[order], rank[order]))][:num_labelled]
    mask = np.zeros(len(labels), bool)
    mask[chosen] = True
    return mask


def run_data(config: RunConfig, images: dict[str, np.ndarray], splits: dict[str, Split]) -> dict[str, Any]:
    """The model's data per split: ``images`` as they are, or ``(images, labels)`` for ``conditional`` and
    ``m2`` (M2's training examples the pairs of :func:`vae_jax.semi_supervised.paired_examples`, all labels
    but ``num_labelled`` hidden, the labelled set cycled with ``seed``; its validation and test labels all kept).

    Raises:
      ValueError: a labelled kind on a dataset without labels, a label outside ``[0, num_classes)``,
        or ``num_labelled`` not smaller than the training set.
    """
    model, train = config.model, config.train
    if model.kind not in LABELLED:
        return images
    data = {}
    for name, split in splits.items():
        labels = np.asarray(split.labels, np.int32)
        if len(labels) and labels.min() < 0:
            raise ValueError(f"--kind {model.kind} needs labels; the {name} split of {train.dataset!r} has none "
                             f"(-1); choose a labelled dataset, e.g. digits or fashion_mnist.")
        if len(labels) and labels.max() >= model.num_classes:
            raise ValueError(f"the {train.dataset!r} labels reach {labels.max()}, outside [0, {model.num_classes}) "
                             f"of --num-classes {model.num_classes}; give --num-classes {labels.max() + 1}.")
        data[name] = (images[name], labels)
    if model.kind == "m2":
        x, labels = data["train"]
        if train.num_labelled >= len(labels):
            raise ValueError(f"--num-labelled {train.num_labelled} leaves no unlabelled example of the "
                             f"{len(labels)} training examples.")
        pool = np.where(choose_labelled(labels, train.num_labelled, train.seed), labels, UNLABELLED)
        data["train"] = paired_examples(x, pool.astype(np.int32), seed=train.seed)
    return data


def setup(config: RunConfig, model: Any, state: training.TrainState, objective: Any, key: jax.Array):
    """``(state, train_step, eval_objective, metric)`` of a ``conditional``, ``m2`` or ``vq`` run.

    The validation objective is the ELBO of ``(x, y)`` (conditional), M2's label-free bound
    ``U(x)`` with the classifier's error beside it (:meth:`vae_jax.semi_supervised.M2.evaluation`;
    checkpoints are ranked by the bound, so no validation label chooses them), or the VQ-VAE's
    objective with its reconstruction term ranking the checkpoints.
    """
    t, kind = config.train, config.model.kind
    example = jnp.zeros((2, *model.input_shape) if kind == "m2" else model.input_shape)
    if kind in LABELLED:
        example = (example, jnp.zeros((), jnp.int32))
    # Trace the objective once: a model that does not fit its data raises its ValueError here.
    jax.eval_shape(lambda p: objective(p, key, example, **state.objective_kwargs()), state.params)
    if kind == "vq":
        if model.codebook_update == "ema":
            state = vq.with_codebook_ema(state)
        return state, vq.make_train_step(model, decay=t.ema_decay), model.objective, _METRIC[kind]
    step = training.make_train_step(objective, dynamic_binarization=t.binarization == "dynamic")
    evaluation = model.evaluation if kind == "m2" else model.objective
    return state, step, evaluation, _METRIC[kind]


def start_state(config: RunConfig, model: Any, state: training.TrainState, train: Any) -> training.TrainState:
    """A new VQ-VAE's codebook set to encoder outputs of its first training batch
    (:func:`vae_jax.vq.codebook_from_data`; an ``N(0, 1)`` codebook leaves most codes dead); else ``state``."""
    if config.model.kind != "vq":
        return state
    key = jax.random.fold_in(jax.random.key(config.train.seed), 3)
    params = vq.codebook_from_data(model, state.params, key, jnp.asarray(train[:config.train.batch_size]))
    state = state.replace(params=params)
    return vq.with_codebook_ema(state) if model.codebook_update == "ema" else state


def extra_test_numbers(config: RunConfig, model: Any, params: Any, test: Any) -> dict[str, float]:
    """A VQ-VAE's codebook use over the test images (``test_perplexity``, ``test_dead_codes``) and the
    mean squared error per pixel of its reconstructions (``test_squared_error``); ``{}`` for other kinds."""
    if config.model.kind != "vq":
        return {}
    x = jnp.asarray(test)
    codes = jax.jit(jax.vmap(model.codes, in_axes=(None, 0)))(params, x)
    recon = jax.jit(jax.vmap(model.reconstruct, in_axes=(None, 0)))(params, x)
    usage = vq.codebook_usage(codes, model.num_codes)
    return {"test_perplexity": float(usage["perplexity"]), "test_dead_codes": int(usage["dead_codes"]),
            "test_squared_error": float(jnp.mean(jnp.square(recon - x)))}


def sample_grid(config: RunConfig, model: Any, params: Any, key: jax.Array, n: int) -> tuple[np.ndarray, int]:
    """``(images, ncols)``: ``n`` draws of a VAE in a square grid, or for ``conditional`` / ``m2`` one row
    per class of ``max(1, n // num_classes)`` draws of p(x | y).

    Raises:
      ValueError: a VQ-VAE (a run holds no prior over its codes).
    """
    kind = config.model.kind
    if kind == "vq":
        raise ValueError("a VQ-VAE run holds no prior over its codes to sample from; fit vae_jax.code_prior to its "
                         "codes (docs/model_families.md).")
    if kind not in LABELLED:
        return np.asarray(model.sample(params, key, n)), max(1, int(round(n ** 0.5)))
    per_class = max(1, n // config.model.num_classes)
    labels = jnp.repeat(jnp.arange(config.model.num_classes), per_class)
    sampler = model.cvae if kind == "m2" else model
    return np.asarray(sampler.sample(params, key, labels)), per_class


def save_figures(out: Path, model: Any, params: Any, config: RunConfig, test: Any, history: list[dict],
                 metric: str) -> None:
    """Learning curves, and class-conditional samples (one row per class) or a VQ-VAE's reconstructions."""
    if not history:
        return
    kind = config.model.kind
    title = f"{config.train.dataset}, {kind}, epoch {len(history)}"
    train_key = {"conditional": "train_elbo", "m2": "train_unlabelled_bound", "vq": "train_reconstruction"}[kind]
    plotting.save_curves({k.replace("_", " "): [r[k] for r in history] for k in (train_key, metric)},
                         out / "learning_curves.png", ylabel="nats per example", title=title)
    if kind == "vq":
        x = np.asarray(test[:16])
        recon = jax.jit(jax.vmap(model.reconstruct, in_axes=(None, 0)))(params, x)
        plotting.save_image_rows({"test image": x, "reconstruction": np.asarray(recon)}, out / "reconstructions.png",
                                 title=title)
        return
    samples, ncols = sample_grid(config, model, params, jax.random.key(config.train.seed), 8 * config.model.num_classes)
    plotting.save_image_grid(samples, out / "prior_samples.png", ncols=ncols,
                             title=f"one row per class y = 0..{config.model.num_classes - 1}: {title}")


def is_family(config: RunConfig) -> bool:
    """Whether the run's model is a conditional VAE, M2 or VQ-VAE."""
    return config.model.kind in KINDS

