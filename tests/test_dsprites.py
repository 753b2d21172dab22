"""The dSprites-style generator: the factor grid, each factor's effect, exact reproducibility."""

import hashlib
import sys
import types

import numpy as np
import pytest

from vae_jax import dsprites


def _reference_render(f):
    """One image by brute force over all 64x64 pixel centres (no window), as an independent check."""
    shape, scale, orient, px, py = f
    size = 10.0 * np.linspace(0.5, 1.0, 6)[scale]
    angle = np.linspace(0, 2 * np.pi, 40)[orient]
    cx, cy = 16 + 32 * px / 31, 16 + 32 * py / 31
    rows, cols = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5, indexing="ij")
    dx, dy = cols - cx, cy - rows
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / size
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / size
    if shape == 0:
        inside = np.maximum(abs(u), abs(v)) <= 1
    elif shape == 1:
        inside = u ** 2 + 4 * v ** 2 <= 1
    else:
        hx, hy = 1.2 * u, 1.2 * v + 0.12
        inside = (hx ** 2 + hy ** 2 - 1) ** 3 - hx ** 2 * hy ** 3 <= 0
    return inside.astype(np.float32)[..., None]


def test_factor_grid_is_dsprites():
    assert dsprites.FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert dsprites.NUM_IMAGES == 737280
    index = np.array([0, 1, 31, 32, 1024, 40960, 737279])
    factors = dsprites.index_to_factors(index)
    np.testing.assert_array_equal(factors[-1], [2, 5, 39, 31, 31])
    np.testing.assert_array_equal(factors[3], [0, 0, 0, 1, 0])  # position y varies fastest, as in the file
    np.testing.assert_array_equal(dsprites.factors_to_index(factors), index)
    f, x = dsprites.Sprites().dataset(500, seed=3)
    assert len(np.unique(dsprites.factors_to_index(f))) == 500 and x.shape == (500, 64, 64, 1)


def test_images_are_binary_and_match_a_brute_force_render():
    rng = np.random.default_rng(0)
    factors = dsprites.sample_factors(300, rng)
    factors[:6] = [[0, 5, 5, 0, 0], [2, 5, 7, 31, 31], [0, 5, 5, 31, 0], [1, 5, 9, 0, 31], [2, 5, 33, 31, 0],
                   [0, 5, 35, 0, 31]]  # the largest sprites in the corners
    x = dsprites.render(factors)
    assert x.dtype == np.float32 and set(np.unique(x)) == {0.0, 1.0}
    np.testing.assert_array_equal(x, np.stack([_reference_render(f) for f in factors]))
    assert x[:, [0, -1]].sum() == 0 and x[:, :, [0, -1]].sum() == 0  # nothing touches the border
    assert (x.sum(axis=(1, 2, 3)) >= 20).all()  # the smallest ellipse still has pixels


def test_each_factor_changes_the_image():
    base = np.array([2, 3, 5, 10, 20])
    x0 = dsprites.render(base[None])[0]
    for k, size in enumerate(dsprites.FACTOR_SIZES):
        for value in range(size):
            if value == base[k] or (k == 2 and {value, base[k]} == {0, 39}):
                continue
            f = base.copy()
            f[k] = value
            assert np.any(dsprites.render(f[None])[0] != x0), (k, value)
    # orientations 0 and 2 pi are the same angle, as in dSprites; area grows with scale
    np.testing.assert_array_equal(dsprites.render([[2, 3, 0, 9, 9]]), dsprites.render([[2, 3, 39, 9, 9]]))
    areas = dsprites.render([[0, s, 0, 16, 16] for s in range(6)]).sum(axis=(1, 2, 3))
    assert np.all(np.diff(areas) > 0)
    np.testing.assert_allclose(areas[-1], 400, atol=40)  # a 20 x 20 px square at scale 1
    # position moves the centre of mass by 32/31 px per step along the right axis
    com = lambda im: np.array([np.mean(np.nonzero(im[..., 0])[1]), np.mean(np.nonzero(im[..., 0])[0])])
    a, b = dsprites.render([[1, 5, 0, 3, 7], [1, 5, 0, 13, 7]])
    np.testing.assert_allclose(com(b) - com(a), [10 * 32 / 31, 0], atol=0.2)  # pixel quantisation


def test_exactly_reproducible():
    f1, x1 = dsprites.Sprites().sample(400, np.random.default_rng(7))
    f2, x2 = dsprites.Sprites().sample(400, np.random.default_rng(7))
    np.testing.assert_array_equal(f1, f2)
    assert hashlib.sha256(x1.tobytes()).hexdigest() == hashlib.sha256(x2.tobytes()).hexdigest()
    # chunking does not change a bit
    big = dsprites.sample_factors(2500, np.random.default_rng(1))
    np.testing.assert_array_equal(dsprites.render(big)[2000:], dsprites.render(big[2000:]))


@pytest.mark.parametrize("bad", [np.zeros((3, 4), int), [[3, 0, 0, 0, 0]], [[0, 0, 40, 0, 0]],
                                 [[0, -1, 0, 0, 0]], [[0.5, 0, 0, 0, 0]]])
def test_bad_factors_raise(bad):
    with pytest.raises(ValueError, match="factor"):
        dsprites.render(bad)


def test_bad_sampler_arguments_raise():
    with pytest.raises(ValueError, match="Generator"):
        dsprites.sample_factors(3, np.random.RandomState(0))
    with pytest.raises(ValueError, match="num"):
        dsprites.Sprites().dataset(0, seed=0)


def test_tfds_loader_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match="tensorflow-datasets"):
        dsprites.load_tfds_dsprites()
    loads = []
    fake = types.SimpleNamespace(
        builder=lambda name, data_dir=None: types.SimpleNamespace(data_dir=tmp_path / name / "2.0.0"),
        load=lambda *a, **k: loads.append(a))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    with pytest.raises(FileNotFoundError, match="download=True"):
        dsprites.load_tfds_dsprites(data_dir=tmp_path)
    assert loads == []  # tfds.load of an uncached dataset is never reached


def test_tfds_loader_orders_images_by_factors(monkeypatch, tmp_path):
    """A fake prepared TFDS dSprites whose records are shuffled: images come back by factors."""
    (tmp_path / "dsprites" / "2.0.0").mkdir(parents=True)
    (tmp_path / "dsprites" / "2.0.0" / "dataset_info.json").write_text("{}")
    perm = np.random.default_rng(0).permutation(dsprites.NUM_IMAGES)
    factors = dsprites.index_to_factors(perm)
    marks = (perm % 2).astype(np.uint8)  # a cheap image: all pixels 255 * (index parity)
    record = {"image": np.broadcast_to(255 * marks[:, None, None, None], (dsprites.NUM_IMAGES, 64, 64, 1)),
              **{k: factors[:, i] for i, k in enumerate(dsprites._TFDS_LABELS)}}
    fake = types.SimpleNamespace(
        builder=lambda name, data_dir=None: types.SimpleNamespace(data_dir=tmp_path / name / "2.0.0"),
        load=lambda *a, **k: record, as_numpy=lambda r: r)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    data = dsprites.load_tfds_dsprites(data_dir=tmp_path)
    f = np.array([[0, 0, 0, 0, 1], [2, 5, 39, 31, 30], [1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(data.images(f)[:, 0, 0, 0], dsprites.factors_to_index(f) % 2)
