"""Conditional VAE on Fashion-MNIST: class-conditional samples and test log p(x | y) beside a VAE's log p(x).

A conditional VAE (q(z | x, y), p(x | z, y), p(z) = N(0, I); the label one-hot
at the input of both MLPs) and an unconditional VAE with the same hidden
widths, latent size, data, seed and training budget (Adam, dynamic
binarisation) are compared on one seeded binarisation of the test images:

* ``log p(x | y)`` of the conditional VAE with the true label and ``log p(x)``
  of the VAE, both importance sampled (``--num-importance`` samples per image);
* the conditional model's own ``log p(x) = log sum_c p(c) p(x | c)`` with the
  uniform ``p(c) = 1/10``: every class's ``log p(x | c)`` importance sampled with
  ``--class-importance`` samples, so the two models are also compared on the
  same quantity; and the classifier it implies, ``argmax_c p(x | c)``.

``log p(x | y) - log p(x)`` is the information the label adds about the image;
for one model it is ``log p(y | x) + log 10 <= log 10 = 2.30`` nats.

A second conditional VAE (``--priors learned``) learns the prior p(z | y) (one
diagonal Gaussian per class) instead of N(0, I); its samples draw z from the
class's own Gaussian.

Writes ``samples.png`` (one row per class: decoder means of z ~ N(0, I)),
``samples_learned_prior.png`` (z ~ p(z | y), with the learned prior), ``vae_samples.png``,
``results.json`` and ``config.json``. Finished models'
numbers are kept in ``OUT/parts`` and reused by the same command.

``--devices all`` trains every model data-parallel over every local device
(the one-device numbers to float32 rounding; pieces made so are refused by a
run on one device); ``--track tensorboard`` (the default at full size) writes
each model's epochs (scalars) to ``tensorboard/conditional``,
``tensorboard/conditional_learned_prior`` and ``tensorboard/vae`` (docs/scale.md).

Size: 20000 training images, 20 epochs, MLP 784-256-128-16 (the conditional
model's first layers also take the 10 one-hot inputs), 1000 test images, 500
importance samples (100 per class for the sum over labels). ``--quick``: 200
images, 1 epoch, MLP 784-32-16, the N(0, I) prior only, 20 test images, 8 samples, 3 samples per class.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _common
from vae_jax import conditional, evaluation, models, plotting
from vae_jax import data as vdata

PROG = "experiments.conditional"
NUM_CLASSES = 10
PRIORS = {"standard": ("conditional", "cvae", "samples.png", "N(0, I)"),
          "learned": ("conditional_learned_prior", "cvae_learned_prior", "samples_learned_prior.png", "p(z | y)")}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The study's options, resolved."""

    priors: tuple[str, ...]
    hidden_sizes: tuple[int, ...]
    latent_dim: int
    train_size: int
    eval_size: int
    num_importance: int
    class_importance: int
    samples_per_class: int

    def piece_options(self) -> dict:
        """What every piece depends on (all options but the output folder, the progress bars and which priors;
        ``devices`` only when ``"all"``, never ``track``, as :meth:`stored_scale_options` says)."""
        skip = ("out", "progress", "priors", "devices", "track")
        return {**{k: v for k, v in self.to_json().items() if k not in skip}, **self.stored_scale_options()}


def _log_marginal(cfg: Config, model, params, data, key, num_samples: int, desc: str):
    # batches of at most eval_size images: log p(x | y) and the ten log p(x | c) share one compilation
    return evaluation.log_marginal(model, params, data, key, num_samples=num_samples,
                                   chunk_size=min(num_samples, 250), batch_size=min(100, cfg.eval_size),
                                   progress=cfg.progress, desc=desc)


def vae_piece(cfg: Config, data: dict, key) -> tuple[dict, dict]:
    """The unconditional VAE: trained, ``log p(x)`` and ELBO of the binarised test images, prior samples."""
    model = models.build_model(models.ModelConfig(latent_dim=cfg.latent_dim, hidden_sizes=cfg.hidden_sizes),
                               data["train"].shape[1:])
    state, history, seconds = _common.train(model, data["train"], epochs=cfg.epochs, batch_size=cfg.batch_size,
                                            learning_rate=cfg.learning_rate, seed=cfg.seed, dynamic_binarization=True,
                                            progress=cfg.progress, desc="vae", beta=1.0, **_common.scale_kwargs(cfg))
    k_elbo, k_ll, k_draw = jax.random.split(key, 3)
    test = data["test"]
    elbo = evaluation.evaluate(model.objective, state.params, test, k_elbo, hparams={"beta": 1.0})
    log_p = _log_marginal(cfg, model, state.params, test, k_ll, cfg.num_importance, "log p(x) vae")
    value = {"log_px": log_p.mean, "log_px_stderr": log_p.stderr, "elbo": elbo["elbo"], "kl": elbo["kl"],
             "train_seconds": seconds, "history": history}
    samples = model.sample(state.params, k_draw, NUM_CLASSES * cfg.samples_per_class)
    return value, {"log_px": log_p.values, "samples": np.asarray(samples)}


def cvae_piece(cfg: Config, data: dict, key, *, learned_prior: bool = False) -> tuple[dict, dict]:
    """A conditional VAE (prior N(0, I), or a learned p(z | y): one Gaussian per class): trained, ``log p(x | y)``,
    ELBO, the summed-out ``log p(x)``, samples per class."""
    model = conditional.conditional_vae(data["train"].shape[1:], latent_dim=cfg.latent_dim, num_classes=NUM_CLASSES,
                                        hidden_sizes=cfg.hidden_sizes, learned_prior=learned_prior)
    state, history, seconds = _common.train(model, (data["train"], data["train_labels"]), epochs=cfg.epochs,
                                            batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=cfg.seed,
                                            dynamic_binarization=True, progress=cfg.progress,
                                            desc=PRIORS["learned" if learned_prior else "standard"][0], beta=1.0,
                                            **_common.scale_kwargs(cfg))
    k_elbo, k_ll, k_classes, k_draw = jax.random.split(key, 4)
    test, labels = data["test"], data["test_labels"]
    elbo = evaluation.evaluate(model.objective, state.params, (test, labels), k_elbo, hparams={"beta": 1.0})
    log_p = _log_marginal(cfg, model, state.params, (test, labels), k_ll, cfg.num_importance, "log p(x|y)")
    every = (np.repeat(test, NUM_CLASSES, axis=0), np.tile(np.arange(NUM_CLASSES, dtype=np.int32), len(test)))
    per_class = _log_marginal(cfg, model, state.params, every, k_classes, cfg.class_importance, "log p(x|c), all c")
    per_class = per_class.values.reshape(len(test), NUM_CLASSES)
    log_px = jax.scipy.special.logsumexp(per_class, axis=1) - math.log(NUM_CLASSES)
    value = {"log_px_given_y": log_p.mean, "log_px_given_y_stderr": log_p.stderr, "elbo": elbo["elbo"],
             "kl": elbo["kl"], "log_px_summed": float(np.mean(log_px)),
             "log_px_summed_stderr": float(np.std(log_px, ddof=1) / math.sqrt(len(log_px))),
             "implied_classifier_error": float(np.mean(np.argmax(per_class, axis=1) != labels)),
             "train_seconds": seconds, "history": history}
    shown = jnp.repeat(jnp.arange(NUM_CLASSES), cfg.samples_per_class)
    samples = model.sample(state.params, k_draw, shown)
    return value, {"log_px_given_y": log_p.values, "log_px_given_class": per_class, "log_px_summed": np.asarray(log_px),
                   "samples": np.asarray(samples)}


OPTIONS = (
    _common.Option("--priors", str, None, "priors of the conditional VAEs, of standard (N(0, I)) and learned "
                   "(p(z | y)) (default both; quick standard)", "+"),
    _common.Option("--hidden-sizes", _common.positive_int, None,
                   "MLP encoder widths, reversed for the decoder (default 256 128, quick 32)", "+"),
    _common.Option("--latent-dim", _common.positive_int, 16, "size of z (default 16)"),
    _common.Option("--train-size", _common.positive_int, 20000, "training images used (default 20000)"),
    _common.Option("--eval-size", _common.positive_int, None, "test images scored (default 1000, quick 20)"),
    _common.Option("--num-importance", _common.positive_int, None,
                   "importance samples of log p(x | y) and the VAE's log p(x) (default 500, quick 8)"),
    _common.Option("--class-importance", _common.positive_int, None,
                   "importance samples of each log p(x | c) summed over the classes (default 100, quick 8)"),
    _common.Option("--samples-per-class", _common.positive_int, None,
                   "samples in each class's row (default 10, quick 3)"))


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a :class:`Config` (``--quick`` and the defaults resolved)."""
    cfg = _common.parse_study(Config, __doc__, PROG, argv, options=OPTIONS, epochs=20, quick_epochs=1,
                              defaults={"priors": (["standard"], list(PRIORS)),
                                        "hidden_sizes": ([32], [256, 128]), "eval_size": (20, 1000),
                                        "num_importance": (8, 500),
                                        "class_importance": (8, 100), "samples_per_class": (3, 10)})
    if set(cfg.priors) - set(PRIORS) or len(set(cfg.priors)) < len(cfg.priors):
        raise ValueError(f"--priors takes distinct names of {', '.join(PRIORS)}; got {' '.join(cfg.priors)}.")
    return cfg


def study_data(cfg: Config) -> dict:
    """Training images and labels, and one seeded binarisation of the test images with their labels."""
    ds = _common.load_data(cfg, quick_train=200, quick_test=cfg.eval_size)
    n = min(cfg.eval_size, len(ds.test.images))
    return {"train": ds.train.images[:cfg.train_size], "train_labels": ds.train.labels[:cfg.train_size].astype(np.int32),
            "test": vdata.binarize_static(ds.test.images[:n], seed=cfg.seed),
            "test_labels": ds.test.labels[:n].astype(np.int32)}


def save_figures(cfg: Config, conditionals: dict, vae: dict) -> None:
    """The class-conditional grids (one row per class) of the conditional VAEs and the VAE's samples."""
    per = cfg.samples_per_class
    for which, (_, arrays) in conditionals.items():
        _, _, name, prior = PRIORS[which]
        rows = {label: arrays["samples"][c * per:(c + 1) * per]
                for c, label in enumerate(vdata.FASHION_MNIST_CLASSES)}
        plotting.save_image_rows(rows, cfg.out / name,
                                 title=f"conditional VAE: means of p(x | z, y), z ~ {prior}, one row per class y")
    plotting.save_image_grid(vae["samples"], cfg.out / "vae_samples.png", ncols=per,
                             title="unconditional VAE: means of p(x | z), z ~ N(0, I)")


def run(cfg: Config) -> dict:
    """Trains and scores what the parts folder lacks; writes the figures and the JSON files."""
    start, load_before = time.perf_counter(), list(os.getloadavg())
    parts = _common.Parts(cfg.out / "parts", resume=True)
    data = study_data(cfg)
    key = jax.random.key(cfg.seed)
    conditionals = {prior: _common.computed_piece(
        parts, PRIORS[prior][1], cfg.piece_options(),
        lambda prior=prior: cvae_piece(cfg, data, jax.random.fold_in(key, 1 if prior == "standard" else 3),
                                       learned_prior=prior == "learned"))
        for prior in PRIORS if prior in cfg.priors}
    vae, vae_arrays = _common.computed_piece(parts, "vae", cfg.piece_options(),
                                             lambda: vae_piece(cfg, data, jax.random.fold_in(key, 2)))
    save_figures(cfg, conditionals, vae_arrays)
    differences = {}
    for prior, (_, arrays) in conditionals.items():
        name = PRIORS[prior][0]
        for quantity in ("log_px_given_y", "log_px_summed"):
            differences[f"{name}: {quantity} - vae log_px"] = paired(arrays[quantity] - vae_arrays["log_px"])
    results = {"models": {**{PRIORS[prior][0]: value for prior, (value, _) in conditionals.items()}, "vae": vae},
               "paired_differences": differences,
               "log_num_classes": math.log(NUM_CLASSES), "train_size": len(data["train"]), "eval_size": len(data["test"]),
               "units": "nats per binarised test image", "wall_seconds_this_call": time.perf_counter() - start,
               "load_average_before": load_before, "load_average_after": list(os.getloadavg())}
    _common.write_outputs(cfg.out, config=cfg, results=results)
    return results


def paired(difference: np.ndarray) -> dict:
    """Mean and standard error of per-image differences (the same test images)."""
    return {"mean": float(difference.mean()),
            "paired_stderr": float(difference.std(ddof=1) / math.sqrt(len(difference)))}


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
