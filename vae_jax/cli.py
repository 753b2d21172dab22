"""The ``vae-jax`` command: ``train``, ``evaluate`` and ``sample`` (``vae-jax COMMAND --help``).

``train`` writes into its ``--out`` folder: ``config.json`` (the model and
training configs), ``run.json`` (status, epochs done, best epoch, versions),
``metrics.csv`` (one row per epoch), ``checkpoints/`` (Orbax: the latest and
the best by validation ELBO) and, at the end, PNG figures. One train at a time
writes a run folder (a second one stops with the holder's pid); evaluate and
sample may read it meanwhile. Exit codes: 0 done, 1 failure (missing run,
corrupt checkpoint, folder in use, non-finite loss or result), 2 bad input
(options, data, --resume without a run), 130 interrupted (Ctrl-C; the
checkpoints are intact: continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from vae_jax import parallel, runner, runs
from vae_jax.build import CHOICES as _CHOICES
from vae_jax.build import estimator_help, validate
from vae_jax.checkpoints import WHICH, CheckpointError
from vae_jax.config import RESUMABLE_CHANGES, ModelConfig, RunConfig, TrainConfig
from vae_jax.runs import RunLockedError, load_run_config

_FLAGS = {"kind": ("--model", "--kind"), "learning_rate": ("--lr",), "binarization": ("--binarize",),
          "compute_dtype": ("--compute-dtype", "--precision")}
_HELP = {"estimator": estimator_help()}  # the registry's names, by latent kind


def _int_list(text: str) -> tuple[int, ...]:
    if not text.strip():  # no hidden layer: the linear model of discrete latents
        return ()
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 512,256; got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit code 2), not the whole usage first."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


def _folder(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name; got '' (it would be the current directory)")
    return Path(text)


def _add_config_options(group: argparse._ArgumentGroup, cls: type) -> None:
    """One option per dataclass field; its default stays in the dataclass (the parser's is None)."""
    for f in dataclasses.fields(cls):
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        kind = _int_list if isinstance(f.default, tuple) else type(f.default)
        text = " ".join(filter(None, (f.metadata.get("help") or f"{cls.__name__}.{f.name}", _HELP.get(f.name))))
        help_text = f"{text} (default: {default!r})".replace("%", "%%")
        group.add_argument(*_FLAGS.get(f.name, ("--" + f.name.replace("_", "-"),)), dest=f.name, type=kind,
                           choices=_CHOICES.get(f.name), default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The ``vae-jax`` argument parser with its three sub-commands."""
    parser = _Parser(prog="vae-jax", description=__doc__.replace("``", ""),
                                     allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,sample}")

    p = sub.add_parser("train", help="train a VAE, AE, conditional VAE, M2 or VQ-VAE (--kind), with checkpoints, "
                       "metrics and figures",
                       description="Train a model; every option defaults to the config dataclasses' value.",
                       allow_abbrev=False)
    p.add_argument("--out", type=_folder, required=True, help="run folder for checkpoints, metrics and figures "
                   "(new or empty, or a run to --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint "
                   "(options not given are taken from its config.json; only --epochs, --data-dir, --track and --mlflow-uri may change); an error "
                   "if --out holds no run with a checkpoint")
    p.add_argument("--checkpoint", choices=("latest", "latest-intact"), default="latest",
                   help="with --resume: the checkpoint to continue from: latest, or latest-intact (the newest "
                   "that passes its checksum; corrupt newer ones are moved aside) (default: latest)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_config_options(p.add_argument_group("model (vae_jax.ModelConfig)"), ModelConfig)
    _add_config_options(p.add_argument_group("training (vae_jax.config.TrainConfig)"), TrainConfig)
    p.set_defaults(func=_train)

    for name, text in (("evaluate", "print and save (evaluation.json) the test ELBO and optionally log p(x) (M2: "
                                    "its bound and test error; VQ-VAE: reconstruction and codebook use)"),
                       ("sample", "decode draws z ~ p(z) of the model's prior into a PNG grid (a conditional VAE "
                                  "or M2: one row per class)")):
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".", allow_abbrev=False)
        p.add_argument("--run", type=Path, required=True, help="run folder written by vae-jax train")
        p.add_argument("--checkpoint", choices=WHICH, default="best",
                       help="checkpoint to use: best by validation ELBO, latest, or latest-intact (the newest "
                       "that passes its checksum) (default: best)")
        p.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
        p.set_defaults(func=_evaluate if name == "evaluate" else _sample)
        if name == "evaluate":
            p.add_argument("--num-samples", type=int, default=0, help="also estimate log p(x) by importance "
                           "sampling with this many samples per image, e.g. 5000 (default: 0, off)")
            p.add_argument("--examples", type=int, default=0,
                           help="evaluate the first N test images only (default: 0, all)")
            p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        else:
            p.add_argument("--n", type=int, default=64, help="number of samples (default: 64)")
            p.add_argument("--out", type=_folder, default=None, help="PNG to write, or a folder to write "
                           "samples.png into (default: RUN/samples.png)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``vae-jax``; returns the exit code (errors are one line on stderr)."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restores showwarning on exit
        warnings.showwarning = _one_line_warning
        try:
            return args.func(args)
        except ValueError as e:
            code, message = 2, str(e)
        except (CheckpointError, RunLockedError, FloatingPointError, ImportError, OSError) as e:
            code, message = 1, str(e)
        except KeyboardInterrupt:  # before the epoch loop, which handles Ctrl-C itself
            code, message = 130, "interrupted"
    print(f"vae-jax {args.command}: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return code


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"vae-jax: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _given(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The config options given on the command line, as ``{"model": ..., "train": ...}``."""
    return {part: {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                   if getattr(args, f.name) is not None}
            for part, cls in (("model", ModelConfig), ("train", TrainConfig))}


def _train(args: argparse.Namespace) -> int:
    parallel.initialize_from_env()  # a job of several processes (docs/scale.md), before any device is used
    given, progress = _given(args), not args.no_progress
    if not args.resume:
        if args.checkpoint != "latest":
            raise ValueError("--checkpoint applies to --resume only.")
        config = validate(RunConfig(ModelConfig(**given["model"]), TrainConfig(**given["train"])))
        return runner.train(config, args.out, progress=progress)
    with runs.RunFolder(args.out, resume=True) as run:  # locked and checked once, before config.json is read
        saved, _ = load_run_config(args.out)
        config = validate(RunConfig.from_dict({part: {**saved.to_dict()[part], **given[part]} for part in given}))
        conflicts = config.resume_conflicts(saved)
        if conflicts:
            raise ValueError(f"--resume of {str(args.out)!r} with other settings than it was trained with: "
                             f"{', '.join(conflicts)}; only " + ", ".join(f"--{n.replace('_', '-')}" for n in RESUMABLE_CHANGES)
                             + " may change.")
        return runner.train_run(run, config, checkpoint=args.checkpoint, progress=progress)


def _evaluate(args: argparse.Namespace) -> int:
    if args.num_samples < 0 or args.examples < 0:
        raise ValueError("--num-samples and --examples must be >= 0.")
    results = runner.evaluate_run(args.run, which=args.checkpoint, seed=args.seed,
                                  num_samples=args.num_samples, examples=args.examples,
                                  progress=not args.no_progress)
    print(json.dumps(results, indent=2))
    return 0


def _sample(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be >= 1; got {args.n}.")
    path = runner.sample_run(args.run, args.out, which=args.checkpoint, seed=args.seed, n=args.n)
    print(f"wrote {path}")
    return 0
