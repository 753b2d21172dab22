"""VQ-VAE on Fashion-MNIST: reconstruction error, a bits/dim bound and codebook use, beside a Gaussian VAE.

Two VQ-VAEs differ only in how the codebook learns: the codebook loss
(``"loss"``) or exponential moving averages of the assigned encoder outputs
(``"ema"``, decay ``--ema-decay``). Both start their codebook from encoder
outputs of the first batch (:func:`vae_jax.vq.codebook_from_data`) and are
trained, like the Gaussian VAEs of ``experiments.likelihoods``, on uniformly
dequantized pixels ``y = (k + u) / 256`` with a fresh ``u`` every step, with the
decoder's log sigma floored softly at ``-log(256 sqrt(2 pi))``.

After training, a PixelCNN code prior (:mod:`vae_jax.code_prior`) is fitted to
the code grids of one dequantization of the training images. The likelihood
number is the ELBO of the two-stage model p(c) p(x | c) with the one-hot
q(c | x): ``log p(y | c*) + log p(c*)``, turned into an upper bound on bits/dim
of the 8-bit test images as ``docs/likelihoods.md`` does (``vq.bits_per_dim``).
It is a bound, not an importance-sampled estimate.

The baseline is the Gaussian VAE with learned sigma of ``experiments.likelihoods``
(MLP 784-256-128-16, the same floor), trained here on the same images for the same
epochs, its log p estimated by importance sampling.

Codebook use is measured after every epoch on a fixed probe set of training
images (perplexity ``exp H`` of the code frequencies over all its grid positions,
and the number of codes never used), beside the per-batch means of training.

Writes ``reconstructions.png``, ``samples.png`` (code-prior samples decoded, and
the Gaussian VAE's decoder means of z ~ N(0, I)), ``perplexity.png``,
``results.json`` and ``config.json``. Finished pieces are kept in ``OUT/parts``
and reused by the same command (a piece made with other options is refused).

``--devices all`` trains every model data-parallel over the local devices, the
EMA update included (it is in the jitted step: XLA sums its statistics across
devices); the one-device numbers to float32 rounding, and its pieces are refused
by a run on one device. ``--track tensorboard`` (the default at full size) writes
the epochs to ``tensorboard/vq_U``, ``vq_U_prior`` (scalars) and ``gaussian_vae``.

Size: 20000 training images, 10 epochs, conv VQ-VAE with channels 8-16 (a 7x7
grid of 64 codes of dimension 8), a 3-layer PixelCNN with 32 channels trained
10 epochs, 1000 test images, 500 importance samples for the Gaussian VAE.
``--quick``: 256 images, 1 epoch, channels 4-8, a 1-layer PixelCNN with 8 channels,
20 test images, a probe of 32 images, 8 importance samples.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _common, likelihoods
from vae_jax import code_prior, evaluation, plotting, training, vq

PROG = "experiments.vq_vae"
UPDATES = ("ema", "loss")
SHOWN = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The study's options, resolved."""

    updates: tuple[str, ...]
    train_size: int
    eval_size: int
    probe_size: int
    num_codes: int
    embedding_dim: int
    features: tuple[int, ...]
    beta: float
    ema_decay: float
    prior_features: int
    prior_layers: int
    prior_epochs: int
    prior_learning_rate: float
    latent_dim: int
    num_importance: int

    def piece_options(self) -> dict:
        """What every piece depends on (all options but the output folder, the progress bars and which pieces;
        ``devices`` only when ``"all"``, never ``track``, as :meth:`stored_scale_options` says)."""
        skip = ("out", "progress", "updates", "devices", "track")
        return {**{k: v for k, v in self.to_json().items() if k not in skip}, **self.stored_scale_options()}


class FlooredDecoder(nn.Module):
    """A ``(mean, raw log sigma)`` decoder with log sigma floored softly: ``m + softplus(raw - m)``."""

    inner: nn.Module
    min_log_std: float

    def __call__(self, z):
        mean, raw = self.inner(z)
        return mean, self.min_log_std + jax.nn.softplus(raw - self.min_log_std)


def build_vq(cfg: Config, update: str, input_shape) -> vq.VQVAE:
    """The conv VQ-VAE with learned, floored sigma and codebook update ``update``."""
    model = vq.vq_vae(input_shape, num_codes=cfg.num_codes, embedding_dim=cfg.embedding_dim, features=cfg.features,
                      codebook_update=update)
    return dataclasses.replace(model, decoder=FlooredDecoder(model.decoder, likelihoods.MIN_LOG_STD))


def dequantizing(step):
    """``step`` on a fresh dequantization of each batch (from the step's key)."""
    def wrapped(state, batch, key):
        key_u, key_step = jax.random.split(key)
        return step(state, likelihoods.dequantize(key_u, batch), key_step)
    return jax.jit(wrapped, donate_argnums=0)


def probe_usage(model: vq.VQVAE, probe: jax.Array):
    """``params -> {"probe_perplexity", "probe_dead_codes"}``: the codebook use over all grid positions of ``probe``."""
    usage_of = jax.jit(lambda params: vq.codebook_usage(jax.vmap(model.codes, in_axes=(None, 0))(params, probe),
                                                        model.num_codes))
    return lambda params: {f"probe_{k}": float(v) for k, v in usage_of(params).items()}


def train_vq(cfg: Config, model: vq.VQVAE, train, probe, key) -> tuple[training.TrainState, list, dict]:
    """Trains ``model`` (codebook from the first batch); returns the state, history and the initial usage."""
    k_init, k_code, k_fit = jax.random.split(key, 3)
    state = training.create_train_state(model, k_init, train[0], optax.adam(cfg.learning_rate), beta=cfg.beta)
    first = likelihoods.dequantize(k_code, jnp.asarray(train[:cfg.batch_size]))
    state = state.replace(params=vq.codebook_from_data(model, state.params, k_code, first))
    if model.codebook_update == "ema":
        state = vq.with_codebook_ema(state)
    usage = probe_usage(model, probe)
    initial = usage(state.params)
    step = dequantizing(vq.make_train_step(model, decay=cfg.ema_decay))
    state, history, _ = _common.fit_scaled(model, state, step, jnp.asarray(train), k_fit, epochs=cfg.epochs,
                                           batch_size=cfg.batch_size, epoch_fn=_common.loop_epoch,
                                           hooks=[lambda e, s, h: h[-1].update(usage(s.params))], images=False,
                                           progress=cfg.progress, desc=f"vq_{model.codebook_update}",
                                           **_common.scale_kwargs(cfg))
    return state, history, initial


def fit_prior(cfg: Config, codes: jax.Array, key, name: str) -> tuple[code_prior.CodePrior, object, list]:
    """The PixelCNN prior fitted to ``codes [N, h, w]`` (``name``: its progress bar and event folder)."""
    prior = code_prior.code_prior(codes.shape[1:], cfg.num_codes, features=cfg.prior_features,
                                  num_layers=cfg.prior_layers)
    k_init, k_fit = jax.random.split(key)
    state = training.create_train_state(prior, k_init, codes[0], optax.adam(cfg.prior_learning_rate))
    state, history, _ = _common.fit_scaled(prior, state, training.make_train_step(prior.objective), codes, k_fit,
                                           epochs=cfg.prior_epochs, batch_size=cfg.batch_size,
                                           epoch_fn=_common.loop_epoch, images=False, progress=cfg.progress,
                                           desc=name, **_common.scale_kwargs(cfg))
    return prior, state.params, history


def vq_piece(cfg: Config, update: str, data: dict, key) -> tuple[dict, dict]:
    """Trains the ``update`` VQ-VAE and its prior, then scores them on the dequantized test images."""
    model = build_vq(cfg, update, data["test"].shape[1:])
    start = time.perf_counter()
    state, history, initial = train_vq(cfg, model, data["train"], data["probe"], jax.random.fold_in(key, 0))
    seconds = time.perf_counter() - start
    params = state.params
    codes_of = jax.jit(jax.vmap(model.codes, in_axes=(None, 0)))
    train_codes = codes_of(params, likelihoods.dequantize(jax.random.fold_in(key, 1), jnp.asarray(data["train"])))
    prior, prior_params, prior_history = fit_prior(cfg, train_codes, jax.random.fold_in(key, 2), f"vq_{update}_prior")
    y, x = data["test_dequantized"], jnp.asarray(data["test"])
    log_prior = functools.partial(prior.log_prob, prior_params)
    log_joint = np.asarray(jax.jit(jax.vmap(lambda yi: model.log_joint(params, yi, log_prior)))(y))
    log_p_codes = np.asarray(jax.jit(jax.vmap(log_prior))(codes_of(params, y)))
    recon = np.asarray(jax.jit(jax.vmap(model.reconstruct, in_axes=(None, 0)))(params, x))
    dims = int(x[0].size)
    shift = dims * math.log(likelihoods.LEVELS)
    to_bits = lambda nats: float(-nats / (dims * math.log(2)))  # noqa: E731
    usage = vq.codebook_usage(codes_of(params, x), cfg.num_codes)
    decoded = jax.jit(jax.vmap(model.decode_codes, in_axes=(None, 0)))
    samples = decoded(params, prior.sample(prior_params, jax.random.fold_in(key, 3), 2 * SHOWN))[0]
    value = {"bits_per_dim": float(vq.bits_per_dim(log_joint.mean(), dims)),
             "bits_per_dim_stderr": float(log_joint.std(ddof=1) / math.sqrt(len(log_joint)) / (dims * math.log(2))),
             "log_joint": float(log_joint.mean()) - shift,
             "reconstruction_bits_per_dim": to_bits(log_joint.mean() - log_p_codes.mean() - shift),
             "code_bits_per_dim": to_bits(log_p_codes.mean()), "code_bits_per_image": float(-log_p_codes.mean() / math.log(2)),
             "uniform_code_bits_per_image": math.prod(train_codes.shape[1:]) * math.log2(cfg.num_codes),
             "squared_error_per_pixel": float(np.mean((recon - np.asarray(x)) ** 2)),
             "test_perplexity": float(usage["perplexity"]), "test_dead_codes": int(usage["dead_codes"]),
             "initial_probe": initial, "history": history, "prior_history": prior_history, "train_seconds": seconds,
             "grid": list(train_codes.shape[1:])}
    return value, {"reconstructions": recon[:SHOWN], "samples": np.clip(np.asarray(samples), 0, 1)}


def gaussian_piece(cfg: Config, data: dict, key) -> tuple[dict, dict]:
    """The learned-sigma Gaussian VAE of ``experiments.likelihoods``, trained and scored on the same images."""
    x = data["test"]
    model = likelihoods.build("gaussian_learned", x.shape[1:], latent_dim=cfg.latent_dim)
    state, history, seconds = _common.train(model, data["train"], epochs=cfg.epochs, batch_size=cfg.batch_size,
                                            learning_rate=cfg.learning_rate, seed=cfg.seed, progress=cfg.progress,
                                            desc="gaussian_vae", beta=1.0, **_common.scale_kwargs(cfg))
    k_elbo, k_ll, k_draw = jax.random.split(key, 3)
    elbo = evaluation.evaluate(model.objective, state.params, x, k_elbo, hparams={"beta": 1.0})
    log_lik = evaluation.log_marginal(model, state.params, x, k_ll, num_samples=cfg.num_importance,
                                      chunk_size=min(cfg.num_importance, 250), batch_size=50, progress=cfg.progress,
                                      desc="log p(x) gaussian")
    dims = int(x[0].size)
    recon = _common.batched(model.reconstruct, state.params, x)
    value = {"log_likelihood": log_lik.mean, "log_likelihood_stderr": log_lik.stderr,
             "bits_per_dim": -log_lik.mean / (dims * math.log(2)),
             "bits_per_dim_stderr": log_lik.stderr / (dims * math.log(2)),
             "elbo_bits_per_dim": -elbo["elbo"] / (dims * math.log(2)),
             "reconstruction_bits_per_dim": -elbo["reconstruction"] / (dims * math.log(2)),
             "kl_bits_per_dim": elbo["kl"] / (dims * math.log(2)), "elbo": elbo["elbo"], "kl": elbo["kl"],
             "squared_error_per_pixel": float(np.mean((recon - x) ** 2)), "history": history, "train_seconds": seconds}
    mean, _ = likelihoods.draws(model, state.params, k_draw, 2 * SHOWN)
    return value, {"reconstructions": recon[:SHOWN], "samples": np.asarray(mean)}


OPTIONS = (
    _common.Option("--updates", str, None, "codebook updates trained, of ema and loss (default both; quick ema)", "+"),
    _common.Option("--train-size", _common.positive_int, 20000, "training images used (default 20000)"),
    _common.Option("--eval-size", _common.positive_int, None, "test images scored (default 1000, quick 20)"),
    _common.Option("--probe-size", _common.positive_int, None,
                   "training images whose codes measure codebook use each epoch (default 1000, quick 32)"),
    _common.Option("--num-codes", _common.positive_int, 64, "codebook size K (default 64)"),
    _common.Option("--embedding-dim", _common.positive_int, 8, "dimension D of each code (default 8)"),
    _common.Option("--features", _common.positive_int, None,
                   "channels of the stride-2 convolutions (default 8 16, quick 4 8)", "+"),
    _common.Option("--beta", _common.nonnegative_float, 0.25, "commitment weight (default 0.25)"),
    _common.Option("--ema-decay", _common.nonnegative_float, 0.99, "EMA codebook decay in [0, 1) (default 0.99)"),
    _common.Option("--prior-features", _common.positive_int, None, "PixelCNN channels (default 32, quick 8)"),
    _common.Option("--prior-layers", _common.positive_int, None, "PixelCNN masked layers (default 3, quick 1)"),
    _common.Option("--prior-epochs", _common.positive_int, None, "PixelCNN epochs (default 10, quick 1)"),
    _common.Option("--prior-learning-rate", _common.positive_float, 3e-3, "PixelCNN Adam step (default 3e-3)"),
    _common.Option("--latent-dim", _common.positive_int, 16, "z size of the Gaussian VAE (default 16)"),
    _common.Option("--num-importance", _common.positive_int, None,
                   "importance samples per test image of the Gaussian VAE (default 500, quick 8)"))


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a :class:`Config` (``--quick`` and the defaults resolved)."""
    cfg = _common.parse_study(Config, __doc__, PROG, argv, options=OPTIONS, epochs=10, quick_epochs=1,
                              defaults={"updates": (["ema"], list(UPDATES)), "eval_size": (20, 1000),
                                        "probe_size": (32, 1000), "features": ([4, 8], [8, 16]),
                                        "prior_features": (8, 32), "prior_layers": (1, 3), "prior_epochs": (1, 10),
                                        "num_importance": (8, 500)})
    if not cfg.updates or set(cfg.updates) - set(UPDATES) or len(set(cfg.updates)) < len(cfg.updates):
        raise ValueError(f"--updates takes distinct names of {', '.join(UPDATES)}; got {' '.join(cfg.updates)}.")
    if not cfg.ema_decay < 1:
        raise ValueError(f"--ema-decay must be below 1; got {cfg.ema_decay}.")
    return cfg


def study_data(cfg: Config) -> dict:
    """Training images, the probe set, the test images and one seeded dequantization of them."""
    data = _common.load_data(cfg, quick_train=256, quick_test=cfg.eval_size)
    train = data.train.images[:cfg.train_size]
    test = data.test.images[:cfg.eval_size]
    if cfg.probe_size > len(train):
        raise ValueError(f"--probe-size {cfg.probe_size} is larger than the training set ({len(train)} images).")
    key = jax.random.fold_in(jax.random.key(cfg.seed), 7)
    return {"train": train, "probe": jnp.asarray(train[:cfg.probe_size]), "test": test,
            "test_dequantized": likelihoods.dequantize(key, jnp.asarray(test))}


def save_figures(cfg: Config, test: np.ndarray, pieces: dict) -> None:
    """Reconstructions, samples and the perplexity curves."""
    names = {"ema": "VQ-VAE, EMA codebook", "loss": "VQ-VAE, codebook loss", "gaussian": "Gaussian VAE"}
    plotting.save_image_rows({"test image": test[:SHOWN], **{names[k]: a["reconstructions"]
                                                           for k, (_, a) in pieces.items()}},
                             cfg.out / "reconstructions.png", title="test images and reconstructions (means)")
    plotting.save_image_rows({names[k]: a["samples"] for k, (_, a) in pieces.items()}, cfg.out / "samples.png",
                             title="VQ: codes ~ PixelCNN prior, decoded; Gaussian: z ~ N(0, I); means")
    series = {}
    for update in cfg.updates:
        history = pieces[update][0]["history"]
        series[f"{update}: probe set"] = [r["probe_perplexity"] for r in history]
        series[f"{update}: batch mean"] = [r["train_perplexity"] for r in history]
    plotting.save_curves(series, cfg.out / "perplexity.png", ylabel=f"code perplexity (K = {cfg.num_codes})",
                         title="codebook use during training")


def run(cfg: Config) -> dict:
    """Trains and scores the pieces the parts folder lacks; writes the figures and the JSON files."""
    start, load_before = time.perf_counter(), list(os.getloadavg())
    parts = _common.Parts(cfg.out / "parts", resume=True)
    data = study_data(cfg)
    key = jax.random.key(cfg.seed)
    options = cfg.piece_options()
    pieces = {u: _common.computed_piece(parts, f"vq_{u}", options,
                                        lambda u=u: vq_piece(cfg, u, data, jax.random.fold_in(key, 1 + i)))
              for i, u in enumerate(UPDATES) if u in cfg.updates}
    pieces["gaussian"] = _common.computed_piece(parts, "gaussian_vae", options,
                                                lambda: gaussian_piece(cfg, data, jax.random.fold_in(key, 10)))
    save_figures(cfg, data["test"], pieces)
    results = {"models": {k: v for k, (v, _) in pieces.items()}, "train_size": len(data["train"]),
               "eval_size": cfg.eval_size, "dims": int(data["test"][0].size),
               "units": "bits/dim of the 8-bit test images (upper bounds); squared error per pixel on [0, 1]",
               "wall_seconds_this_call": time.perf_counter() - start, "load_average_before": load_before,
               "load_average_after": list(os.getloadavg())}
    _common.write_outputs(cfg.out, config=cfg, results=results)
    return results


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
