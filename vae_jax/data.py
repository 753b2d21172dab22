"""Datasets as float32 images in ``[0, 1]``, shape ``[N, H, W, C]``, and binarisation.

Sources: Fashion-MNIST from gzipped IDX files (Debian's ``dataset-fashion-mnist``
or a folder named by ``VAE_JAX_DATA_DIR``; numpy only), scikit-learn's bundled
8x8 digits, and any image dataset of tensorflow-datasets (optional extra).
This module imports numpy and jax only; TFDS and scikit-learn load lazily.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
NUM_CLASSES = len(FASHION_MNIST_CLASSES)
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DATA_DIR_ENV = "VAE_JAX_DATA_DIR"
OFFLINE_DATASETS = ("fashion_mnist", "digits")
BINARIZATION_MODES = ("none", "dynamic", "static", "threshold")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_DIGITS_SPLIT_SEED = 0  # fixed, so that every `seed` shares one digits test set
_BINARY_TFDS_DATASETS = frozenset({"binarized_mnist"})  # stored as {0, 1}, not /255
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FIX = (f"Reinstall the files (`apt-get install --reinstall dataset-fashion-mnist`) "
        f"or set {DATA_DIR_ENV} to a folder holding intact copies.")
_MISSING = (f"Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
            f"or set {DATA_DIR_ENV} to a folder holding the four `*-idx*-ubyte.gz` files, "
            f"or use a tensorflow-datasets name (e.g. load_dataset('tfds:fashion_mnist')).")
_TFDS_MISSING = ("tensorflow-datasets and TensorFlow are needed for TFDS datasets: "
                 "pip install -e '.[tfds]'")


class Split(NamedTuple):
    """One split of a dataset.

    Attributes:
      images: ``[N, H, W, C]`` float32 pixel intensities in ``[0, 1]``.
      labels: ``[N]`` int32 class indices (-1 where the dataset has no labels).
    """

    images: np.ndarray
    labels: np.ndarray


class Dataset(NamedTuple):
    """Train / validation / test splits (validation may hold 0 examples)."""

    train: Split
    validation: Split
    test: Split
    name: str


def check_images(x, *, name: str = "images") -> None:
    """Checks that ``x`` is a float ``[N, H, W, C]`` array with finite pixels in ``[0, 1]``.

    Args:
      x: array-like to check (numpy or jax).
      name: what ``x`` is, used in the error message.

    Raises:
      ValueError: if ``x`` is not floating point, not rank 4, or has a pixel
        outside ``[0, 1]`` or non-finite (the message gives the min/max found).
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} have dtype {x.dtype}; expected floating point scaled to "
                         "[0, 1] (e.g. uint8 pixels / 255).")
    if x.ndim != 4:
        raise ValueError(f"{name} have shape {x.shape}; expected rank 4 [N, H, W, C] "
                         "(add a channel axis with x[..., None]).")
    if x.size and not (np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= 1.0):
        raise ValueError(f"{name} have min {np.nanmin(x)} and max {np.nanmax(x)} (finite: "
                         f"{bool(np.all(np.isfinite(x)))}); images must be finite and "
                         "scaled to [0, 1].")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (gzipped or plain) into a numpy array.

    Args:
      path: the file, e.g. ``train-images-idx3-ubyte.gz``; gzip is detected
        from the content, not the name.

    Returns:
      Array of the shape and dtype given in the header (native byte order),
      e.g. ``[60000, 28, 28]`` uint8 for Fashion-MNIST train images.

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: if the gzip stream is corrupt or truncated, the magic number
        or dtype code is wrong, or the payload size does not match the header.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file {path!r} not found. {_MISSING}")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path!r} is a corrupt or truncated gzip file ({e}). {_FIX}") from e
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(f"{path!r} has wrong magic number {raw[:4].hex()!r} (an IDX file "
                         f"starts with 0x0000, a dtype code, and the rank). {_FIX}")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path!r} has unknown IDX dtype code {code:#04x} (expected one of "
                         f"{[hex(c) for c in _IDX_DTYPES]}). {_FIX}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path!r} ends inside its header ({len(raw)} bytes). {_FIX}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path!r}: header says shape {dims} ({expected} bytes of data) but "
                         f"the file holds {len(raw) - header} bytes. {_FIX}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def load_fashion_mnist(split: Literal["train", "test"] = "train",
                       data_dir: str | os.PathLike | None = None) -> Split:
    """Loads Fashion-MNIST from its gzipped IDX files (offline, numpy only).

    Args:
      split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
      data_dir: folder holding the files; defaults to ``$VAE_JAX_DATA_DIR``,
        else ``/usr/share/datasets/fashion-mnist`` (Debian's package).

    Returns:
      ``Split`` with images ``[N, 28, 28, 1]`` float32 (= bytes / 255) and
      labels ``[N]`` int32 in ``[0, 10)`` (names in ``FASHION_MNIST_CLASSES``).

    Raises:
      FileNotFoundError: if a file is missing (the message says how to get it).
      ValueError: for an unknown split, a corrupt file, or images and labels
        of different counts or unexpected shape.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"Unknown Fashion-MNIST split {split!r}; choose from "
                         f"{sorted(FASHION_MNIST_FILES)}.")
    folder = os.fspath(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    image_path, label_path = (os.path.join(folder, f) for f in FASHION_MNIST_FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{image_path!r} / {label_path!r} hold shapes {images.shape} "
                         f"{images.dtype} / {labels.shape}; expected [N, H, W] uint8 / [N]. {_FIX}")
    if len(images) != len(labels):
        raise ValueError(f"{image_path!r} holds {len(images)} images but {label_path!r} holds "
                         f"{len(labels)} labels; the counts must match. {_FIX}")
    x = (images.astype(np.float32) / 255.0)[..., None]
    check_images(x, name=image_path)
    return Split(x, labels.astype(np.int32))


def load_digits() -> Split:
    """Loads scikit-learn's bundled 8x8 handwritten digits (offline, instant).

    Returns:
      ``Split`` of all 1797 images, ``[1797, 8, 8, 1]`` float32 (= counts / 16),
      and labels ``[1797]`` int32 in ``[0, 10)``.
    """
    from sklearn.datasets import load_digits as sk_load_digits  # lazy: heavy import

    bunch = sk_load_digits()
    x = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
    check_images(x, name="sklearn digits")
    return Split(x, np.asarray(bunch.target, np.int32))


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(_TFDS_MISSING) from e
    return tfds


def load_tfds(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Split:
    """Loads an image dataset of tensorflow-datasets (downloads on first use).

    Uses ``tfds.load(name, split=split, batch_size=-1, with_info=True)`` and the
    builder's ``supervised_keys`` to find image and label.

    Args:
      name: TFDS name, e.g. ``"mnist"``, ``"binarized_mnist"``, ``"omniglot"``.
      split: TFDS split spec, e.g. ``"train"``, ``"test"``, ``"train[:10%]"``.
      data_dir: TFDS data folder; defaults to TFDS's own (``~/tensorflow_datasets``).

    Returns:
      ``Split`` with images ``[N, H, W, C]`` float32 in ``[0, 1]`` (uint8 / 255;
      ``binarized_mnist``, stored as {0, 1}, is kept as is) and labels ``[N]``
      int32 (all -1 for datasets without labels, e.g. ``binarized_mnist``).

    Raises:
      ImportError: if tensorflow-datasets, TensorFlow or a module TFDS needs is missing.
      ValueError: if the images are not in ``[0, 1]`` after conversion.
    """
    tfds = _import_tfds()
    data_dir = None if data_dir is None else os.fspath(data_dir)
    try:
        ds, info = tfds.load(name, split=split, batch_size=-1, with_info=True, data_dir=data_dir)
    except ModuleNotFoundError as e:  # e.g. TFDS 4.9.10 needs importlib_resources, undeclared
        raise ImportError(f"TFDS needs the missing module {e.name!r}: pip install {e.name} "
                          f"(or {_TFDS_MISSING.split(': ')[-1]}).") from e
    arrays = tfds.as_numpy(ds)
    keys = info.supervised_keys
    has_keys = isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)
    image_key, label_key = keys if has_keys else ("image", None)
    images = np.asarray(arrays[image_key])
    if images.ndim == 3:
        images = images[..., None]
    binary = name.split("/")[0].split(":")[0] in _BINARY_TFDS_DATASETS
    x = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 and not binary else 1.0)
    check_images(x, name=f"tfds {name}[{split}] images")
    labels = (np.full(len(x), -1, np.int32) if label_key is None
              else np.asarray(arrays[label_key]).astype(np.int32))
    return Split(x, labels)


def _carve(split: Split, size: int, seed: int) -> tuple[Split, Split]:
    """Splits off ``size`` examples chosen by a seeded permutation; both keep data order."""
    perm = np.random.default_rng(seed).permutation(len(split.labels))
    rest, chosen = np.sort(perm[size:]), np.sort(perm[:size])
    return Split(*(a[rest] for a in split)), Split(*(a[chosen] for a in split))


def _tfds_name(name: str) -> str:
    """Returns the TFDS name for ``name``, or raises ValueError listing valid choices."""
    explicit = name.startswith("tfds:")
    tfds_name = name[len("tfds:"):] if explicit else name
    choices = (f"valid names: {list(OFFLINE_DATASETS)} (offline), or a tensorflow-datasets "
               "name, optionally prefixed 'tfds:' (see tfds.list_builders())")
    try:
        tfds = _import_tfds()
    except ImportError:
        if explicit:
            raise
        raise ValueError(f"Unknown dataset {name!r}; {choices}. TFDS names need "
                         "tensorflow-datasets: pip install -e '.[tfds]'.") from None
    if tfds_name.split("/")[0].split(":")[0] not in tfds.list_builders(
            with_community_datasets=False):
        raise ValueError(f"Unknown dataset {name!r}; {choices}.")
    return tfds_name


def load_dataset(name: str, *, validation_size: int = 0, seed: int = 0,
                 data_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads a dataset by name, with a validation split carved from train.

    ``"fashion_mnist"`` reads the IDX files (official 60000/10000 split);
    ``"digits"`` is scikit-learn's 1797 digits, split 1438/359 train/test by a
    fixed permutation (seed 0, independent of ``seed``); any other name
    (``"tfds:NAME"`` or a bare TFDS name) uses TFDS's ``"train"`` and ``"test"``.

    Args:
      name: dataset name, see above.
      validation_size: number of training examples moved to validation,
        chosen by a permutation seeded with ``seed``; 0 gives an empty split.
      seed: seed of the validation permutation.
      data_dir: IDX folder for ``fashion_mnist``, TFDS data folder otherwise.

    Returns:
      ``Dataset`` whose splits hold float32 ``[N, H, W, C]`` images in ``[0, 1]``.

    Raises:
      ValueError: for an unknown name or ``validation_size`` outside
        ``[0, train size)``.
      FileNotFoundError / ImportError: if the data or TFDS is missing.
    """
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)):
        raise ValueError(f"validation_size must be an int, got {validation_size!r}.")
    if validation_size < 0:
        raise ValueError(f"validation_size must be >= 0, got {validation_size}.")
    if name == "fashion_mnist":
        train, test = (load_fashion_mnist(s, data_dir) for s in ("train", "test"))
    elif name == "digits":
        digits = load_digits()
        train, test = _carve(digits, len(digits.labels) // 5, _DIGITS_SPLIT_SEED)
    else:
        tfds_name = _tfds_name(name)
        train, test = (load_tfds(tfds_name, s, data_dir) for s in ("train", "test"))
    if validation_size >= len(train.labels):
        raise ValueError(f"validation_size must be in [0, {len(train.labels)}) for {name!r} "
                         f"({len(train.labels)} training examples), got {validation_size}.")
    train, validation = _carve(train, int(validation_size), seed)
    return Dataset(train, validation, test, name)


def binarize_dynamic(key: jax.Array, x: jax.Array) -> jax.Array:
    """Draws fresh binary pixels, ``Bernoulli(p = x)``; pure jax, fine under ``jax.jit``.

    Call it inside the train step with a new key every step (dynamic binarisation).

    Args:
      key: PRNG key (``jax.random.key``).
      x: ``[...]`` intensities in ``[0, 1]``, any shape.

    Returns:
      float32 array of ``x``'s shape with entries in {0, 1}.
    """
    return jax.random.bernoulli(key, x).astype(jnp.float32)


def binarize_static(x: np.ndarray, seed: int) -> np.ndarray:
    """Draws ``Bernoulli(p = x)`` pixels once with ``default_rng(seed)``; float32 {0, 1}, x's shape."""
    x = np.asarray(x)
    u = np.random.default_rng(seed).random(x.shape, dtype=np.float32)
    return (u < x).astype(np.float32)


def binarize_threshold(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Returns float32 ``1.0`` where ``x > threshold``, else ``0.0`` (same shape)."""
    return (np.asarray(x) > threshold).astype(np.float32)


def binarize(x: np.ndarray, mode: str, *, seed: int = 0) -> np.ndarray:
    """Binarises a dataset array ahead of training.

    Args:
      x: ``[...]`` intensities in ``[0, 1]``.
      mode: ``"none"`` (grey levels kept), ``"static"`` (one draw seeded by
        ``seed``), ``"threshold"`` (``x > 0.5``), or ``"dynamic"``: returned
        unchanged here, because dynamic binarisation draws anew inside each
        train step (``binarize_dynamic`` with the step's key).
      seed: seed of the ``"static"`` draw.

    Returns:
      float32 array of ``x``'s shape.

    Raises:
      ValueError: for an unknown ``mode``.
    """
    if mode not in BINARIZATION_MODES:
        raise ValueError(f"Unknown binarisation mode {mode!r}; choose from {BINARIZATION_MODES}.")
    if mode == "static":
        return binarize_static(x, seed)
    if mode == "threshold":
        return binarize_threshold(x)
    return np.asarray(x, np.float32)
