"""Reconstructions: test images, their autoencoder and their VAE reconstructions (d = 32).

The lecture's first comparison: an autoencoder (AE) and a variational
autoencoder (VAE) with the same MLP networks, latent size d = 32, data, seed
and training budget (Adam, same epochs and batch size) reconstruct Fashion-MNIST
test images. A reconstruction is the mean of p(x | z) at the image's point code
(the AE's code, the VAE's posterior mean).

Data and likelihood: grey-level Fashion-MNIST in [0, 1] with the Bernoulli
cross-entropy, i.e. the lecture's Bernoulli decoder (sigmoid outputs p_j) with
the grey levels x_j as targets. Binarising would erase the grey-level texture
of the clothes, which is what a reconstruction should show; the cross-entropy
is minimised at p = x, so the decoder's means estimate the grey levels. It is
not a normalised density on [0, 1], which does not matter here: no
log-likelihoods of different data are compared.

Numbers, on every test image: the squared error per image sum_j (x_j - p_j)^2
and the Bernoulli cross-entropy -sum_j [x_j log p_j + (1 - x_j) log(1 - p_j)]
in nats per image, for the AE, the VAE and a constant predictor (the mean
training image), beside the cross-entropy floor sum_j H(x_j) that only p = x
reaches; and the VAE's test ELBO.

Writes ``reconstructions.png``, ``results.json`` and ``config.json`` into --out.
Full size: 60000 training / 10000 test images, 20 epochs per model;
``--quick``: 2000 / 500 images, 3 epochs. Measured times: docs/ae_vs_vae.md.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from experiments import _common
from vae_jax import data as vdata
from vae_jax import distributions, evaluation, models, plotting

PROG = "experiments.reconstructions"
EPOCHS, QUICK_EPOCHS = 20, 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The study's options, resolved."""

    hidden_sizes: tuple[int, ...]
    latent_dim: int


OPTIONS = (_common.Option("--latent-dim", _common.positive_int, 32, "latent size d of both models (default 32)"),)


def reconstruction_errors(logits: np.ndarray, x: np.ndarray) -> dict[str, float]:
    """Mean per-image errors of Bernoulli means ``sigmoid(logits)`` against ``x``.

    Args:
      logits: ``[N, H, W, C]`` decoder logits (or one ``[H, W, C]`` for every image).
      x: ``[N, H, W, C]`` test images in [0, 1].

    Returns:
      ``squared_error`` (sum over pixels of (x - p)^2) and ``cross_entropy``
      (minus the Bernoulli log-likelihood, nats), each averaged over the N images.
    """
    logits = np.broadcast_to(logits, x.shape)
    probs = np.asarray(jax.nn.sigmoid(logits))
    cross_entropy = -np.asarray(jax.vmap(distributions.bernoulli_log_prob)(logits, x))
    return {"squared_error": float(np.mean(np.sum((x - probs) ** 2, axis=(1, 2, 3)))),
            "cross_entropy": float(np.mean(cross_entropy))}


def cross_entropy_floor(x: np.ndarray) -> float:
    """Mean over images of sum_j H(x_j), the Bernoulli entropy of the grey levels (nats per image)."""
    x = np.asarray(x, np.float64)
    return float(np.mean(-np.sum(_xlogx(x) + _xlogx(1 - x), axis=(1, 2, 3))))


def _xlogx(v: np.ndarray) -> np.ndarray:
    """``v log v`` with ``0 log 0 = 0``."""
    return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)


def one_per_class(labels: np.ndarray) -> np.ndarray:
    """Index of the first example of each class present in ``labels``, ordered by class."""
    return np.array([np.flatnonzero(labels == c)[0] for c in np.unique(labels)])


def run(cfg: Config) -> dict:
    ds = _common.load_data(cfg)
    x_train, x_test = ds.train.images, ds.test.images
    config = models.ModelConfig(latent_dim=cfg.latent_dim, hidden_sizes=cfg.hidden_sizes)
    trained = _common.train_ae_and_vae(config, x_train, cfg)

    errors, logits = {}, {}
    for kind, (model, state, _, _) in trained.items():
        logits[kind] = _common.batched(lambda p, v, m=model: m.decode(p, m.code(p, v)), state.params, x_test)
        errors[kind] = reconstruction_errors(logits[kind], x_test)
    p_mean = np.clip(x_train.mean(axis=0), 1e-4, 1 - 1e-4)
    errors["mean_image"] = reconstruction_errors(np.log(p_mean) - np.log1p(-p_mean), x_test)
    vae = trained["vae"]
    vae_test = evaluation.evaluate(vae.model.objective, vae.state.params, x_test, jax.random.key(cfg.seed + 1))

    shown = one_per_class(ds.test.labels)
    labels = {k: f"{k.upper()}\nSE {e['squared_error']:.1f}\nCE {e['cross_entropy']:.1f}" for k, e in errors.items()}
    plotting.save_image_rows(
        {"original": x_test[shown], **{labels[k]: np.asarray(jax.nn.sigmoid(logits[k][shown])) for k in trained}},
        cfg.out / "reconstructions.png",
        title=f"Fashion-MNIST test images and their reconstructions, d = {cfg.latent_dim}\nsquared error (SE) and "
              f"cross-entropy (CE, nats) per image, means over {len(x_test)} test images")

    results = {
        "test_images": len(x_test),
        "per_image_errors": errors,
        "cross_entropy_floor": cross_entropy_floor(x_test),
        "vae_test": {"elbo": vae_test["elbo"], "reconstruction_log_likelihood": vae_test["reconstruction"],
                     "kl": vae_test["kl"]},
        "final_train_loss": {k: t.history[-1]["train_loss"] for k, t in trained.items()},
        "train_seconds": {k: t.seconds for k, t in trained.items()},
    }
    _common.write_outputs(cfg.out, results=results, config={
        "study": cfg, "model": config, "models": ["ae", "vae"],
        "data": {"dataset": "fashion_mnist", "train": len(x_train), "test": len(x_test),
                 "binarization": "none: grey levels with the Bernoulli cross-entropy"},
        "shown_test_indices": shown, "class_names": vdata.FASHION_MNIST_CLASSES})
    return results


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(_common.parse_study(Config, __doc__, PROG, argv, options=OPTIONS, epochs=EPOCHS,
                                   quick_epochs=QUICK_EPOCHS, hidden_sizes=[512, 256]))


if __name__ == "__main__":
    main()
