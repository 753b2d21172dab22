"""Disentanglement on dSprites-style data: beta-VAE, beta-TCVAE and FactorVAE over seeds, scored by the standard metrics.

Data: :class:`vae_jax.dsprites.Sprites` (the dSprites factor grid, rendered
on demand): ``--train-size`` distinct grid points chosen by ``--data-seed``,
mean-pooled from 64x64 to ``--image-size`` (32 by default: 4x cheaper on a
CPU; the factors stay visible, orientation loses detail), Bernoulli likelihood
on the pooled grey levels.

Models: an MLP VAE (``--hidden-sizes``, 10 latents as in the papers), trained
with Adam for ``--epochs``. Settings (``--methods``): beta-VAE for each
``--betas``, beta-TCVAE (Chen et al., 2018, minibatch-weighted sampling, the
TC weighted by each ``--tc-weights``) and FactorVAE (Kim & Mnih, 2018, the
ELBO minus each ``--gammas`` times the discriminator's TC estimate; the
discriminator an MLP of ``--discriminator-sizes`` with Adam(``--discriminator-lr``,
b1=0.5, b2=0.9) as in the paper), each with every ``--seeds``. Within a seed
all settings share initial parameters and batches (a stacked, vmapped
computation per epoch through ``training.fit(..., epoch_fn=...)``), so the
weight is the only difference; seeds change both.

Metrics (``vae_jax.disentanglement``, on posterior means, factors = shape,
scale, orientation, x, y): MIG on ``--eval-size`` random images; DCI
(``--dci-trees`` boosting rounds, default 100 as disentanglement_lib) and SAP
on the first ``--dci-train`` / next ``--dci-test`` of them; the FactorVAE and
beta-VAE scores with their own draws (``--score-train`` / ``--score-eval``
points of batch 64); reconstruction error = -E_q log p(x|z) (nats per pooled
image) and KL on the same images. Every weighted setting is compared with
beta = 1 on MIG and DCI disentanglement by a one-sided Welch t-test over seeds,
with Holm's correction over all those comparisons (``comparison_with_beta_1``).

Summaries, comparisons and figures: ``experiments._disentanglement_report``.
Resumable: each seed writes ``models/seed{S}.json`` (its rows and the options
they were made with) and ``models/seed{S}.npz`` (traversals, DCI importance
matrices and the evaluation codes of each model) in ``--out``; a later call
trains only the settings a seed's file lacks (so adding ``factor_vae`` to
``--methods`` adds FactorVAE to a finished run) and refuses a seed file made
with other options (epochs, sizes, metric sizes...), naming them. Writes
``metrics_vs_beta.png``, ``traversals.png``, ``results.json`` and
``config.json`` (``--no-figures``: the JSON files only).

``--devices all`` trains each stack data-parallel over every local device
(the one-device numbers to float32 rounding; seed files made so record it,
and are refused by a run on one device); ``--track tensorboard`` (the default
at full size) writes each model's epochs and images to
``tensorboard/METHOD_WEIGHT_seedS`` (docs/scale.md).

Sizes: ``--quick`` (2 seeds, betas 1 and 4, TC weight 4, gamma 10, 512
16x16 images, 1 epoch, tiny metric sizes with one boosting round, XLA
optimisation level 0 for the training epochs) is what the test suite runs.
The run reported in docs/disentanglement.md is ``--betas 1 4 16 --tc-weights
6 10 20 --gammas 10 40 --epochs 8`` (5 seeds, 40 models, DCI at the default
100 rounds): 1,400-2,500 s of wall time per seed on a shared machine; an
earlier run with ``--dci-trees 20`` is kept beside it for comparison
(``experiments.disentanglement_dci`` rescores stored codes at other rounds).
The default (5 betas, 2 TC weights, 2 FactorVAE gammas, 6 epochs) is the
intended medium size, not run; the papers' protocol (64x64,
300k steps, full metric sizes) is out of reach of a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _common
from experiments._disentanglement_report import (METHODS, TRAVERSAL_STEPS, Setting, compare_to_vae,
                                                  save_metric_figure, save_traversals, summarize, traversal_panels)
from vae_jax import disentanglement as metrics
from vae_jax import dsprites, evaluation, models, tc, tc_training, training

PROG = "experiments.disentanglement"
TRAVERSAL_SPAN = 2.5
TRAVERSAL_FACTORS = (2, 3, 10, 16, 16)  # the traversals' reference image: a mid-sized heart near the centre


class EvalSet(NamedTuple):
    """The fixed evaluation images: ``factors [N, 5]`` and their 64x64 ``images [N, 64, 64, 1]``."""

    factors: np.ndarray
    images: np.ndarray


class Scored(NamedTuple):
    """One trained model's evaluation: its row of metrics and the arrays stored beside it."""

    row: dict
    importance: np.ndarray  # [L, K] DCI importance
    traversal: np.ndarray  # [L * TRAVERSAL_STEPS, H, W, 1]
    codes: np.ndarray  # [eval_size, L] posterior means of the evaluation images


@dataclasses.dataclass(frozen=True)
class MetricSizes:
    """How many images each metric uses (see the module docstring)."""

    eval_size: int
    dci_train: int
    dci_test: int
    score_train: int
    score_eval: int
    score_batch: int
    variance_size: int


QUICK_SIZES = MetricSizes(eval_size=200, dci_train=100, dci_test=60, score_train=10, score_eval=6, score_batch=16,
                          variance_size=300)
FULL_SIZES = MetricSizes(eval_size=10000, dci_train=1000, dci_test=500, score_train=300, score_eval=200,
                         score_batch=64, variance_size=5000)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.TrainingConfig):
    """The study's options, resolved (``--quick`` or the default sizes filled in) and checked."""

    methods: tuple[str, ...]
    betas: tuple[float, ...]
    tc_weights: tuple[float, ...]
    gammas: tuple[float, ...]
    discriminator_sizes: tuple[int, ...]
    discriminator_lr: float
    seeds: tuple[int, ...]
    train_size: int
    image_size: int
    hidden_sizes: tuple[int, ...]
    latent_dim: int
    data_seed: int
    dci_trees: int
    sizes: MetricSizes
    figures: bool
    dpi: int

    def __post_init__(self):
        if "beta_vae" not in self.methods or 1.0 not in self.betas:
            raise ValueError("--methods must include beta_vae and --betas 1 (the plain VAE the others are "
                             "compared with).")
        if self.batch_size > self.train_size:
            raise ValueError(f"--batch-size {self.batch_size} is larger than --train-size {self.train_size}.")
        if self.sizes.dci_train + self.sizes.dci_test > self.sizes.eval_size:
            raise ValueError("the DCI images must fit in the evaluation images.")

    def settings(self) -> list[Setting]:
        """Every (method, weight) to train, in the order of ``METHODS``."""
        return [Setting(m, float(w)) for m, spec in METHODS.items() if m in self.methods
                for w in getattr(self, spec.weights_field)]

    def part_options(self) -> dict:
        """The options a seed's stored rows depend on (not which settings or seeds, nor the output; ``devices``
        only when not ``"one"``, so the seed files of earlier runs keep resuming)."""
        return {**{k: v for k, v in self.to_json().items() if k not in (
            "out", "data_dir", "progress", "figures", "dpi", "methods", "betas", "tc_weights", "gammas", "seeds",
            "devices", "track")}, **self.stored_scale_options()}


def pool(images: np.ndarray, size: int) -> np.ndarray:
    """``[N, 64, 64, 1]`` -> ``[N, size, size, 1]`` by block means (grey levels in [0, 1])."""
    factor = images.shape[1] // size
    if factor * size != images.shape[1]:
        raise ValueError(f"image size {size} must divide {images.shape[1]}.")
    return images.reshape(len(images), size, factor, size, factor, 1).mean(axis=(2, 4), dtype=np.float32)


class CachedSprites(dsprites.Sprites):
    """Sprites that remembers rendered batches (bit-packed): every model sees the same metric draws."""

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "_cache", {})

    def images(self, factors):
        key = np.asarray(factors, np.int64).tobytes()
        if key not in self._cache:
            self._cache[key] = np.packbits(super().images(factors) > 0, axis=1)
        return np.unpackbits(self._cache[key], axis=1, count=64).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _build_model(config: models.ModelConfig, input_shape: tuple[int, ...]):
    """One model object per configuration, so that a second call in the same process (a resume, a test)
    reuses the compilations keyed by it (the train steps, ``model.objective`` in ``evaluation.evaluate``)."""
    return models.build_model(config, input_shape)


@functools.lru_cache(maxsize=None)
def _adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999):
    """One optimizer object per setting: states of every seed then share a pytree structure (and compilations)."""
    return optax.adam(learning_rate, b1=b1, b2=b2)


@functools.lru_cache(maxsize=None)
def _train_step(model, method: str, dataset_size: int, discriminator_lr: float):
    """The method's step, built once, so every seed reuses its compilation."""
    if method == "beta_vae":
        return training.make_train_step(model.objective)
    if method == "beta_tcvae":
        return tc_training.make_tc_train_step(model, dataset_size=dataset_size)
    return tc_training.make_factor_vae_train_step(model, _adam(discriminator_lr, 0.5, 0.9))


@functools.lru_cache(maxsize=None)
def _stacked_epoch(fast_compile: bool):
    """``training.train_epoch_stacked``, or (``--quick``) the same function compiled at XLA backend
    optimisation level 0: about 4x faster to compile on CPU, slower to run, the same maths."""
    if not fast_compile:
        return training.train_epoch_stacked
    return jax.jit(training.train_epoch_stacked.__wrapped__, static_argnames=("train_step", "batch_size"),
                   donate_argnames=("states",), compiler_options={"xla_backend_optimization_level": 0})


def initial_state(model, images: np.ndarray, seed: int, cfg: Config) -> training.TrainState:
    """The initial VAE state of ``seed`` (Adam), shared by every setting of the seed."""
    key_init = jax.random.split(jax.random.key(seed))[0]
    return training.create_train_state(model, key_init, images[0], _adam(cfg.learning_rate))


def train_seed(model, images: np.ndarray, method: str, weights: list[float], seed: int, cfg: Config,
               initial=None):
    """All ``weights`` of one method and seed as one stacked model: ``(states, history)``."""
    key_init, key_fit = jax.random.split(jax.random.key(seed))
    initial = initial or initial_state(model, images, seed, cfg)
    hparam = METHODS[method].hparam
    states = [initial.replace(hparams={hparam: jnp.asarray(w, jnp.float32)}) for w in weights]
    if method == "factor_vae":
        states = [tc.add_discriminator(s, jax.random.fold_in(key_init, 1), _adam(cfg.discriminator_lr, 0.5, 0.9),
                                       latent_dim=cfg.latent_dim, hidden_sizes=cfg.discriminator_sizes)
                  for s in states]
    states = training.stack(states)
    step = _train_step(model, method, len(images), cfg.discriminator_lr)

    def epoch_fn(train_step, states, data, key, *, batch_size):
        keys = jnp.stack([key] * len(weights))  # common random numbers across the weights
        return _stacked_epoch(cfg.quick)(train_step, states, data, keys, batch_size=batch_size)

    result = _common.fit_scaled(model, states, step, jnp.asarray(images), key_fit, epochs=cfg.epochs,
                                batch_size=cfg.batch_size, seed=seed, epoch_fn=epoch_fn,
                                stacked=[f"{method}_{w:g}_seed{seed}" for w in weights], progress=cfg.progress,
                                desc=f"{method} seed {seed}", **_common.scale_kwargs(cfg))
    return result[0], result[1]


@functools.lru_cache(maxsize=None)
def _batched_fn(model, name: str):
    """``jit(vmap(model.<name>))``, built once per model so that every trained model reuses the compilation."""
    return jax.jit(jax.vmap(getattr(model, name), in_axes=(None, 0)))


def evaluate_model(model, params, eval_set: EvalSet, data: CachedSprites, cfg: Config) -> Scored:
    """Every metric of one model, its DCI importance, traversals and evaluation codes."""
    code = _batched_fn(model, "code")

    def represent(images):
        x = pool(images, cfg.image_size)
        return np.concatenate([np.asarray(code(params, jnp.asarray(x[i:i + 2048]))) for i in range(0, len(x), 2048)])

    sizes, factors = cfg.sizes, eval_set.factors
    codes = represent(eval_set.images)
    a, b = sizes.dci_train, sizes.dci_train + sizes.dci_test
    dci = metrics.dci(codes[:a], factors[:a], codes[a:b], factors[a:b], n_estimators=cfg.dci_trees)
    score = dict(batch_size=sizes.score_batch, num_train=sizes.score_train, num_eval=sizes.score_eval,
                 seed=cfg.seed)
    fvae = metrics.factor_vae_score(data, represent, num_variance_estimate=sizes.variance_size, **score)
    bvae = metrics.beta_vae_score(data, represent, **score)
    ev = evaluation.evaluate(model.objective, params, pool(eval_set.images, cfg.image_size),
                             jax.random.key(cfg.seed + 1), hparams={"beta": 1.0})
    variance = codes.var(axis=0)
    row = {"mig": metrics.mig(codes, factors)["mig"], "dci_disentanglement": dci["disentanglement"],
           "dci_completeness": dci["completeness"], "dci_informativeness": dci["informativeness_test"],
           "sap": metrics.sap(codes[:a], factors[:a], codes[a:b], factors[a:b])["sap"],
           "factor_vae_score": fvae["eval_accuracy"], "beta_vae_score": bvae["eval_accuracy"],
           "reconstruction_error": -ev["reconstruction"], "kl": ev["kl"],
           "active_units": int(np.sum(variance > 0.01)), "posterior_mean_variance": variance.tolist()}
    return Scored(row, dci["importance"], traversal(model, params, codes[0]), codes)


def traversal(model, params, code: np.ndarray) -> np.ndarray:
    """Decoded means with latent ``j`` of ``code [L]`` moved over ``[-span, span]``: ``[L * steps, H, W, 1]``."""
    z = np.repeat(code[None], len(code) * TRAVERSAL_STEPS, axis=0)
    for j in range(len(code)):
        z[j * TRAVERSAL_STEPS:(j + 1) * TRAVERSAL_STEPS, j] = np.linspace(-TRAVERSAL_SPAN, TRAVERSAL_SPAN,
                                                                           TRAVERSAL_STEPS)
    return np.asarray(_batched_fn(model, "decode_mean")(params, jnp.asarray(z, jnp.float32)))


def run_seed(model, train_images, eval_set: EvalSet, data, seed: int, cfg: Config, parts: _common.Parts) -> dict:
    """Trains and scores the settings of one seed that ``models/seed{seed}.json`` lacks; (re)writes it and its ``.npz``.

    Raises:
      ValueError: the seed's file was made with other options than ``cfg``'s.
      StudyError: a seed file cannot be read.
    """
    options = cfg.part_options()
    stored = parts.load(f"seed{seed}", options) or {"seed": seed, "rows": [], "seconds": 0.0}
    done = {Setting(r["method"], r["weight"]) for r in stored["rows"]}
    missing = [s for s in cfg.settings() if s not in done]
    if not missing:
        return stored
    rows = stored["rows"]
    arrays = parts.read_file(f"seed{seed}.npz", _common.read_npz) or {}
    start = time.perf_counter()
    initial = initial_state(model, train_images, seed, cfg)
    for method in METHODS:
        weights = [w for m, w in missing if m == method]
        if not weights:
            continue
        t0 = time.perf_counter()
        states, history = train_seed(model, train_images, method, weights, seed, cfg, initial)
        train_seconds = time.perf_counter() - t0
        for i, (w, state) in enumerate(zip(weights, training.unstack(states))):
            scored = evaluate_model(model, state.params, eval_set, data, cfg)
            final = {k: (v[i] if isinstance(v, list) else v) for k, v in history[-1].items()}
            rows.append({"method": method, "weight": w, "seed": seed, **scored.row,
                         "final_train_loss": final.get("train_loss", final.get("loss")), "final_train": final,
                         "train_seconds_of_stack": train_seconds})
            tag = f"{method}_{w:g}"
            arrays.update({f"{tag}_importance": scored.importance, f"{tag}_codes": scored.codes,
                           f"{tag}_traversal": scored.traversal.astype(np.float16)})
    parts.write_file(f"seed{seed}.npz", _common.npz_bytes(arrays))
    result = {"seed": seed, "rows": rows, "seconds": stored["seconds"] + time.perf_counter() - start}
    parts.save(f"seed{seed}", options, result)
    return result


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a checked :class:`Config` (``--quick`` and the defaults resolved)."""
    p = _common.parser(__doc__, PROG)
    p.add_argument("--betas", type=_common.positive_float, nargs="+", default=None,
                   help="beta-VAE weights (1 2 4 8 16; quick 1 4)")
    p.add_argument("--tc-weights", type=_common.positive_float, nargs="*", default=None,
                   help="beta-TCVAE TC weights (4 8; quick 4)")
    p.add_argument("--gammas", type=_common.positive_float, nargs="*", default=None,
                   help="FactorVAE TC weights (10 40; quick 10)")
    p.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS),
                   help="which methods to train (default: all; beta_vae is the baseline every comparison needs)")
    p.add_argument("--discriminator-sizes", type=_common.positive_int, nargs="+", default=None,
                   help="FactorVAE discriminator widths (256 256 256; quick 32; the paper: six of 1000)")
    p.add_argument("--discriminator-lr", type=_common.positive_float, default=1e-3,
                   help="FactorVAE discriminator Adam learning rate (b1=0.5, b2=0.9 as in the paper)")
    p.add_argument("--seeds", type=_common.nonnegative_int, nargs="+", default=None,
                   help="training seeds (0 1 2 3 4; quick 0 1)")
    p.add_argument("--epochs", type=_common.positive_int, default=None, help="epochs (default 6, quick 1)")
    p.add_argument("--train-size", type=_common.positive_int, default=None,
                   help="training images (default 20000, quick 512)")
    p.add_argument("--image-size", type=int, default=None, choices=(16, 32, 64),
                   help="pooled image side (default 32, quick 16)")
    p.add_argument("--hidden-sizes", type=_common.positive_int, nargs="+", default=None,
                   help="MLP widths (256 128; quick 32)")
    p.add_argument("--latent-dim", type=_common.positive_int, default=10)
    p.add_argument("--batch-size", type=_common.positive_int, default=64)
    p.add_argument("--learning-rate", type=_common.positive_float, default=1e-3)
    p.add_argument("--data-seed", type=_common.nonnegative_int, default=0,
                   help="which grid points are the training set")
    p.add_argument("--dci-trees", type=_common.positive_int, default=None,
                   help="boosting rounds of DCI's trees (default 100 as disentanglement_lib; quick 1)")
    p.add_argument("--no-figures", action="store_true",
                   help="write results.json only (e.g. one process per seed; a later call draws the figures)")
    _common.add_scale_args(p)
    args = p.parse_args(argv)
    q = args.quick
    given = _common.resolve_defaults(args, dict(
        betas=([1.0, 4.0], [1.0, 2.0, 4.0, 8.0, 16.0]), tc_weights=([4.0], [4.0, 8.0]), gammas=([10.0], [10.0, 40.0]),
        seeds=([0, 1], [0, 1, 2, 3, 4]), epochs=(1, 6), train_size=(512, 20000), image_size=(16, 32),
        hidden_sizes=([32], [256, 128]), discriminator_sizes=([32], [256, 256, 256]), dci_trees=(1, 100),
        **_common.TRACK_DEFAULTS))
    return Config.from_args(args, **given, methods=tuple(args.methods), sizes=QUICK_SIZES if q else FULL_SIZES,
                            figures=not args.no_figures, dpi=40 if q else 110)


def evaluation_factors(sprites: dsprites.Sprites, eval_size: int, data_seed: int) -> np.ndarray:
    """The evaluation images' factor indices ``[eval_size, 5]``; the first is the traversals' reference image."""
    factors = sprites.sample_factors(eval_size, np.random.default_rng(10_000 + data_seed))
    factors[0] = TRAVERSAL_FACTORS
    return factors


def evaluation_set(data: CachedSprites, cfg: Config) -> EvalSet:
    """``eval_size`` random grid points of ``cfg.data_seed`` (:func:`evaluation_factors`) and their images."""
    factors = evaluation_factors(data, cfg.sizes.eval_size, cfg.data_seed)
    return EvalSet(factors, data.images(factors))


def run(cfg: Config) -> dict:
    """Trains what the seed files lack, then writes the figures, ``results.json`` and ``config.json``."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    parts = _common.Parts(cfg.out / "models", resume=True)
    data = CachedSprites()
    _, raw = data.dataset(cfg.train_size, seed=cfg.data_seed)
    train_images = pool(raw, cfg.image_size)
    eval_set = evaluation_set(data, cfg)
    model_config = models.ModelConfig(latent_dim=cfg.latent_dim, hidden_sizes=cfg.hidden_sizes)
    model = _build_model(model_config, train_images.shape[1:])
    rows, seconds, wanted = [], {}, set(cfg.settings())
    for seed in cfg.seeds:
        result = run_seed(model, train_images, eval_set, data, seed, cfg, parts)
        rows += [r for r in result["rows"] if Setting(r["method"], r["weight"]) in wanted]
        seconds[seed] = result["seconds"]
    summary = summarize(rows, cfg.settings())
    if cfg.figures:
        save_metric_figure(summary, cfg.out / "metrics_vs_beta.png", image_size=cfg.image_size,
                           seeds=len(cfg.seeds), dpi=cfg.dpi)
        save_traversals(traversal_panels(summary, rows, parts), cfg.out / "traversals.png", dpi=cfg.dpi)
    results = {"summary": summary, "comparison_with_beta_1": compare_to_vae(summary), "rows": rows,
               "seconds_per_seed": seconds, "wall_seconds_this_call": time.perf_counter() - start,
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "factors": list(dsprites.FACTOR_NAMES), "train_size": cfg.train_size, "dci_trees": cfg.dci_trees,
               "units": "reconstruction_error and kl: nats per pooled image; scores in [0, 1]"}
    _common.write_outputs(cfg.out, config={**cfg.to_json(), "model": model_config, "jax": jax.__version__},
                          results=results)
    return results


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
