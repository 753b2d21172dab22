"""dSprites-style images with known generative factors, generated on demand (numpy only).

The factor grid is that of dSprites (Matthey et al., 2017): shape (square,
ellipse, heart) x scale (6 values in [0.5, 1]) x orientation (40 values in
[0, 2 pi]) x position x (32) x position y (32) = 737,280 binary 64x64 images.
:class:`Sprites` renders any batch of factor indices deterministically (pixel
centres tested against the rotated, scaled implicit shape, float64), so the
same factors always give the same bits and nothing is stored on disk.
:func:`load_tfds_dsprites` gives the real dSprites from tensorflow-datasets
with the same interface (``factor_sizes``, ``sample_factors``, ``images``),
so every metric of :mod:`vae_jax.disentanglement` runs on either.

As in dSprites, orientation is not identifiable for every shape (a square is
symmetric under 90 degrees, an ellipse under 180), and orientations 0 and
2 pi give the same image.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Protocol

import numpy as np

FACTOR_NAMES = ("shape", "scale", "orientation", "position_x", "position_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 737,280
IMAGE_SIZE = 64
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)
_HALF_SIZE = 10.0  # pixels: half the side of the square at scale 1
_MARGIN = 16.0  # pixels: centres lie in [16, 48], so a rotated sprite (<= 14.2 px) stays inside
_CHUNK = 1024
_WINDOW = 32  # pixels tested around each centre


class FactorData(Protocol):
    """What the metrics need from a dataset with known factors (both loaders here provide it)."""

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray: ...

    def images(self, factors: np.ndarray) -> np.ndarray: ...


def check_factors(factors, factor_sizes=FACTOR_SIZES) -> np.ndarray:
    """``factors`` as an int64 ``[N, K]`` array of indices in range, else ``ValueError``."""
    arr = np.asarray(factors)
    if arr.ndim != 2 or arr.shape[1] != len(factor_sizes):
        raise ValueError(f"factors must be [N, {len(factor_sizes)}] integer indices "
                         f"({', '.join(FACTOR_NAMES)}); got shape {arr.shape}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"factors must be integer indices; got dtype {arr.dtype} with fractions.")
    arr = arr.astype(np.int64)
    sizes = np.asarray(factor_sizes)
    if arr.size and (arr.min() < 0 or np.any(arr >= sizes)):
        bad = int(np.argmax(np.any((arr < 0) | (arr >= sizes), axis=0)))
        raise ValueError(f"factor {FACTOR_NAMES[bad] if bad < len(FACTOR_NAMES) else bad} has an index outside "
                         f"[0, {sizes[bad] - 1}]: found values in [{arr[:, bad].min()}, {arr[:, bad].max()}].")
    return arr


def factors_to_index(factors) -> np.ndarray:
    """Row-major position ``[N]`` of each factor tuple in the dSprites file order (shape slowest)."""
    return np.ravel_multi_index(tuple(check_factors(factors).T), FACTOR_SIZES)


def index_to_factors(index) -> np.ndarray:
    """Inverse of :func:`factors_to_index`: ``[N]`` positions -> ``[N, 5]`` factor indices."""
    index = np.asarray(index, np.int64)
    if index.ndim != 1 or (index.size and (index.min() < 0 or index.max() >= NUM_IMAGES)):
        raise ValueError(f"index must be a 1-D array of positions in [0, {NUM_IMAGES - 1}].")
    return np.stack(np.unravel_index(index, FACTOR_SIZES), axis=1).astype(np.int64)


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether sprite-frame points ``(u, v)`` (unit = half-size, v up) lie in each shape."""
    shape = np.broadcast_to(shape, u.shape)
    inside = np.zeros(u.shape, bool)
    m = shape == 0
    inside[m] = np.maximum(np.abs(u[m]), np.abs(v[m])) <= 1.0
    m = shape == 1
    inside[m] = u[m] ** 2 + (v[m] / 0.5) ** 2 <= 1.0
    m = shape == 2
    # The heart curve (x^2 + y^2 - 1)^3 = x^2 y^3 spans about [-1.14, 1.14] x [-1, 1.24];
    # scaled by 1.2 and shifted so that it fills about the same box as the square.
    hx, hy = 1.2 * u[m], 1.2 * v[m] + 0.12
    inside[m] = (hx ** 2 + hy ** 2 - 1.0) ** 3 - hx ** 2 * hy ** 3 <= 0.0
    return inside


def render(factors) -> np.ndarray:
    """The images of ``factors [N, 5]`` (indices of shape, scale, orientation, x, y).

    Returns:
      ``[N, 64, 64, 1]`` float32 images with pixels in {0, 1}; identical bits on
      every call and machine (float64 geometry at pixel centres, no randomness).

    Raises:
      ValueError: ``factors`` is not ``[N, 5]`` or holds an index outside its range.
    """
    factors = check_factors(factors)
    out = np.zeros((len(factors), IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
    offsets = np.arange(_WINDOW, dtype=np.int64)
    for start in range(0, len(factors), _CHUNK):
        f = factors[start:start + _CHUNK]
        n = np.arange(len(f))[:, None, None]
        size = (_HALF_SIZE * SCALES[f[:, 1]])[:, None, None]
        angle = ORIENTATIONS[f[:, 2]][:, None, None]
        cx = _MARGIN + (IMAGE_SIZE - 2 * _MARGIN) * POSITIONS[f[:, 3]]
        cy = _MARGIN + (IMAGE_SIZE - 2 * _MARGIN) * POSITIONS[f[:, 4]]
        # Every sprite lies within 14.2 px of its centre: only a 32x32 window is tested.
        col0 = np.clip(np.floor(cx).astype(np.int64) - 15, 0, IMAGE_SIZE - _WINDOW)
        row0 = np.clip(np.floor(cy).astype(np.int64) - 15, 0, IMAGE_SIZE - _WINDOW)
        cols = col0[:, None] + offsets  # [n, W]
        rows = row0[:, None] + offsets
        dx = (cols + 0.5 - cx[:, None])[:, None, :]  # x to the right
        dy = (cy[:, None] - rows - 0.5)[:, :, None]  # rows go down; y up
        cos, sin = np.cos(angle), np.sin(angle)
        u = (cos * dx + sin * dy) / size  # rotating the pixel grid by -angle turns the sprite by +angle
        v = (-sin * dx + cos * dy) / size
        out[start + n, rows[:, :, None], cols[:, None, :], 0] = _inside(f[:, 0, None, None], u, v)
    return out


def sample_factors(num: int, rng: np.random.Generator, factor_sizes=FACTOR_SIZES) -> np.ndarray:
    """``[num, K]`` int64 factor indices, each uniform and independent (as in disentanglement_lib)."""
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f"num must be an int >= 0; got {num!r}.")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator (np.random.default_rng(seed)); got {type(rng).__name__}.")
    return np.stack([rng.integers(0, s, size=num) for s in factor_sizes], axis=1).astype(np.int64)


class _FactorGrid:
    """What both loaders share: the factor grid, uniform factor draws and distinct-point datasets
    (``images(factors)`` comes from the subclass)."""

    factor_sizes: tuple[int, ...] = FACTOR_SIZES

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """``[num, 5]`` uniform factor indices drawn from ``rng``."""
        return sample_factors(num, rng, self.factor_sizes)

    def dataset(self, num: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``num`` distinct grid points chosen by ``seed`` (no repeats): ``(factors, images)``."""
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or not 0 < num <= NUM_IMAGES:
            raise ValueError(f"num must be an int in [1, {NUM_IMAGES}]; got {num!r}.")
        index = np.sort(np.random.default_rng(seed).choice(NUM_IMAGES, size=num, replace=False))
        factors = index_to_factors(index)
        return factors, self.images(factors)


@dataclasses.dataclass(frozen=True)
class Sprites(_FactorGrid):
    """The procedural dSprites-style dataset: factors in, images out, nothing stored.

    Attributes:
      factor_names: ``("shape", "scale", "orientation", "position_x", "position_y")``.
      factor_sizes: ``(3, 6, 40, 32, 32)``.
    """

    factor_names: tuple[str, ...] = FACTOR_NAMES
    factor_sizes: tuple[int, ...] = FACTOR_SIZES
    observation_shape: tuple[int, int, int] = (IMAGE_SIZE, IMAGE_SIZE, 1)

    def images(self, factors) -> np.ndarray:
        """``[N, 5]`` factor indices -> ``[N, 64, 64, 1]`` float32 binary images (:func:`render`)."""
        return render(factors)

    def sample(self, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(factors [num, 5], images [num, 64, 64, 1])`` for uniform random factors."""
        factors = self.sample_factors(num, rng)
        return factors, self.images(factors)


class TFDSSprites(_FactorGrid):
    """The real dSprites from tensorflow-datasets, with the interface of :class:`Sprites`.

    Build it with :func:`load_tfds_dsprites`. Holds all 737,280 images as packed
    bits (377 MB), ordered by :func:`factors_to_index`.
    """

    factor_names = FACTOR_NAMES
    factor_sizes = FACTOR_SIZES
    observation_shape = (IMAGE_SIZE, IMAGE_SIZE, 1)

    def __init__(self, packed_by_index: np.ndarray):
        if packed_by_index.shape != (NUM_IMAGES, IMAGE_SIZE * IMAGE_SIZE // 8) or packed_by_index.dtype != np.uint8:
            raise ValueError(f"expected {NUM_IMAGES} bit-packed images [512] uint8; got {packed_by_index.shape} "
                             f"{packed_by_index.dtype}.")
        self._packed = packed_by_index

    def images(self, factors) -> np.ndarray:
        """``[N, 5]`` factor indices -> ``[N, 64, 64, 1]`` float32 images in {0, 1}."""
        bits = np.unpackbits(self._packed[factors_to_index(factors)], axis=1)
        return bits.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1).astype(np.float32)

    def sample(self, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(num, rng)
        return factors, self.images(factors)


_TFDS_LABELS = ("label_shape", "label_scale", "label_orientation", "label_x_position", "label_y_position")


def load_tfds_dsprites(*, data_dir: str | os.PathLike | None = None, download: bool = False) -> TFDSSprites:
    """The real dSprites through ``tfds.load("dsprites")``.

    Args:
      data_dir: TFDS data folder (default: TFDS's own, ``~/tensorflow_datasets``).
      download: allow TFDS to download and prepare it (about 26 MB, needs the network).
        Without it, an unprepared dataset raises at once instead of trying the network
        (offline, ``tfds.load`` of an uncached dataset hangs for minutes before failing).

    Raises:
      ImportError: tensorflow-datasets is not installed.
      FileNotFoundError: dSprites is not prepared in ``data_dir`` and ``download`` is False.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError("The real dSprites needs tensorflow-datasets and TensorFlow: "
                          "pip install -e '.[tfds]' (or use vae_jax.dsprites.Sprites, generated offline).") from e
    data_dir = None if data_dir is None else os.fspath(data_dir)
    builder = tfds.builder("dsprites", data_dir=data_dir)
    prepared = os.path.exists(os.path.join(os.fspath(builder.data_dir), "dataset_info.json"))
    if not prepared and not download:
        raise FileNotFoundError(
            f"dSprites is not prepared under {builder.data_dir!s}. Run once online: "
            "load_tfds_dsprites(download=True) (or `tfds build dsprites`), or pass the data_dir "
            "that holds it; offline, use vae_jax.dsprites.Sprites (same factors, generated).")
    arrays = tfds.as_numpy(tfds.load("dsprites", split="train", batch_size=-1, data_dir=data_dir,
                                     download=download))
    factors = np.stack([np.asarray(arrays[k]) for k in _TFDS_LABELS], axis=1)
    images = np.asarray(arrays["image"]).reshape(len(factors), IMAGE_SIZE * IMAGE_SIZE)
    packed = np.empty((NUM_IMAGES, IMAGE_SIZE * IMAGE_SIZE // 8), np.uint8)
    index = factors_to_index(factors)
    for start in range(0, len(index), 65536):  # pixels are 0/1 or 0/255: any non-zero is on
        packed[index[start:start + 65536]] = np.packbits(images[start:start + 65536] > 0, axis=1)
    return TFDSSprites(packed)
