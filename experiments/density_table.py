"""Density table: test log p(x) of an MLP VAE and the same net trained as IWAE (k = 5, 50).

Protocol of the published Fashion-MNIST density results (VampPrior, Exemplar
VAE): 50000 training / 10000 validation images split from the training set
(fixed permutation), training images binarised dynamically (a fresh Bernoulli
draw in every step), validation and test images binarised once with fixed
seeds, early stopping on the validation objective (ELBO for the VAE, the
k-sample IWAE bound for IWAE-k, as each model is trained), and test log p(x)
from 5000 importance samples per image (``vae_jax.evaluation.log_marginal``).
Net: MLP 784-300-300-40 (ReLU), Gaussian prior, Bernoulli decoder, Adam 5e-4,
batches of 100, at most 2000 epochs, patience 50 (VampPrior's code defaults;
unlike it, we use plain dense layers and no KL warm-up).

Per model: test ELBO, test log p(x) (mean and standard error over images),
active units (Var_x E_q[z_u] > 0.01), epochs, training time. Writes
``results.json`` (numbers, config and exact command), ``config.json``,
``table.md`` and ``validation.png`` (validation objective per epoch).

``--dataset mnist``: dynamically binarised MNIST through tensorflow-datasets,
MLP 784-200-200-50 (tanh) as in the IWAE paper (VAE -86.76, IWAE k=50 -84.78).
It needs the prepared dataset, its cached downloads or network access; without
them it stops at once with a message instead of letting TFDS hang.

Sizes on this 2-core CPU, measured while it was shared (load average 9-12):
one epoch of 50000 images takes 5-12 s (VAE), 35-50 s (IWAE k=5) and 5-7 min
(IWAE k=50); log p(x) from 1000 samples of 1000 images 75-100 s per model, so
5000 samples of all 10000 images about 1-1.5 h per model. The full default run
(up to 2000 epochs per model, patience 50) therefore takes days, up to about
11 days if no model stops early, almost all of it IWAE k=50. ``--budget``
(at most 5 minutes of training per model, then the first 1000 test images with
1000 importance samples) took 22 minutes. ``--quick`` (a small net, 500
images) takes under a minute, mostly compilation.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from experiments import _common
from vae_jax import data as vdata
from vae_jax import evaluation, models, plotting, training

REFERENCES = {
    "fashion_mnist": {"VAE, Gaussian prior (published)": -228.70, "VampPrior (published)": -227.35,
                      "Exemplar VAE (published)": -226.75},
    "mnist": {"VAE k=1 (IWAE paper)": -86.76, "IWAE k=50 (IWAE paper)": -84.78},
}
NETS = {"fashion_mnist": dict(latent_dim=40, hidden_sizes=(300, 300), activation="relu"),
        "mnist": dict(latent_dim=50, hidden_sizes=(200, 200), activation="tanh")}
SPLIT_SEED, VALIDATION_BINARIZATION_SEED, TEST_BINARIZATION_SEED = 0, 1, 2
SIZES = {  # None: no limit; every value can be overridden by its flag
    "full": dict(train_size=None, test_size=None, epochs=2000, patience=50, max_minutes=None, num_samples=5000),
    "budget": dict(train_size=None, test_size=1000, epochs=2000, patience=50, max_minutes=5.0, num_samples=1000),
    "quick": dict(train_size=500, test_size=50, epochs=2, patience=50, max_minutes=None, num_samples=50),
}
QUICK_NET = dict(latent_dim=8, hidden_sizes=(64,))


def build_parser() -> argparse.ArgumentParser:
    p = _common.parser(__doc__)
    p.add_argument("--dataset", choices=sorted(NETS), default="fashion_mnist")
    p.add_argument("--budget", action="store_true", help="medium size run here: 5 min training per model, "
                   "1000 importance samples on 1000 test images")
    p.add_argument("--iwae-k", type=int, nargs="*", default=None, help="IWAE sample counts (default 5 50; "
                   "--quick: 2); a VAE is always trained")
    p.add_argument("--epochs", type=int, help="maximum epochs per model")
    p.add_argument("--patience", type=int, help="stop after this many epochs without a better validation value")
    p.add_argument("--max-minutes", type=float, help="stop training a model after this many minutes")
    p.add_argument("--num-samples", type=int, help="importance samples per test image")
    p.add_argument("--test-size", type=int, help="evaluate the first N test images only")
    p.add_argument("--train-size", type=int, help="train on the first N training images only")
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--chunk-size", type=int, default=500, help="importance samples decoded at once")
    p.add_argument("--eval-batch-size", type=int, default=50, help="test images per compiled log p(x) call")
    p.add_argument("--tfds-data-dir", default=None, help="tensorflow-datasets folder for --dataset mnist "
                   "(default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    return p


def make_config(args: argparse.Namespace) -> dict:
    """Everything the run depends on, from the size preset and the flags that override it."""
    size = "quick" if args.quick else "budget" if args.budget else "full"
    cfg = dict(SIZES[size], size=size)
    for name in cfg:
        if getattr(args, name, None) is not None:
            cfg[name] = getattr(args, name)
    net = dict(NETS[args.dataset], **(QUICK_NET if args.quick else {}))
    iwae_k = args.iwae_k if args.iwae_k is not None else ([2] if args.quick else [5, 50])
    if any(k < 1 for k in iwae_k) or cfg["epochs"] < 1 or cfg["patience"] < 1 or cfg["num_samples"] < 1:
        raise ValueError("--iwae-k, --epochs, --patience and --num-samples must be >= 1.")
    cfg.update(dataset=args.dataset, net=net, iwae_k=iwae_k, learning_rate=args.learning_rate,
               batch_size=args.batch_size, chunk_size=args.chunk_size, eval_batch_size=args.eval_batch_size,
               seed=args.seed, validation_size=10000 if size != "quick" else 200, split_seed=SPLIT_SEED,
               validation_binarization_seed=VALIDATION_BINARIZATION_SEED,
               test_binarization_seed=TEST_BINARIZATION_SEED, binarization="dynamic (train), static (validation, test)")
    cfg["full_protocol"] = (size == "full" and cfg["train_size"] is None and cfg["test_size"] is None
                            and cfg["num_samples"] >= 5000 and cfg["max_minutes"] is None)
    return cfg


def _reachable(host: str, timeout: float, port: int = 443) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (DNS included)."""
    opened = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # a hanging DNS lookup is abandoned
    thread.start()
    thread.join(timeout)
    return bool(opened)


def tfds_ready(name: str, data_dir: str | None = None, *, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether ``tfds.load(name)`` can finish here instead of hanging, without calling it.

    True if the dataset is prepared under ``data_dir`` (``NAME/VERSION/dataset_info.json``),
    if every file it downloads is in TFDS's download cache (``downloads/<get_dl_fname>``
    with its ``.INFO``, or ``downloads/manual/<filename>``), or if the download host
    answers within ``timeout`` seconds.

    Returns:
      ``(ready, message)``: what was found, or why it cannot run and how to fix it.
    """
    try:
        import tensorflow_datasets as tfds
        from tensorflow_datasets.core.download import resource
    except ImportError:
        return False, "tensorflow-datasets is not installed (pip install -e '.[tfds]')."
    root = Path(data_dir or os.environ.get("TFDS_DATA_DIR") or tfds.core.constants.DATA_DIR).expanduser()
    builder = tfds.builder_cls(name)
    prepared = root / name / str(builder.VERSION)
    if (prepared / "dataset_info.json").is_file():
        return True, f"prepared in {prepared}"
    urls = builder.url_infos or {}
    downloads = root / "downloads"

    def cached(url, info):
        fname = resource.get_dl_fname(url, info.checksum)
        in_cache = [(folder / fname).is_file() and (folder / f"{fname}.INFO").is_file()
                    for folder in (downloads, downloads / name)]
        return any(in_cache) or (downloads / "manual" / info.filename).is_file()

    if urls and all(cached(url, info) for url, info in urls.items()):
        return True, f"downloads cached in {downloads}"
    host = urlparse(next(iter(urls))).hostname if urls else "storage.googleapis.com"
    if _reachable(host, timeout):
        return True, f"{host} is reachable: TFDS will download {name}"
    return False, (f"{name} is not prepared in {prepared}, its downloads are not cached in {downloads}, and "
                   f"{host} did not answer within {timeout:g} s (no network). On a machine with network access run "
                   f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{name}', data_dir='DIR')\"`, then "
                   f"copy DIR here and pass --tfds-data-dir DIR.")


def load(cfg: dict, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train (grey levels), validation and test (binarised once) images, ``[N, 28, 28, 1]``."""
    if cfg["dataset"] == "mnist":
        ready, message = tfds_ready("mnist", args.tfds_data_dir)
        if not ready:
            raise SystemExit(f"--dataset mnist cannot run here: {message}")
        ds = vdata.load_dataset("mnist", validation_size=cfg["validation_size"], seed=cfg["split_seed"],
                                data_dir=args.tfds_data_dir)
    else:
        ds = vdata.load_dataset("fashion_mnist", validation_size=cfg["validation_size"], seed=cfg["split_seed"],
                                data_dir=args.data_dir)
    train = ds.train.images[: cfg["train_size"]]
    validation = vdata.binarize_static(ds.validation.images, cfg["validation_binarization_seed"])
    test = vdata.binarize_static(ds.test.images, cfg["test_binarization_seed"])[: cfg["test_size"]]
    return train, validation, test


def train_model(model, objective, train, validation, key, cfg, *, progress=True, desc="train"):
    """Adam with dynamic binarisation and early stopping on the validation ``objective``.

    Returns:
      ``(best_params, info)``: parameters of the best validation epoch and a dict
      with the per-epoch history, epochs run, best epoch, why it stopped and seconds.
    """
    key_init, key_fit, key_val = jax.random.split(key, 3)
    state = training.create_train_state(model, key_init, train[0], optax.adam(cfg["learning_rate"]))
    step = training.make_train_step(objective, dynamic_binarization=True)
    data = jnp.asarray(train)
    best_value, best_epoch, best_params, history, stop = -np.inf, -1, None, [], "max epochs"
    start = time.perf_counter()
    bar = tqdm(range(cfg["epochs"]), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        state, metrics = training.train_epoch(step, state, data, jax.random.fold_in(key_fit, epoch),
                                              batch_size=cfg["batch_size"])
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            raise FloatingPointError(f"{desc}: non-finite loss {loss} in epoch {epoch}; lower the learning rate.")
        value = training.evaluate(objective, state.params, validation, key_val)["objective"]  # same draws each epoch
        history.append({"epoch": epoch + 1, "train_objective": -loss, "validation_objective": value})
        if value > best_value:
            best_value, best_epoch, best_params = value, epoch + 1, jax.device_get(state.params)
        bar.set_postfix(val=f"{value:.2f}", best=f"{best_value:.2f}")
        minutes = (time.perf_counter() - start) / 60
        if epoch + 1 - best_epoch >= cfg["patience"]:
            stop = "early stopping"
        elif cfg["max_minutes"] is not None and minutes >= cfg["max_minutes"]:
            stop = "time budget"
        else:
            continue
        break
    info = dict(epochs=len(history), best_epoch=best_epoch, stopped_by=stop, best_validation_objective=best_value,
                train_seconds=time.perf_counter() - start, history=history)
    return best_params, info


def run_model(name, k, model, train, validation, test, key, cfg, *, progress):
    """Trains one model (``k = 1``: the ELBO, else the IWAE-k bound) and measures it on ``test``."""
    objective = model.objective if k == 1 else functools.partial(model.iwae_objective, num_samples=k)
    key_train, key_elbo, key_px = jax.random.split(key, 3)
    params, info = train_model(model, objective, train, validation, key_train, cfg, progress=progress, desc=name)
    start = time.perf_counter()
    test_elbo = training.evaluate(model.objective, params, test, key_elbo)["elbo"]
    log_px = evaluation.log_marginal(model, params, test, key_px, num_samples=cfg["num_samples"],
                                     chunk_size=cfg["chunk_size"], batch_size=cfg["eval_batch_size"],
                                     progress=progress, desc=f"{name} log p(x)")
    return dict(name=name, training_objective="elbo" if k == 1 else f"iwae k={k}", k=k, test_elbo=test_elbo,
                test_log_px_mean=log_px.mean, test_log_px_stderr=log_px.stderr,
                active_units=evaluation.active_units(model, params, test), latent_dim=model.latent_dim,
                eval_seconds=time.perf_counter() - start, **info)


def markdown_table(results: dict) -> str:
    """Our rows beside the published references, as a Markdown table."""
    lines = ["| model | test log p(x) (nats) | test ELBO | active units | epochs | training time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results["models"]:
        lines.append(f"| {r['name']} (ours, {results['config']['size']} run) | {r['test_log_px_mean']:.2f} "
                     f"± {r['test_log_px_stderr']:.2f} | {r['test_elbo']:.2f} "
                     f"| {r['active_units']}/{r['latent_dim']} | {r['epochs']} (best {r['best_epoch']}, "
                     f"{r['stopped_by']}) | {r['train_seconds'] / 60:.1f} min |")
    for name, value in results["references"].items():
        lines.append(f"| {name} | {value:.2f} | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    cfg = make_config(args)
    train, validation, test = load(cfg, args)
    cfg.update(train_images=len(train), validation_images=len(validation), test_images=len(test))
    model = models.build_model(models.ModelConfig(**cfg["net"]), train.shape[1:])
    key = jax.random.key(cfg["seed"])
    load_before = os.getloadavg()
    rows = [run_model("VAE" if k == 1 else f"IWAE k={k}", k, model, train, validation, test,
                      jax.random.fold_in(key, k), cfg, progress=not args.no_progress)
            for k in [1, *cfg["iwae_k"]]]
    command = "python -m experiments.density_table " + " ".join(shlex.quote(a) for a in argv)
    results = dict(command=command, config=cfg, references=REFERENCES[cfg["dataset"]], models=rows,
                   load_average_1min=[load_before[0], os.getloadavg()[0]], cpu_count=os.cpu_count(),
                   jax_backend=jax.default_backend())
    _common.write_outputs(args.out, config=cfg, results=results)
    (args.out / "table.md").write_text(markdown_table(results))
    plotting.save_curves({r["name"]: [h["validation_objective"] for h in r["history"]] for r in rows},
                         args.out / "validation.png", ylabel="validation objective (nats)",
                         title=f"{cfg['dataset']}: ELBO (VAE) / IWAE-k bound (IWAE)")
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
