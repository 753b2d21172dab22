"""A dense product ``x @ w`` whose three matmuls all multiply in bfloat16 and accumulate in float32.

``dense_product(x [..., in], w [in, out]) -> float32 [..., out]`` rounds both
operands to the compute type (bfloat16) and accumulates in float32. It is a JAX
primitive with its own rules, so that its backward pass is the same kind of
product as its forward pass:

- forward: ``bf16(x) @ bf16(w)`` (``[N, in] x [in, out]``);
- input gradient: ``bf16(g) @ bf16(w).T`` (``[N, out] x [in, out]``, contracting
  the last dimension of both);
- weight gradient: ``bf16(x).T @ bf16(g)`` (``[in, N] x [N, out]``), the transpose of
  ``x`` materialised so that the contraction is the standard ``[M, K] x [K, N]``;

where ``N`` is every leading dimension of ``x`` (all examples and samples of a
``jax.vmap``-ed batch: the batching rule folds a vmapped axis into them, so a
network written for one example still gets one ``[N, in] x [in, out]`` product per
layer, and one weight gradient summed over the batch).

Why not ``lax.dot_general(..., preferred_element_type=float32)`` alone: its
autodiff keeps the cotangent float32 and emits the weight gradient as a
``[N, in] x [N, out]`` product contracting dimension 0 of both operands.
XLA:CPU runs a dot in bf16 only when it takes the ``{bf16, bf16} -> f32`` form
with a left operand contracting its last dimension (YNNPACK's
``IsDotSupportedByYnn``); every other dot is converted to float32 whole. So only
the forward third of a layer's matmul work ran in bf16.

Gradients: the cotangent is rounded to bf16 before each backward product (as
PyTorch's autocast does); products accumulate in float32 and the gradients are
returned in the operands' own dtypes (float32 parameters get float32 gradients,
without the bf16 rounding that the cotangent of a bf16-cast parameter has).

Transformations: ``jit``, ``grad`` (of any order: the rules are written with
ordinary JAX operations), ``jvp``, ``vmap`` (a vmapped ``w`` falls back to an
ordinary batched product) and their compositions, on every backend (the
primitive lowers to ``dot_general``, transposes and reshapes).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

ACCUMULATION_DTYPE = jnp.float32


def _matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int], dtype: Any, precision: Any) -> jax.Array:
    """``a`` and ``b`` rounded to ``dtype``, contracted over ``contract = (a_dim, b_dim)``, float32 out."""
    return jax.lax.dot_general(a.astype(dtype), b.astype(dtype), (((contract[0],), (contract[1],)), ((), ())),
                               precision=precision, preferred_element_type=ACCUMULATION_DTYPE)


def _forward(x, w, *, dtype, precision):
    return _matmul(x, w, (x.ndim - 1, 0), dtype, precision)


def _abstract_eval(x, w, *, dtype, precision):
    del dtype, precision
    return jax.core.ShapedArray(x.shape[:-1] + w.shape[1:], ACCUMULATION_DTYPE)


def _materialised_transpose(a: jax.Array) -> jax.Array:
    """``a [n, m] -> [m, n]`` as a row-major copy.

    A plain ``a.T`` feeding a dot is folded into the dot's dimension numbers
    (or given a column-major layout), which puts the contraction back on
    dimension 0; through a unit axis the transpose stays a real copy.
    """
    n, m = a.shape
    return jnp.transpose(a[:, :, None], (1, 0, 2)).reshape(m, n)


def _input_gradient(g, x, w, *, dtype, precision):
    """``dx [..., in] = g [..., out] . w [in, out]^T``, in ``x``'s dtype."""
    return _matmul(g, w, (g.ndim - 1, 1), dtype, precision).astype(x.aval.dtype)


def _weight_gradient(g, x, w, *, dtype, precision):
    """``dw [in, out] = x^T g``, summed over every leading dimension, in ``w``'s dtype."""
    fan_in, fan_out = w.aval.shape
    rows = _materialised_transpose(x.reshape(-1, fan_in).astype(dtype))  # [in, N]
    return _matmul(rows, g.reshape(-1, fan_out), (1, 0), dtype, precision).astype(w.aval.dtype)


def _batch(args, dims, *, dtype, precision):
    x, w = args
    x_dim, w_dim = dims
    if w_dim is None:  # the batch axis joins x's leading dimensions: still one product
        return dense_p.bind(jnp.moveaxis(x, x_dim, 0), w, dtype=dtype, precision=precision), 0
    forward = functools.partial(_forward, dtype=dtype, precision=precision)
    return jax.vmap(forward, in_axes=(x_dim, w_dim))(x, w), 0


dense_p = Primitive("mixed_precision_dense")
dense_p.def_impl(_forward)
dense_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(dense_p, mlir.lower_fun(_forward, multiple_results=False))
ad.defbilinear(dense_p, _input_gradient, _weight_gradient)
batching.primitive_batchers[dense_p] = _batch


def dense_product(x: jax.Array, w: jax.Array, *, compute_dtype: Any = jnp.bfloat16,
                  precision: Any = None) -> jax.Array:
    """``x @ w`` with operands rounded to ``compute_dtype`` and float32 accumulation.

    Args:
      x: ``[..., in]`` inputs (any float dtype; float32 keeps float32 gradients).
      w: ``[in, out]`` weights.
      compute_dtype: the type the operands are multiplied in (bfloat16).
      precision: passed to ``lax.dot_general``.

    Returns:
      ``[..., out]`` float32. Its input and weight gradients are bf16 x bf16 -> float32
      products too (see the module docstring), returned in ``x``'s and ``w``'s dtypes.

    Raises:
      ValueError: if the shapes are not ``[..., in]`` and ``[in, out]``.
    """
    if jnp.ndim(w) != 2 or jnp.ndim(x) < 1 or jnp.shape(x)[-1] != jnp.shape(w)[0]:
        raise ValueError(f"dense_product needs x [..., in] and w [in, out]; got {jnp.shape(x)} and {jnp.shape(w)}.")
    return dense_p.bind(x, w, dtype=jnp.dtype(compute_dtype), precision=precision)


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision: Any = None,
                preferred_element_type: Any = None, *, compute_dtype: Any = jnp.bfloat16) -> jax.Array:
    """A ``lax.dot_general`` for ``flax.linen.Dense(dot_general=...)``: multiplies in ``compute_dtype``.

    The dense layer's contraction (the last dimension of ``lhs`` with the first of
    a 2-D ``rhs``) goes through :func:`dense_product`; any other one is an ordinary
    ``dot_general`` of the rounded operands. The result is float32 whatever
    ``preferred_element_type`` asks for (the accumulation type of the policy).
    """
    del preferred_element_type
    (lhs_contract, rhs_contract), batch = dimension_numbers
    if rhs.ndim == 2 and tuple(lhs_contract) == (lhs.ndim - 1,) and tuple(rhs_contract) == (0,) and not any(batch[0]) and not any(batch[1]):
        return dense_product(lhs, rhs, compute_dtype=compute_dtype, precision=precision)
    return jax.lax.dot_general(lhs.astype(compute_dtype), rhs.astype(compute_dtype), dimension_numbers,
                               precision=precision, preferred_element_type=ACCUMULATION_DTYPE)
