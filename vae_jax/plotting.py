"""Figures: image grids, labelled image rows, latent scatters, learning curves, a run's figures.

Axes-level ``plot_*`` functions draw into a Matplotlib ``Axes`` so figures can
be composed; ``save_*`` functions build a whole figure and write a PNG.
Uses the non-interactive Agg backend when no display is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import jax
import matplotlib

if not os.environ.get("DISPLAY") and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vae_jax.data import FASHION_MNIST_CLASSES  # noqa: E402


def tile_images(images: np.ndarray, *, ncols: int = 8, pad: int = 1) -> np.ndarray:
    """Tiles ``images [N, H, W, C]`` (C = 1 or 3, values in [0, 1]) into one array.

    Returns:
      ``[rows * (H + pad) - pad, ncols * (W + pad) - pad]`` (or ``[..., 3]``),
      empty cells and padding white.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [N, H, W, 1 or 3]; got shape {images.shape}.")
    n, h, w, c = images.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    canvas = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), np.float32)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        canvas[r * (h + pad): r * (h + pad) + h, col * (w + pad): col * (w + pad) + w] = img
    return canvas[..., 0] if c == 1 else canvas


def plot_image_grid(ax: plt.Axes, images: np.ndarray, *, ncols: int = 8, title: str | None = None) -> None:
    """Draws :func:`tile_images` of ``images`` into ``ax`` (grey for one channel)."""
    ax.imshow(np.clip(tile_images(images, ncols=ncols), 0, 1), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def save_figure(fig: plt.Figure, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Writes ``fig`` as PNG (creating folders), closes it, returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def save_image_grid(images: np.ndarray, path: str | os.PathLike, *, ncols: int = 8,
                    title: str | None = None) -> Path:
    """One grid of ``images [N, H, W, C]`` as a PNG."""
    nrows = -(-len(images) // max(1, min(ncols, len(images))))
    fig, ax = plt.subplots(figsize=(max(3.0, 0.6 * min(ncols, len(images))), max(1.5, 0.6 * nrows + 0.4)))
    plot_image_grid(ax, images, ncols=ncols, title=title)
    return save_figure(fig, path)


def save_image_rows(rows: Mapping[str, np.ndarray], path: str | os.PathLike, *,
                    title: str | None = None) -> Path:
    """Labelled rows of images, e.g. ``{"original": x, "AE": ae(x), "VAE": vae(x)}``.

    Each value is ``[N, H, W, C]``; all rows are drawn with one image per column.
    """
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(3.0, 0.6 * n), 0.75 * len(rows) + 0.4), squeeze=False)
    for ax, (label, images) in zip(axes[:, 0], rows.items()):
        plot_image_grid(ax, images, ncols=n)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_latent_scatter(ax: plt.Axes, codes: np.ndarray, labels: np.ndarray, *,
                        class_names: Sequence[str] | None = None, prior_contours: bool = False,
                        title: str | None = None) -> None:
    """Scatter of 2-D codes ``[N, 2]`` coloured by integer ``labels [N]``.

    With ``prior_contours`` the N(0, I) density's 1, 2 and 3 sigma circles are drawn over it.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != 2:
        raise ValueError(f"codes must be [N, 2]; got shape {codes.shape}.")
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=2, alpha=0.6, vmin=-0.5, vmax=9.5)
    if prior_contours:
        lim = max(3.5, float(np.percentile(np.abs(codes), 99)))
        grid = np.linspace(-lim, lim, 200)
        gx, gy = np.meshgrid(grid, grid)
        density = np.exp(-0.5 * (gx**2 + gy**2)) / (2 * np.pi)
        levels = [np.exp(-0.5 * r**2) / (2 * np.pi) for r in (3, 2, 1)]
        ax.contour(gx, gy, density, levels=levels, colors="k", linewidths=0.8)
    if class_names is not None:
        bar = ax.figure.colorbar(points, ax=ax, ticks=range(len(class_names)))
        bar.ax.set_yticklabels(class_names, fontsize=7)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    if title:
        ax.set_title(title, fontsize=10)


def save_curves(series: Mapping[str, Sequence[float]], path: str | os.PathLike, *, xlabel: str = "epoch",
                ylabel: str = "nats", title: str | None = None, logx: bool = False, logy: bool = False) -> Path:
    """Line plot of named series (e.g. ``{"train ELBO": [...], "validation ELBO": [...]}``)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, values in series.items():
        values = np.asarray(values, dtype=float)
        ax.plot(np.arange(1, len(values) + 1), values, label=label, marker="o" if len(values) < 30 else None,
                markersize=3)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def latent_grid(n: int = 15, extent: float = 3.0) -> np.ndarray:
    """A regular ``n x n`` grid over ``[-extent, extent]^2``: ``[n * n, 2]``, rows top to bottom.

    Decode it to draw a 2-D latent space's manifold with :func:`save_image_grid` (``ncols=n``).
    """
    axis = np.linspace(-extent, extent, n, dtype=np.float32)
    gy, gx = np.meshgrid(axis[::-1], axis, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def save_run_figures(out: Path, model, params, config, x_test: np.ndarray, test,
                     history: list[dict[str, float]], metric: str) -> None:
    """Reconstructions, prior samples, learning curves and, for d = 2, the latent space, as PNGs.

    ``x_test [N, H, W, C]`` are the model's (binarised) test inputs, ``test`` the grey images and labels.
    """
    if not history:
        return
    title = f"{config.train.dataset}, {config.model.kind.upper()} d={config.model.latent_dim}, epoch {len(history)}"
    per_example = lambda fn, x: np.asarray(jax.jit(jax.vmap(fn, in_axes=(None, 0)))(params, x))  # noqa: E731
    x, rows = x_test[:16], {"test image": test.images[:16]}
    if not np.array_equal(x, rows["test image"]):
        rows["model input"] = x
    rows["reconstruction"] = per_example(model.reconstruct, x)
    save_image_rows(rows, out / "reconstructions.png", title=title)
    samples = np.asarray(model.sample(params, jax.random.key(config.train.seed), 64))
    gaussian = getattr(config.model, "latent", "gaussian") == "gaussian"
    save_image_grid(samples, out / "prior_samples.png",
                    title=f"decoded {'z ~ N(0, I)' if gaussian else 'b ~ p(b)'}: {title}")
    train_key = next(k for k in ("train_elbo", "train_iwae", "train_reconstruction") if k in history[0])
    label = lambda k: k.replace("_", " ").replace("elbo", "ELBO").replace("iwae", "IWAE bound")  # noqa: E731
    save_curves({label(k): [r[k] for r in history] for k in (train_key, metric)},
                out / "learning_curves.png", ylabel="nats per example", title=title)
    if config.model.latent_dim == 2 and gaussian:  # a discrete code has no plane to draw
        n = min(len(x_test), 5000)
        codes = per_example(model.code, x_test[:n])
        names = {"fashion_mnist": FASHION_MNIST_CLASSES, "digits": tuple("0123456789")}.get(config.train.dataset)
        fig, ax = plt.subplots(figsize=(6, 5))
        plot_latent_scatter(ax, codes, test.labels[:n], class_names=names,
                            prior_contours=config.model.kind == "vae", title=f"test codes: {title}")
        save_figure(fig, out / "latent_space.png")
        grid = latent_grid(15)
        save_image_grid(per_example(model.decode_mean, grid), out / "latent_manifold.png", ncols=15,
                        title="decoded grid over [-3, 3]^2")
