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

Resumable: each seed writes ``models/seed{S}.json`` (its rows and the options
they were made with) and ``models/seed{S}.npz`` (traversals, DCI importance
matrices and the evaluation codes of each model) in ``--out``; a later call
trains only the settings a seed's file lacks (so adding ``factor_vae`` to
``--methods`` adds FactorVAE to a finished run) and refuses a seed file made
with other options (epochs, sizes, metric sizes...), naming them. Writes
``metrics_vs_beta.png``, ``traversals.png``, ``results.json`` and
``config.json`` (``--no-figures``: the JSON files only).

Sizes: ``--quick`` (2 seeds, betas 1 and 4, TC weight 4, gamma 10, 512
16x16 images, 1 epoch, tiny metric sizes with one boosting round, XLA
optimisation level 0 for the training epochs) is what the test suite runs.
The run reported in docs/disentanglement.md is ``--betas 1 4 16 --tc-weights
6 10 20 --gammas 10 40 --epochs 8`` (5 seeds, 40 models, DCI with 20 boosting
rounds: the default then): 500-900 s of wall time per seed on the shared
2-core machine. The default (5 betas, 2 TC weights, 2 FactorVAE gammas, 6
epochs) is the intended medium size, not run; the papers' protocol (64x64,
300k steps, full metric sizes) is out of reach of a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import scipy.stats

from experiments import _common
from vae_jax import disentanglement as metrics
from vae_jax import dsprites, evaluation, models, plotting, tc, training
from vae_jax.config import write_json

PROG = "experiments.disentanglement"
TRAVERSAL_STEPS = 9
TRAVERSAL_SPAN = 2.5
TRAVERSAL_FACTORS = (2, 3, 10, 16, 16)  # the traversals' reference image: a mid-sized heart near the centre
ALPHA = 0.05  # family-wise error rate of the comparisons with beta = 1


class Method(NamedTuple):
    """How a method appears: the config field of its weights, the weight's name, the hyper-parameter it sets."""

    weights_field: str
    weight_name: str
    hparam: str
    color: str


class Setting(NamedTuple):
    """One trained configuration: a method and its weight."""

    method: str
    weight: float


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


METHODS = {
    "beta_vae": Method("betas", "beta", "beta", "C0"),
    "beta_tcvae": Method("tc_weights", "TC weight", "beta", "C3"),
    "factor_vae": Method("gammas", "gamma", "gamma", "C2"),
}
METRICS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "factor_vae_score",
           "beta_vae_score", "reconstruction_error", "kl", "active_units")
COMPARED = ("mig", "dci_disentanglement")  # the metrics compared with beta = 1
BASELINE = Setting("beta_vae", 1.0)


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
class Config(_common.StudyConfig):
    """The study's options, resolved (``--quick`` or the default sizes filled in) and checked."""

    methods: tuple[str, ...]
    betas: tuple[float, ...]
    tc_weights: tuple[float, ...]
    gammas: tuple[float, ...]
    discriminator_sizes: tuple[int, ...]
    discriminator_lr: float
    seeds: tuple[int, ...]
    epochs: int
    train_size: int
    image_size: int
    hidden_sizes: tuple[int, ...]
    latent_dim: int
    batch_size: int
    learning_rate: float
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
        """The options a seed's stored rows depend on (not which settings or seeds, nor the output)."""
        return {k: v for k, v in self.to_json().items() if k not in (
            "out", "data_dir", "progress", "figures", "dpi", "methods", "betas", "tc_weights", "gammas", "seeds")}


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
        return tc.make_tc_train_step(model, dataset_size=dataset_size)
    return tc.make_factor_vae_train_step(model, _adam(discriminator_lr, 0.5, 0.9))


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

    result = training.fit(step, states, jnp.asarray(images), key_fit, epochs=cfg.epochs,
                          batch_size=cfg.batch_size, epoch_fn=epoch_fn, progress=cfg.progress,
                          desc=f"{method} seed {seed}")
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


def summarize(rows: list[dict], cfg: Config) -> list[dict]:
    """Mean, sample std, min and max over seeds of every metric, per setting."""
    out = []
    for method, weight in cfg.settings():
        group = [r for r in rows if r["method"] == method and r["weight"] == weight]
        stats = {}
        for name in METRICS:
            v = np.array([r[name] for r in group], np.float64)
            stats[name] = {"mean": v.mean(), "std": v.std(ddof=1) if len(v) > 1 else 0.0, "min": v.min(),
                           "max": v.max(), "per_seed": v.tolist()}
        out.append({"method": method, "weight": weight, "seeds": [r["seed"] for r in group], **stats})
    return out


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control) of ``p_values [n]``.

    The i-th smallest p is multiplied by ``n - i + 1`` (i from 1), the running
    maximum taken and the result capped at 1; reject where the adjusted p < alpha.
    NaN p-values (a setting with one seed) stay NaN and are not counted in ``n``.
    """
    p = np.asarray(p_values, np.float64)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (len(finite) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def conclusion(welch_p: float, holm_p: float, family: int) -> str:
    """The strength of "higher than beta = 1" that a comparison's p-values support."""
    if holm_p < ALPHA:
        return f"higher than beta = 1 (Holm-adjusted p < {ALPHA:g} over {family} comparisons)"
    if welch_p < ALPHA:
        return f"suggestive only: p < {ALPHA:g} alone, not after Holm's correction over {family} comparisons"
    return f"not shown (p >= {ALPHA:g} before any correction)"


def compare_to_vae(summary: list[dict]) -> dict:
    """Every weighted setting against beta = 1 on MIG and DCI disentanglement, Holm-corrected.

    ``tests``: per setting and metric, a one-sided Welch t-test p-value that the
    setting's mean over seeds is higher (``welch_p``), its Holm-adjusted value
    over all the comparisons (``holm_p``; the best settings are chosen on the
    same data, so only a correction over every setting is honest) and the
    ``conclusion`` they support. ``best``: for each method's best (mean MIG)
    setting, two readings of "non-overlapping seed intervals": the seed ranges
    ([min, max]: ``non_overlapping``) and the 95% Student-t intervals of the mean
    (``ci95``), with the p-values of its tests. Empty without a beta = 1 row.
    """
    base = next((s for s in summary if Setting(s["method"], s["weight"]) == BASELINE), None)
    others = [s for s in summary if s is not base]
    if base is None or not others:
        return {}
    tests = [{"method": s["method"], "weight": s["weight"], "metric": m, "mean": s[m]["mean"],
              "vae_mean": base[m]["mean"], "welch_p": _welch_greater(s[m]["per_seed"], base[m]["per_seed"])}
             for s in others for m in COMPARED]
    family = int(np.sum(np.isfinite([t["welch_p"] for t in tests])))
    for t, adjusted in zip(tests, holm([t["welch_p"] for t in tests])):
        t["holm_p"] = float(adjusted)
        t["conclusion"] = conclusion(t["welch_p"], t["holm_p"], family)
    best = {}
    for method in METHODS:
        candidates = [s for s in others if s["method"] == method]
        if candidates:
            chosen = max(candidates, key=lambda s: s["mig"]["mean"])
            best[method] = _best_against_vae(chosen, base, tests)
    return {"correction": {"method": "Holm", "alpha": ALPHA, "family_size": family,
                           "test": "one-sided Welch t-test over seeds, setting mean > beta = 1 mean"},
            "tests": tests, "best": best}


def _welch_greater(ours, vae) -> float:
    with np.errstate(all="ignore"):
        return float(scipy.stats.ttest_ind(ours, vae, equal_var=False, alternative="greater").pvalue)


def _best_against_vae(best: dict, base: dict, tests: list[dict]) -> dict:
    out = {"best_weight": best["weight"]}
    for m in COMPARED:
        ours, vae = np.asarray(best[m]["per_seed"]), np.asarray(base[m]["per_seed"])
        ci_ours, ci_vae = mean_ci95(ours), mean_ci95(vae)
        test = next(t for t in tests if (t["method"], t["weight"], t["metric"]) == (best["method"], best["weight"], m))
        out[m] = {"best_min": best[m]["min"], "vae_max": base[m]["max"],
                  "non_overlapping": best[m]["min"] > base[m]["max"],
                  "ci95": {"best": ci_ours, "vae": ci_vae, "non_overlapping": ci_ours[0] > ci_vae[1]},
                  "welch_p": test["welch_p"], "holm_p": test["holm_p"], "conclusion": test["conclusion"]}
    return out


def recompare(folder: Path) -> dict:
    """Rewrites ``comparison_with_beta_1`` of ``folder/results.json`` from the summary stored in it.

    The comparisons are a function of the per-seed values alone, so a results file written
    before a change of :func:`compare_to_vae` is brought up to date without the seed files.
    Also records the DCI rounds of ``folder/config.json`` as ``dci_trees``. Returns the results.
    """
    results = json.loads((folder / "results.json").read_text())
    results["comparison_with_beta_1"] = compare_to_vae(results["summary"])
    results["dci_trees"] = json.loads((folder / "config.json").read_text())["dci_trees"]
    write_json(folder / "results.json", _common._jsonable(results))
    return results


def mean_ci95(values: np.ndarray) -> list[float]:
    """The 95% Student-t interval of the mean of ``values`` ``[n]`` (NaN for n < 2)."""
    n = len(values)
    if n < 2:
        return [float("nan"), float("nan")]
    half = scipy.stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n)
    return [float(np.mean(values) - half), float(np.mean(values) + half)]


def save_metric_figure(summary, cfg: Config, path) -> None:
    names = [m for m in METRICS if m not in ("kl", "active_units")]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.2))
    for ax, name in zip(axes.flat, names):
        for shift, (method, spec) in zip((1.0, 1.06, 0.94), METHODS.items()):
            group = [s for s in summary if s["method"] == method]
            if not group:
                continue
            w = np.array([s["weight"] for s in group])
            for s in group:
                ax.scatter([s["weight"] * shift] * len(s[name]["per_seed"]), s[name]["per_seed"], s=10,
                           color=spec.color, alpha=0.45)
            ax.errorbar(w * shift, [s[name]["mean"] for s in group], yerr=[s[name]["std"] for s in group],
                        color=spec.color, marker="o", capsize=3, label=f"{method} ({spec.weight_name})")
        ax.set_xscale("log", base=2)
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_xlabel("weight", fontsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"dSprites-style data ({cfg.image_size}x{cfg.image_size}): mean +- std over "
                 f"{len(cfg.seeds)} seeds, dots = seeds", fontsize=10)
    fig.tight_layout()
    plotting.save_figure(fig, path, dpi=cfg.dpi)


def save_traversals(panels: list[tuple[str, np.ndarray, list[str]]], path, dpi: int = 110) -> None:
    """One panel per model: a row per latent (most variable first), labelled with its best factor."""
    rows = max(len(p[2]) for p in panels)
    fig, axes = plt.subplots(rows, len(panels), figsize=(4.4 * len(panels), 0.42 * rows + 0.8), squeeze=False)
    for col, (title, images, row_labels) in enumerate(panels):
        for r in range(rows):
            ax = axes[r, col]
            ax.axis("off")
            if r < len(row_labels):
                strip = np.concatenate(list(images[r, ..., 0]), axis=1)
                ax.imshow(strip, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.text(-2, strip.shape[0] / 2, row_labels[r], ha="right", va="center", fontsize=7)
        axes[0, col].set_title(title, fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.99, wspace=0.75, hspace=0.08, top=1 - 0.5 / (0.42 * rows + 0.8))
    plotting.save_figure(fig, path, dpi=dpi)


def traversal_panels(summary, rows, parts: _common.Parts) -> list:
    """beta = 1 and each method's best setting (mean MIG), each at its best seed."""
    chosen = [s for s in summary if Setting(s["method"], s["weight"]) == BASELINE]
    for method in METHODS:
        group = [s for s in summary if s["method"] == method and s not in chosen]
        if group:
            chosen.append(max(group, key=lambda s: s["mig"]["mean"]))
    return [_traversal_panel(s, rows, parts) for s in chosen]


def _traversal_panel(s: dict, rows: list[dict], parts: _common.Parts) -> tuple[str, np.ndarray, list[str]]:
    run = max((r for r in rows if r["method"] == s["method"] and r["weight"] == s["weight"]), key=lambda r: r["mig"])
    arrays = parts.read_file(f"seed{run['seed']}.npz", _common.read_npz)
    tag = f"{s['method']}_{s['weight']:g}"
    importance = arrays[f"{tag}_importance"]
    traversal_images = arrays[f"{tag}_traversal"].astype(np.float32)
    latents = traversal_images.shape[0] // TRAVERSAL_STEPS
    traversal_images = traversal_images.reshape(latents, TRAVERSAL_STEPS, *traversal_images.shape[1:])
    order = np.argsort(run["posterior_mean_variance"])[::-1]
    share = importance / np.maximum(importance.sum(axis=1, keepdims=True), 1e-12)
    labels = [f"z{j} {dsprites.FACTOR_NAMES[np.argmax(share[j])]} {share[j].max():.2f}"
              + ("" if run["posterior_mean_variance"][j] > 0.01 else " (inactive)") for j in order]
    name = METHODS[s["method"]].weight_name
    return (f"{s['method']} {name}={s['weight']:g}, seed {run['seed']}\nMIG {run['mig']:.2f}, "
            f"DCI-D {run['dci_disentanglement']:.2f}", traversal_images[order], labels)


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
    args = p.parse_args(argv)
    q = args.quick
    given = _common.resolve_defaults(args, dict(
        betas=([1.0, 4.0], [1.0, 2.0, 4.0, 8.0, 16.0]), tc_weights=([4.0], [4.0, 8.0]), gammas=([10.0], [10.0, 40.0]),
        seeds=([0, 1], [0, 1, 2, 3, 4]), epochs=(1, 6), train_size=(512, 20000), image_size=(16, 32),
        hidden_sizes=([32], [256, 128]), discriminator_sizes=([32], [256, 256, 256]), dci_trees=(1, 100)))
    return Config.from_args(args, **given, methods=tuple(args.methods), sizes=QUICK_SIZES if q else FULL_SIZES,
                            figures=not args.no_figures, dpi=40 if q else 110)


def evaluation_set(data: CachedSprites, cfg: Config) -> EvalSet:
    """``eval_size`` random grid points of ``cfg.data_seed``; the first is the traversals' reference image."""
    factors = data.sample_factors(cfg.sizes.eval_size, np.random.default_rng(10_000 + cfg.data_seed))
    factors[0] = TRAVERSAL_FACTORS
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
    summary = summarize(rows, cfg)
    if cfg.figures:
        save_metric_figure(summary, cfg, cfg.out / "metrics_vs_beta.png")
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
