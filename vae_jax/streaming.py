"""Training on images that do not fit in memory: an on-disk array streamed through Grain.

The in-memory epoch (:func:`vae_jax.training.train_epoch`, one ``lax.scan``
over device-resident data) stays the default where the data fits. Here the
images live in one ``.npy`` file of ``uint8`` (written once, chunk by chunk, by
:func:`write_images`), and :func:`train_epoch_streaming` is an ``epoch_fn`` of
:func:`vae_jax.training.fit` that reads chunks of batches from disk with Grain
in background threads while the previous chunk's steps run (one compiled
``lax.scan`` per chunk).

The batches and keys are the in-memory epoch's: epoch ``e`` splits
``fold_in(key, e)`` into a shuffle key and step keys exactly as
:func:`~vae_jax.training.train_epoch` does, so a streamed run sees the same
batches in the same order, with the same draws, as an in-memory run of the same
data (same numbers to float32 rounding), and a run resumed from its latest
per-epoch checkpoint continues the stream exactly (the iterator's whole state
is the epoch count, which the checkpoint's history holds).

Memory: a batch is read with ``pread`` into a fresh array (no memory map whose
pages would count as resident), so a process holds only the prefetched chunks.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from numpy.lib import format as npy_format

from vae_jax import parallel
from vae_jax._checks import check_positive_int

try:
    import grain
except ImportError as e:  # an extra: the in-memory path needs none of it
    raise ImportError("streaming needs Grain: pip install 'vae_jax[streaming]'") from e

_LEVELS = {"binary": 1.0, "8bit": 255.0}


class DiskImages:
    """``[N, H, W, C]`` uint8 images in a ``.npy`` file, read a batch at a time as float32 in [0, 1].

    Args:
      path: a ``.npy`` file of dtype uint8 and rank 4 (see :func:`write_images`).
      levels: ``"8bit"`` (pixel / 255) or ``"binary"`` (pixels are 0 or 1).

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a ``.npy`` file of uint8 ``[N, H, W, C]`` images, or a file shorter than its header says.
    """

    def __init__(self, path: str | os.PathLike, *, levels: str = "8bit"):
        if levels not in _LEVELS:
            raise ValueError(f"levels must be one of {tuple(_LEVELS)}; got {levels!r}.")
        self.path, self.levels = Path(path), np.float32(_LEVELS[levels])
        if not self.path.is_file():
            raise FileNotFoundError(f"Image file {str(self.path)!r} not found; write it once with "
                                    "vae_jax.streaming.write_images.")
        shape, dtype, self._offset = _read_header(self.path)
        if dtype != np.uint8 or len(shape) != 4:
            raise ValueError(f"{str(self.path)!r} must hold uint8 images [N, H, W, C]; got {dtype} {shape}.")
        self.shape = tuple(int(s) for s in shape)
        self._row = int(np.prod(self.shape[1:]))
        needed = self._offset + self.shape[0] * self._row
        if self.path.stat().st_size < needed:
            raise ValueError(f"{str(self.path)!r} is truncated: {self.path.stat().st_size} bytes, its header "
                             f"promises {needed}; write it again.")

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, index: np.ndarray) -> np.ndarray:
        """Images ``index [B]`` (any order) as float32 ``[B, H, W, C]`` in [0, 1]."""
        return self.read_uint8(index).astype(np.float32) / self.levels

    def read_uint8(self, index: np.ndarray) -> np.ndarray:
        """Images ``index [B]`` (any order) as stored: uint8 ``[B, H, W, C]``; divided by ``levels`` they are :meth:`read`'s."""
        index = np.asarray(index, np.int64)
        out = np.empty((len(index), self._row), np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i in np.argsort(index, kind="stable"):  # ascending offsets: sequential reads where possible
                got = os.preadv(fd, [memoryview(out[i])], self._offset + int(index[i]) * self._row)
                if got != self._row:
                    raise ValueError(f"{str(self.path)!r}: short read of image {int(index[i])}; the file is "
                                     "truncated or damaged.")
        finally:
            os.close(fd)
        return out.reshape(len(index), *self.shape[1:])


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    with open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
            read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except ValueError as e:
            raise ValueError(f"{str(path)!r} is not a .npy file ({e}).") from None
        if fortran:
            raise ValueError(f"{str(path)!r} is stored in Fortran order; write it with write_images.")
        return shape, dtype, f.tell()


def write_images(path: str | os.PathLike, chunks: Iterable[np.ndarray], *, num: int, levels: str = "8bit") -> Path:
    """Writes ``num`` images given as chunks of float ``[n, H, W, C]`` in [0, 1] to a uint8 ``.npy`` file.

    Only one chunk is in memory at a time. The file appears under its name only when complete
    (written to a temporary name, then renamed), so an interrupted write leaves no truncated file.

    Raises:
      ValueError: pixels outside [0, 1], chunks of different image shapes, or not exactly ``num`` images.
    """
    path, scale = Path(path), _LEVELS[levels]
    tmp = path.with_name(f".{path.name}.partial")
    array, written = None, 0
    try:
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.size and not (chunk.min() >= 0.0 and chunk.max() <= 1.0):
                raise ValueError("images must have pixels in [0, 1].")
            if array is None:
                array = npy_format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(num, *chunk.shape[1:]))
            if chunk.shape[1:] != array.shape[1:] or written + len(chunk) > num:
                raise ValueError(f"chunk of shape {chunk.shape} does not fit the file's {array.shape}.")
            array[written:written + len(chunk)] = np.rint(chunk * scale).astype(np.uint8)
            written += len(chunk)
        if array is None or written != num:
            raise ValueError(f"expected {num} images; the chunks held {written}.")
        array.flush()
        del array
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def epoch_order(key: jax.Array, num: int, batch_size: int) -> tuple[np.ndarray, jax.Array]:
    """The epoch's batches of indices ``[num_batches, batch_size]`` and step keys ``[num_batches]``,
    exactly as :func:`vae_jax.training.train_epoch` draws them from the epoch's ``key``."""
    num_batches = num // batch_size
    if num_batches == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the dataset ({num} examples).")
    key_perm, key_steps = jax.random.split(key)
    order = np.asarray(jax.random.permutation(key_perm, num))[: num_batches * batch_size]
    return order.reshape(num_batches, batch_size), jax.random.split(key_steps, num_batches)


def batches(source: DiskImages, order: np.ndarray | Sequence[np.ndarray], *, uint8: bool = False, threads: int = 2,
            prefetch: int = 4) -> grain.IterDataset:
    """A Grain pipeline that yields ``source.read(order[b])`` for b = 0, 1, ..., read ahead in threads.

    ``order[b]`` may be a chunk of batches ``[steps, batch]``: element b is then
    ``[steps, batch, H, W, C]``, read in one call. ``uint8=True`` yields the stored bytes
    (:meth:`DiskImages.read_uint8`)."""
    read = source.read_uint8 if uint8 else source.read
    dataset = grain.MapDataset.range(len(order)).map(
        lambda b: read(np.ravel(order[b])).reshape(*np.shape(order[b]), *source.shape[1:]))
    return dataset.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _steps(train_step: Callable, state: Any, chunk: jax.Array, keys: jax.Array,
           levels: jax.Array) -> tuple[Any, dict[str, jax.Array]]:
    """``train_step`` over the images ``chunk [S, B, ...] / levels`` (uint8 on the way in) and ``keys [S]``:
    one ``lax.scan``, so one dispatch per S steps; the metrics ``[S]``."""
    xs = chunk.astype(jnp.float32) / levels
    if len(keys) == 1:  # no scan: see train_epoch_streaming's steps_per_call
        state, metrics = train_step(state, xs[0], keys[0])
        return state, jax.tree.map(lambda m: m[None], metrics)
    return jax.lax.scan(lambda s, step_inputs: train_step(s, *step_inputs), state, (xs, keys))


def train_epoch_streaming(train_step: Callable, state: Any, data: DiskImages, key: jax.Array, *,
                          batch_size: int, steps_per_call: int = 8, threads: int = 2, prefetch: int = 4,
                          mesh: jax.sharding.Mesh | None = None) -> tuple[Any, dict[str, jax.Array]]:
    """One epoch over ``data`` on disk: an ``epoch_fn`` for :func:`vae_jax.training.fit`.

    Grain reads ``steps_per_call`` batches at a time (one ``[S, B, H, W, C]`` chunk of the
    stored uint8 bytes, a quarter of float32's) in background threads; the device divides
    them by ``data.levels``, and each chunk is one compiled ``lax.scan`` of ``train_step`` (so Python
    dispatches once per S steps, not once per step; the epoch's last chunk may be shorter).
    A chunk is put on the device before the previous one has finished (JAX dispatches
    asynchronously), so reading overlaps computing; the loop waits for chunk ``i - prefetch``
    before it goes on, so that when reading outruns computing the queue of dispatched chunks,
    each holding its images, stays ``prefetch`` long instead of growing with the epoch.
    Host memory: about ``prefetch * steps_per_call * batch_size`` uint8 images twice over
    (read ahead and queued) besides what the steps hold.

    Args:
      steps_per_call: training steps per compiled call (>= 1). The batches, keys and so the
        numbers do not depend on it (to float32 rounding). 1 calls ``train_step`` itself, no
        scan: for convolutional models on XLA:CPU, whose convolutions ran 3-15x slower inside
        a ``lax.scan`` than in a jitted step called from Python (``experiments.vq_vae``).
      mesh: data-parallel (:func:`vae_jax.parallel.make_mesh`; ``train_step`` from
        :func:`vae_jax.parallel.shard_train_step`): each process reads only its rows of each
        batch (:func:`vae_jax.parallel.local_rows`) and the devices share the steps.

    Returns:
      ``(state, metrics)``: metrics are the means over the epoch's steps, as for ``train_epoch``.
    """
    check_positive_int(steps_per_call, "steps_per_call")
    order, keys = epoch_order(key, len(data), batch_size)
    place = jax.device_put
    if mesh is not None:
        order, keys = order[:, parallel.local_rows(mesh, batch_size)], parallel.replicate(keys, mesh)
        place = functools.partial(parallel.shard_batch, mesh=mesh, axis=1)
    starts = range(0, len(order), steps_per_call)
    chunks = batches(data, [order[s:s + steps_per_call] for s in starts], uint8=True, threads=threads,
                     prefetch=prefetch)
    metrics = []
    for start, xs in zip(starts, chunks):
        state, chunk_metrics = _steps(train_step, state, place(xs), keys[start:start + len(xs)], data.levels)
        metrics.append(chunk_metrics)
        if len(metrics) > prefetch:  # bounded run-ahead: at most `prefetch` chunks (and their images) queued
            jax.block_until_ready(metrics[-prefetch - 1])
    return state, jax.tree.map(lambda *m: jnp.mean(jnp.concatenate(m)), *metrics)
