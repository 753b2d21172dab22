"""Shared scaffolding of the experiment modules: arguments, data, training, output.

Every experiment is ``python -m experiments.NAME --out DIR [--quick]`` and
writes its PNG figures, a ``results.json`` and the ``config.json`` it ran
with into ``DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from vae_jax import data as vdata
from vae_jax import models, objectives, training
from vae_jax.runs import write_json


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every experiment has (``doc``: the module docstring)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder for figures, results.json, config.json")
    p.add_argument("--quick", action="store_true", help="tiny size (seconds), as run by the test suite")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of everything (default 0)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files "
                   "(default: $VAE_JAX_DATA_DIR or /usr/share/datasets/fashion-mnist)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def load_data(args: argparse.Namespace, *, quick_train: int = 2000, quick_test: int = 500,
              dataset: str = "fashion_mnist") -> vdata.Dataset:
    """The dataset (``--quick``: the first ``quick_train`` / ``quick_test`` examples)."""
    ds = vdata.load_dataset(dataset, data_dir=args.data_dir)
    if args.quick:
        ds = ds._replace(train=vdata.Split(*(a[:quick_train] for a in ds.train)),
                         test=vdata.Split(*(a[:quick_test] for a in ds.test)))
    return ds


def train_model(config: models.ModelConfig, images: np.ndarray, **kwargs: Any
                ) -> tuple[Any, training.TrainState, list[dict[str, float]], float]:
    """Builds ``config``'s model and trains it with :func:`train` (``kwargs`` go there).

    Returns:
      ``(model, state, history, seconds)``.
    """
    model = models.build_model(config, images.shape[1:])
    return (model, *train(model, images, **kwargs))


def train(model: Any, images: np.ndarray, *, epochs: int, batch_size: int = 128, learning_rate: float = 1e-3,
          seed: int = 0, dynamic_binarization: bool = False, progress: bool = True, desc: str = "train",
          **hparams: float) -> tuple[training.TrainState, list[dict[str, float]], float]:
    """Trains ``model`` with Adam on ``images [N, H, W, C]``; ``hparams`` go to its objective.

    Returns:
      ``(state, history, seconds)``: history has one dict of epoch means per epoch.
    """
    key_init, key_fit = jax.random.split(jax.random.key(seed))
    state = training.create_train_state(model, key_init, images[0], optax.adam(learning_rate), **hparams)
    step = training.make_train_step(model.objective, dynamic_binarization=dynamic_binarization)
    start = time.perf_counter()
    state, history, _ = training.fit(step, state, images, key_fit, epochs=epochs, batch_size=batch_size,
                                     progress=progress, desc=desc)
    return state, history, time.perf_counter() - start


def batched(fn, params: Any, x: np.ndarray) -> np.ndarray:
    """``fn(params, x_i)`` for every example of ``x``, jitted and vmapped: a numpy array."""
    return np.asarray(jax.jit(jax.vmap(fn, in_axes=(None, 0)))(params, x))


def add_training_args(p: argparse.ArgumentParser, *, epochs: int, quick_epochs: int) -> None:
    """Adds ``--epochs``, ``--batch-size``, ``--learning-rate``, ``--hidden-sizes`` to ``p``.

    ``--epochs`` defaults to None: the experiment uses ``epochs`` (``quick_epochs`` with ``--quick``).
    """
    p.add_argument("--epochs", type=int, default=None,
                   help=f"training epochs of each model (default {epochs}; {quick_epochs} with --quick)")
    p.add_argument("--batch-size", type=int, default=128, help="examples per Adam step (default 128)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam step size (default 1e-3)")
    p.add_argument("--hidden-sizes", type=int, nargs="+", default=[512, 256],
                   help="MLP encoder widths, reversed for the decoder (default 512 256)")


def train_ae_and_vae(config: models.ModelConfig, images: np.ndarray, args: argparse.Namespace, *,
                     epochs: int) -> dict[str, tuple[Any, training.TrainState, list[dict[str, float]], float]]:
    """Trains an AE and a VAE that differ only in ``kind``: same networks, data, seed and budget.

    Args:
      config: the shared model config (its ``kind`` is replaced).
      images: ``[N, H, W, C]`` training images.
      args: parsed arguments of :func:`parser` and :func:`add_training_args`.
      epochs: training epochs of each model.

    Returns:
      ``{"ae": (model, state, history, seconds), "vae": (...)}`` as :func:`train_model` returns.
    """
    return {kind: train_model(dataclasses.replace(config, kind=kind), images, epochs=epochs,
                              batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                              progress=not args.no_progress, desc=f"{kind} d={config.latent_dim}")
            for kind in ("ae", "vae")}


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


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.generic, jax.Array)) or hasattr(obj, "item"):
        arr = np.asarray(obj)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    return obj


class Parts:
    """The finished pieces of a long study, one JSON file each in ``folder``, for ``--resume``.

    A run that is stopped (a session's end, a crash) keeps every piece it
    finished; the same command with ``--resume`` loads them instead of
    recomputing and computes the rest. Each file records the ``config`` it was
    made under: loading it under another config is an error, never a silent
    mix of two runs. Without ``resume``, a folder that already holds pieces is an
    error too (nothing is overwritten).

    Args:
      folder: where the pieces live (created on the first ``save``).
      resume: whether pieces already in ``folder`` may be used.
    """

    def __init__(self, folder: Path, *, resume: bool):
        self.folder = Path(folder)
        held = sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []
        if held and not resume:
            raise SystemExit(f"{self.folder} holds {len(held)} finished pieces of an earlier run; pass --resume "
                             f"to keep them, or choose another --out.")

    def load(self, name: str, config: dict[str, Any]) -> Any | None:
        """The value saved under ``name`` with the same ``config``, or None when there is none."""
        path = self.folder / f"{name}.json"
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        config = _jsonable(config)
        if saved["config"] != config:
            diff = sorted(k for k in set(saved["config"]) | set(config) if saved["config"].get(k) != config.get(k))
            raise SystemExit(f"{path} was made with other options ({', '.join(diff)}); run with the same options "
                             f"or choose another --out.")
        return saved["value"]

    def save(self, name: str, config: dict[str, Any], value: Any) -> None:
        """Saves ``value`` (JSON-able) under ``name`` atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / f"{name}.json", {"config": _jsonable(config), "value": _jsonable(value)})
