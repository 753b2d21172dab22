"""Semi-supervised M2 on Fashion-MNIST: test classification error with few labels, beside a classifier on the labels alone.

For every number of labels ``--labels`` and every seed, the same labelled
subset (balanced over the 10 classes, chosen by the seed:
:func:`vae_jax.family_runs.choose_labelled`) trains

* M2 (:mod:`vae_jax.semi_supervised`) on the training pool, every other label
  hidden, with the paper's terms: L(x, y) + alpha log q(y|x) for a labelled image,
  U(x) (the label summed out over the 10 classes) for an unlabelled one,
  ``alpha = 0.1 N / N_l`` per labelled example (``paper_alpha``). Every step takes
  a batch of unlabelled images and an equally large batch of labelled pairs cycled
  from the labelled set (``paired_examples``); an epoch is one pass over the
  unlabelled images. The two batch means are weighted ``s`` and ``1 - s``
  (``--weightings``): ``paper`` (``s = N_l / N``, the paper's J^alpha / N estimated
  without bias) and ``balanced`` (``s = 1/2``, as reimplementations that average
  the two batches with equal weight: each labelled example counts ``N_u / N_l``
  times). Both are trained and reported; and
* the same classifier network (MLP 784-256-10) trained on the labelled images
  alone, with cross-entropy, for ``--classifier-steps`` Adam steps.

Neither sees a validation label: both train for a fixed budget and the final
parameters are scored on the test set. M2's test error is also recorded after
every epoch (for the curve only; nothing is chosen by it). The pixels are grey
levels in [0, 1] under a Bernoulli decoder (cross-entropy, as is common for
M2), so both classifiers see the same grey images in training and testing.

Writes ``test_error.png`` (M2's test error per epoch, seeds averaged, beside the
baseline's final errors), ``results.json`` and ``config.json``. Each model
(weighting, labels, seed) is a piece in ``OUT/parts``, reused by the same command.

``--devices all`` trains M2 and the classifier data-parallel over every local
device (the one-device numbers to float32 rounding; pieces made so are refused
by a run on one device; the classifier's batch, min(100, labels), must divide
over the devices too); ``--track tensorboard`` (the default at full size) writes
each model's epochs (scalars; M2's with its ``test_error``) to
``tensorboard/m2_WEIGHTING_labelsN_seedS`` and ``tensorboard/classifier_labelsN_seedS``
(docs/scale.md).

Size: a pool of 10000 training images, 10 epochs of batch 128, MLP widths
256 and z of 16, 100 and 1000 labels, seeds 0 1 2, the full test set. ``--quick``:
a pool of 300 images, 20 labels, 1 seed, 1 epoch, MLP width 32, 20
classifier steps, 200 test images. A reduced run: the paper trains far longer on all 60000 MNIST
images.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any

import jax
import numpy as np
import optax

from experiments import _common
from vae_jax import family_runs, plotting, semi_supervised, training

PROG = "experiments.semi_supervised"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The study's options, resolved."""

    labels: tuple[int, ...]
    weightings: tuple[str, ...]
    seeds: tuple[int, ...]
    train_size: int
    eval_size: int
    hidden_sizes: tuple[int, ...]
    latent_dim: int
    classifier_steps: int

    def piece_options(self) -> dict:
        """What every piece depends on (not the output folder, progress bars, or which weightings, labels and
        seeds; ``devices`` only when ``"all"``, never ``track``, as :meth:`stored_scale_options` says)."""
        skip = ("out", "progress", "labels", "seeds", "seed", "weightings", "devices", "track")
        return {**{k: v for k, v in self.to_json().items() if k not in skip}, **self.stored_scale_options()}


@dataclasses.dataclass(frozen=True)
class LabelsOnly:
    """A classifier as a model of labelled pairs: ``objective = log q(y | x)``; aux ``correct``."""

    net: Any

    def init(self, key, x):
        return self.net.init(key, x)["params"]

    def objective(self, params, key, example):
        del key
        x, y = example
        log_q = jax.nn.log_softmax(self.net.apply({"params": params}, x))
        return log_q[y], {"correct": (jax.numpy.argmax(log_q) == y).astype(jax.numpy.float32)}


def test_error(logits_of, params, test: dict) -> tuple[float, np.ndarray]:
    """``(error, predictions)`` of the jitted ``logits_of(params, x [N, ...]) -> [N, K]`` on the test images."""
    predicted = np.asarray(logits_of(params, test["images"])).argmax(-1)
    return float(np.mean(predicted != test["labels"])), predicted.astype(np.int8)


def batched_logits(classify):
    """``classify(params, x) -> logits [K]`` of one image, jitted over a batch ``[N, ...]``."""
    return jax.jit(jax.vmap(classify, in_axes=(None, 0)))


WEIGHTINGS = ("paper", "balanced")


def labelled_share(weighting: str, num_examples: int, num_labelled: int) -> float:
    """The labelled batch mean's weight ``s`` of a ``--weightings`` name."""
    return semi_supervised.paper_share(num_examples, num_labelled) if weighting == "paper" else 0.5


def m2_piece(cfg: Config, model, step, pool: tuple, test: dict, seed: int, num_labelled: int,
             weighting: str) -> tuple[dict, dict]:
    """M2 trained on the pool's pairs with ``num_labelled`` labels kept; its test error per epoch and at the end.
    ``step``: ``make_train_step(model.objective)``, one object for every piece (one compilation)."""
    alpha = semi_supervised.paper_alpha(len(pool[0]), num_labelled)
    share = labelled_share(weighting, len(pool[0]), num_labelled)
    pairs = semi_supervised.paired_examples(*pool, seed=seed)
    key_init, key_fit = jax.random.split(jax.random.key(seed))
    state = training.create_train_state(model, key_init, pool[0][0], optax.adam(cfg.learning_rate), alpha=alpha,
                                        labelled_share=share)
    logits_of = batched_logits(model.classify)
    hook = lambda epoch, s, history: history[-1].update(test_error=test_error(logits_of, s.params, test)[0])  # noqa: E731
    state, history, seconds = _common.fit_scaled(model, state, step, pairs, key_fit, epochs=cfg.epochs,
                                                 batch_size=cfg.batch_size, hooks=[hook], progress=cfg.progress,
                                                 desc=f"m2_{weighting}_labels{num_labelled}_seed{seed}",
                                                 **_common.scale_kwargs(cfg))
    error, predicted = test_error(logits_of, state.params, test)
    return ({"test_error": error, "alpha": alpha, "labelled_share": share, "pairs_per_epoch": len(pairs[1]),
             "train_seconds": seconds, "history": history}, {"predicted": predicted})


def classifier_piece(cfg: Config, net, labelled: tuple, test: dict, seed: int) -> tuple[dict, dict]:
    """The classifier trained on the labelled pairs alone for ``classifier_steps`` steps; its test error."""
    model = LabelsOnly(net)
    batch = min(100, len(labelled[0]))
    epochs = max(1, cfg.classifier_steps // (len(labelled[0]) // batch))
    state, history, seconds = _common.train(model, labelled, epochs=epochs, batch_size=batch,
                                            learning_rate=cfg.learning_rate, seed=seed, progress=cfg.progress,
                                            desc=f"classifier_labels{len(labelled[0])}_seed{seed}",
                                            **_common.scale_kwargs(cfg))
    error, predicted = test_error(batched_logits(lambda p, x: net.apply({"params": p}, x)), state.params, test)
    return ({"test_error": error, "train_seconds": seconds, "epochs": epochs, "batch_size": batch,
             "final_train_accuracy": history[-1]["train_correct"]}, {"predicted": predicted})


def summarise(errors: list[float]) -> dict:
    """Mean, sample standard deviation (ddof 1; 0 for one seed) and the per-seed values."""
    return {"mean": statistics.mean(errors), "std_ddof1": statistics.stdev(errors) if len(errors) > 1 else 0.0,
            "per_seed": errors}


OPTIONS = (
    _common.Option("--labels", _common.positive_int, None, "numbers of labelled images (default 100 1000)", "+"),
    _common.Option("--weightings", str, None, "weightings of M2's labelled and unlabelled batch means: paper "
                   "(N_l / N) and balanced (1/2) (default both)", "+"),
    _common.Option("--seeds", _common.nonnegative_int, None, "seeds of every labels count (default 0 1 2)", "+"),
    _common.Option("--train-size", _common.positive_int, None, "training pool (default 10000, quick 300)"),
    _common.Option("--eval-size", _common.positive_int, None, "test images (default 10000, quick 200)"),
    _common.Option("--hidden-sizes", _common.positive_int, None,
                   "MLP widths of the encoder, decoder and classifier (default 256, quick 32)", "+"),
    _common.Option("--latent-dim", _common.positive_int, 16, "size of z (default 16)"),
    _common.Option("--classifier-steps", _common.positive_int, None,
                   "Adam steps of the labels-only classifier (default 2000, quick 20)"))


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a checked :class:`Config` (``--quick`` and the defaults resolved)."""
    cfg = _common.parse_study(Config, __doc__, PROG, argv, options=OPTIONS, epochs=10, quick_epochs=1,
                              defaults={"labels": ([20], [100, 1000]), "weightings": (list(WEIGHTINGS),) * 2,
                                        "seeds": ([0], [0, 1, 2]),
                                        "hidden_sizes": ([32], [256]),
                                        "train_size": (300, 10000), "eval_size": (200, 10000),
                                        "classifier_steps": (20, 2000)})
    if set(cfg.weightings) - set(WEIGHTINGS) or len(set(cfg.weightings)) < len(cfg.weightings):
        raise ValueError(f"--weightings takes distinct names of {', '.join(WEIGHTINGS)}; got "
                         f"{' '.join(cfg.weightings)}.")
    if max(cfg.labels) >= cfg.train_size:
        raise ValueError(f"--labels {max(cfg.labels)} leaves no unlabelled image in the training pool (--train-size "
                         f"{cfg.train_size}).")
    return cfg


def save_figure(cfg: Config, runs: dict) -> None:
    """M2's test error per epoch (mean over seeds, per weighting) and the baseline's final error, per labels count."""
    series = {}
    for n in cfg.labels:
        for weighting in cfg.weightings:
            curves = np.array([[r["test_error"] for r in runs[n][f"m2_{weighting}"][s]["history"]] for s in cfg.seeds])
            series[f"M2 {weighting}, {n} labels"] = 100 * curves.mean(0)
        baseline = statistics.mean(runs[n]["classifier"][s]["test_error"] for s in cfg.seeds)
        series[f"labels only, {n} (final)"] = [100 * baseline] * curves.shape[1]
    plotting.save_curves(series, cfg.out / "test_error.png", ylabel="test error (%)",
                         title=f"mean over seeds {', '.join(map(str, cfg.seeds))}")


def run(cfg: Config) -> dict:
    """Trains the (weighting, labels, seed) models the parts folder lacks; writes the figure and the JSON files."""
    start, load_before = time.perf_counter(), list(os.getloadavg())
    parts = _common.Parts(cfg.out / "parts", resume=True)
    ds = _common.load_data(cfg, quick_train=cfg.train_size, quick_test=cfg.eval_size)
    images, labels = ds.train.images[:cfg.train_size], ds.train.labels[:cfg.train_size].astype(np.int32)
    test = {"images": ds.test.images[:cfg.eval_size], "labels": ds.test.labels[:cfg.eval_size]}
    model = semi_supervised.m2(images.shape[1:], latent_dim=cfg.latent_dim, hidden_sizes=cfg.hidden_sizes,
                               classifier_sizes=cfg.hidden_sizes)
    options, step = cfg.piece_options(), training.make_train_step(model.objective)
    runs = {n: {**{f"m2_{w}": {} for w in cfg.weightings}, "classifier": {}} for n in cfg.labels}
    for weighting in cfg.weightings:  # one weighting's models all first: a partial run holds whole rows
        for n in cfg.labels:
            for seed in cfg.seeds:
                keep = family_runs.choose_labelled(labels, n, seed)
                pool = (images, np.where(keep, labels, semi_supervised.UNLABELLED).astype(np.int32))
                runs[n][f"m2_{weighting}"][seed] = _common.computed_piece(
                    parts, f"m2_{weighting}_labels{n}_seed{seed}", options,
                    lambda: m2_piece(cfg, model, step, pool, test, seed, n, weighting))[0]
                runs[n]["classifier"][seed] = _common.computed_piece(
                    parts, f"classifier_labels{n}_seed{seed}", options,
                    lambda: classifier_piece(cfg, model.classifier, (images[keep], labels[keep]), test, seed))[0]
    save_figure(cfg, runs)
    summary = {n: {kind: summarise([runs[n][kind][s]["test_error"] for s in cfg.seeds]) for kind in runs[n]}
               for n in cfg.labels}
    results = {"summary": summary, "runs": runs, "train_size": len(images), "eval_size": len(test["labels"]),
               "units": "test classification error (fraction); std over seeds with ddof = 1",
               "wall_seconds_this_call": time.perf_counter() - start, "load_average_before": load_before,
               "load_average_after": list(os.getloadavg())}
    _common.write_outputs(cfg.out, config=cfg, results=results)
    return results


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
