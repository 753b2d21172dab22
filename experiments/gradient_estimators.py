"""Gradient estimators on a Fashion-MNIST VAE: variance, IWAE/DReG SNR against k, training.

An MLP VAE (Bernoulli likelihood, dynamically binarised training images,
statically binarised fixed batch and test set) and seven estimators from
``vae_jax.estimators``, all with the same k draws of z per example: pathwise,
score function (no baseline, running mean, leave-one-out), STL, IWAE, DReG.

1. Variance through training: a VAE is trained with the standard one-sample
   pathwise ELBO; at checkpoints (epoch 0 = initialisation) each estimator's
   gradient on a fixed batch is drawn ``--draws`` times (one vmapped, jitted
   call) and the trace of its covariance is recorded, encoder and decoder
   separately (``variance_through_training.png``). The running-mean baseline is
   the batch's mean ELBO at the checkpoint (what a running mean tracks).
2. SNR of the IWAE-bound gradient against k (1 to 1024) at the final model of
   study 1 on ``--snr-batch`` fixed images, for IWAE and DReG, encoder and
   decoder: the bias-corrected norm SNR ||E g|| / sqrt(trace Cov g) (and the
   mean elementwise |mean| / std, whose noise floor sqrt(2 / (pi N)) hides small
   signals), with least-squares slopes of log SNR on log k, over all k and over
   the three largest. Rainforth et al. (2018) predict, for large k, slope -1/2
   for the IWAE encoder and +1/2 for the decoder; Tucker et al. (2018) that DReG
   removes the encoder's fall. The same measurement on a linear-Gaussian model
   (k up to 4096 costs seconds there) with q near the exact posterior but 1.3
   times wider, and 0.8 times as wide, is the reference (``snr_vs_k.png``).
3. Training at equal budget: one VAE per estimator from the same initial
   parameters, same batches, epochs, k and Adam learning rate; after every epoch
   the test ELBO (analytic KL, one draw) and log p(x) (importance sampling with
   ``--marginal-samples`` draws) (``training_curves.png``).

Writes the three PNGs, ``results.json`` and ``config.json`` into ``--out``.
``--devices all`` trains studies 1 and 3 data-parallel over every local device
(the one-device numbers to float32 rounding);
``--track tensorboard`` (the default at full size) writes each training's
epochs (study 3's with its test ELBO and log p(x)) and images to
``tensorboard/`` (docs/scale.md).

Size: the default is 10000 training and 1000 test images, MLP 784-256-128-16,
k = 8, 20 epochs per study; ``--quick`` is 500 images, a small MLP, 2 epochs,
three estimators and two values of k (nearly all of it XLA compilation: one
compiled call per estimator and k). Measured times: docs/gradient_estimators.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from tqdm.auto import tqdm

from experiments import _common
from vae_jax import data as vdata
from vae_jax import estimators, evaluation, models, plotting, training
from vae_jax.linear_gaussian import AffineLinearGaussian

PROG = "experiments.gradient_estimators"


class Setting(NamedTuple):
    """One estimator of the study: the library's name and its options besides ``num_samples``."""

    estimator: str
    options: dict[str, Any]


SETTINGS = {
    "pathwise": Setting("pathwise", {}),
    "score": Setting("score_function", {"baseline": "none"}),
    "score_running_mean": Setting("score_function", {"baseline": "running_mean"}),
    "score_leave_one_out": Setting("score_function", {"baseline": "leave_one_out"}),
    "stl": Setting("stl", {}),
    "iwae": Setting("iwae", {}),
    "dreg": Setting("dreg", {}),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The study's options, resolved (``--quick`` or the default sizes filled in) and checked."""

    train_size: int
    test_size: int
    checkpoints: tuple[int, ...]
    samples: int
    ks: tuple[int, ...]
    snr_batch: int
    reference_ks: tuple[int, ...]
    reference_draws: int
    draws: int
    snr_draws: int
    stat_batch: int
    chunk: int
    marginal_samples: int
    baseline_decay: float
    estimators: tuple[str, ...]
    latent_dim: int

    def __post_init__(self):
        if self.samples < 2:
            raise ValueError("--samples must be >= 2 (the leave-one-out baseline needs two draws).")
        for name in ("ks", "reference_ks"):
            ks = getattr(self, name)
            if len(ks) < 2 or any(b <= a for a, b in zip(ks, ks[1:])):
                raise ValueError(f"--{name.replace('_', '-')} needs at least two increasing values >= 1; "
                                 f"got {list(ks)}.")
        if self.snr_batch > self.stat_batch:
            raise ValueError("--snr-batch must be <= --stat-batch (it is a prefix of that batch).")
        if min(self.draws, self.snr_draws, self.reference_draws) < 2:
            raise ValueError("--draws, --snr-draws and --reference-draws must be >= 2 (a variance needs two).")
        if self.batch_size > self.train_size:
            raise ValueError(f"--batch-size {self.batch_size} is larger than --train-size {self.train_size}.")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"--baseline-decay must be in [0, 1); got {self.baseline_decay}.")


def estimator(model, label: str, k: int):
    """The objective of ``SETTINGS[label]`` with ``k`` draws per example."""
    name, options = SETTINGS[label]
    return estimators.make_estimator(name, model, num_samples=k, **options)


def _baseline_state(model, label, params, batch, key):
    """``{"baseline_value": ELBO of params on batch}`` for the running-mean baseline, else ``{}``."""
    if SETTINGS[label].options.get("baseline") != "running_mean":
        return {}
    return {"baseline_value": evaluation.evaluate(model.objective, params, batch, key)["elbo"]}


def variance_through_training(model, state, train, batch, cfg: Config, key):
    """Study 1: trace of each estimator's gradient covariance at checkpoints of pathwise training."""
    step = training.make_train_step(model.objective, dynamic_binarization=True)
    objectives = {label: estimator(model, label, cfg.samples) for label in cfg.estimators}
    out = {"epoch": [], **{label: {"encoder": [], "decoder": []} for label in cfg.estimators}}
    key_train, key_measure = jax.random.split(key)

    def measure(epoch, state, history=None):
        if epoch not in cfg.checkpoints and epoch != cfg.epochs:
            return
        out["epoch"].append(epoch)
        key_baseline, key_draws = jax.random.split(jax.random.fold_in(key_measure, epoch))
        for label, objective in objectives.items():
            hparams = _baseline_state(model, label, state.params, batch, key_baseline)
            stats = estimators.gradient_statistics(objective, state.params, key_draws, batch,
                                          num_draws=cfg.draws, hparams=hparams, chunk_size=cfg.chunk)
            for group in ("encoder", "decoder"):
                out[label][group].append(float(stats[group].total_variance))

    measure(0, state)
    state, _, _ = _common.fit_scaled(model, state, step, train, key_train, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                     seed=cfg.seed, hooks=[measure], progress=cfg.progress, desc="study 1: variance",
                                     **_common.scale_kwargs(cfg))
    return state, out


REFERENCE_WIDTHS = {"wide_q": 1.3, "narrow_q": 0.8}  # std of q / posterior std


def _slope(ks, values):
    keep = np.asarray(values) > 0  # a bias-corrected SNR is 0 where the signal is below the noise
    return float(np.polyfit(np.log(np.asarray(ks)[keep]), np.log(np.asarray(values)[keep]), 1)[0]) \
        if keep.sum() >= 2 else float("nan")


def snr_against_k(model, params, batch, ks, *, draws, chunk, key, progress=True):
    """Study 2: SNR of the IWAE and DReG gradients for each k, encoder and decoder.

    Records the bias-corrected norm SNR and the mean elementwise SNR (see
    :class:`vae_jax.estimators.GradientStatistics`) and least-squares slopes of
    log SNR on log k over all ``ks`` (``*_slope``) and over the three largest
    (``*_tail_slope``), leaving out zeros.
    """
    out = {"k": list(ks)}
    for label in ("iwae", "dreg"):
        out[label] = {g: {"norm_snr": [], "mean_snr": []} for g in ("encoder", "decoder")}
        for k in tqdm(ks, desc=f"study 2: {label} SNR", disable=not progress, leave=False):
            objective = estimators.make_estimator(label, model, num_samples=k)
            stats = estimators.gradient_statistics(objective, params, jax.random.fold_in(key, k), batch, num_draws=draws,
                                          chunk_size=chunk)
            for group in ("encoder", "decoder"):
                out[label][group]["norm_snr"].append(float(stats[group].norm_snr))
                out[label][group]["mean_snr"].append(float(stats[group].mean_snr))
        for group, kind in itertools.product(("encoder", "decoder"), ("norm_snr", "mean_snr")):
            values = out[label][group][kind]
            out[label][group][f"{kind}_slope"] = _slope(ks, values)
            out[label][group][f"{kind}_tail_slope"] = _slope(ks[-3:], values[-3:])
    return out


def train_each(model, init_key, train, test, batch, cfg: Config, key):
    """Study 3: one VAE per estimator at equal budget; test ELBO and log p(x) after each epoch.

    Every model starts from ``model.init(init_key)`` and sees the same batches and key sequence;
    the running-mean baseline starts at the initial model's ELBO on the fixed binarised ``batch``.
    """
    out = {}
    for label in tqdm(cfg.estimators, desc="study 3: training", disable=not cfg.progress, leave=False):
        objective = estimator(model, label, cfg.samples)
        state = training.create_train_state(model, init_key, train[0], optax.adam(cfg.learning_rate))
        baseline = _baseline_state(model, label, state.params, batch, key)
        state = state.replace(estimator_state={k: jnp.asarray(v, jnp.float32) for k, v in baseline.items()})
        step = training.make_train_step(objective, dynamic_binarization=True)
        if baseline:
            step = estimators.with_running_baseline(step, decay=cfg.baseline_decay)
        curves = {"test_elbo": [], "test_log_px": [], "train_objective": []}

        def on_epoch(epoch, state, history, curves=curves):  # the test numbers join the row the trackers log
            curves["train_objective"].append(-history[-1]["train_loss"])
            history[-1]["test_elbo"] = evaluation.evaluate(model.objective, state.params, test,
                                                           jax.random.key(cfg.seed + 1))["elbo"]
            history[-1]["test_log_px"] = evaluation.log_marginal(
                model, state.params, test, jax.random.key(cfg.seed + 2), num_samples=cfg.marginal_samples,
                chunk_size=min(100, cfg.marginal_samples), progress=False).mean
            for name in ("test_elbo", "test_log_px"):
                curves[name].append(history[-1][name])

        start = time.perf_counter()
        try:
            _common.fit_scaled(model, state, step, train, jax.random.fold_in(key, 1), epochs=cfg.epochs,
                               batch_size=cfg.batch_size, seed=cfg.seed, hooks=[on_epoch], progress=cfg.progress,
                               desc=f"study 3: {label}", **_common.scale_kwargs(cfg))
            curves["diverged"] = False
        except FloatingPointError:
            curves["diverged"] = True
        curves["seconds"] = time.perf_counter() - start
        out[label] = curves
    return out


def save_variance_plot(study, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True, layout="constrained")
    for ax, group in zip(axes, ("encoder", "decoder")):
        for label in [label for label in SETTINGS if label in study]:
            ax.plot(study["epoch"], study[label][group], marker="o", markersize=3, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("epoch of pathwise training")
        ax.set_ylabel("trace of gradient covariance")
        ax.set_title(f"{group} gradient variance", fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    plotting.save_figure(fig, path, dpi=90)


def save_snr_plot(vae, references, path):
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.6), layout="constrained")
    panels = [(vae, "encoder", "VAE encoder"), (vae, "decoder", "VAE decoder")]
    panels += [(study, None, f"linear-Gaussian, std q = {REFERENCE_WIDTHS[name]} x posterior")
               for name, study in references.items()]
    for ax, (study, only, title) in zip(axes.ravel(), panels):
        for (label, marker), group in itertools.product((("iwae", "o"), ("dreg", "s")), ("encoder", "decoder")):
            if only not in (None, group):
                continue
            s = study[label][group]
            snr = np.where(np.asarray(s["norm_snr"]) > 0, s["norm_snr"], np.nan)
            ax.plot(study["k"], snr, marker=marker, linestyle="-" if group == "encoder" else "--", markersize=4,
                    label=f"{label.upper()} {group}: slope {s['norm_snr_slope']:+.2f} "
                          f"(largest 3 k: {s['norm_snr_tail_slope']:+.2f})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("k (importance samples)")
        ax.set_ylabel("norm SNR (bias-corrected)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("SNR of IWAE-bound gradients against k (DReG decoder = IWAE decoder)", fontsize=11)
    plotting.save_figure(fig, path, dpi=75)


def save_training_plot(study, path):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True, layout="constrained")
    for ax, key, title in zip(axes, ("test_elbo", "test_log_px"), ("test ELBO", "test log p(x) (IS)")):
        for label, curves in study.items():
            values = curves[key]
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    plotting.save_figure(fig, path, dpi=90)


def _arguments():
    p = _common.parser(__doc__, PROG)
    pos, nonneg = _common.positive_int, _common.nonnegative_int
    p.add_argument("--train-size", type=pos, default=None, help="training images (default 10000; quick 500)")
    p.add_argument("--test-size", type=pos, default=None, help="test images (default 1000; quick 100)")
    p.add_argument("--epochs", type=pos, default=None, help="epochs of studies 1 and 3 (default 20; quick 2)")
    p.add_argument("--checkpoints", type=nonneg, nargs="+", default=[0, 1, 2, 5, 10, 15],
                   help="epochs of study 1 at which gradients are measured (the last epoch always is)")
    p.add_argument("--samples", type=pos, default=None, help="k draws per example for every estimator "
                   "in studies 1 and 3 (default 8; quick 4)")
    p.add_argument("--ks", type=pos, nargs="+", default=None, help="k values of study 2, increasing "
                   "(default 1 4 16 64 256 1024; quick 1 4)")
    p.add_argument("--snr-batch", type=pos, default=None, help="examples of the fixed batch used in study 2 "
                   "(default 4; quick 2)")
    p.add_argument("--reference-ks", type=pos, nargs="+", default=None, help="k values of study 2 on the "
                   "linear-Gaussian reference (default 1 4 16 64 256 1024 4096; quick 1 16)")
    p.add_argument("--reference-draws", type=pos, default=None, help="gradient draws per k on the "
                   "linear-Gaussian reference (default 1000; quick 50)")
    p.add_argument("--draws", type=pos, default=None, help="gradient draws per measurement of study 1 "
                   "(default 100; quick 20)")
    p.add_argument("--snr-draws", type=pos, default=None,
                   help="gradient draws per k in study 2 (default 200; quick 20)")
    p.add_argument("--stat-batch", type=pos, default=None, help="size of the fixed batch of studies 1-2 "
                   "(default 32; quick 8)")
    p.add_argument("--chunk", type=pos, default=20, help="draws vmapped at once (memory only)")
    p.add_argument("--marginal-samples", type=pos, default=None, help="importance samples of log p(x) "
                   "(default 100; quick 20)")
    p.add_argument("--batch-size", type=pos, default=100, help="training batch size")
    p.add_argument("--learning-rate", type=_common.positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--baseline-decay", type=_common.nonnegative_float, default=0.9,
                   help="decay of the running-mean baseline, in [0, 1)")
    p.add_argument("--estimators", nargs="+", choices=list(SETTINGS), default=None,
                   help="estimators of studies 1 and 3 (default: all; quick: pathwise score_leave_one_out dreg)")
    p.add_argument("--latent-dim", type=pos, default=None, help="latent size (default 16; quick 4)")
    _common.add_scale_args(p)
    return p


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a checked :class:`Config` (``--quick`` and the defaults resolved)."""
    args = _arguments().parse_args(argv)
    resolved = _common.resolve_defaults(args, dict(
        train_size=(500, 10_000), test_size=(100, 1000), epochs=(2, 20), samples=(4, 8),
        ks=([1, 4], [1, 4, 16, 64, 256, 1024]), snr_batch=(2, 4),
        reference_ks=([1, 16], [1, 4, 16, 64, 256, 1024, 4096]), reference_draws=(50, 1000),
        estimators=(["pathwise", "score_leave_one_out", "dreg"], list(SETTINGS)), draws=(20, 100),
        snr_draws=(20, 200), stat_batch=(8, 32), marginal_samples=(20, 100), latent_dim=(4, 16),
        **_common.TRACK_DEFAULTS))
    return Config.from_args(args, **resolved, checkpoints=tuple(args.checkpoints))


def linear_gaussian_references(cfg: Config, key) -> dict:
    """Study 2 on the linear-Gaussian model with q wider and narrower than the exact posterior."""
    references = {}
    for name, width in REFERENCE_WIDTHS.items():
        reference_params = AffineLinearGaussian.params(jax.random.fold_in(key, 4), width=width)
        reference_x = reference_params["decoder"].sample(jax.random.fold_in(key, 6), 1)
        references[name] = snr_against_k(AffineLinearGaussian(), reference_params, reference_x, cfg.reference_ks,
                                         draws=cfg.reference_draws, chunk=100, key=jax.random.fold_in(key, 5),
                                         progress=cfg.progress)
    return references


def run(cfg: Config) -> dict:
    """The three studies, their figures and the JSON files."""
    data = _common.load_data(cfg, quick_train=cfg.train_size, quick_test=cfg.test_size)
    train = jnp.asarray(data.train.images[: cfg.train_size])
    test = vdata.binarize_static(data.test.images[: cfg.test_size], seed=cfg.seed + 1)
    batch = jnp.asarray(vdata.binarize_static(data.train.images[: cfg.stat_batch], seed=cfg.seed))
    config = models.ModelConfig(latent_dim=cfg.latent_dim, hidden_sizes=(64,) if cfg.quick else (256, 128))
    model = models.build_model(config, train.shape[1:])
    key = jax.random.key(cfg.seed)
    init_key = jax.random.fold_in(key, 0)
    state = training.create_train_state(model, init_key, train[0], optax.adam(cfg.learning_rate))

    start = time.perf_counter()
    state, study1 = variance_through_training(model, state, train, batch, cfg, jax.random.fold_in(key, 1))
    study2 = snr_against_k(model, state.params, batch[: cfg.snr_batch], cfg.ks, draws=cfg.snr_draws,
                           chunk=cfg.chunk, key=jax.random.fold_in(key, 2), progress=cfg.progress)
    references = linear_gaussian_references(cfg, key)
    study3 = train_each(model, init_key, train, test, batch, cfg, jax.random.fold_in(key, 3))
    results = {"variance_through_training": study1, "snr_against_k": study2,
               "snr_against_k_linear_gaussian": references, "training": study3,
               "seconds": time.perf_counter() - start}

    save_variance_plot(study1, cfg.out / "variance_through_training.png")
    save_snr_plot(study2, references, cfg.out / "snr_vs_k.png")
    save_training_plot(study3, cfg.out / "training_curves.png")
    _common.write_outputs(cfg.out, config={**cfg.to_json(), "model": config}, results=results)
    return results


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
