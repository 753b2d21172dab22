"""Density table: test log p(x) on dynamically binarised Fashion-MNIST beside the published rows.

Protocol of the published results (VampPrior, Exemplar VAE; defaults read from
the authors' code, github.com/jmtomczak/vae_vampprior and sajadn/Exemplar-VAE):
50000 training / 10000 validation images split from the training set (fixed
permutation), training images binarised dynamically (a fresh Bernoulli draw in
every step), validation and test images binarised once with fixed seeds,
early stopping on the validation objective (ELBO at beta = 1, or the k-sample
bound for IWAE-k; patience 50, counted only after the warm-up as in the
authors' code), log p(x) from 5000 importance samples on all 10000 test images
(``vae_jax.evaluation.log_marginal``). Net (``--architecture gated_mlp``, the
authors'): gated dense layers ``(W1 x + b1) * sigmoid(W2 x + b2)``, encoder
784-300-300, 40 latents, decoder 40-300-300-784, Bernoulli likelihood, Adam
5e-4, batches of 100, at most 2000 epochs.

Rows (``--models``, default the first four, the published protocol's MLP rows that have finished):
  vae          VAE, standard normal prior, no warm-up
  vae_warmup   VAE, KL warm-up (beta rising linearly from 0 to 1 over 100 epochs)
  vamp_warmup  VampPrior with K = 500 pseudo-inputs (init N(0.05, 0.01), clipped to
               [0, 1]), KL warm-up over 100 epochs
  iwae5        the same net trained on the IWAE bound with k = 5
  iwae50       ... with k = 50 (about 10x an iwae5 epoch: see docs/density_table.md)
  hvae_vamp_warmup  the two-level hierarchical VAE of the VampPrior paper (HVAE: q(z2|x),
               q(z1|x,z2), p(z1|z2), p(x|z1,z2), 40 + 40 latents, gated 300 layers) with the
               VampPrior (K = 500) on z2, KL warm-up over 100 epochs
  hvae_warmup  the HVAE with the standard normal prior on z2, KL warm-up
  iaf_warmup   the one-layer VAE with an inverse autoregressive flow posterior (2 IAF steps,
               MADE 320-320, context 100), KL warm-up
  hvae_vamp_iaf_warmup  the stretch candidate (>= -226.0): the HVAE with the VampPrior on z2 and
               2 IAF steps on its posterior, KL warm-up

Resumable: every model is checkpointed after every epoch under
``OUT/models/NAME/checkpoints`` (latest and best), with ``history.csv`` and a
``status.json`` (epochs so far, best validation value, the resume command);
``--resume`` continues each unfinished model from its latest checkpoint (the
warm-up schedule and the data order continue exactly: a resumed run ends
identical to an uninterrupted one) and skips finished ones. When a model
finishes it writes ``OUT/models/NAME/result.json`` (per-epoch history, stop
reason, test numbers, exact command, package versions, machine, load average)
and the process rewrites ``OUT/table.md`` and ``OUT/results.json`` from every
finished model. Several processes may share one OUT (each model folder is
locked by the process that trains it; a process that reaches a model another
process holds skips it, saying so, and goes on with its next row). ``--resume``
of an OUT that does not exist is refused; the study's configuration is bound to
every checkpoint, and an OUT whose rows were trained with other options is
refused, naming them.

This module is the command; the rows and the study configuration are records in
:mod:`experiments.density_config`, a row is trained through
:func:`vae_jax.runs.resumable_fit` in :mod:`experiments.density_train`, and the
tables and figures are made in :mod:`experiments.density_report`.

A row is labelled "protocol" only when it ran the protocol to the end: the
full sizes (no --train-size/--test-size/--max-minutes, 5000 samples, at most
2000 epochs, patience 50) and training stopped by early stopping or after
2000 epochs. Any other row says what it was (epochs, stop reason, test
images, samples).

Examples:
  python -m experiments.density_table --out runs/density_protocol             # the table
  python -m experiments.density_table --out runs/density_protocol --resume    # continue it
  python -m experiments.density_table --out runs/density_protocol --models vamp_warmup iwae5
  python -m experiments.density_table --out runs/q --quick                    # seconds (tests)
  python -m experiments.density_table --out runs/density_protocol --interim vae   # best so far, while it trains
  python -m experiments.density_table --out runs/density_protocol --snapshot docs/results/density_table \
      --page docs/density_table.md     # state of every row into the docs, finished or not

Each test evaluation (final or interim) also saves its per-image log p(x);
the snapshot pairs the rows over the shared test images (mean difference and
its paired standard error, ``paired_differences``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from experiments import _common
from experiments._density_io import _reachable, load, tfds_ready  # noqa: F401  (re-exported for tests)
from experiments.density_config import (DEFAULT_MODELS, NETS, ROWS, Row, StudyConfig,  # noqa: F401
                                        make_config, model_config, with_images)
from experiments.density_report import (REFERENCES, markdown_table, paired_differences, row_label,  # noqa: F401
                                        snapshot, state_table, write_table)
from experiments.density_train import (EpochTimer, Status, evaluate_row, interim, row_setup,  # noqa: F401
                                       run_model, write_json)
from vae_jax import runs, scale
from vae_jax.checkpoints import changed_fields

def build_parser() -> argparse.ArgumentParser:
    p = _common.parser(__doc__)
    p.add_argument("--dataset", choices=sorted(NETS), default="fashion_mnist")
    p.add_argument("--models", nargs="+", choices=sorted(ROWS), default=None,
                   help=f"rows to train in this process, in order (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--resume", action="store_true", help="continue every unfinished model of OUT from its latest "
                   "checkpoint and skip finished ones (without it, an OUT that holds checkpoints is an error)")
    p.add_argument("--architecture", choices=["gated_mlp", "mlp"], default="gated_mlp",
                   help="gated dense layers (the authors', default) or plain ReLU layers")
    p.add_argument("--epochs", type=int, help="maximum epochs per model (2000)")
    p.add_argument("--patience", type=int, help="stop after this many epochs without a better validation "
                   "value, counted after the warm-up (50)")
    p.add_argument("--warmup-epochs", type=int, help="KL warm-up length of the *_warmup rows (100)")
    p.add_argument("--num-components", type=int, help="VampPrior pseudo-inputs K (500)")
    p.add_argument("--max-minutes", type=float, help="stop training a model after this many minutes of this "
                   "process and evaluate it (a reduced row)")
    p.add_argument("--num-samples", type=int, help="importance samples per test image (5000)")
    p.add_argument("--test-size", type=int, help="evaluate the first N test images only")
    p.add_argument("--train-size", type=int, help="train on the first N training images only")
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--chunk-size", type=int, default=500, help="importance samples decoded at once")
    p.add_argument("--eval-batch-size", type=int, default=50, help="test images per compiled log p(x) call")
    p.add_argument("--tfds-data-dir", default=None, help="tensorflow-datasets folder for --dataset mnist")
    p.add_argument("--devices", choices=scale.DEVICES, default=None, help="'one' device (default) or 'all': "
                   "data-parallel over every local device (as vae-jax train; bound to the checkpoints)")
    p.add_argument("--data-source", choices=scale.DATA_SOURCES, default=None, help="'memory' (default) or 'disk': "
                   "each row's training images written once to OUT/models/NAME/train_images.npy and streamed "
                   "(as vae-jax train; bound to the checkpoints)")
    p.add_argument("--track", choices=scale.TRACKS, default=None, help="'tensorboard' (each row's epochs and "
                   "images in OUT/models/NAME/tensorboard; the default, 'none' with --quick) or 'none'; may change "
                   "on --resume")
    p.add_argument("--snapshot", type=Path, default=None, metavar="DEST", help="train nothing: copy each finished "
                   "model's result.json and, for unfinished ones, a partial status (epochs so far, best validation "
                   "value, history, resume command) from OUT into DEST (e.g. docs/results/density_table)")
    p.add_argument("--page", type=Path, default=None, help="with --snapshot: rewrite the '<!-- state -->' table "
                   "(and the '<!-- pairs -->' table of paired differences, if any) of this Markdown page, e.g. "
                   "docs/density_table.md")
    p.add_argument("--interim", nargs="+", choices=sorted(ROWS), default=None, metavar="NAME",
                   help="train nothing: evaluate the best checkpoint so far of these unfinished models of OUT "
                        "(test ELBO and log p(x), with the run's settings; --num-samples / --test-size shrink it) "
                        "beside the process that trains them, into OUT/models/NAME/interim.json (labelled interim, "
                        "never a table row; --snapshot copies it)")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the study (see the module docstring); returns the rows trained or found finished."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.page is not None and args.snapshot is None:
        parser.error("--page rewrites a page from a snapshot: give --snapshot DEST too")
    if args.snapshot is not None:
        print("snapshot of", snapshot(args.out, args.snapshot, args.page))
        return []
    command = f"python -m experiments.density_table {' '.join(shlex.quote(a) for a in argv)}"
    if args.interim is not None:
        saved = args.out / "models" / "config.json"
        if not saved.is_file():
            raise SystemExit(f"{args.out} holds no run ({saved} is missing).")
        cfg = StudyConfig.from_dict(json.loads(saved.read_text()))
        return [interim(name, cfg, args.out, args, command=command) for name in args.interim]
    return train_rows(args, make_config(args), command=command)


def train_rows(args: argparse.Namespace, cfg: StudyConfig, *, command: str) -> list[dict]:
    """Trains (or with ``--resume`` continues or skips) every row of ``--models`` in ``--out``; rewrites the table
    after each.

    Raises:
      SystemExit: ``--resume`` of a missing ``--out``, or ``--out`` run with another configuration.
    """
    out = args.out
    if args.resume and not out.is_dir():
        raise SystemExit(f"--resume needs a run, and there is no folder {str(out)!r}; check the path, "
                         "or start the study without --resume.")
    _check_out(out)
    resume_command = command if args.resume else f"{command} --resume"
    data = load(cfg, args)
    cfg = with_images(cfg, *map(len, data))
    _check_saved_config(out, cfg)
    rows, track = [], _common.resolve_defaults(args, _common.TRACK_DEFAULTS)["track"]
    for name in args.models or DEFAULT_MODELS:
        try:
            rows.append(run_model(name, cfg, data, out, resume=args.resume, command=command,
                                  resume_command=resume_command, progress=not args.no_progress, track=track))
        except runs.RunLockedError as e:  # another process trains it: go on with the next row
            print(f"{name}: skipped: {e}", flush=True)
            continue
        print(write_table(out, cfg.dataset), flush=True)
    return rows


def _check_out(out: Path) -> None:
    """Refuses a folder that holds files no density-table run wrote (they would be overwritten)."""
    if out.is_dir() and any(out.iterdir()) and not (out / "models").is_dir():
        raise SystemExit(f"--out {str(out)!r} holds files that no density-table run wrote; choose an empty or new "
                         "folder (nothing was written).")


def _check_saved_config(out: Path, cfg: StudyConfig) -> None:
    """Saves ``cfg`` as ``OUT/models/config.json``; refuses when a row of ``out`` was trained under another one.

    A saved configuration that no row has a checkpoint or result of (a run that failed at once, say on a
    bad option) is replaced, so that it never blocks the corrected command.
    """
    saved, now = out / "models" / "config.json", json.loads(json.dumps(cfg.to_dict()))
    if saved.is_file():
        previous = json.loads(saved.read_text())
        trained = [name for name in ROWS if (out / "models" / name / "result.json").is_file()
                   or runs.checkpoint_epochs(out / "models" / name)]
        if previous != now and trained:
            raise SystemExit(f"{out} was run with another configuration ({saved}: "
                             f"{', '.join(changed_fields(previous, now))}); use the same flags or another --out.")
        if previous == now:
            return
    saved.parent.mkdir(parents=True, exist_ok=True)
    write_json(saved, now)


if __name__ == "__main__":
    main()
