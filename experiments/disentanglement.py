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
scale, orientation, x, y): MIG on ``--eval-size`` random images; DCI (trees:
``--dci-trees``) and SAP on the first ``--dci-train`` / next ``--dci-test`` of
them; the FactorVAE and beta-VAE scores with their own draws
(``--score-train`` / ``--score-eval`` points of batch 64); reconstruction
error = -E_q log p(x|z) (nats per pooled image) and KL on the same images.

Resumable: each seed writes ``models/seed{S}.json`` (+ traversals ``.npz``) in
``--out``; a later call trains only the settings a seed's file lacks (so
adding ``factor_vae`` to ``--methods`` adds FactorVAE to a finished run).
Writes ``metrics_vs_beta.png``, ``traversals.png``, ``results.json`` and
``config.json`` (``--no-figures``: the JSON files only).

Sizes: ``--quick`` (2 seeds, betas 1 and 4, TC weight 4, gamma 10, 512
16x16 images, 1 epoch, tiny metric sizes, XLA optimisation level 0 for the
training epochs) is what the test suite runs. The run reported in
docs/disentanglement.md is ``--methods beta_vae beta_tcvae --betas 1 4 16
--tc-weights 6 --epochs 4`` (5 seeds, 20 models): about 2.8 CPU minutes per
seed, an hour of wall time on the shared 2-core machine at a
load average of 24. The default (5 betas, 2 TC weights, 2 FactorVAE gammas,
6 epochs) is the intended medium size, not run; the papers' protocol (64x64,
300k steps, full metric sizes) is out of reach of a 2-core CPU.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import scipy.stats

from experiments import _common
from vae_jax import disentanglement as metrics
from vae_jax import dsprites, evaluation, models, plotting, tc, tc_training, training

TRAVERSAL_STEPS = 9
TRAVERSAL_SPAN = 2.5
METHODS = {  # method -> (weights option, weight name, the hyper-parameter it sets, figure colour)
    "beta_vae": ("betas", "beta", "beta", "C0"),
    "beta_tcvae": ("tc_weights", "TC weight", "beta", "C3"),
    "factor_vae": ("gammas", "gamma", "gamma", "C2"),
}
METRICS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "factor_vae_score",
           "beta_vae_score", "reconstruction_error", "kl", "active_units")


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


def settings(args) -> list[tuple[str, float]]:
    return [(m, float(w)) for m, (option, *_) in METHODS.items() if m in args.methods for w in getattr(args, option)]


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


def initial_state(model, images: np.ndarray, seed: int, args) -> training.TrainState:
    """The initial VAE state of ``seed`` (Adam), shared by every setting of the seed."""
    key_init = jax.random.split(jax.random.key(seed))[0]
    return training.create_train_state(model, key_init, images[0], _adam(args.learning_rate))


def train_seed(model, images: np.ndarray, method: str, weights: list[float], seed: int, args, initial=None):
    """All ``weights`` of one method and seed as one stacked model: ``(states, history)``."""
    key_init, key_fit = jax.random.split(jax.random.key(seed))
    initial = initial or initial_state(model, images, seed, args)
    hparam = METHODS[method][2]
    states = [initial.replace(hparams={hparam: jnp.asarray(w, jnp.float32)}) for w in weights]
    if method == "factor_vae":
        states = [tc.add_discriminator(s, jax.random.fold_in(key_init, 1), _adam(args.discriminator_lr, 0.5, 0.9),
                                       latent_dim=args.latent_dim, hidden_sizes=tuple(args.discriminator_sizes))
                  for s in states]
    states = training.stack(states)
    step = _train_step(model, method, len(images), args.discriminator_lr)

    def epoch_fn(train_step, states, data, key, *, batch_size):
        keys = jnp.stack([key] * len(weights))  # common random numbers across the weights
        return _stacked_epoch(args.quick)(train_step, states, data, keys, batch_size=batch_size)

    result = training.fit(step, states, jnp.asarray(images), key_fit, epochs=args.epochs,
                          batch_size=args.batch_size, epoch_fn=epoch_fn, progress=not args.no_progress,
                          desc=f"{method} seed {seed}")
    return result[0], result[1]


@functools.lru_cache(maxsize=None)
def _batched_fn(model, name: str):
    """``jit(vmap(model.<name>))``, built once per model so that every trained model reuses the compilation."""
    return jax.jit(jax.vmap(getattr(model, name), in_axes=(None, 0)))


def evaluate_model(model, params, prep, eval_set, data, args) -> tuple[dict, np.ndarray, np.ndarray]:
    """Every metric of one model: ``(row, importance [L, K], traversal [L * steps, H, W, C])``."""
    code = _batched_fn(model, "code")

    def represent(images):
        x = prep(images)
        return np.concatenate([np.asarray(code(params, jnp.asarray(x[i:i + 2048]))) for i in range(0, len(x), 2048)])

    factors, images = eval_set
    codes = represent(images)
    a, b = args.dci_train, args.dci_train + args.dci_test
    dci = metrics.dci(codes[:a], factors[:a], codes[a:b], factors[a:b], n_estimators=args.dci_trees)
    score = dict(batch_size=args.score_batch, num_train=args.score_train, num_eval=args.score_eval, seed=args.seed)
    fvae = metrics.factor_vae_score(data, represent, num_variance_estimate=args.variance_size, **score)
    bvae = metrics.beta_vae_score(data, represent, **score)
    ev = evaluation.evaluate(model.objective, params, prep(images), jax.random.key(args.seed + 1),
                           hparams={"beta": 1.0})
    variance = codes.var(axis=0)
    row = {"mig": metrics.mig(codes, factors)["mig"], "dci_disentanglement": dci["disentanglement"],
           "dci_completeness": dci["completeness"], "dci_informativeness": dci["informativeness_test"],
           "sap": metrics.sap(codes[:a], factors[:a], codes[a:b], factors[a:b])["sap"],
           "factor_vae_score": fvae["eval_accuracy"], "beta_vae_score": bvae["eval_accuracy"],
           "reconstruction_error": -ev["reconstruction"], "kl": ev["kl"],
           "active_units": int(np.sum(variance > 0.01)), "posterior_mean_variance": variance.tolist()}
    z = np.repeat(codes[args.traversal_index][None], codes.shape[1] * TRAVERSAL_STEPS, axis=0)
    for j in range(codes.shape[1]):
        z[j * TRAVERSAL_STEPS:(j + 1) * TRAVERSAL_STEPS, j] = np.linspace(-TRAVERSAL_SPAN, TRAVERSAL_SPAN,
                                                                           TRAVERSAL_STEPS)
    traversal = np.asarray(_batched_fn(model, "decode_mean")(params, jnp.asarray(z, jnp.float32)))
    return row, dci["importance"], traversal


def run_seed(model, train_images, prep, eval_set, data, seed, args) -> dict:
    """Trains and scores the settings of one seed that ``models/seed{seed}.json`` lacks; (re)writes it and its ``.npz``."""
    path = args.out / "models" / f"seed{seed}.json"
    stored = json.loads(path.read_text()) if path.exists() else {"seed": seed, "rows": [], "seconds": 0.0}
    done = {(r["method"], r["weight"]) for r in stored["rows"]}
    missing = [s for s in settings(args) if s not in done]
    if not missing:
        return stored
    rows = stored["rows"]
    arrays = dict(np.load(path.with_suffix(".npz"))) if path.with_suffix(".npz").exists() else {}
    start = time.perf_counter()
    initial = initial_state(model, train_images, seed, args)
    for method in METHODS:
        weights = [w for m, w in missing if m == method]
        if not weights:
            continue
        t0 = time.perf_counter()
        states, history = train_seed(model, train_images, method, weights, seed, args, initial)
        train_seconds = time.perf_counter() - t0
        for i, (w, state) in enumerate(zip(weights, training.unstack(states))):
            row, importance, traversal = evaluate_model(model, state.params, prep, eval_set, data, args)
            final = {k: (v[i] if isinstance(v, list) else v) for k, v in history[-1].items()}
            rows.append({"method": method, "weight": w, "seed": seed, **row,
                         "final_train_loss": final.get("train_loss", final.get("loss")), "final_train": final,
                         "train_seconds_of_stack": train_seconds})
            arrays[f"{method}_{w:g}_importance"] = importance
            arrays[f"{method}_{w:g}_traversal"] = traversal.astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path.with_suffix(".npz"), **arrays)
    result = {"seed": seed, "rows": rows, "seconds": stored["seconds"] + time.perf_counter() - start}
    path.write_text(json.dumps(result))
    return result


def summarize(rows: list[dict], args) -> list[dict]:
    """Mean, sample std, min and max over seeds of every metric, per setting."""
    out = []
    for method, weight in settings(args):
        group = [r for r in rows if r["method"] == method and r["weight"] == weight]
        stats = {}
        for name in METRICS:
            v = np.array([r[name] for r in group], np.float64)
            stats[name] = {"mean": v.mean(), "std": v.std(ddof=1) if len(v) > 1 else 0.0, "min": v.min(),
                           "max": v.max(), "per_seed": v.tolist()}
        out.append({"method": method, "weight": weight, "seeds": [r["seed"] for r in group], **stats})
    return out


def compare_to_vae(summary: list[dict]) -> dict:
    """For the best (mean MIG) setting of each method, against beta = 1 on MIG and DCI disentanglement.

    Two readings of "non-overlapping seed intervals": the seed ranges ([min, max]:
    ``non_overlapping``, the strict one) and the 95% Student-t intervals of the
    mean over seeds (``ci95``); with a one-sided Welch t-test p-value that the
    setting's mean is higher (``welch_p``). NaN where a setting has one seed.
    """
    base = next((s for s in summary if s["method"] == "beta_vae" and s["weight"] == 1.0), None)
    out = {}
    for method in METHODS:
        candidates = [s for s in summary if s["method"] == method and s is not base]
        if base is None or not candidates:
            continue
        best = max(candidates, key=lambda s: s["mig"]["mean"])
        out[method] = {"best_weight": best["weight"]}
        for m in ("mig", "dci_disentanglement"):
            ours, vae = np.asarray(best[m]["per_seed"]), np.asarray(base[m]["per_seed"])
            ci_ours, ci_vae = mean_ci95(ours), mean_ci95(vae)
            with np.errstate(all="ignore"):
                welch = scipy.stats.ttest_ind(ours, vae, equal_var=False, alternative="greater").pvalue
            out[method][m] = {"best_min": best[m]["min"], "vae_max": base[m]["max"],
                              "non_overlapping": best[m]["min"] > base[m]["max"],
                              "ci95": {"best": ci_ours, "vae": ci_vae, "non_overlapping": ci_ours[0] > ci_vae[1]},
                              "welch_p": float(welch)}
    return out


def mean_ci95(values: np.ndarray) -> list[float]:
    """The 95% Student-t interval of the mean of ``values`` ``[n]`` (NaN for n < 2)."""
    n = len(values)
    if n < 2:
        return [float("nan"), float("nan")]
    half = scipy.stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n)
    return [float(np.mean(values) - half), float(np.mean(values) + half)]


def save_metric_figure(summary, args, path) -> None:
    names = [m for m in METRICS if m not in ("kl", "active_units")]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.2))
    for ax, name in zip(axes.flat, names):
        for shift, (method, (_, weight_name, _, color)) in zip((1.0, 1.06, 0.94), METHODS.items()):
            group = [s for s in summary if s["method"] == method]
            if not group:
                continue
            w = np.array([s["weight"] for s in group])
            for s in group:
                ax.scatter([s["weight"] * shift] * len(s[name]["per_seed"]), s[name]["per_seed"], s=10,
                           color=color, alpha=0.45)
            ax.errorbar(w * shift, [s[name]["mean"] for s in group], yerr=[s[name]["std"] for s in group],
                        color=color, marker="o", capsize=3, label=f"{method} ({weight_name})")
        ax.set_xscale("log", base=2)
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_xlabel("weight", fontsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"dSprites-style data ({args.image_size}x{args.image_size}): mean +- std over "
                 f"{len(args.seeds)} seeds, dots = seeds", fontsize=10)
    fig.tight_layout()
    plotting.save_figure(fig, path, dpi=args.dpi)


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


def traversal_panels(summary, rows, args) -> list:
    """beta = 1 and each method's best setting (mean MIG), each at its best seed."""
    chosen = [s for s in summary if s["method"] == "beta_vae" and s["weight"] == 1.0]
    for method in METHODS:
        group = [s for s in summary if s["method"] == method and s not in chosen]
        if group:
            chosen.append(max(group, key=lambda s: s["mig"]["mean"]))
    panels = []
    for s in chosen:
        run = max((r for r in rows if r["method"] == s["method"] and r["weight"] == s["weight"]),
                  key=lambda r: r["mig"])
        arrays = np.load(args.out / "models" / f"seed{run['seed']}.npz")
        tag = f"{s['method']}_{s['weight']:g}"
        importance = arrays[f"{tag}_importance"]
        traversal = arrays[f"{tag}_traversal"].astype(np.float32)
        latents = traversal.shape[0] // TRAVERSAL_STEPS
        traversal = traversal.reshape(latents, TRAVERSAL_STEPS, *traversal.shape[1:])
        order = np.argsort(run["posterior_mean_variance"])[::-1]
        share = importance / np.maximum(importance.sum(axis=1, keepdims=True), 1e-12)
        labels = [f"z{j} {dsprites.FACTOR_NAMES[np.argmax(share[j])]} {share[j].max():.2f}"
                  + ("" if run["posterior_mean_variance"][j] > 0.01 else " (inactive)") for j in order]
        name = METHODS[s["method"]][1]
        panels.append((f"{s['method']} {name}={s['weight']:g}, seed {run['seed']}\nMIG {run['mig']:.2f}, "
                       f"DCI-D {run['dci_disentanglement']:.2f}", traversal[order], labels))
    return panels


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser(__doc__)
    p.add_argument("--betas", type=float, nargs="+", default=None, help="beta-VAE weights (1 2 4 8 16)")
    p.add_argument("--tc-weights", type=float, nargs="*", default=None, help="beta-TCVAE TC weights (4 8)")
    p.add_argument("--gammas", type=float, nargs="*", default=None, help="FactorVAE TC weights (10 40; quick 10)")
    p.add_argument("--methods", nargs="+", choices=tuple(METHODS), default=list(METHODS),
                   help="which methods to train (default: all; beta_vae is the baseline every comparison needs)")
    p.add_argument("--discriminator-sizes", type=int, nargs="+", default=None,
                   help="FactorVAE discriminator widths (256 256 256; quick 32; the paper: six of 1000)")
    p.add_argument("--discriminator-lr", type=float, default=1e-3,
                   help="FactorVAE discriminator Adam learning rate (b1=0.5, b2=0.9 as in the paper)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (0 1 2 3 4)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 6, quick 1)")
    p.add_argument("--train-size", type=int, default=None, help="training images (default 20000, quick 512)")
    p.add_argument("--image-size", type=int, default=None, choices=(16, 32, 64),
                   help="pooled image side (default 32, quick 16)")
    p.add_argument("--hidden-sizes", type=int, nargs="+", default=None, help="MLP widths (256 128; quick 32)")
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--data-seed", type=int, default=0, help="which grid points are the training set")
    p.add_argument("--no-figures", action="store_true",
                   help="write results.json only (e.g. one process per seed; a later call draws the figures)")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = dict(betas=[1.0, 4.0] if quick else [1.0, 2.0, 4.0, 8.0, 16.0],
                    tc_weights=[4.0] if quick else [4.0, 8.0], gammas=[10.0] if quick else [10.0, 40.0],
                    seeds=[0, 1] if quick else [0, 1, 2, 3, 4], epochs=1 if quick else 6,
                    train_size=512 if quick else 20000, image_size=16 if quick else 32,
                    hidden_sizes=[32] if quick else [256, 128],
                    discriminator_sizes=[32] if quick else [256, 256, 256])
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    sizes = dict(eval_size=200, dci_train=100, dci_test=60, dci_trees=1, score_train=10, score_eval=6,
                 score_batch=16, variance_size=300, dpi=40) if quick else dict(
                     eval_size=10000, dci_train=1000, dci_test=500, dci_trees=20, score_train=300, score_eval=200,
                     score_batch=64, variance_size=5000, dpi=110)
    for name, value in sizes.items():
        setattr(args, name, value)
    args.traversal_index = 0
    if any(b <= 0 for b in args.betas + args.tc_weights + args.gammas):
        p.error("--betas, --tc-weights and --gammas must be > 0")
    if "beta_vae" not in args.methods or 1.0 not in args.betas:
        p.error("--methods must include beta_vae and --betas 1 (the plain VAE the others are compared with)")
    load_before = os.getloadavg()
    start = time.perf_counter()
    data = CachedSprites()
    _, raw = data.dataset(args.train_size, seed=args.data_seed)
    prep = lambda x: pool(x, args.image_size)  # noqa: E731
    train_images = prep(raw)
    eval_factors = data.sample_factors(args.eval_size, np.random.default_rng(10_000 + args.data_seed))
    eval_factors[0] = [2, 3, 10, 16, 16]  # the traversals' reference image: a mid-sized heart near the centre
    eval_set = (eval_factors, data.images(eval_factors))
    config = models.ModelConfig(latent_dim=args.latent_dim, hidden_sizes=tuple(args.hidden_sizes))
    model = _build_model(config, train_images.shape[1:])
    rows, seconds, wanted = [], {}, set(settings(args))
    for seed in args.seeds:
        result = run_seed(model, train_images, prep, eval_set, data, seed, args)
        rows += [r for r in result["rows"] if (r["method"], r["weight"]) in wanted]
        seconds[seed] = result["seconds"]
    summary = summarize(rows, args)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.no_figures:
        save_metric_figure(summary, args, args.out / "metrics_vs_beta.png")
        save_traversals(traversal_panels(summary, rows, args), args.out / "traversals.png", dpi=args.dpi)
    results = {"summary": summary, "comparison_with_beta_1": compare_to_vae(summary), "rows": rows,
               "seconds_per_seed": seconds, "wall_seconds_this_call": time.perf_counter() - start,
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "factors": list(dsprites.FACTOR_NAMES), "train_size": args.train_size,
               "units": "reconstruction_error and kl: nats per pooled image; scores in [0, 1]"}
    _common.write_outputs(args.out, config={**vars(args), "model": config, "jax": jax.__version__},
                          results=results)
    return results


if __name__ == "__main__":
    main()
