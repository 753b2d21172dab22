"""Bernoulli vs Gaussian (sigma = 1) vs Gaussian (learned sigma) VAEs on Fashion-MNIST.

The same architecture is trained with each observation model on the same
images and compared by reconstructions, samples and test log-likelihoods.

How the numbers are made comparable. Fashion-MNIST pixels are 8-bit integers
k in {0, ..., 255} (the loader gives k / 255). All log-likelihoods are of
DISCRETE data, in nats per image and bits per dimension:

* Both Gaussian VAEs are densities, so they are trained and evaluated on
  uniformly dequantized pixels y = (k + u) / 256, u ~ U(0, 1), with a fresh u
  for every example at every step. A density p(y) defines the discrete model
  P(k) = integral of p over the bin of width 1/256, and by Jensen
  log P(k) >= E_u[log p(y)] - D log 256 (Theis et al., 2016). We report that
  lower bound, with log p(y) estimated by importance sampling (biased low, so
  the number stays a lower bound in expectation): a valid, comparable
  log-likelihood of the 8-bit test images. A uniform model scores 8 bits/dim.
  The sigma = 1 Gaussian cannot beat 0.5 log(2 pi) nats per pixel
  (log p(y|z) <= -D/2 log 2 pi), i.e. >= 9.33 bits/dim: worse than uniform.
* The Bernoulli VAE models BINARY images: it is trained with dynamic
  binarisation (fresh Bernoulli(k / 255) pixels each step) and evaluated on
  one seeded binarisation of the test images. Its bits/dim are of a different
  dataset (1 bit/pixel at most) and are reported separately, never ranked
  against the Gaussians.

Learned sigma collapses on constant background: on raw pixels k / 255, where a
pixel is 0 in every training image, log p(x|z) grows without bound as
sigma -> 0 (0.13% of the pixels are constant over the first 4000 training
images). Two guards: the
dequantization noise above makes the optimal sigma finite (about 1/256 /
sqrt(12)), and the decoder's log sigma is floored softly,
log_std = m + softplus(raw - m), at m = -log(256 sqrt(2 pi)) (default), the
sigma at which the density's peak times the bin width is 1, so no pixel can
claim a probability above 1 for its bin. The fraction of pixels sitting
within 0.1 of the floor is reported.

Writes ``reconstructions.png`` (originals, binarised originals and the three
models' reconstructions, plus the learned sigma), ``samples.png`` (for each
model the decoder means and draws x ~ p(x|z) for the same z ~ N(0, I)),
``results.json`` and ``config.json``.

Size: the default is 20000 training images, MLP 784-256-128-16, 20 epochs per
model, log-likelihoods of 1000 test images with 500 importance samples each;
``--quick`` is 1000 images, 2 epochs, 50 test images and 32 importance samples
(mostly compilation of the three models' steps). Measured times: docs/likelihoods.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _common
from vae_jax import data as vdata
from vae_jax import evaluation, models, plotting

PROG = "experiments.likelihoods"
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
LABELS = {"bernoulli": "Bernoulli", "gaussian": "Gaussian sigma=1", "gaussian_learned": "Gaussian learned sigma"}
LEVELS = 256
MIN_LOG_STD = -math.log(LEVELS * math.sqrt(2 * math.pi))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The study's options, resolved."""

    latent_dim: int
    train_size: int
    eval_size: int
    num_importance: int
    min_log_std: float


def dequantize(key: jax.Array, x: jax.Array) -> jax.Array:
    """Uniform dequantization of 8-bit images ``x = k / 255`` to ``(k + u) / 256`` in ``[0, 1)``."""
    return (jnp.round(x * (LEVELS - 1)) + jax.random.uniform(key, jnp.shape(x))) / LEVELS


@dataclasses.dataclass(frozen=True)
class EightBitGaussianVAE(models.VAE):
    """A Gaussian VAE read as a model of 8-bit images ``x = k / 255`` (one example at a time).

    ``objective`` is the ELBO of a fresh dequantization ``y`` of ``x`` and
    ``log_marginal`` the importance-sampled ``log p(y)``, both minus ``D log 256``:
    lower bounds on the log-probability of the discrete image, in nats. For
    ``"gaussian_learned"`` the decoder's log sigma is ``m + softplus(raw - m) > m``.
    """

    min_log_std: float = MIN_LOG_STD

    def decode(self, params, z):
        out = super().decode(params, z)
        if self.likelihood != "gaussian_learned":
            return out
        mean, raw = out
        return mean, self.min_log_std + jax.nn.softplus(raw - self.min_log_std)

    def objective(self, params, key, x, **kwargs):
        key_u, key_elbo = jax.random.split(key)
        value, aux = super().objective(params, key_elbo, dequantize(key_u, x), **kwargs)
        shift = x.size * math.log(LEVELS)  # a constant: the gradients are those of the ELBO of y
        return value - shift, {**aux, "reconstruction": aux["reconstruction"] - shift, "elbo": aux["elbo"] - shift}

    def log_marginal(self, params, key, x, *, num_samples=5000, chunk_size=500):
        key_u, key_is = jax.random.split(key)
        log_density = super().log_marginal(params, key_is, dequantize(key_u, x), num_samples=num_samples,
                                           chunk_size=chunk_size)
        return log_density - x.size * math.log(LEVELS)


def build(likelihood: str, input_shape, *, latent_dim: int, min_log_std: float = MIN_LOG_STD) -> models.VAE:
    """The MLP VAE for ``likelihood``: plain for Bernoulli, an :class:`EightBitGaussianVAE` otherwise."""
    model = models.build_model(models.ModelConfig(latent_dim=latent_dim, likelihood=likelihood,
                                                  hidden_sizes=(256, 128)), input_shape)
    if likelihood == "bernoulli":
        return model
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
    return EightBitGaussianVAE(**fields, min_log_std=min_log_std)


@functools.partial(jax.jit, static_argnames=("model", "n"))
def draws(model: models.VAE, params, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Decoder means and one draw ``x ~ p(x|z)`` for ``n`` draws ``z ~ N(0, I)``, both clipped to [0, 1]."""
    key_z, key_x = jax.random.split(key)
    z = jax.random.normal(key_z, (n, model.latent_dim))
    out = jax.vmap(model.decode, in_axes=(None, 0))(params, z)
    if model.likelihood == "bernoulli":
        mean = jax.nn.sigmoid(out)
        x = jax.random.bernoulli(key_x, mean).astype(jnp.float32)
    else:
        mean, log_std = out if model.likelihood == "gaussian_learned" else (out, jnp.zeros(()))
        x = mean + jnp.exp(log_std) * jax.random.normal(key_x, mean.shape)
    return jnp.clip(mean, 0, 1), jnp.clip(x, 0, 1)


OPTIONS = (
    _common.Option("--latent-dim", _common.positive_int, 16, "size of z (default 16)"),
    _common.Option("--train-size", _common.positive_int, 20000, "training images used (default 20000)"),
    _common.Option("--eval-size", _common.positive_int, None, "test images for log-likelihoods (1000, quick 50)"),
    _common.Option("--num-importance", _common.positive_int, None,
                   "importance samples per test image (default 500, quick 32)"),
    _common.Option("--min-log-std", _common.finite_float, MIN_LOG_STD,
                   f"floor of the learned log sigma (default -log(256 sqrt(2 pi)) = {MIN_LOG_STD:.3f})"))


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a :class:`Config` (``--quick`` and the defaults resolved)."""
    return _common.parse_study(Config, __doc__, PROG, argv, options=OPTIONS, epochs=20, quick_epochs=2,
                               defaults={"eval_size": (50, 1000), "num_importance": (32, 500)})


def train_and_score(likelihood: str, index: int, cfg: Config, train_images, test, test_binary) -> tuple:
    """Trains the ``likelihood`` model and scores it: ``(model, params, entry of results.json)``."""
    model = build(likelihood, test.shape[1:], latent_dim=cfg.latent_dim, min_log_std=cfg.min_log_std)
    # The Bernoulli model sees a fresh binarisation every step.
    state, history, seconds = _common.train(
        model, train_images, epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        seed=cfg.seed, dynamic_binarization=likelihood == "bernoulli", progress=cfg.progress,
        desc=likelihood, beta=1.0, **_common.scale_kwargs(cfg))
    evaluation_data = test_binary if likelihood == "bernoulli" else test
    key_elbo, key_ll = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), index), 3)[:2]
    elbo = evaluation.evaluate(model.objective, state.params, evaluation_data, key_elbo, hparams={"beta": 1.0})
    log_lik = evaluation.log_marginal(model, state.params, evaluation_data, key_ll, num_samples=cfg.num_importance,
                                      chunk_size=min(cfg.num_importance, 250), batch_size=50,
                                      progress=cfg.progress, desc=f"log p(x) {likelihood}")
    entry = {"data": "binarised 8-bit images (1 bit/dim)" if likelihood == "bernoulli"
             else "8-bit images (dequantized density x bin width 1/256)",
             "elbo": elbo["elbo"], "log_likelihood": log_lik.mean, "log_likelihood_stderr": log_lik.stderr,
             "bits_per_dim": -log_lik.mean / (test[0].size * math.log(2)),
             "reconstruction": elbo["reconstruction"], "kl": elbo["kl"],
             "train_seconds": seconds, "final_train_loss": history[-1]["train_loss"]}
    return model, state.params, entry


def run(cfg: Config) -> dict:
    """Trains and scores the three models; writes the figures and JSON files."""
    data = _common.load_data(cfg, quick_train=1000, quick_test=cfg.eval_size)
    train_images = data.train.images[: cfg.train_size]
    test = data.test.images[:cfg.eval_size]
    test_binary = vdata.binarize_static(test, seed=cfg.seed)
    shown = slice(0, 10)
    recon_rows = {"original": test[shown], "binarised": test_binary[shown]}
    sample_rows, results = {}, {}
    for i, likelihood in enumerate(LIKELIHOODS):
        model, params, entry = train_and_score(likelihood, i, cfg, train_images, test, test_binary)
        evaluation_data = test_binary if likelihood == "bernoulli" else test
        recon_rows[LABELS[likelihood]] = _common.batched(model.reconstruct, params, evaluation_data[shown])
        if likelihood == "gaussian_learned":
            log_std = _common.batched(lambda prm, x: model.decode(prm, model.code(prm, x))[1], params, test)
            entry["log_sigma_quantiles"] = dict(zip(("min", "median", "max"),
                                                    np.quantile(log_std, [0, 0.5, 1]).tolist()))
            entry["fraction_at_floor"] = float(np.mean(log_std < cfg.min_log_std + 0.1))
            recon_rows["learned sigma (log)"] = (log_std[shown] - cfg.min_log_std) / -cfg.min_log_std
        key_draw = jax.random.split(jax.random.fold_in(jax.random.key(cfg.seed), i), 3)[2]
        mean, draw = draws(model, params, key_draw, 10)
        sample_rows[f"{LABELS[likelihood]}: mean"] = np.asarray(mean)
        sample_rows[f"{LABELS[likelihood]}: draw"] = np.asarray(draw)
        results[likelihood] = entry
    plotting.save_image_rows(recon_rows, cfg.out / "reconstructions.png",
                             title="test reconstructions (Bernoulli: of the binarised image)")
    plotting.save_image_rows(sample_rows, cfg.out / "samples.png",
                             title="z ~ N(0, I): mean of p(x|z) and a draw x ~ p(x|z)")
    summary = {"models": results, "units": "nats per image; bits/dim = -log_likelihood / (D ln 2)",
               "uniform_bits_per_dim": {"8-bit": 8.0, "binarised": 1.0},
               "gaussian_sigma1_bound_bits_per_dim": (0.5 * math.log(2 * math.pi) + math.log(LEVELS)) / math.log(2),
               "eval_size": cfg.eval_size, "num_importance": cfg.num_importance, "train_size": len(train_images),
               "dims": int(test[0].size)}
    _common.write_outputs(cfg.out, config=cfg, results=summary)
    return summary


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
