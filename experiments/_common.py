"""Shared scaffolding of the experiment modules: arguments, data, training, output.

Every experiment is ``python -m experiments.NAME --out DIR [--quick]`` and
writes its PNG figures, a ``results.json`` and the ``config.json`` it ran
with into ``DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import optax

from vae_jax import data as vdata
from vae_jax import models, objectives, streaming, training
from vae_jax.runs import write_bytes, write_json


class StudyError(RuntimeError):
    """A stored part of a study that cannot be used (damaged, truncated): exit status 1."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (its default prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def parser(doc: str, prog: str | None = None) -> argparse.ArgumentParser:
    """An argument parser with the options every experiment has.

    Args:
      doc: the module docstring (the ``--help`` text).
      prog: the name in messages, e.g. ``"experiments.beta_vae"`` (default: argparse's).
    """
    p = _OneLineParser(prog=prog and f"python -m {prog}", description=doc,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=out_folder,
                   help="output folder for figures, results.json, config.json")
    p.add_argument("--quick", action="store_true", help="tiny size (seconds), as run by the test suite")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="PRNG seed of everything (default 0)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files "
                   "(default: $VAE_JAX_DATA_DIR or /usr/share/datasets/fashion-mnist)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _number(text: str, kind: type, *, low: float, inclusive: bool) -> Any:
    """``kind(text)`` if it is a finite number above ``low`` (or equal, with ``inclusive``)."""
    relation = ">=" if inclusive else ">"
    expected = f"{'an integer' if kind is int else 'a finite number'} {relation} {low:g}"
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}; got {text!r}") from None
    if not math.isfinite(value) or value < low or (value == low and not inclusive):
        raise argparse.ArgumentTypeError(f"must be {expected}; got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, low=1, inclusive=True)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, low=0, inclusive=True)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (NaN and infinity are refused)."""
    return _number(text, float, low=0.0, inclusive=False)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return _number(text, float, low=0.0, inclusive=True)


def finite_float(text: str) -> float:
    """argparse type: any finite number."""
    return _number(text, float, low=-math.inf, inclusive=False)


def out_folder(text: str) -> Path:
    """argparse type of ``--out``: a folder name that is not empty and not an existing file."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder; got an empty string")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; expected a folder (existing or new)")
    return path


def study_main(prog: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorates a study's ``main(argv)`` with the CLI's error handling: one line on stderr, an exit status.

    A ``ValueError`` (a bad option or combination of options) exits with 2, a
    :class:`StudyError`, ``OSError`` (a full disk, a missing data folder),
    ``FloatingPointError`` or ``ImportError`` with 1, Ctrl-C with 130; the
    message is ``python -m PROG: error: ...`` on one line, as ``vae-jax`` prints.
    """
    def decorate(main: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(main)
        def wrapped(argv: list[str] | None = None) -> dict:
            try:
                return main(argv)
            except ValueError as e:
                code, message = 2, str(e)
            except (StudyError, OSError, FloatingPointError, ImportError) as e:
                code, message = 1, str(e)
            except KeyboardInterrupt:
                code, message = 130, "interrupted"
            print(f"python -m {prog}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
            raise SystemExit(code)
        return wrapped
    return decorate


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
                      for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        """The config as JSON values (tuples as lists, paths as strings)."""
        return _jsonable(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingConfig(StudyConfig):
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
          **hparams: float) -> tuple[training.TrainState, list[dict[str, float]], float]:
    """Trains ``model`` with Adam on ``images [N, H, W, C]``, or on labelled pairs ``(x [N, ...], y [N])``
    (the model's ``init`` takes one ``x``); ``hparams`` go to its objective.

    Returns:
      ``(state, history, seconds)``: history has one dict of epoch means per epoch.
    """
    key_init, key_fit = jax.random.split(jax.random.key(seed))
    first = jax.tree.leaves(images)[0][0]
    state = training.create_train_state(model, key_init, first, optax.adam(learning_rate), **hparams)
    step = training.make_train_step(model.objective, dynamic_binarization=dynamic_binarization)
    start = time.perf_counter()
    state, history, _ = training.fit(step, state, images, key_fit, epochs=epochs, batch_size=batch_size,
                                     progress=progress, desc=desc)
    return state, history, time.perf_counter() - start


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


class Option(NamedTuple):
    """One of a study's own options: ``p.add_argument(flag, type=type, default=default, help=help, nargs=nargs)``."""

    flag: str
    type: Callable[[str], Any]
    default: Any
    help: str
    nargs: str | None = None


def add_training_args(p: argparse.ArgumentParser, *, epochs: int, quick_epochs: int,
                      hidden_sizes: list[int] | None = None) -> None:
    """Adds ``--epochs``, ``--batch-size``, ``--learning-rate`` (and ``--hidden-sizes``, when given) to ``p``.

    ``--epochs`` defaults to None: :func:`parse_study` resolves it to ``epochs``
    (``quick_epochs`` with ``--quick``).
    """
    p.add_argument("--epochs", type=positive_int, default=None,
                   help=f"training epochs of each model (default {epochs}; {quick_epochs} with --quick)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="examples per Adam step (default 128)")
    p.add_argument("--learning-rate", type=positive_float, default=1e-3, help="Adam step size (default 1e-3)")
    if hidden_sizes is not None:
        widths = " ".join(map(str, hidden_sizes))
        p.add_argument("--hidden-sizes", type=positive_int, nargs="+", default=hidden_sizes,
                       help=f"MLP encoder widths, reversed for the decoder (default {widths})")


def parse_study(cls: type, doc: str, prog: str, argv: list[str] | None, *, options: tuple[Option, ...] = (),
                epochs: int, quick_epochs: int, hidden_sizes: list[int] | None = None,
                defaults: dict[str, tuple[Any, Any]] | None = None):
    """Parses a training study's command line into its frozen config ``cls`` (a :class:`TrainingConfig`).

    Args:
      cls, doc, prog: the config class, the module docstring and name.
      argv: the arguments (None: ``sys.argv``).
      options: the study's own options, besides :func:`parser`'s and :func:`add_training_args`'.
      epochs, quick_epochs, hidden_sizes: as :func:`add_training_args` takes them.
      defaults: ``name: (quick, full)`` defaults of options given as None (see :func:`resolve_defaults`).
    """
    p = parser(doc, prog)
    for option in options:
        p.add_argument(option.flag, type=option.type, default=option.default, help=option.help, nargs=option.nargs)
    add_training_args(p, epochs=epochs, quick_epochs=quick_epochs, hidden_sizes=hidden_sizes)
    args = p.parse_args(argv)
    return cls.from_args(args, **resolve_defaults(args, {"epochs": (quick_epochs, epochs), **(defaults or {})}))


def resolve_defaults(args: argparse.Namespace, defaults: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Each option named in ``defaults`` (``name: (quick, full)``) as given, or its default when not given.

    "Not given" is None: an explicit value, 0 included, is never replaced by a default (as
    ``args.x or default`` would). Lists become tuples, as frozen configs hold them.
    """
    out = {}
    for name, (quick, full) in defaults.items():
        value = getattr(args, name)
        value = (quick if args.quick else full) if value is None else value
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


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
                              progress=study.progress, desc=f"{kind} d={config.latent_dim}")
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


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz`` file."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def read_npz(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of the bytes of an ``.npz`` file."""
    with np.load(io.BytesIO(data)) as arrays:
        return dict(arrays)


def check_resume(out: Path, *, resume: bool) -> None:
    """Refuses ``--resume`` when ``out`` holds no earlier run (as ``vae-jax train --resume`` does).

    Raises:
      ValueError: ``resume`` and ``out`` is not a folder.
    """
    if resume and not out.is_dir():
        raise ValueError(f"--resume continues an earlier run in --out, but there is no folder {str(out)!r}; "
                         f"check the path, or start without --resume.")


class Parts:
    """The finished pieces of a long study, one file each in ``folder``, for ``--resume``.

    A run that is stopped (a session's end, a crash) keeps every piece it
    finished; the same command loads them instead of recomputing and computes
    the rest. Each JSON piece records the ``options`` it was made with: loading
    it under other options is an error naming the changed ones, never a silent
    mix of two runs. Without ``resume``, a folder that already holds pieces is an
    error too (nothing is overwritten). Every file is written atomically; one that
    cannot be read (truncated, edited) is a :class:`StudyError` naming it.

    Args:
      folder: where the pieces live (created on the first ``save``).
      resume: whether pieces already in ``folder`` may be used.

    Raises:
      ValueError: ``folder`` holds pieces and ``resume`` is False.
    """

    def __init__(self, folder: Path, *, resume: bool):
        self.folder = Path(folder)
        held = sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []
        if held and not resume:
            raise ValueError(f"{self.folder} holds {len(held)} finished pieces of an earlier run; pass --resume "
                             f"to keep them, or choose another --out.")

    def load(self, name: str, options: dict[str, Any]) -> Any | None:
        """The value saved under ``name`` with the same ``options``, or None when there is none.

        Raises:
          ValueError: the piece was made with other options.
          StudyError: the piece cannot be read.
        """
        path = self.folder / f"{name}.json"
        saved = self.read_file(f"{name}.json", lambda data: _piece(json.loads(data)))
        if saved is None:
            return None
        options = json.loads(json.dumps(_jsonable(options)))
        if saved["config"] != options:
            diff = sorted(k for k in set(saved["config"]) | set(options) if saved["config"].get(k) != options.get(k))
            raise ValueError(f"{path} was made with other options ({', '.join(diff)}); run with the options it "
                             f"was made with, or choose another --out (or delete it to recompute it).")
        return saved["value"]

    def save(self, name: str, options: dict[str, Any], value: Any) -> None:
        """Saves ``value`` (JSON-able) under ``name`` with the ``options`` it was made with."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / f"{name}.json", {"config": _jsonable(options), "value": _jsonable(value)})

    def read_file(self, filename: str, decode: Callable[[bytes], Any]) -> Any | None:
        """``decode(bytes)`` of ``folder / filename``, or None when it does not exist.

        Raises:
          StudyError: the file cannot be read or ``decode`` fails on it.
        """
        path = self.folder / filename
        if not path.exists():
            return None
        try:
            return decode(path.read_bytes())
        except Exception as e:  # any decoder's error: the file is what is wrong
            raise StudyError(f"{path} is damaged ({type(e).__name__}: {e}); delete it to recompute that part, "
                             f"or choose another --out.") from e

    def write_file(self, filename: str, data: bytes) -> None:
        """Writes ``data`` to ``folder / filename`` atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes(self.folder / filename, data)


def _piece(saved: Any) -> dict[str, Any]:
    if not isinstance(saved, dict) or set(saved) != {"config", "value"} or not isinstance(saved["config"], dict):
        raise ValueError("expected {\"config\": {...}, \"value\": ...}")
    return saved


def computed_piece(parts: Parts, name: str, options: dict[str, Any],
                   compute: Callable[[], tuple[Any, dict[str, np.ndarray]]]) -> tuple[Any, dict[str, np.ndarray]]:
    """A piece of a study with its arrays: loaded from ``parts`` (``NAME.json`` and ``NAME.npz``) when it was
    made with ``options``, else ``compute()`` and saved (the arrays first, so a piece found is complete).

    Args:
      parts: the study's pieces.
      name: the piece's name.
      options: what it depends on (a piece of other options is refused: :meth:`Parts.load`).
      compute: ``() -> (JSON-able value, {name: array})``.

    Returns:
      ``(value, arrays)``.
    """
    value = parts.load(name, options)
    arrays = parts.read_file(f"{name}.npz", read_npz) if value is not None else None
    if value is not None and arrays is not None:
        print(f"{name}: loaded from {parts.folder}", flush=True)
        return value, arrays
    value, arrays = compute()
    value = json.loads(json.dumps(_jsonable(value)))  # as a resumed run reads it
    parts.write_file(f"{name}.npz", npz_bytes(arrays))
    parts.save(name, options, value)
    return value, arrays
