"""The machine's float32 matrix-multiply rate: what the hardware allows, measured.

Each library that the benchmark uses (XLA through JAX, OpenBLAS through
numpy, PyTorch's BLAS) multiplies float32 matrices of several shapes; the
machine's rate is the best median over all of them. The probe includes the
benchmark model's own layer shapes and large square ones, because a CPU's
BLAS reaches its peak only when the matrices fill its caches well.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.timing import median_seconds

# (m, k, n): [m, k] @ [k, n]. The first two are the model's widest layers at batch 1024.
SHAPES = ((1024, 784, 512), (1024, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (1024, 1024, 4096))
LIBRARIES = ("jax", "numpy", "torch")


def _matmul(library: str, a: np.ndarray, b: np.ndarray) -> Callable[[], object]:
    if library == "jax":
        dot = jax.jit(jnp.matmul)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        return lambda: dot(ja, jb).block_until_ready()
    if library == "numpy":
        return lambda: a @ b
    import torch

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return lambda: ta @ tb


def matmul_rates(shapes=SHAPES, libraries=LIBRARIES, *, repeats: int = 5, min_seconds: float = 0.2
                 ) -> list[dict]:
    """Measured float32 matmul rates.

    Args:
      shapes: ``(m, k, n)`` triples.
      libraries: any of ``"jax"``, ``"numpy"``, ``"torch"``.
      repeats: timed groups per shape and library (the median is kept).
      min_seconds: minimum duration of one timed group.

    Returns:
      One dict per shape and library: ``m, k, n, library, gflops`` (10^9 FLOP/s,
      counting ``2 m k n`` FLOPs per product).
    """
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        for library in libraries:
            seconds = median_seconds(_matmul(library, a, b), repeats=repeats, min_seconds=min_seconds)
            rows.append({"m": m, "k": k, "n": n, "library": library, "gflops": 2 * m * k * n / seconds / 1e9})
    return rows
