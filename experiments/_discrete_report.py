"""The discrete-estimator study's report: summaries of the training runs over seeds and the three figures.

The study itself is ``experiments.discrete_estimators``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def summarise_runs(runs):
    """Final mean and spread over seeds, and the train ELBO at the shortest run's wall-clock time."""
    if not runs or not any(runs.values()):
        return {}
    budget = min(c["seconds"][-1] for curves in runs.values() for c in curves)
    out = {"equal_wall_clock_seconds": budget}
    for label, curves in runs.items():
        final = np.array([c["train_elbo"][-1] for c in curves])
        test = np.array([c["test_bound_100"][-1] for c in curves])
        at_budget = np.array([np.interp(budget, c["seconds"], c["train_elbo"]) for c in curves])
        out[label] = {"train_elbo": float(final.mean()), "train_elbo_std": float(final.std()),
                      "test_bound_100": float(test.mean()), "test_bound_100_std": float(test.std()),
                      "train_elbo_at_equal_wall_clock": float(at_budget.mean()),
                      "seconds": float(np.mean([c["seconds"][-1] for c in curves]))}
    return out


def plot(results, out, labels: list[str]) -> None:
    """Writes the study's three figures into ``out`` (``labels``: every estimator, for stable colours)."""
    colors = dict(zip(labels, plt.cm.tab20(np.linspace(0, 1, len(labels)))))
    plot_enumerable(results["enumerable"], colors, out / "enumerable.png")
    plot_training(results["fashion_mnist"]["runs"], colors, out / "fashion_mnist_training.png")
    plot_variance(results["fashion_mnist"], out / "fashion_mnist_variance.png")


def _save(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_enumerable(enum, colors, path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in enum["estimators"].items():
        axes[0].semilogy(enum["epoch"], [r["encoder"]["total_variance"] for r in rows], "o-", color=colors[label],
                         label=label)
        axes[1].semilogy(enum["epoch"], [max(r["encoder"]["max_z"], 0.1) for r in rows], "o-", color=colors[label])
    axes[0].set(xlabel="epoch (exact-gradient training)", ylabel="encoder gradient variance (trace)",
                title=f"{enum['latents']} binary latents, 8x8 digits")
    axes[1].axhline(5.0, color="k", ls=":", lw=1)
    axes[1].set(xlabel="epoch", ylabel="largest |mean - exact| / std. error",
                title="bias: z-scores against the exact gradient (dotted: 5)")
    axes[0].legend(fontsize=7)
    _save(fig, path)


def plot_training(runs, colors, path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, curves in runs.items():
        for i, c in enumerate(curves):
            kw = {"color": colors[label], "label": label if i == 0 else None, "alpha": 0.9 if i == 0 else 0.4}
            axes[0].plot(c["epoch"], c["train_elbo"], **kw)
            axes[1].plot(c["seconds"], c["train_elbo"], **kw)
            axes[2].plot(c["epoch"], c["test_bound_100"], **kw)
    axes[0].set(xlabel="epoch (equal steps)", ylabel="train ELBO (nats)", title="Fashion-MNIST, linear 200-bit")
    axes[1].set(xlabel="training seconds (this CPU)", ylabel="train ELBO (nats)", title="equal wall-clock")
    axes[2].set(xlabel="epoch", ylabel="test 100-sample bound (nats)")
    lows = [c["train_elbo"][len(c["train_elbo"]) // 2] for curves in runs.values() for c in curves
            if len(c["train_elbo"]) > 2]  # the first epochs' fall would hide the differences
    if lows:
        for ax in axes:
            ax.set_ylim(bottom=min(lows) - 5)
    axes[0].legend(fontsize=7)
    _save(fig, path)


def plot_variance(fm, path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.4
    labels = list(fm["runs"])
    for j, (where, stats) in enumerate(fm["variance"].items()):
        values = [stats[label]["encoder"]["total_variance"] for label in labels]
        ax.bar(np.arange(len(labels)) + j * width, values, width, label=where)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(labels)) + width / 2, labels, rotation=45, ha="right")
    ax.set(ylabel="encoder gradient variance (trace)", title="Fashion-MNIST linear model, same parameters")
    ax.legend()
    _save(fig, path)
