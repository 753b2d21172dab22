"""beta-VAE sweep on Fashion-MNIST: rate vs distortion, traversals, active units, a class MIG.

One VAE per beta (default 0.5, 1, 2, 4, 8) is trained with the objective
E_q[log p(x|z)] - beta KL(q(z|x) || N(0, I)). The models are stacked
(``vae_jax.training.stack``; one shared optimizer object, beta in
``TrainState.hparams``) and trained as ONE vmapped computation per epoch
(``train_epoch_stacked``). All models start from the same initial parameters
and see the same batches and noise, so beta is the only difference.

Measured on the test set, per beta:

* rate = KL(q(z|x) || N(0, I)) and distortion = -E_q log p(x|z), nats per
  image. The likelihood is Bernoulli on the grey levels, so the distortion is
  the usual binary cross-entropy reconstruction term (not a likelihood of
  8-bit data: see ``experiments.likelihoods``).
* active units: latent dimensions whose posterior mean varies over the data,
  Var_x[E_q z_j] > 0.01 (Burda et al., 2016).
* a disentanglement-style score, the mutual information gap (MIG, Chen et al.,
  2018) with the class label as the only factor: each posterior mean is
  discretised into 20 equal-width bins, I(z_j; y) is computed from the
  contingency table, and MIG = (I_top1 - I_top2) / H(y). It is high when class
  information sits in ONE latent. Limitation: Fashion-MNIST classes are not
  independent generative factors (a class is one categorical variable that
  several continuous factors, such as shape, width and brightness, jointly
  decide), so a representation that spreads class information over several
  latents scores low without being "entangled"; the score can only say how
  concentrated class information is, and binned MI is biased upwards. It
  treats the class label as the single factor and neither supports nor
  refutes disentanglement: the real test is ``experiments.disentanglement``
  (docs/disentanglement.md). We also report I_top1 / H(y) (how much class
  information the best single latent holds).
* traversals: for a fixed test image, each of the 4 units with the largest
  posterior-mean variance is moved from mu_j - 3 to mu_j + 3 (prior standard
  deviations) while the others stay at the image's code.

Writes ``rate_distortion.png``, ``traversals.png`` (one panel per beta),
``active_units.png`` (posterior-mean variance per unit), ``results.json`` and
``config.json``.

``--devices all`` trains the stack data-parallel over every local device
(each step's batch split; the one-device numbers to float32 rounding);
``--track tensorboard`` (the default at full size) writes each beta's epochs,
reconstructions and prior samples to ``tensorboard/beta_B`` (docs/scale.md).

Size: the default is 20000 training images, MLP 784-256-128-10, 20 epochs,
five betas; ``--quick`` is 1000 images and 2 epochs (mostly compilation).
Measured times: docs/beta_vae.md.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from sklearn.metrics import mutual_info_score

from experiments import _common
from vae_jax import evaluation, models, plotting, training

PROG = "experiments.beta_vae"
ACTIVE_THRESHOLD = 0.01
MIG_BINS = 20
TRAVERSAL_UNITS = 4
TRAVERSAL_STEPS = 9


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The sweep's options, resolved and checked."""

    betas: tuple[float, ...]
    latent_dim: int
    train_size: int

    def __post_init__(self):
        if len(self.betas) < 2:
            raise ValueError(f"--betas needs at least two values; got {list(self.betas)}.")


def train_sweep(model, images: np.ndarray, betas: list[float], *, epochs: int, batch_size: int,
                learning_rate: float, seed: int, progress: bool = True, devices: str = "one", track: str = "none",
                logdir=None) -> tuple[training.TrainState, list[dict[str, list[float]]]]:
    """Trains one ``model`` per beta as one stacked, vmapped computation per epoch.

    ``devices``, ``track`` and ``logdir`` as :func:`experiments._common.fit_scaled` takes them
    (``"all"`` splits each step's batch over the devices; one event folder per beta).

    Returns:
      ``(states, history)``: states with leaves ``[M, ...]`` (M = len(betas)) on one device and one
      dict per epoch mapping each metric to its M per-model values.
    """
    optimizer = optax.adam(learning_rate)  # one object: it is static metadata of the stacked state
    key_init, key_fit = jax.random.split(jax.random.key(seed))
    states = training.stack([training.create_train_state(model, key_init, images[0], optimizer, beta=b)
                             for b in betas])
    step = training.make_train_step(model.objective)

    def stacked_epoch(step, states, data, key, *, batch_size):
        keys = jnp.stack([key] * len(betas))  # common random numbers: every beta sees the same batches
        return training.train_epoch_stacked(step, states, data, keys, batch_size=batch_size)

    states, history, _ = _common.fit_scaled(
        model, states, step, images, key_fit, epochs=epochs, batch_size=batch_size, seed=seed, epoch_fn=stacked_epoch,
        stacked=[f"beta={b:g}" for b in betas], progress=progress, desc="beta sweep", devices=devices, track=track,
        logdir=logdir)
    return states, history


def class_mig(means: np.ndarray, labels: np.ndarray, *, bins: int = MIG_BINS) -> dict[str, object]:
    """Mutual information gap with the class label as the single factor.

    Args:
      means: ``[N, d]`` posterior means.
      labels: ``[N]`` integer classes.
      bins: equal-width bins per latent used to discretise it.

    Returns:
      ``mutual_information [d]`` (nats), ``label_entropy`` (nats), ``mig`` (gap of the
      two largest MIs over H(y), in [0, 1]) and ``top_mi_fraction`` (largest MI over H(y)).
    """
    means = np.asarray(means)
    if means.ndim != 2 or means.shape[1] < 2 or len(means) != len(labels):
        raise ValueError(f"means must be [N, d >= 2] with one label per row; got {means.shape}, "
                         f"{len(labels)} labels.")
    mi = np.array([mutual_info_score(labels, np.digitize(m, np.histogram_bin_edges(m, bins)[1:-1]))
                   for m in means.T])
    entropy = mutual_info_score(labels, labels)
    if entropy == 0:
        raise ValueError("labels must hold at least two classes (H(y) = 0 leaves MIG undefined).")
    top = np.sort(mi)[::-1]
    return {"mutual_information": mi, "label_entropy": entropy, "mig": (top[0] - top[1]) / entropy,
            "top_mi_fraction": top[0] / entropy}


def traversal(model, params, x: np.ndarray, units: np.ndarray, *, span: float = 3.0,
              steps: int = TRAVERSAL_STEPS) -> np.ndarray:
    """Decoded means with unit ``units[i]`` set to ``mu_j + delta``, ``delta`` in ``[-span, span]``.

    Returns:
      ``[len(units) * steps, H, W, C]``, one row of ``steps`` images per unit.
    """
    mean = np.asarray(model.code(params, jnp.asarray(x)))
    z = np.repeat(mean[None], len(units) * steps, axis=0)
    deltas = np.linspace(-span, span, steps, dtype=np.float32)
    for row, unit in enumerate(units):
        z[row * steps:(row + 1) * steps, unit] += deltas
    return _common.batched(model.decode_mean, params, z)


def save_rate_distortion(betas, rates, distortions, path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(rates, distortions, marker="o")
    for b, r, d in zip(betas, rates, distortions):
        ax.annotate(f"beta={b:g}", (r, d), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("rate: KL(q(z|x) || p(z)) [nats]")
    ax.set_ylabel("distortion: -E_q log p(x|z) [nats]")
    ax.set_title("beta-VAE on Fashion-MNIST (test set)", fontsize=10)
    ax.grid(alpha=0.3)
    plotting.save_figure(fig, path)


def save_traversals(panels: dict[str, np.ndarray], path) -> None:
    fig, axes = plt.subplots(len(panels), 1, figsize=(4.6, 2.1 * len(panels)), squeeze=False)
    for ax, (title, images) in zip(axes[:, 0], panels.items()):
        plotting.plot_image_grid(ax, images, ncols=TRAVERSAL_STEPS, title=title)
    fig.suptitle(f"rows: the {TRAVERSAL_UNITS} most active units j, mu_j - 3 ... mu_j + 3", fontsize=9, y=0.995)
    fig.subplots_adjust(top=0.95, hspace=0.3)
    plotting.save_figure(fig, path, dpi=80)


def save_active_units(betas, variances, path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for b, v in zip(betas, variances):
        ax.plot(np.sort(v)[::-1], marker="o", markersize=3, label=f"beta={b:g}")
    ax.axhline(ACTIVE_THRESHOLD, color="k", ls="--", lw=0.8, label="active threshold")
    ax.set_yscale("log")
    ax.set_xlabel("latent unit (sorted)")
    ax.set_ylabel("Var_x[E_q z_j]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    plotting.save_figure(fig, path)


OPTIONS = (_common.Option("--betas", _common.nonnegative_float, [0.5, 1.0, 2.0, 4.0, 8.0], "KL weights", "+"),
           _common.Option("--latent-dim", _common.positive_int, 10, "size of z (default 10)"),
           _common.Option("--train-size", _common.positive_int, 20000, "training images used (default 20000)"))


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a checked :class:`Config`."""
    return _common.parse_study(Config, __doc__, PROG, argv, options=OPTIONS, epochs=20, quick_epochs=2)


def score_models(model, states, cfg: Config, test, labels) -> tuple[list[dict], dict, list]:
    """Per beta: the test metrics row, the traversal panel and the posterior-mean variances."""
    rows, panels, variances = [], {}, []
    for beta, state in zip(cfg.betas, training.unstack(states)):
        metrics = evaluation.evaluate(model.objective, state.params, test, jax.random.key(cfg.seed + 1),
                                      hparams={"beta": 1.0})
        var = evaluation.posterior_mean_variance(model, state.params, test)
        mig = class_mig(_common.batched(model.code, state.params, test), labels)
        units = np.argsort(var)[::-1][:TRAVERSAL_UNITS]
        panels[f"beta={beta:g}: units {', '.join(map(str, units))}"] = traversal(model, state.params, test[0], units)
        variances.append(var)
        rows.append({"beta": beta, "rate": metrics["kl"], "distortion": -metrics["reconstruction"],
                     "elbo": metrics["elbo"],
                     "active_units": evaluation.active_units(model, state.params, test, threshold=ACTIVE_THRESHOLD),
                     "posterior_mean_variance": var, **mig})
    return rows, panels, variances


def run(cfg: Config) -> dict:
    """Trains the sweep, scores it on the test set and writes the figures and JSON files."""
    data = _common.load_data(cfg, quick_train=1000, quick_test=500)
    train = data.train.images[: cfg.train_size]
    config = models.ModelConfig(latent_dim=cfg.latent_dim, likelihood="bernoulli", hidden_sizes=(256, 128))
    model = models.build_model(config, train.shape[1:])
    start = time.perf_counter()
    states, history = train_sweep(model, train, list(cfg.betas), epochs=cfg.epochs, batch_size=cfg.batch_size,
                                  learning_rate=cfg.learning_rate, seed=cfg.seed, progress=cfg.progress,
                                  **_common.scale_kwargs(cfg))
    seconds = time.perf_counter() - start
    test = data.test.images
    rows, panels, variances = score_models(model, states, cfg, test, data.test.labels)
    cfg.out.mkdir(parents=True, exist_ok=True)
    save_rate_distortion(cfg.betas, [r["rate"] for r in rows], [r["distortion"] for r in rows],
                         cfg.out / "rate_distortion.png")
    save_traversals(panels, cfg.out / "traversals.png")
    save_active_units(cfg.betas, variances, cfg.out / "active_units.png")
    results = {"models": rows, "train_seconds": seconds, "train_size": len(train), "test_size": len(test),
               "final_train_loss": history[-1]["train_loss"], "units": "nats per image"}
    _common.write_outputs(cfg.out, config={**cfg.to_json(), "model": config}, results=results)
    return results


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
