"""A study's command line: the options every study has, their argparse types, and errors as one line.

Re-exported by :mod:`experiments._common` (the studies write ``_common.NAME``).
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

from experiments._parts import StudyError
from vae_jax import scale


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


class Option(NamedTuple):
    """One of a study's own options: ``p.add_argument(flag, type=type, default=default, help=help, nargs=nargs)``."""

    flag: str
    type: Callable[[str], Any]
    default: Any
    help: str
    nargs: str | None = None


def add_training_args(p: argparse.ArgumentParser, *, epochs: int, quick_epochs: int,
                      hidden_sizes: list[int] | None = None) -> None:
    """Adds ``--epochs``, ``--batch-size``, ``--learning-rate`` (``--hidden-sizes``, when given), ``--devices``
    and ``--track`` (:func:`add_scale_args`) to ``p``.

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
    add_scale_args(p)


def add_scale_args(p: argparse.ArgumentParser) -> None:
    """Adds ``--devices`` and ``--track`` (the options of ``vae-jax train``, taken by :mod:`vae_jax.scale`).

    ``--track`` defaults to None: :func:`resolve_defaults` with :data:`TRACK_DEFAULTS` resolves it.
    """
    p.add_argument("--devices", choices=scale.DEVICES, default="one", help="'one' device (default), or 'all': "
                   "data-parallel over every local device, the one-device numbers to float32 rounding")
    p.add_argument("--track", choices=scale.TRACKS, default=None, help="'tensorboard': each model's epochs and "
                   "images as event files in OUT/tensorboard (default; 'none' with --quick), or 'none'")


TRACK_DEFAULTS = {"track": ("none", "tensorboard")}  # (--quick, full): the test suite's quick runs write none


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
    defaults = {"epochs": (quick_epochs, epochs), **TRACK_DEFAULTS, **(defaults or {})}
    return cls.from_args(args, **resolve_defaults(args, defaults))


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


