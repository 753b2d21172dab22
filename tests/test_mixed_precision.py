"""vae_jax._mixed_precision: the dense product whose three matmuls multiply in bf16.

Truths: float64 numpy products of the bf16-rounded operands (with the
rounding error of the bf16 cotangent bounded elementwise), JAX's own autodiff of
the same rounded product, and the optimised HLO XLA:CPU compiles.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vae_jax as vj
from vae_jax._mixed_precision import dense_product, dot_general

BF16_EPS = 2.0**-8  # bf16 keeps 8 significant bits: relative rounding error <= 2^-9, doubled for slack


def _rounded(a) -> np.ndarray:
    return np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


def _data(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


def test_forward_is_the_product_of_the_rounded_operands():
    x, w = _data(0, (3, 5, 16), (16, 24))
    y = dense_product(x, w)
    assert y.dtype == jnp.float32 and y.shape == (3, 5, 24)
    np.testing.assert_allclose(y, _rounded(x) @ _rounded(w), rtol=1e-5, atol=1e-5)


def test_gradients_match_float64_within_the_bf16_rounding_of_the_cotangent():
    """d/dx and d/dw of sum(c * (x @ w)): the cotangent c is rounded to bf16 before each
    backward product, so each gradient entry is within 2^-8 of sum |operand| * |c| of the truth."""
    x, w, c = _data(1, (32, 16), (16, 24), (32, 24))
    gx, gw = jax.grad(lambda x, w: jnp.sum(c * dense_product(x, w)), argnums=(0, 1))(x, w)
    assert gx.dtype == gw.dtype == jnp.float32
    xr, wr = _rounded(x), _rounded(w)
    c64 = np.asarray(c, np.float64)
    np.testing.assert_array_less(np.abs(gx - c64 @ wr.T), BF16_EPS * (np.abs(c64) @ np.abs(wr).T) + 1e-5)
    np.testing.assert_array_less(np.abs(gw - xr.T @ c64), BF16_EPS * (np.abs(xr).T @ np.abs(c64)) + 1e-5)
    assert not np.allclose(gw, xr.T @ c64, rtol=1e-7, atol=0)  # the cotangent really is rounded


def _reference(x, w):
    """JAX's own bf16 x bf16 -> f32 product, differentiated by JAX (float32 cotangents)."""
    return jax.lax.dot_general(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (((x.ndim - 1,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)


@pytest.mark.parametrize("transform", ("grad of vmap", "vmap of grad", "nested vmap", "batched weights"))
def test_every_composition_of_grad_and_vmap_matches_jax_autodiff(transform):
    """Per-example networks are vmapped: the batching rule folds the vmapped axis into the product's
    leading dimensions; per-example gradients (vmap of grad) stay per example."""
    x, w, c = _data(2, (6, 4, 16), (16, 12), (6, 4, 12))
    ws = np.stack([w, 2 * w])

    def run(product):
        one = lambda xi, wi, ci: jnp.sum(ci * jnp.tanh(product(xi, wi)))
        if transform == "grad of vmap":
            return jax.grad(lambda w: jnp.sum(jax.vmap(one, (0, None, 0))(x, w, c)))(w)
        if transform == "vmap of grad":
            return jax.vmap(jax.grad(one, argnums=1), (0, None, 0))(x, w, c)
        if transform == "nested vmap":  # e.g. samples inside examples
            inner = lambda xi, w, ci: jnp.sum(jax.vmap(one, (0, None, 0))(xi[:, None], w, ci[:, None]))
            return jax.grad(lambda w: jnp.sum(jax.vmap(inner, (0, None, 0))(x, w, c)))(w)
        return jax.vmap(jax.grad(lambda w, xi, ci: one(xi, w, ci)), (0, None, None))(ws, x[0], c[0])

    got, want = run(dense_product), run(_reference)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2 * float(jnp.max(jnp.abs(want))))


def test_forward_mode_and_second_order_derivatives():
    x, w, v = _data(3, (8, 16), (16, 12), (16, 12))
    f = lambda product, w: jnp.sum(jnp.tanh(product(x, w)) ** 2)
    _, tangent = jax.jvp(lambda w: f(dense_product, w), (w,), (v,))
    _, tangent_ref = jax.jvp(lambda w: f(_reference, w), (w,), (v,))
    np.testing.assert_allclose(tangent, tangent_ref, rtol=1e-5)
    hvp = lambda product: jax.grad(lambda w: jnp.vdot(jax.grad(lambda w: f(product, w))(w), v))(w)
    np.testing.assert_allclose(hvp(dense_product), hvp(_reference), rtol=5e-2, atol=5e-2 * float(
        jnp.max(jnp.abs(hvp(_reference)))))


def test_bad_shapes_and_other_contractions():
    with pytest.raises(ValueError, match=r"x \[..., in\] and w \[in, out\]"):
        dense_product(jnp.zeros((4, 3)), jnp.zeros((5, 2)))
    a, b = _data(4, (8, 3, 5), (8, 5, 2))
    batched = dot_general(a, b, (((2,), (1,)), ((0,), (0,))))  # not a dense layer: an ordinary dot_general
    assert batched.dtype == jnp.float32
    np.testing.assert_allclose(batched, np.einsum("bij,bjk->bik", _rounded(a), _rounded(b)), rtol=1e-5, atol=1e-5)


def _dots(hlo: str) -> list[tuple[str, str, str]]:
    """(result type, lhs type, rhs type) of every dot in an optimised HLO module's text."""
    types = dict(re.findall(r"%([\w.\-]+) = (\w+)\[", hlo))
    types.update(re.findall(r"([\w.\-]+): (\w+)\[", hlo))  # parameters of fused computations
    return [(out, types[lhs], types[rhs])
            for out, lhs, rhs in re.findall(r"= (\w+)\[[^=]*? dot\(%([\w.\-]+), %([\w.\-]+)\)", hlo)]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the compiled HLO checked is XLA:CPU's")
@pytest.mark.parametrize("architecture, layers", [("mlp", 6), ("gated_mlp", 6)])
def test_compiled_train_step_runs_every_dense_matmul_in_bf16(architecture, layers):
    """XLA:CPU's optimised HLO of a bf16 train step: each layer's forward, input-gradient and
    weight-gradient products are bf16 x bf16 -> f32 dots (the first layer's input gradient is
    not computed: the data is not differentiated). With JAX's own autodiff of a bf16 dot only
    the forward products were bf16 (the backward ones were converted to float32)."""
    model = vj.build_model(vj.ModelConfig(latent_dim=8, hidden_sizes=(32, 16), architecture=architecture,
                                          compute_dtype="bfloat16"), (8, 8, 1))
    x = np.zeros((16, 8, 8, 1), np.float32)
    state = vj.create_train_state(model, jax.random.key(0), x[0], optax.adam(1e-3))
    hlo = vj.make_train_step(model.objective).lower(state, x, jax.random.key(1)).compile().as_text()
    dots = _dots(hlo)
    assert len(dots) == 3 * layers - 1, dots
    assert all(d == ("f32", "bf16", "bf16") for d in dots), dots


def test_lowers_for_gpu_and_tpu_without_cpu_only_operations():
    """The same train-step gradient lowers for CUDA and TPU on this machine (jax.export needs no
    device): the primitive becomes ordinary StableHLO with bf16 x bf16 -> f32 dot_generals."""
    x, w, c = _data(5, (6, 16), (16, 12), (6, 12))
    grad = jax.jit(jax.grad(lambda w: jnp.sum(c * jax.vmap(lambda xi: dense_product(xi, w))(x))))
    exported = jax.export.export(grad, platforms=("cuda", "tpu"))(jax.ShapeDtypeStruct(w.shape, w.dtype))
    text = exported.mlir_module()
    dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
    assert exported.platforms == ("cuda", "tpu") and "custom_call" not in text
    assert dots and all(re.search(r": \(tensor<[\dx]+bf16>, tensor<[\dx]+bf16>\) -> tensor<[\dx]+f32>", line)
                        for line in dots), dots
