"""vae_jax.plotting: exact tiling, the latent grid, errors on bad shapes, PNGs written."""

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from vae_jax import plotting


def _images(n, h=2, w=3, c=1):
    """Image i holds the values i * 100 + (0, 1, 2, ...) / 100: every pixel distinct."""
    return (np.arange(n)[:, None] * 100 + np.arange(h * w * c)[None] / 100).reshape(n, h, w, c) / 1000


def test_tile_images_places_every_image_and_pads_white():
    images = _images(5)
    canvas = plotting.tile_images(images, ncols=3, pad=1)
    assert canvas.shape == (2 * 2 + 1, 3 * 3 + 2)  # 2 rows of height 2, 3 columns of width 3, 1-pixel gaps
    for i in range(5):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(canvas[r * 3: r * 3 + 2, c * 4: c * 4 + 3], images[i, ..., 0].astype(np.float32))
    assert np.all(canvas[2, :] == 1.0) and np.all(canvas[:, 3] == 1.0) and np.all(canvas[:, 7] == 1.0)
    np.testing.assert_array_equal(canvas[3:5, 8:11], 1.0)  # the empty sixth cell is white


def test_tile_images_rgb_no_padding_and_ncols_clipped():
    images = _images(2, c=3)
    canvas = plotting.tile_images(images, ncols=8, pad=0)  # ncols larger than N: one row of 2
    assert canvas.shape == (2, 6, 3)
    np.testing.assert_array_equal(canvas, np.concatenate(list(images.astype(np.float32)), axis=1))


@pytest.mark.parametrize("shape", [(4, 5, 5), (4, 5, 5, 2), (5, 5, 1)])
def test_tile_images_rejects_bad_shapes(shape):
    with pytest.raises(ValueError, match=r"\[N, H, W, 1 or 3\]"):
        plotting.tile_images(np.zeros(shape))


def test_latent_scatter_rejects_codes_that_are_not_2d():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        plotting.plot_latent_scatter(ax, np.zeros((10, 3)), np.zeros(10, int))
    plt.close(fig)


def test_latent_grid_runs_rows_top_to_bottom():
    grid = plotting.latent_grid(3, extent=2.0)
    expected = [[-2, 2], [0, 2], [2, 2], [-2, 0], [0, 0], [2, 0], [-2, -2], [0, -2], [2, -2]]
    np.testing.assert_array_equal(grid, np.array(expected, np.float32))
    assert grid.dtype == np.float32


def _png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def test_save_functions_write_pngs(tmp_path):
    images = np.random.default_rng(0).random((6, 4, 4, 1)).astype(np.float32)
    grid = _png(plotting.save_image_grid(images, tmp_path / "a" / "grid.png", ncols=3, title="grid"))
    rows = _png(plotting.save_image_rows({"x": images, "y": 1 - images}, tmp_path / "rows.png"))
    curves = _png(plotting.save_curves({"train": [3.0, 2.0, 1.5], "validation": [3.2, 2.4, 2.0]},
                                       tmp_path / "curves.png", logy=True))
    fig, ax = plt.subplots()
    codes = np.random.default_rng(1).normal(size=(50, 2))
    plotting.plot_latent_scatter(ax, codes, np.arange(50) % 10, class_names=list("0123456789"),
                                 prior_contours=True)
    scatter = _png(plotting.save_figure(fig, tmp_path / "scatter.png"))
    for picture in (grid, rows, curves, scatter):
        assert picture.ndim == 3 and picture.shape[0] > 50 and picture.shape[1] > 50
        assert picture[..., :3].std() > 0.05  # something was drawn, not a blank page
    assert plt.get_fignums() == []  # every figure was closed
