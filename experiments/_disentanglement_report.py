"""The disentanglement study's report: summaries over seeds, the Holm-corrected comparisons with beta = 1, figures.

Everything here is a function of the per-seed rows (and, for the traversals,
of the arrays stored beside them), so a finished run's report can be rewritten
without training (:func:`recompare`). The study itself is
``experiments.disentanglement``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats

from experiments import _common
from vae_jax import dsprites, plotting
from vae_jax.runs import write_json

TRAVERSAL_STEPS = 9
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


METHODS = {
    "beta_vae": Method("betas", "beta", "beta", "C0"),
    "beta_tcvae": Method("tc_weights", "TC weight", "beta", "C3"),
    "factor_vae": Method("gammas", "gamma", "gamma", "C2"),
}
METRICS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "factor_vae_score",
           "beta_vae_score", "reconstruction_error", "kl", "active_units")
COMPARED = ("mig", "dci_disentanglement")  # the metrics compared with beta = 1
BASELINE = Setting("beta_vae", 1.0)



def summarize(rows: list[dict], settings: list[Setting]) -> list[dict]:
    """Mean, sample std, min and max over seeds of every metric, per setting."""
    out = []
    for method, weight in settings:
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


def save_metric_figure(summary, path, *, image_size: int, seeds: int, dpi: int) -> None:
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
    fig.suptitle(f"dSprites-style data ({image_size}x{image_size}): mean +- std over {seeds} seeds, dots = seeds",
                 fontsize=10)
    fig.tight_layout()
    plotting.save_figure(fig, path, dpi=dpi)


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
