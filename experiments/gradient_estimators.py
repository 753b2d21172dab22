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

Size: the default is 10000 training and 1000 test images, MLP 784-256-128-16,
k = 8, 20 epochs per study; ``--quick`` is 500 images, a small MLP, 2 epochs,
three estimators and two values of k (nearly all of it XLA compilation: one
compiled call per estimator and k). Measured times: docs/gradient_estimators.md.
"""

from __future__ import annotations

import itertools
import time

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

SETTINGS = {  # label -> (estimator, options besides num_samples)
    "pathwise": ("pathwise", {}),
    "score": ("score_function", {"baseline": "none"}),
    "score_running_mean": ("score_function", {"baseline": "running_mean"}),
    "score_leave_one_out": ("score_function", {"baseline": "leave_one_out"}),
    "stl": ("stl", {}),
    "iwae": ("iwae", {}),
    "dreg": ("dreg", {}),
}


def estimator(model, label: str, k: int):
    """The objective of ``SETTINGS[label]`` with ``k`` draws per example."""
    name, options = SETTINGS[label]
    return estimators.make_estimator(name, model, num_samples=k, **options)


def _baseline_state(model, label, params, batch, key):
    """``{"baseline_value": ELBO of params on batch}`` for the running-mean baseline, else ``{}``."""
    if SETTINGS[label][1].get("baseline") != "running_mean":
        return {}
    return {"baseline_value": evaluation.evaluate(model.objective, params, batch, key)["elbo"]}


def variance_through_training(model, state, train, batch, args, key):
    """Study 1: trace of each estimator's gradient covariance at checkpoints of pathwise training."""
    step = training.make_train_step(model.objective, dynamic_binarization=True)
    objectives = {label: estimator(model, label, args.samples) for label in args.estimators}
    out = {"epoch": [], **{label: {"encoder": [], "decoder": []} for label in args.estimators}}
    key_train, key_measure = jax.random.split(key)

    def measure(epoch, state, history=None):
        if epoch not in args.checkpoints and epoch != args.epochs:
            return
        out["epoch"].append(epoch)
        key_baseline, key_draws = jax.random.split(jax.random.fold_in(key_measure, epoch))
        for label, objective in objectives.items():
            hparams = _baseline_state(model, label, state.params, batch, key_baseline)
            stats = estimators.gradient_statistics(objective, state.params, key_draws, batch,
                                          num_draws=args.draws, hparams=hparams, chunk_size=args.chunk)
            for group in ("encoder", "decoder"):
                out[label][group].append(float(stats[group].total_variance))

    measure(0, state)
    state, _, _ = training.fit(step, state, train, key_train, epochs=args.epochs, batch_size=args.batch_size,
                               hooks=[measure], progress=not args.no_progress, desc="study 1: variance")
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


def train_each(model, init_key, train, test, batch, args, key):
    """Study 3: one VAE per estimator at equal budget; test ELBO and log p(x) after each epoch.

    Every model starts from ``model.init(init_key)`` and sees the same batches and key sequence;
    the running-mean baseline starts at the initial model's ELBO on the fixed binarised ``batch``.
    """
    out = {}
    for label in tqdm(args.estimators, desc="study 3: training", disable=args.no_progress, leave=False):
        objective = estimator(model, label, args.samples)
        state = training.create_train_state(model, init_key, train[0], optax.adam(args.learning_rate))
        baseline = _baseline_state(model, label, state.params, batch, key)
        state = state.replace(estimator_state={k: jnp.asarray(v, jnp.float32) for k, v in baseline.items()})
        step = training.make_train_step(objective, dynamic_binarization=True)
        if baseline:
            step = estimators.with_running_baseline(step, decay=args.baseline_decay)
        curves = {"test_elbo": [], "test_log_px": [], "train_objective": []}

        def on_epoch(epoch, state, history, curves=curves):
            curves["train_objective"].append(-history[-1]["train_loss"])
            curves["test_elbo"].append(evaluation.evaluate(model.objective, state.params, test,
                                                         jax.random.key(args.seed + 1))["elbo"])
            curves["test_log_px"].append(evaluation.log_marginal(
                model, state.params, test, jax.random.key(args.seed + 2), num_samples=args.marginal_samples,
                chunk_size=min(100, args.marginal_samples), progress=False).mean)

        start = time.perf_counter()
        try:
            training.fit(step, state, train, jax.random.fold_in(key, 1), epochs=args.epochs,
                         batch_size=args.batch_size, progress=not args.no_progress, desc=label, hooks=[on_epoch])
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


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__)
    p.add_argument("--train-size", type=int, default=None, help="training images (default 10000; quick 500)")
    p.add_argument("--test-size", type=int, default=None, help="test images (default 1000; quick 100)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of studies 1 and 3 (default 20; quick 2)")
    p.add_argument("--checkpoints", type=int, nargs="+", default=[0, 1, 2, 5, 10, 15],
                   help="epochs of study 1 at which gradients are measured (the last epoch always is)")
    p.add_argument("--samples", type=int, default=None, help="k draws per example for every estimator "
                   "in studies 1 and 3 (default 8; quick 4)")
    p.add_argument("--ks", type=int, nargs="+", default=None, help="k values of study 2, increasing "
                   "(default 1 4 16 64 256 1024; quick 1 4)")
    p.add_argument("--snr-batch", type=int, default=None, help="examples of the fixed batch used in study 2 "
                   "(default 4; quick 2)")
    p.add_argument("--reference-ks", type=int, nargs="+", default=None, help="k values of study 2 on the "
                   "linear-Gaussian reference (default 1 4 16 64 256 1024 4096; quick 1 16)")
    p.add_argument("--reference-draws", type=int, default=None, help="gradient draws per k on the "
                   "linear-Gaussian reference (default 1000; quick 50)")
    p.add_argument("--draws", type=int, default=None, help="gradient draws per measurement of study 1 "
                   "(default 100; quick 20)")
    p.add_argument("--snr-draws", type=int, default=None, help="gradient draws per k in study 2 (default 200; quick 20)")
    p.add_argument("--stat-batch", type=int, default=None, help="size of the fixed batch of studies 1-2 "
                   "(default 32; quick 8)")
    p.add_argument("--chunk", type=int, default=20, help="draws vmapped at once (memory only)")
    p.add_argument("--marginal-samples", type=int, default=None, help="importance samples of log p(x) "
                   "(default 100; quick 20)")
    p.add_argument("--batch-size", type=int, default=100, help="training batch size")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--baseline-decay", type=float, default=0.9, help="decay of the running-mean baseline")
    p.add_argument("--estimators", nargs="+", choices=list(SETTINGS), default=None,
                   help="estimators of studies 1 and 3 (default: all; quick: pathwise score_leave_one_out dreg)")
    p.add_argument("--latent-dim", type=int, default=None, help="latent size (default 16; quick 4)")
    args = p.parse_args(argv)
    q = args.quick
    args.train_size = args.train_size or (500 if q else 10_000)
    args.test_size = args.test_size or (100 if q else 1000)
    args.epochs = args.epochs or (2 if q else 20)
    args.samples = args.samples or (4 if q else 8)
    args.ks = args.ks or ([1, 4] if q else [1, 4, 16, 64, 256, 1024])
    args.snr_batch = args.snr_batch or (2 if q else 4)
    args.reference_ks = args.reference_ks or ([1, 16] if q else [1, 4, 16, 64, 256, 1024, 4096])
    args.reference_draws = args.reference_draws or (50 if q else 1000)
    args.estimators = args.estimators or (["pathwise", "score_leave_one_out", "dreg"] if q else list(SETTINGS))
    args.draws = args.draws or (20 if q else 100)
    args.snr_draws = args.snr_draws or (20 if q else 200)
    args.stat_batch = args.stat_batch or (8 if q else 32)
    args.marginal_samples = args.marginal_samples or (20 if q else 100)
    args.latent_dim = args.latent_dim or (4 if q else 16)
    if args.samples < 2:
        p.error("--samples must be >= 2 (the leave-one-out baseline needs two draws)")
    for name in ("ks", "reference_ks"):
        ks = getattr(args, name)
        if ks[0] < 1 or len(ks) < 2 or any(b <= a for a, b in zip(ks, ks[1:])):
            p.error(f"--{name.replace('_', '-')} needs at least two increasing values >= 1; got {ks}")
    if args.snr_batch > args.stat_batch:
        p.error("--snr-batch must be <= --stat-batch (it is a prefix of that batch)")

    data = _common.load_data(args, quick_train=args.train_size, quick_test=args.test_size)
    train = jnp.asarray(data.train.images[: args.train_size])
    test = vdata.binarize_static(data.test.images[: args.test_size], seed=args.seed + 1)
    batch = jnp.asarray(vdata.binarize_static(data.train.images[: args.stat_batch], seed=args.seed))
    config = models.ModelConfig(latent_dim=args.latent_dim, hidden_sizes=(64,) if q else (256, 128))
    model = models.build_model(config, train.shape[1:])
    key = jax.random.key(args.seed)
    init_key = jax.random.fold_in(key, 0)
    state = training.create_train_state(model, init_key, train[0], optax.adam(args.learning_rate))

    start = time.perf_counter()
    state, study1 = variance_through_training(model, state, train, batch, args, jax.random.fold_in(key, 1))
    study2 = snr_against_k(model, state.params, batch[: args.snr_batch], args.ks, draws=args.snr_draws,
                           chunk=args.chunk, key=jax.random.fold_in(key, 2), progress=not args.no_progress)
    references = {}
    for name, width in REFERENCE_WIDTHS.items():
        reference_params = AffineLinearGaussian.params(jax.random.fold_in(key, 4), width=width)
        reference_x = reference_params["decoder"].sample(jax.random.fold_in(key, 6), 1)
        references[name] = snr_against_k(AffineLinearGaussian(), reference_params, reference_x, args.reference_ks,
                                         draws=args.reference_draws, chunk=100, key=jax.random.fold_in(key, 5),
                                         progress=not args.no_progress)
    study3 = train_each(model, init_key, train, test, batch, args, jax.random.fold_in(key, 3))
    results = {"variance_through_training": study1, "snr_against_k": study2,
               "snr_against_k_linear_gaussian": references, "training": study3,
               "seconds": time.perf_counter() - start}

    save_variance_plot(study1, args.out / "variance_through_training.png")
    save_snr_plot(study2, references, args.out / "snr_vs_k.png")
    save_training_plot(study3, args.out / "training_curves.png")
    _common.write_outputs(args.out, config={**vars(args), "model": config}, results=results)
    return results


if __name__ == "__main__":
    main()
