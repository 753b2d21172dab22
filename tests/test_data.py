"""Tests of vae_jax.data: IDX reader, Fashion-MNIST facts, TFDS offline, binarisation."""

from __future__ import annotations

import gzip
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import data

FMNIST_DIR = data.DEFAULT_DATA_DIR
HAS_FMNIST = all(os.path.isfile(os.path.join(FMNIST_DIR, f))
                 for pair in data.FASHION_MNIST_FILES.values() for f in pair)
needs_fmnist = pytest.mark.skipif(
    not HAS_FMNIST, reason=f"needs {FMNIST_DIR}: apt-get install dataset-fashion-mnist")


# ---------------------------------------------------------------- fixture helpers

def idx_bytes(arr: np.ndarray, *, code: int | None = None, magic: bytes = b"\x00\x00",
              dims: tuple[int, ...] | None = None) -> bytes:
    """Encodes ``arr`` as an IDX file; ``code``/``magic``/``dims`` override the header."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
             np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
    code = codes[arr.dtype] if code is None else code
    dims = arr.shape if dims is None else dims
    header = magic + bytes([code, len(dims)]) + np.asarray(dims, ">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_fmnist_dir(folder, n_images: int, n_labels: int, split: str = "train") -> None:
    """Writes a small fake Fashion-MNIST split (gzipped IDX) into ``folder``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_images, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n_labels, dtype=np.uint8)
    image_name, label_name = data.FASHION_MNIST_FILES[split]
    (folder / image_name).write_bytes(gzip.compress(idx_bytes(images)))
    (folder / label_name).write_bytes(gzip.compress(idx_bytes(labels)))


def sort_examples(split: data.Split) -> data.Split:
    """Sorts examples by content (label, then pixel bytes) to compare as multisets."""
    raw = np.rint(split.images * 255).astype(np.uint8).reshape(len(split.labels), -1)
    keys = [bytes([int(lab) % 256]) + row.tobytes() for lab, row in zip(split.labels, raw)]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return data.Split(split.images[order], split.labels[order])


# ---------------------------------------------------------------- IDX reader

@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    raw = idx_bytes(arr)
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = data.read_idx(path)
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.fixture(scope="module")
def fmnist():
    if not HAS_FMNIST:
        pytest.skip(f"needs {FMNIST_DIR}: apt-get install dataset-fashion-mnist")
    return data.load_fashion_mnist("train"), data.load_fashion_mnist("test")


def test_fashion_mnist_known_facts(fmnist):
    train, test = fmnist
    # Published facts: 60000/10000 28x28 images, 10 balanced classes, train mean 0.2860.
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    for split, per_class in ((train, 6000), (test, 1000)):
        assert split.images.dtype == np.float32 and split.labels.dtype == np.int32
        assert split.images.min() == 0.0 and split.images.max() == 1.0
        np.testing.assert_array_equal(np.bincount(split.labels, minlength=10), [per_class] * 10)
    assert abs(train.images.mean(dtype=np.float64) - 0.2860) < 5e-5
    assert abs(test.images.mean(dtype=np.float64) - 0.2868) < 5e-5
    # Pixels are exactly bytes / 255.
    np.testing.assert_array_equal(np.rint(train.images[:100] * 255) / 255, train.images[:100])
    assert data.NUM_CLASSES == 10 and len(data.FASHION_MNIST_CLASSES) == 10
    assert data.FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert data.FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_data_dir_env_var(tmp_path, monkeypatch):
    write_fmnist_dir(tmp_path, 7, 7, "test")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    split = data.load_fashion_mnist("test")
    assert split.images.shape == (7, 28, 28, 1) and split.labels.shape == (7,)


def test_load_digits_known_facts():
    digits = data.load_digits()
    assert digits.images.shape == (1797, 8, 8, 1) and digits.images.dtype == np.float32
    assert digits.images.min() == 0.0 and digits.images.max() == 1.0
    # UCI optdigits test set class counts, as bundled in scikit-learn.
    np.testing.assert_array_equal(np.bincount(digits.labels),
                                  [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])


# ---------------------------------------------------------------- validation split

def _rows(split: data.Split) -> set[bytes]:
    return {img.tobytes() + bytes([lab]) for img, lab in zip(split.images, split.labels)}


def test_validation_split_disjoint_sized_reproducible():
    full = data.load_dataset("digits")
    ds = data.load_dataset("digits", validation_size=300, seed=1)
    assert (len(full.train.labels), len(full.validation.labels), len(full.test.labels)) == (
        1438, 0, 359)
    assert full.validation.images.shape == (0, 8, 8, 1)
    assert (len(ds.train.labels), len(ds.validation.labels)) == (1138, 300)
    train, val, test = _rows(ds.train), _rows(ds.validation), _rows(ds.test)
    assert len(train) == 1138 and len(val) == 300  # sklearn digits has no duplicate rows
    assert not train & val and not (train | val) & test
    assert train | val == _rows(full.train)
    again = data.load_dataset("digits", validation_size=300, seed=1)
    other = data.load_dataset("digits", validation_size=300, seed=2)
    np.testing.assert_array_equal(again.validation.images, ds.validation.images)
    np.testing.assert_array_equal(again.train.labels, ds.train.labels)
    assert _rows(other.validation) != val
    np.testing.assert_array_equal(other.test.images, ds.test.images)  # test set ignores seed


@pytest.mark.parametrize("size", [-1, 1438, 10**6])
def test_bad_validation_size(size):
    with pytest.raises(ValueError, match="validation_size"):
        data.load_dataset("digits", validation_size=size)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"Unknown dataset 'no_such_set'.*fashion_mnist.*digits"):
        data.load_dataset("no_such_set")


# ---------------------------------------------------------------- bad inputs

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"apt-get install dataset-fashion-mnist.*VAE_JAX_DATA_DIR"):
        data.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="tensorflow-datasets"):
        data.load_fashion_mnist("test", data_dir=tmp_path)


def test_truncated_and_corrupt_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32)))
    (tmp_path / "trunc.gz").write_bytes(packed[: len(packed) // 2])
    corrupt = bytearray(packed)
    corrupt[30:60] = b"\xff" * 30
    (tmp_path / "corrupt.gz").write_bytes(bytes(corrupt))
    for name in ("trunc.gz", "corrupt.gz"):
        with pytest.raises(ValueError, match=rf"{name}.*corrupt or truncated gzip.*reinstall"):
            data.read_idx(tmp_path / name)


@needs_fmnist
def test_truncated_copy_of_real_file(tmp_path):
    shutil.copy(os.path.join(FMNIST_DIR, "t10k-labels-idx1-ubyte.gz"), tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:3000])
    shutil.copy(os.path.join(FMNIST_DIR, "t10k-images-idx3-ubyte.gz"), tmp_path)
    with pytest.raises(ValueError, match="truncated gzip.*VAE_JAX_DATA_DIR"):
        data.load_fashion_mnist("test", data_dir=tmp_path)


@pytest.mark.parametrize("raw, message", [
    (idx_bytes(np.zeros(3, np.uint8), magic=b"\x08\x03"), "wrong magic number"),
    (b"\x00", "wrong magic number"),
    (idx_bytes(np.zeros(3, np.uint8), code=0x07), "unknown IDX dtype code 0x07"),
    (idx_bytes(np.zeros(9, np.uint8), dims=(10,)), r"header says shape \(10,\)"),
    (idx_bytes(np.zeros((2, 3), np.int16), dims=(2, 2)), "holds 12 bytes"),
    (b"\x00\x00\x08\x03\x00\x00", "ends inside its header"),
])
def test_bad_idx_header(tmp_path, raw, message):
    path = tmp_path / "bad-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(ValueError, match=rf"{message}.*dataset-fashion-mnist"):
        data.read_idx(path)


def test_image_label_count_mismatch(tmp_path):
    write_fmnist_dir(tmp_path, 5, 4)
    with pytest.raises(ValueError,
                       match=r"train-images-idx3-ubyte.gz.*5 images.*train-labels-idx1-ubyte.gz"):
        data.load_fashion_mnist("train", data_dir=tmp_path)


def test_unknown_fashion_mnist_split():
    with pytest.raises(ValueError, match="validation.*'test', 'train'"):
        data.load_fashion_mnist("validation")


@pytest.mark.parametrize("x, message", [
    (np.full((2, 4, 4, 1), 1.5, np.float32), r"min 1.5 and max 1.5.*scaled to \[0, 1\]"),
    (np.full((2, 4, 4, 1), -0.5, np.float32), r"min -0.5.*scaled to \[0, 1\]"),
    (np.array([[[[0.5]], [[np.nan]]]], np.float32), r"finite: False.*finite"),
    (np.zeros((2, 4, 4, 1), np.uint8), "dtype uint8.*/ 255"),
    (np.zeros((2, 4, 4), np.float32), r"rank 4 \[N, H, W, C\]"),
])
def test_check_images_rejects(x, message):
    with pytest.raises(ValueError, match=message):
        data.check_images(x)


def test_check_images_accepts():
    data.check_images(np.array([0.0, 0.25, 1.0], np.float32).reshape(3, 1, 1, 1))
    data.check_images(jnp.ones((2, 3, 3, 3)))
    data.check_images(np.zeros((0, 8, 8, 1), np.float32))  # an empty validation split


# ---------------------------------------------------------------- binarisation

def test_binarize_dynamic_mean_matches_intensity():
    x = jnp.linspace(0.0, 1.0, 11, dtype=jnp.float32)
    n = 4000
    keys = jax.random.split(jax.random.key(0), n)
    draws = jax.vmap(data.binarize_dynamic, in_axes=(0, None))(keys, x)
    assert draws.dtype == jnp.float32 and draws.shape == (n, 11)
    assert set(np.unique(np.asarray(draws))) <= {0.0, 1.0}
    p = np.asarray(x, np.float64)
    se = np.sqrt(p * (1 - p) / n)  # 0 at p = 0 and 1, where the draw is exact
    np.testing.assert_array_less(np.abs(np.asarray(draws).mean(0) - p), 4 * se + 1e-12)


def test_binarize_dynamic_key_and_jit():
    x = jnp.full((3, 28, 28, 1), 0.5)
    key = jax.random.key(42)
    a = data.binarize_dynamic(key, x)
    np.testing.assert_array_equal(a, data.binarize_dynamic(key, x))
    np.testing.assert_array_equal(a, jax.jit(data.binarize_dynamic)(key, x))
    assert not np.array_equal(a, data.binarize_dynamic(jax.random.key(43), x))


def test_binarize_static_and_threshold():
    x = np.full((100_000,), 0.3, np.float32)
    a = data.binarize_static(x, 7)
    assert a.dtype == np.float32 and set(np.unique(a)) == {0.0, 1.0}
    np.testing.assert_array_equal(a, data.binarize_static(x, 7))
    assert not np.array_equal(a, data.binarize_static(x, 8))
    assert abs(a.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / x.size)
    np.testing.assert_array_equal(data.binarize_static(np.array([0.0, 1.0]), 0), [0.0, 1.0])
    t = data.binarize_threshold(np.array([0.0, 0.2, 0.5, 0.51, 1.0]))
    np.testing.assert_array_equal(t, [0, 0, 0, 1, 1])
    assert t.dtype == np.float32
    np.testing.assert_array_equal(data.binarize_threshold(np.array([0.2, 0.4]), 0.3), [0, 1])


def test_binarize_modes():
    x = np.random.default_rng(0).random((4, 5, 5, 1)).astype(np.float32)
    np.testing.assert_array_equal(data.binarize(x, "none"), x)
    np.testing.assert_array_equal(data.binarize(x, "dynamic"), x)  # drawn in the train step
    np.testing.assert_array_equal(data.binarize(x, "static", seed=3), data.binarize_static(x, 3))
    np.testing.assert_array_equal(data.binarize(x, "threshold"), data.binarize_threshold(x))
    with pytest.raises(ValueError, match="'bogus'.*none.*dynamic.*static.*threshold"):
        data.binarize(x, "bogus")


# ---------------------------------------------------------------- TFDS, offline

@pytest.fixture(scope="module")
def offline_tfds(tmp_path_factory):
    """A TFDS data_dir whose download cache holds the Debian files; downloads raise.

    TFDS's download manager takes a file named ``get_dl_fname(url, sha256)`` with
    a ``.INFO`` file beside it, in ``<data_dir>/downloads``, as already
    downloaded (it trusts the registered checksum and does not re-hash, which
    matters: Debian re-gzipped the files, so the bytes, not the content, differ).
    Any download attempt or GCS access fails at once instead of hanging.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    from etils import epath
    from tensorflow_datasets.core.download import download_manager, downloader, resource
    from tensorflow_datasets.core.utils import gcs_utils

    def no_network(*args, **kwargs):
        raise RuntimeError("test tried to download; the TFDS download cache is incomplete")

    data_dir = tmp_path_factory.mktemp("tfds")
    downloads = data_dir / "downloads"
    downloads.mkdir()
    amat = tmp_path_factory.mktemp("amat")
    rng = np.random.default_rng(0)
    for n, part in ((5, "train"), (3, "valid"), (4, "test")):  # tiny fake binarized_mnist
        np.savetxt(amat / f"binarized_mnist_{part}.amat",
                   rng.integers(0, 2, (n, 784)), fmt="%d", delimiter=" ")
    sources = {"fashion_mnist": FMNIST_DIR, "binarized_mnist": str(amat)}
    for name, folder in sources.items():
        for url, info in tfds.builder_cls(name).url_infos.items():
            dst = epath.Path(downloads / resource.get_dl_fname(url, info.checksum))
            shutil.copyfile(os.path.join(folder, info.filename), dst)
            resource.write_info_file(url=url, path=dst, dataset_name=name,
                                     original_fname=info.filename, url_info=info)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(download_manager.DownloadManager, "_download", no_network)
        mp.setattr(downloader._Downloader, "download", no_network)
        mp.setattr(gcs_utils, "_is_gcs_disabled", True)
        yield tfds, data_dir


@needs_fmnist
# The train split reads through the same code as the test split, six times longer: slow only.
@pytest.mark.parametrize("split", ["test", pytest.param("train", marks=pytest.mark.slow)])
def test_tfds_fashion_mnist_equals_idx(offline_tfds, fmnist, split):
    # One prepare (both splits, about 25 s on 2 cores) serves the whole module.
    tfds, data_dir = offline_tfds
    got = data.load_tfds("fashion_mnist", split, data_dir=data_dir)
    want = fmnist[0] if split == "train" else fmnist[1]
    assert got.images.shape == want.images.shape and got.images.dtype == np.float32
    assert got.labels.dtype == np.int32
    # TFDS stores examples in an order shuffled by hashed key when it prepares, so
    # "same data" is checked as: every (image, label) pair equal, after sorting both.
    got_sorted, want_sorted = sort_examples(got), sort_examples(want)
    np.testing.assert_array_equal(got_sorted.labels, want_sorted.labels)
    np.testing.assert_array_equal(got_sorted.images, want_sorted.images)
    names = tfds.builder("fashion_mnist", data_dir=data_dir).info.features["label"].names
    assert tuple(names) == data.FASHION_MNIST_CLASSES


def test_tfds_unlabelled_binary_dataset(offline_tfds):
    _, data_dir = offline_tfds
    ds = data.load_dataset("tfds:binarized_mnist", validation_size=2, seed=0, data_dir=data_dir)
    assert (len(ds.train.labels), len(ds.validation.labels), len(ds.test.labels)) == (3, 2, 4)
    assert ds.train.images.shape == (3, 28, 28, 1) and ds.train.images.dtype == np.float32
    assert ds.train.images.max() == 1.0  # stored as {0, 1}: not divided by 255
    assert set(np.unique(ds.test.images)) == {0.0, 1.0}
    np.testing.assert_array_equal(ds.train.labels, [-1, -1, -1])
