"""Two latent dimensions: where an autoencoder and a VAE put the test images.

The lecture's second comparison: an autoencoder (AE) and a VAE with a 2-D
latent space, the same MLP networks, data, seed and training budget. Top row:
the test codes (AE: its codes; VAE: the posterior means), coloured by
Fashion-MNIST class, with the 1, 2 and 3 sd circles of the prior N(0, I) over
the VAE's. Bottom row: the decoded manifold, the Bernoulli means decoded from a
regular grid over the latent plane: for the VAE over [-E, E]^2 (the prior's
bulk, E = --grid-extent), for the AE, which has no prior, over the box its test
codes actually occupy (1st to 99th percentile per axis; the title gives it).

Data and likelihood: grey-level Fashion-MNIST with the Bernoulli cross-entropy
(the lecture's Bernoulli decoder; see ``experiments.reconstructions``).

Numbers per model: mean, sd and 1-99 % range of the test codes; the KL to
N(0, I) of a full-covariance Gaussian fitted to them (closed form; for the
VAE both of its posterior means and of one draw of q(z | x) per image, the
aggregate posterior); the 5-nearest-neighbour class accuracy of the test codes
(neighbours among the training codes), a measure of how well the plane
separates the classes.

Writes ``latent_2d.png``, ``results.json`` and ``config.json`` into --out.
Full size: 60000 training / 10000 test images, 20 epochs per model;
``--quick``: 2000 / 500 images, 3 epochs. Measured times: docs/ae_vs_vae.md.
"""

from __future__ import annotations

import dataclasses

import jax
import matplotlib.pyplot as plt
import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from experiments import _common
from vae_jax import data as vdata
from vae_jax import models, plotting

PROG = "experiments.latent_2d"
EPOCHS, QUICK_EPOCHS = 20, 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The study's options, resolved."""

    hidden_sizes: tuple[int, ...]
    grid_size: int
    grid_extent: float


OPTIONS = (
    _common.Option("--grid-size", _common.positive_int, 15, "decoded manifold is grid-size^2 images (default 15)"),
    _common.Option("--grid-extent", _common.positive_float, 3.0,
                   "VAE manifold covers [-E, E]^2 of the latent plane (default 3: the prior's 3 sd)"))


def box_grid(lower: np.ndarray, upper: np.ndarray, n: int) -> np.ndarray:
    """A regular ``n x n`` grid over the box ``[lower, upper]`` (each ``[2]``): ``[n * n, 2]``.

    Same order as :func:`vae_jax.plotting.latent_grid` (rows top to bottom, z2 falling).
    """
    unit = plotting.latent_grid(n, 1.0)
    return (lower + (unit + 1.0) / 2.0 * (upper - lower)).astype(np.float32)


def code_stats(codes: np.ndarray) -> dict:
    """Mean, sd, 1-99 % range and fitted-Gaussian KL to N(0, I) of ``codes [N, 2]``."""
    lower, upper = np.percentile(codes, [1, 99], axis=0)
    return {"mean": codes.mean(axis=0), "sd": codes.std(axis=0), "percentile_1": lower,
            "percentile_99": upper, "fitted_gaussian_kl": _common.fitted_gaussian_kl(codes)}


def run(cfg: Config) -> dict:
    ds = _common.load_data(cfg)
    n = cfg.grid_size
    config = models.ModelConfig(latent_dim=2, hidden_sizes=cfg.hidden_sizes)
    trained = _common.train_ae_and_vae(config, ds.train.images, cfg)

    fig, axes = plt.subplots(2, 2, figsize=(12, 11), layout="constrained")
    results = {}
    for col, (kind, (model, state, history, seconds)) in enumerate(trained.items()):
        codes = _common.batched(model.code, state.params, ds.test.images)
        train_codes = _common.batched(model.code, state.params, ds.train.images)
        stats = code_stats(codes)
        knn = KNeighborsClassifier(5).fit(train_codes, ds.train.labels)
        stats["knn5_test_accuracy"] = float(knn.score(codes, ds.test.labels))
        if kind == "vae":
            q = _common.aggregate_posterior_samples(model, state.params, jax.random.key(cfg.seed + 1), ds.test.images)
            stats["fitted_gaussian_kl_q_samples"] = _common.fitted_gaussian_kl(q)
            grid = plotting.latent_grid(n, cfg.grid_extent)
            what = f"VAE: decoded {n}x{n} grid over [-{cfg.grid_extent:g}, {cfg.grid_extent:g}]^2 of N(0, I)"
            name = "posterior means"
        else:
            grid = box_grid(stats["percentile_1"], stats["percentile_99"], n)
            (a, c), (b, e) = stats["percentile_1"], stats["percentile_99"]
            what = (f"AE: decoded {n}x{n} grid over the range its codes occupy\n"
                    f"(1-99 %: z1 in [{a:.3g}, {b:.3g}], z2 in [{c:.3g}, {e:.3g}])")
            name = "codes"
        plotting.plot_latent_scatter(
            axes[0, col], codes, ds.test.labels, class_names=vdata.FASHION_MNIST_CLASSES,
            prior_contours=kind == "vae",
            title=f"{kind.upper()} test {name}, d = 2" + (" (circles: N(0, I) 1, 2, 3 sd)" if kind == "vae" else "")
                  + f"\nfitted-Gaussian KL to N(0, I): {stats['fitted_gaussian_kl']:.3g} nats")
        manifold = _common.batched(model.decode_mean, state.params, grid)
        plotting.plot_image_grid(axes[1, col], manifold, ncols=n, title=what)
        results[kind] = {**stats, "final_train_loss": history[-1]["train_loss"], "train_seconds": seconds}
    plotting.save_figure(fig, cfg.out / "latent_2d.png")

    results["test_images"] = len(ds.test.images)
    _common.write_outputs(cfg.out, results=results, config={
        "study": cfg, "model": config, "models": ["ae", "vae"],
        "data": {"dataset": "fashion_mnist", "train": len(ds.train.images), "test": len(ds.test.images),
                 "binarization": "none: grey levels with the Bernoulli cross-entropy"},
        "class_names": vdata.FASHION_MNIST_CLASSES})
    return results


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(_common.parse_study(Config, __doc__, PROG, argv, options=OPTIONS, epochs=EPOCHS,
                                   quick_epochs=QUICK_EPOCHS, hidden_sizes=[512, 256]))


if __name__ == "__main__":
    main()
