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

Rows (``--models``, default all but ``iwae50``):
  vae          VAE, standard normal prior, no warm-up
  vae_warmup   VAE, KL warm-up (beta rising linearly from 0 to 1 over 100 epochs)
  vamp_warmup  VampPrior with K = 500 pseudo-inputs (init N(0.05, 0.01), clipped to
               [0, 1]), KL warm-up over 100 epochs
  iwae5        the same net trained on the IWAE bound with k = 5
  iwae50       ... with k = 50 (about 10x an iwae5 epoch: see docs/density_table.md)

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
process holds skips it, saying so, and goes on with its next row).

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
import csv
import itertools
import json
import os
import platform
import shlex
import socket
import sys
import time
import zlib
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _common
from experiments._density_io import load, tfds_ready, _reachable  # noqa: F401  (re-exported for tests)
from vae_jax import checkpoints, config, estimators, evaluation, hooks, models, plotting, training

REFERENCES = {
    "fashion_mnist": {"VAE, Gaussian prior (published)": -228.70, "VampPrior (published)": -227.35,
                      "Exemplar VAE (published)": -226.75, "HVAE, Gaussian prior (published)": -227.37,
                      "HVAE, VampPrior (published)": -226.72, "ConvHVAE, Gaussian prior (published)": -225.38,
                      "ConvHVAE, VampPrior (published)": -224.67},
    "mnist": {"VAE k=1 (IWAE paper)": -86.76, "IWAE k=50 (IWAE paper)": -84.78},
}
ROWS = {  # name: (label, prior, warm-up, IWAE k or None)
    "vae": ("VAE", "standard_normal", False, None),
    "vae_warmup": ("VAE + warm-up", "standard_normal", True, None),
    "vamp_warmup": ("VampPrior (K={K}) + warm-up", "vamp", True, None),
    "iwae5": ("IWAE k=5", "standard_normal", False, 5),
    "iwae50": ("IWAE k=50", "standard_normal", False, 50),
}
DEFAULT_MODELS = ["vae", "vae_warmup", "vamp_warmup", "iwae5"]
NETS = {"fashion_mnist": dict(latent_dim=40, hidden_sizes=(300, 300)),
        "mnist": dict(latent_dim=40, hidden_sizes=(300, 300))}
SIZES = {  # None: no limit; every value can be overridden by its flag
    "full": dict(train_size=None, test_size=None, epochs=2000, patience=50, max_minutes=None, num_samples=5000,
                 warmup_epochs=100, num_components=500),
    "quick": dict(train_size=500, test_size=50, epochs=2, patience=50, max_minutes=None, num_samples=50,
                  warmup_epochs=1, num_components=10),
}
QUICK_NET = dict(latent_dim=8, hidden_sizes=(64,))
PROTOCOL = dict(train_size=None, test_size=None, max_minutes=None, epochs=2000, patience=50, warmup_epochs=100,
                num_components=500)


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


def make_config(args: argparse.Namespace) -> dict:
    """Everything a model's numbers depend on, from the size preset and the flags that override it."""
    size = "quick" if args.quick else "full"
    cfg = dict(SIZES[size], size=size)
    for name in cfg:
        if getattr(args, name, None) is not None:
            cfg[name] = getattr(args, name)
    for name in ("epochs", "patience", "num_samples", "num_components"):
        if cfg[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {cfg[name]}.")
    if cfg["warmup_epochs"] < 0:
        raise ValueError(f"--warmup-epochs must be >= 0; got {cfg['warmup_epochs']}.")
    net = dict(NETS[args.dataset], **(QUICK_NET if args.quick else {}), architecture=args.architecture)
    cfg.update(dataset=args.dataset, net=net, learning_rate=args.learning_rate, batch_size=args.batch_size,
               chunk_size=args.chunk_size, eval_batch_size=args.eval_batch_size,
               seed=args.seed, validation_size=10000 if size != "quick" else 200, split_seed=0,
               validation_binarization_seed=1, test_binarization_seed=2,
               binarization="dynamic (train), static (validation, test)")
    cfg["full_protocol"] = (size == "full" and all(cfg[k] == v for k, v in PROTOCOL.items())
                            and cfg["num_samples"] >= 5000 and args.architecture == "gated_mlp"
                            and (cfg["learning_rate"], cfg["batch_size"]) == (5e-4, 100))
    return cfg


def model_config(cfg: dict, name: str) -> models.ModelConfig:
    _, prior, _, _ = ROWS[name]
    return models.ModelConfig(latent_dim=cfg["net"]["latent_dim"], hidden_sizes=tuple(cfg["net"]["hidden_sizes"]),
                              architecture=cfg["net"]["architecture"], prior=prior,
                              num_components=cfg["num_components"])


class Status:
    """Rewrites ``status.json`` every epoch: epochs so far, best validation value, resume command."""

    def __init__(self, path: Path, base: dict):
        self.path, self.base = path, base

    def __call__(self, epoch: int, state, history: list[dict]) -> None:
        best = max(history, key=lambda row: row["validation_objective"])
        write_json(self.path, dict(self.base, state="training", epochs=epoch, best_epoch=best["epoch"],
                                   best_validation_objective=best["validation_objective"],
                                   last_epoch_seconds=history[-1].get("seconds"), updated=time.ctime()))


class EpochTimer:
    """Adds ``seconds`` (wall clock since the previous epoch's hooks, this process) to each row."""

    def __init__(self):
        self.last = time.perf_counter()

    def __call__(self, epoch: int, state, history: list[dict]) -> None:
        now = time.perf_counter()
        history[-1]["seconds"] = now - self.last
        self.last = now


def write_json(path: Path, obj) -> None:
    """:func:`vae_jax.config.write_json` of ``obj`` made JSON-safe (numpy and JAX scalars)."""
    config.write_json(path, _common._jsonable(obj))


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


def objectives_for(model, k: int | None):
    """``(train objective, validation objective, validation hparams)`` of a row."""
    if k is None:
        return model.objective, model.objective, {"beta": 1.0}
    iwae = estimators.make_estimator("iwae", model, num_samples=k)
    return iwae, iwae, {}


def run_model(name: str, cfg: dict, data: tuple, out: Path, *, resume: bool, command: str, resume_command: str,
              progress: bool) -> dict:
    """Trains (or resumes) one row, evaluates its best checkpoint and writes ``result.json``."""
    label, prior, _, k = ROWS[name]
    label = label.format(K=cfg["num_components"])
    folder = out / "models" / name
    result_path = folder / "result.json"
    if result_path.is_file():
        if not resume:
            raise SystemExit(f"{folder} already holds a finished model; pass --resume to keep it, or another --out.")
        return json.loads(result_path.read_text())
    if (folder / "checkpoints").is_dir() and not resume:
        raise SystemExit(f"{folder} holds checkpoints; pass --resume to continue them, or another --out.")
    folder.mkdir(parents=True, exist_ok=True)
    train, validation, test = data
    model, (_, key_fit, key_val, key_test), warmup_epochs, initial = row_setup(name, cfg, train)
    objective, val_objective, val_hparams = objectives_for(model, k)
    steps_per_epoch = len(train) // cfg["batch_size"]
    state = initial
    with checkpoints.RunLock(folder), checkpoints.RunCheckpoints(folder / "checkpoints", metric="validation_objective",
                                                       create=True) as ckpt:
        history = []
        if ckpt.latest_epoch is not None:
            state, history = ckpt.restore(state, which="latest")
            print(f"{name}: resumed after epoch {len(history)}", flush=True)
        stop_hook = hooks.EarlyStopping("validation_objective", patience=cfg["patience"],
                                        count_from=warmup_epochs)
        base = dict(name=name, label=label, resume_command=resume_command, steps_per_epoch=steps_per_epoch,
                    kl_warmup_steps=warmup_epochs * steps_per_epoch)
        stop_reason = stop_hook(len(history), state, history) or ("max epochs" if len(history) >= cfg["epochs"]
                                                                  else None)
        start = time.perf_counter()
        if stop_reason is None:
            fit_hooks = [EpochTimer(), hooks.Validate(val_objective, validation, key_val, hparams=val_hparams,
                                                      same_draws=True),
                         hooks.RequireFinite("validation_objective"), hooks.Uninterrupted(
                             hooks.Checkpoint(ckpt), hooks.CSVLog(folder / "history.csv"),
                             Status(folder / "status.json", base)), stop_hook]
            if cfg["max_minutes"] is not None:
                fit_hooks.append(hooks.TimeLimit(cfg["max_minutes"]) if cfg["max_minutes"] > 0 else
                                 (lambda epoch, state, history: "time limit: 0 minutes"))
            fitted = training.fit(training.make_train_step(objective, dynamic_binarization=True), state,
                                  jnp.asarray(train), key_fit, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                                  history=history, hooks=fit_hooks, progress=progress, desc=name)
            history, stop_reason = fitted.history, fitted.stop_reason
        train_seconds = time.perf_counter() - start
        write_json(folder / "status.json", dict(base, state="evaluating", epochs=len(history),
                                                stop_reason=stop_reason, updated=time.ctime()))
        best_state, _ = ckpt.restore(initial, which="best")
        best_epoch = ckpt.best_epoch
    result = evaluate_row(name, model, best_state.params, validation, test, key_test, cfg, progress=progress,
                          values_path=folder / "test_log_px.npy")
    finished = stop_reason.startswith("early stopping") or stop_reason == "max epochs"
    result.update(label=label, prior=prior, kl_warmup_epochs=warmup_epochs, iwae_k=k, epochs=len(history),
                  best_epoch=best_epoch, stop_reason=stop_reason,
                  best_validation_objective=max(r["validation_objective"] for r in history),
                  train_seconds_this_process=train_seconds,
                  train_seconds_total=float(sum(r.get("seconds", 0.0) for r in history)),
                  protocol=bool(cfg["full_protocol"] and finished), command=command, resume_command=resume_command,
                  config=cfg, model_config=model_config(cfg, name), environment=environment(), history=history)
    write_json(result_path, result)
    write_json(folder / "status.json", dict(base, state="finished", epochs=len(history), stop_reason=stop_reason,
                                            updated=time.ctime()))
    return result


def row_setup(name: str, cfg: dict, train: np.ndarray) -> tuple:
    """``(model, keys, warmup_epochs, initial state)`` of a row; ``train`` ``[N, 28, 28, 1]``.

    ``keys`` are its four PRNG keys (init, fit, validation, test), the same
    wherever the row is trained or evaluated (so an interim evaluation uses the
    final one's draws); the initial state carries the row's warm-up and beta and
    is also the template its checkpoints are restored into.
    """
    _, _, warmup, k = ROWS[name]
    model = models.build_model(model_config(cfg, name), train.shape[1:])
    keys = jax.random.split(jax.random.fold_in(jax.random.key(cfg["seed"]), zlib.crc32(name.encode()) % (2 ** 31)), 4)
    warmup_epochs = cfg["warmup_epochs"] if warmup else 0
    state = training.create_train_state(model, keys[0], train[0], optax.adam(cfg["learning_rate"]),
                                        kl_warmup_steps=warmup_epochs * (len(train) // cfg["batch_size"]),
                                        **({"beta": 1.0} if k is None else {}))
    return model, keys, warmup_epochs, state


def evaluate_row(name, model, params, validation, test, key, cfg, *, progress, values_path: Path) -> dict:
    """Test ELBO, test log p(x) (mean, standard error), active units, seconds.

    The per-image log p(x) ``[len(test)]`` go to ``values_path`` (``.npy``): the
    rows share the test images and their draws of binarisation, so two rows'
    difference has a paired standard error (:func:`paired_differences`) far
    below either row's own.
    """
    start = time.perf_counter()
    key_elbo, key_px = jax.random.split(key)
    test_elbo = evaluation.evaluate(model.objective, params, test, key_elbo)["elbo"]
    load_before = os.getloadavg()[0]
    px_start = time.perf_counter()
    log_px = evaluation.log_marginal(model, params, test, key_px, num_samples=cfg["num_samples"],
                                     chunk_size=cfg["chunk_size"], batch_size=cfg["eval_batch_size"],
                                     progress=progress, desc=f"{name} log p(x)")
    np.save(values_path, log_px.values)
    return dict(name=name, test_elbo=test_elbo, test_log_px_mean=log_px.mean, test_log_px_stderr=log_px.stderr,
                test_images=len(test), num_samples=cfg["num_samples"],
                active_units=evaluation.active_units(model, params, test), latent_dim=model.latent_dim,
                log_px_seconds=time.perf_counter() - px_start, eval_seconds=time.perf_counter() - start,
                load_average_1min_during_log_px=[load_before, os.getloadavg()[0]],
                test_log_px_values=values_path.name)


def interim(name: str, cfg: dict, out: Path, args: argparse.Namespace, *, command: str) -> dict:
    """Evaluates the best checkpoint so far of an unfinished model, beside the process that trains it.

    The checkpoints are read under their shared lock (``read_only``), so training
    goes on. ``cfg`` is the run's saved configuration; ``--num-samples`` and
    ``--test-size`` may shrink this evaluation only. Writes
    ``OUT/models/NAME/interim.json``, labelled as what it is: NOT a row of the
    table (training had not stopped; a later checkpoint may be better).
    """
    folder = out / "models" / name
    if (folder / "result.json").is_file():
        raise SystemExit(f"{name} has finished: its test numbers are in {folder / 'result.json'}.")
    if not (folder / "checkpoints").is_dir():
        raise SystemExit(f"{name} has no checkpoints under {folder}; train it first.")
    cfg = dict(cfg, num_samples=args.num_samples or cfg["num_samples"], test_size=args.test_size or cfg["test_size"])
    train, validation, test = load(cfg, args)
    model, (*_, key_test), _, template = row_setup(name, cfg, train)  # the final evaluation's key: same draws
    with checkpoints.RunCheckpoints(folder / "checkpoints", metric="validation_objective", read_only=True) as ckpt:
        state, history = ckpt.restore(template, which="best")
        best_epoch, latest_epoch = ckpt.best_epoch, ckpt.latest_epoch
    result = evaluate_row(name, model, state.params, validation, test, key_test, cfg, progress=not args.no_progress,
                          values_path=folder / "interim_test_log_px.npy")
    result.update(state="interim", label=ROWS[name][0].format(K=cfg["num_components"]), best_epoch=best_epoch,
                  epochs_when_evaluated=latest_epoch,
                  best_validation_objective=max(r["validation_objective"] for r in history),
                  note="NOT a row of the table: training had not stopped; the best checkpoint so far",
                  command=command, environment=environment(), evaluated=time.ctime())
    write_json(folder / "interim.json", result)
    return result


def row_label(r: dict) -> str:
    if r.get("protocol"):
        return f"{r['label']}, ours (protocol)"
    return (f"{r['label']}, ours (NOT the protocol: {r['epochs']} epochs, {r['stop_reason'].split(':')[0]}, "
            f"{r['test_images']} test images, {r['num_samples']} samples)")


def markdown_table(rows: list[dict], references: dict) -> str:
    """Our finished rows (each once) beside the published references, as a Markdown table."""
    lines = ["| model | test log p(x) (nats) | test ELBO | active units | epochs (best) | training time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {row_label(r)} | {r['test_log_px_mean']:.2f} ± {r['test_log_px_stderr']:.2f} "
                     f"| {r['test_elbo']:.2f} | {r['active_units']}/{r['latent_dim']} | {r['epochs']} "
                     f"({r['best_epoch']}) | {r['train_seconds_total'] / 60:.1f} min |")
    for name, value in references.items():
        lines.append(f"| {name} | {value:.2f} | | | | |")
    return "\n".join(lines) + "\n"


def collect(out: Path) -> tuple[list[dict], list[dict]]:
    """``(finished results, statuses of unfinished models)`` found under ``out/models``, in row order."""
    finished, unfinished = [], []
    for name in ROWS:
        folder = out / "models" / name
        if (folder / "result.json").is_file():
            finished.append(json.loads((folder / "result.json").read_text()))
        elif (folder / "status.json").is_file():
            unfinished.append(json.loads((folder / "status.json").read_text()))
    return finished, unfinished


def write_table(out: Path, dataset: str) -> str:
    finished, unfinished = collect(out)
    table = markdown_table(finished, REFERENCES[dataset])
    (out / "table.md").write_text(table)
    summary = [{k: v for k, v in r.items() if k != "history"} for r in finished]
    write_json(out / "results.json", dict(models=summary, unfinished=unfinished, references=REFERENCES[dataset]))
    if finished:
        plotting.save_curves({r["label"]: [h["validation_objective"] for h in r["history"]] for r in finished},
                             out / "validation.png", ylabel="validation objective (nats)",
                             title=f"{dataset}: ELBO (VAE, VampPrior) / IWAE-k bound")
    return table


def paired_differences(out: Path) -> list[dict]:
    """Every pair of rows with per-image test log p(x), as ``mean(a - b)`` with its paired standard error.

    A row's values are its final evaluation's (``test_log_px.npy``), else its
    interim one's (``interim_test_log_px.npy``, labelled so with the epoch of
    that checkpoint). The rows share the test images and their binarisation,
    so the paired standard error ``std(a_i - b_i, ddof=1) / sqrt(N)`` is the one
    that says whether two rows differ; ``unpaired_stderr`` (the two rows'
    standard errors combined as if independent) is given beside it. Pairs
    evaluated on different numbers of test images are left out.
    """
    found = {}
    for name in ROWS:
        folder = out / "models" / name
        for source, values, meta in (("final", "test_log_px.npy", "result.json"),
                                     ("interim", "interim_test_log_px.npy", "interim.json")):
            if (folder / values).is_file() and (folder / meta).is_file():
                found[name] = (source, np.load(folder / values), json.loads((folder / meta).read_text())["best_epoch"])
                break
    pairs = []
    for (a, (source_a, va, epoch_a)), (b, (source_b, vb, epoch_b)) in itertools.combinations(found.items(), 2):
        if va.shape != vb.shape:
            continue
        n, d = len(va), va - vb
        pairs.append(dict(a=a, b=b, a_evaluation=source_a, a_best_epoch=epoch_a, b_evaluation=source_b,
                          b_best_epoch=epoch_b, test_images=n, mean_difference=float(d.mean()),
                          paired_stderr=float(d.std(ddof=1) / np.sqrt(n)),
                          unpaired_stderr=float(np.sqrt((va.var(ddof=1) + vb.var(ddof=1)) / n))))
    return pairs


def table_figure(records: list[dict], references: dict[str, float], path: Path) -> None:
    """Dot plot of test log p(x): our finished rows (filled, ± standard error), interim numbers of rows
    still training (hollow, with the checkpoint's epoch) and the published rows (grey diamonds)."""
    import matplotlib.pyplot as plt  # after vae_jax.plotting chose the backend

    points = []
    for r in records:
        if r["state"] == "finished":
            points.append((f"{r['label']}, ours", r["test_log_px_mean"], r["test_log_px_stderr"], "ours"))
        elif r.get("interim_evaluation"):
            e = r["interim_evaluation"]
            points.append((f"{r['label']}, ours: interim, epoch {e['best_epoch']}", e["test_log_px_mean"],
                           e["test_log_px_stderr"], "interim"))
    points += [(name, value, None, "published") for name, value in references.items()]
    points.sort(key=lambda point: point[1])
    style = {"ours": dict(fmt="o", color="C0"), "interim": dict(fmt="o", color="C0", mfc="white"),
             "published": dict(fmt="D", color="0.45")}
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(points) + 1.2))
    for i, (_, value, stderr, kind) in enumerate(points):
        ax.errorbar(value, i, xerr=stderr, capsize=3, **style[kind])
    ax.set_yticks(range(len(points)), [point[0] for point in points])
    ax.set_xlabel("test log p(x), nats (higher is better; bars: ± standard error over test images)")
    ax.grid(axis="x", alpha=0.3)
    plotting.save_figure(fig, path)


def snapshot(out: Path, dest: Path, page: Path | None = None) -> list[str]:
    """Copies the state of every model of ``out`` into ``dest`` (``NAME.json``), labelled
    ``"finished"`` or ``"partial"``; the partial ones carry the per-epoch history so far (from the
    CSV log) and the resume command. Draws every model's validation curve into
    ``DEST/validation.png``, the test log p(x) so far beside the published rows into
    ``DEST/table.png``, and writes :func:`paired_differences` (if any) to
    ``DEST/paired_differences.json``; with ``page``, rewrites its state table and paired
    differences (:func:`update_page`). Returns the names written."""
    dest.mkdir(parents=True, exist_ok=True)
    records, curves = [], {}
    for name in ROWS:
        folder = out / "models" / name
        if (folder / "result.json").is_file():
            record = dict(json.loads((folder / "result.json").read_text()), state="finished")
        elif (folder / "status.json").is_file():
            status = json.loads((folder / "status.json").read_text())
            record = dict(status, state="partial", stage=status.get("state"),
                          note="NOT a result: training has not finished; resume with resume_command")
            if (folder / "interim.json").is_file():
                record["interim_evaluation"] = json.loads((folder / "interim.json").read_text())
            if (folder / "history.csv").is_file():
                with open(folder / "history.csv") as f:
                    # a column that later epochs no longer log (the opt-in gradient norm) is left empty
                    record["history"] = [{k: float(v) for k, v in row.items() if v not in ("", None)}
                                         for row in csv.DictReader(f)]
        else:
            continue
        record["snapshot_time"] = time.ctime()
        write_json(dest / f"{name}.json", record)
        records.append(record)
        curves[f"{record['label']} ({record['state']})"] = [h["validation_objective"] for h in record.get("history", [])]
    if any(curves.values()):
        plotting.save_curves({k: v for k, v in curves.items() if v}, dest / "validation.png",
                             ylabel="validation objective (nats)", title="validation ELBO / IWAE bound per epoch")
    saved = out / "models" / "config.json"
    dataset = json.loads(saved.read_text())["dataset"] if saved.is_file() else "fashion_mnist"
    table_figure(records, REFERENCES[dataset], dest / "table.png")
    pairs = paired_differences(out)
    if pairs:
        write_json(dest / "paired_differences.json",
                   dict(note="mean over test images of a's log p(x) minus b's (nats), with the paired standard error; "
                             "an 'interim' evaluation is a best checkpoint of a model still training",
                        pairs=pairs, snapshot_time=time.ctime()))
    if page is not None:
        taken = f"At the snapshot of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:\n\n"
        labels = {r["name"]: r["label"] for r in records}
        update_page(page, {"state": taken + state_table(records)} | ({"pairs": pairs_table(pairs, labels)} if pairs
                                                                      else {}))
    return [r["name"] for r in records]


def _bound_name(record: dict) -> str:
    k = ROWS[record["name"]][3]
    return f" (the {k}-sample bound)" if k else ""


def state_table(records: list[dict]) -> str:
    """Markdown table of snapshot records (finished and partial rows), one line per model."""
    lines = ["| model | state | epochs so far | best validation objective (epoch) | last epoch (s) | "
             "test log p(x) (best checkpoint) | resume command |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        history = r.get("history") or [{}]
        best = max(history, key=lambda h: h.get("validation_objective", -np.inf))
        best_text = (f"{best['validation_objective']:.2f} ({int(best['epoch'])}){_bound_name(r)}"
                     if "validation_objective" in best else "none yet")
        seconds = f"{history[-1]['seconds']:.0f}" if "seconds" in history[-1] else ""
        if r["state"] == "finished":
            state, evaluation, resume = f"**finished** ({r['stop_reason'].split(':')[0]})", r, "none (finished)"
            test_text = "final: "
        else:
            state, evaluation = f"**partial** ({r.get('stage', 'training')})", r.get("interim_evaluation")
            resume, test_text = f"`{r['resume_command']}`", "interim: "
        if evaluation is None:
            test_text = "none yet"
        else:
            test_text += (f"{evaluation['test_log_px_mean']:.2f} ± {evaluation['test_log_px_stderr']:.2f}, test ELBO "
                          f"{evaluation['test_elbo']:.2f}, {evaluation['active_units']}/{evaluation['latent_dim']} "
                          f"active units (epoch {evaluation['best_epoch']})")
        lines.append(f"| {r['label']} | {state} | {r['epochs']} | {best_text} | {seconds} | {test_text} | {resume} |")
    return "\n".join(lines) + "\n"


def pairs_table(pairs: list[dict], labels: dict[str, str]) -> str:
    """Markdown table of :func:`paired_differences`."""
    lines = ["| a − b | mean difference (nats) | paired s.e. | unpaired s.e. | evaluations (best epoch) |",
             "| --- | --- | --- | --- | --- |"]
    for p in pairs:
        lines.append(f"| {labels[p['a']]} − {labels[p['b']]} | {p['mean_difference']:+.2f} | {p['paired_stderr']:.2f} "
                     f"| {p['unpaired_stderr']:.2f} | {p['a_evaluation']} ({p['a_best_epoch']}), "
                     f"{p['b_evaluation']} ({p['b_best_epoch']}) |")
    return "\n".join(lines) + "\n"


def update_page(page: Path, blocks: dict[str, str]) -> None:
    """Replaces the text between ``<!-- NAME -->`` and ``<!-- /NAME -->`` in ``page`` with ``blocks[NAME]``."""
    if not page.is_file():
        raise SystemExit(f"--page {page}: no such file.")
    text = page.read_text()
    for name, block in blocks.items():
        start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise SystemExit(f"{page} needs one '{start.strip()}' ... '{end}' block to update.")
        head, rest = text.split(start)
        text = head + start + block + end + rest.split(end, 1)[1]
    page.write_text(text)


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.page is not None and args.snapshot is None:
        parser.error("--page rewrites a page from a snapshot: give --snapshot DEST too")
    if args.snapshot is not None:
        print("snapshot of", snapshot(args.out, args.snapshot, args.page))
        return []
    out = args.out
    quoted = " ".join(shlex.quote(a) for a in argv)
    if args.interim is not None:
        saved = out / "models" / "config.json"
        if not saved.is_file():
            raise SystemExit(f"{out} holds no run ({saved} is missing).")
        return [interim(name, json.loads(saved.read_text()), out, args,
                        command=f"python -m experiments.density_table {quoted}") for name in args.interim]
    cfg = make_config(args)
    names = args.models or DEFAULT_MODELS
    out.mkdir(parents=True, exist_ok=True)
    command = f"python -m experiments.density_table {quoted}"
    resume_command = command if args.resume else f"{command} --resume"
    data = load(cfg, args)
    cfg.update(train_images=len(data[0]), validation_images=len(data[1]), test_images=len(data[2]))
    cfg["full_protocol"] = cfg["full_protocol"] and (cfg["train_images"], cfg["test_images"]) == (50000, 10000)
    saved = out / "models" / "config.json"
    if saved.is_file():
        previous = json.loads(saved.read_text())
        if previous != json.loads(json.dumps(_common._jsonable(cfg))):
            raise SystemExit(f"{out} was run with another configuration ({saved}); use the same flags or another "
                             "--out.")
    saved.parent.mkdir(parents=True, exist_ok=True)
    if not saved.is_file():
        write_json(saved, cfg)
    rows = []
    for name in names:
        try:
            rows.append(run_model(name, cfg, data, out, resume=args.resume, command=command,
                                  resume_command=resume_command, progress=not args.no_progress))
        except checkpoints.RunLockedError as e:  # another process trains it: go on with the next row
            print(f"{name}: skipped: {e}", flush=True)
            continue
        print(write_table(out, cfg["dataset"]), flush=True)
    return rows


if __name__ == "__main__":
    main()
