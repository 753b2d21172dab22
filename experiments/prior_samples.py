"""Sampling from the prior: z ~ N(0, I) decoded by an autoencoder and by a VAE (d = 32).

The lecture's third comparison: an autoencoder (AE) and a VAE with a
32-dimensional latent space, the same MLP networks, data, seed and training
budget, each decode the SAME draws z ~ N(0, I) (the figure shows the Bernoulli
means p(x | z)). Only the VAE is trained to make its codes follow N(0, I), so
only its samples look like clothes.

How far each model's codes are from N(0, I): the KL to N(0, I) of a Gaussian
with full covariance fitted to the test codes, in closed form
((tr S + m.m - d - log det S) / 2 nats; a lower bound on the KL of the codes'
own distribution). For the AE, its codes. For the VAE, one draw z_n ~ q(z | x_n)
per test image, i.e. samples of the aggregate posterior q(z) = mean_n q(z | x_n),
which the ELBO's KL term pulls towards N(0, I); the KL of its posterior MEANS is
reported beside it and is larger, since the means leave out the posterior
noise (and collapse to ~0 variance in unused latent units). Also reported:
the VAE's active units (variance of the posterior mean over the test images
> 0.01) and the per-dimension sd of the codes.

Data and likelihood: grey-level Fashion-MNIST with the Bernoulli cross-entropy
(the lecture's Bernoulli decoder; see ``experiments.reconstructions``).

Writes ``prior_samples.png``, ``results.json`` and ``config.json`` into --out.
Full size: 60000 training / 10000 test images, 20 epochs per model;
``--quick``: 2000 / 500 images, 3 epochs. Measured times: docs/ae_vs_vae.md.
"""

from __future__ import annotations

import dataclasses

import jax
import matplotlib.pyplot as plt
import numpy as np

from experiments import _common
from vae_jax import models, plotting

PROG = "experiments.prior_samples"
EPOCHS, QUICK_EPOCHS = 20, 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The study's options, resolved."""

    hidden_sizes: tuple[int, ...]
    latent_dim: int
    num_samples: int


OPTIONS = (_common.Option("--latent-dim", _common.positive_int, 32, "latent size d of both models (default 32)"),
           _common.Option("--num-samples", _common.positive_int, 64, "prior draws decoded per model (default 64)"))


def run(cfg: Config) -> dict:
    ds = _common.load_data(cfg)
    x_test = ds.test.images
    config = models.ModelConfig(latent_dim=cfg.latent_dim, hidden_sizes=cfg.hidden_sizes)
    trained = _common.train_ae_and_vae(config, ds.train.images, cfg)
    key_prior, key_q = jax.random.split(jax.random.key(cfg.seed + 1))

    fig, axes = plt.subplots(1, 2, figsize=(11, 6), layout="constrained")
    results = {}
    for ax, (kind, (model, state, history, seconds)) in zip(axes, trained.items()):
        codes = _common.batched(model.code, state.params, x_test)
        stats = {"fitted_gaussian_kl_codes": _common.fitted_gaussian_kl(codes), "code_sd": codes.std(axis=0)}
        if kind == "vae":
            q = _common.aggregate_posterior_samples(model, state.params, key_q, x_test)
            stats["fitted_gaussian_kl_q_samples"] = _common.fitted_gaussian_kl(q)
            stats["active_units"] = int(np.sum(codes.var(axis=0) > 0.01))
            kl, what = stats["fitted_gaussian_kl_q_samples"], "z ~ q(z|x) per test image"
        else:
            kl, what = stats["fitted_gaussian_kl_codes"], "test codes"
        samples = np.asarray(model.sample(state.params, key_prior, cfg.num_samples))
        plotting.plot_image_grid(ax, samples, ncols=int(np.ceil(np.sqrt(cfg.num_samples))),
                                 title=f"{kind.upper()}: decoded z ~ N(0, I), d = {cfg.latent_dim}\n"
                                       f"fitted-Gaussian KL({what} || N(0, I)) = {kl:.3g} nats")
        results[kind] = {**stats, "final_train_loss": history[-1]["train_loss"], "train_seconds": seconds}
    plotting.save_figure(fig, cfg.out / "prior_samples.png")

    results["test_images"] = len(x_test)
    _common.write_outputs(cfg.out, results=results, config={
        "study": cfg, "model": config, "models": ["ae", "vae"],
        "data": {"dataset": "fashion_mnist", "train": len(ds.train.images), "test": len(x_test),
                 "binarization": "none: grey levels with the Bernoulli cross-entropy"}})
    return results


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(_common.parse_study(Config, __doc__, PROG, argv, options=OPTIONS, epochs=EPOCHS,
                                   quick_epochs=QUICK_EPOCHS, hidden_sizes=[512, 256]))


if __name__ == "__main__":
    main()
