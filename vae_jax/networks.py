"""Flax linen encoders and decoders for ONE example (batch with ``jax.vmap``).

Encoders map an image ``[H, W, C]`` to ``(mean [d], log_std [d])`` or, with
``stochastic=False`` (the autoencoder baseline), to a code ``[d]``. Decoders
map ``z [d]`` to the parameters of p(x | z): one array ``[H, W, C]``, or
``(mean, log_std)`` when ``num_outputs=2`` (Gaussian with learned sigma).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import _mixed_precision as mixed_precision

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "elu": nn.elu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "softplus": nn.softplus,
    "swish": nn.swish,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Activation by name; raises ``ValueError`` listing the valid names."""
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; expected one of {tuple(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


COMPUTE_DTYPES = ("float32", "bfloat16")
"""Precision policies of the networks' matmuls and convolutions (``ModelConfig.compute_dtype``)."""


def precision(dtype: Any) -> dict[str, Any]:
    """Keyword arguments that make a Flax ``Dense``/``Conv``/``ConvTranspose`` compute in ``dtype``.

    ``None`` or float32: Flax's defaults (everything float32). A narrower type
    (bfloat16): the layer's inputs and float32 parameters are cast to it for the
    product, which accumulates and returns float32 (``preferred_element_type``),
    so the bias, activations and every reduction after it stay float32; the
    parameters themselves (and so the optimiser state) remain float32. Dense layers
    use :func:`vae_jax._mixed_precision.dot_general` instead (see ``_dense``): it
    also runs both gradient products in the compute dtype, and keeps the bias float32.
    """
    if dtype is None or jnp.dtype(dtype) == jnp.float32:
        return {}
    return {"dtype": jnp.dtype(dtype), "param_dtype": jnp.float32}


def _dense(features: int, dtype: Any, **kwargs) -> nn.Dense:
    # Float32 inputs, parameters and bias; the product rounds its operands (forward and both
    # gradients) to the compute dtype and accumulates in float32 (vae_jax._mixed_precision).
    if precision(dtype):
        kwargs.update(dot_general=functools.partial(mixed_precision.dot_general, compute_dtype=dtype))
    return nn.Dense(features, **kwargs)


def _conv(features: int, dtype: Any, **kwargs) -> nn.Conv:
    if precision(dtype):
        kwargs.update(precision(dtype), conv_general_dilated=functools.partial(
            jax.lax.conv_general_dilated, preferred_element_type=jnp.float32))
    return nn.Conv(features, **kwargs)


def _conv_transpose(features: int, dtype: Any, **kwargs) -> nn.ConvTranspose:
    if precision(dtype):
        kwargs.update(precision(dtype), preferred_element_type=jnp.float32)
    return nn.ConvTranspose(features, **kwargs)


def _split_heads(h: jax.Array, latent_dim: int, stochastic: bool, dtype: Any = None) -> Any:
    # float32 out whatever the compute dtype: the KL and log-densities downstream need it.
    out = _dense(2 * latent_dim if stochastic else latent_dim, dtype, name="head")(h).astype(jnp.float32)
    return (out[:latent_dim], out[latent_dim:]) if stochastic else out


def _split_outputs(h: jax.Array, output_shape: Sequence[int], num_outputs: int) -> Any:
    """``h [prod(output_shape) * num_outputs]`` or ``[H, W, C * num_outputs]`` -> output(s), float32."""
    h = h.astype(jnp.float32)  # the log-likelihood from logits/means is computed in float32
    if num_outputs == 1:
        return h.reshape(tuple(output_shape))
    mean, log_std = jnp.split(h.reshape(*output_shape[:-1], 2 * output_shape[-1]), 2, axis=-1)
    return mean, log_std


class MLPEncoder(nn.Module):
    """Flattens one example, applies dense layers, returns the Gaussian's parameters."""

    latent_dim: int
    hidden_sizes: Sequence[int] = (512, 256)
    activation: str = "relu"
    stochastic: bool = True
    dtype: Any = None  # compute dtype of the matmuls (see precision()); None: float32

    @nn.compact
    def __call__(self, x: jax.Array) -> Any:
        act = get_activation(self.activation)
        h = x.reshape(-1)
        for width in self.hidden_sizes:
            h = act(_dense(width, self.dtype)(h))
        return _split_heads(h, self.latent_dim, self.stochastic, self.dtype)


class MLPDecoder(nn.Module):
    """Dense layers from ``z [d]`` to the likelihood parameters of ``output_shape``."""

    output_shape: Sequence[int]
    hidden_sizes: Sequence[int] = (256, 512)
    activation: str = "relu"
    num_outputs: int = 1
    dtype: Any = None  # compute dtype of the matmuls (see precision()); None: float32

    @nn.compact
    def __call__(self, z: jax.Array) -> Any:
        act = get_activation(self.activation)
        h = z
        for width in self.hidden_sizes:
            h = act(_dense(width, self.dtype)(h))
        size = 1
        for s in self.output_shape:
            size *= s
        return _split_outputs(_dense(size * self.num_outputs, self.dtype)(h), self.output_shape, self.num_outputs)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (28x28 -> 14x14 -> 7x7), a dense layer, the heads.

    Works for any ``H, W`` divisible by 4.
    """

    latent_dim: int
    features: Sequence[int] = (32, 64)
    hidden_size: int = 256
    activation: str = "relu"
    stochastic: bool = True
    dtype: Any = None  # compute dtype of the convolutions and matmuls; None: float32

    @nn.compact
    def __call__(self, x: jax.Array) -> Any:
        act = get_activation(self.activation)
        h = x
        for f in self.features:
            h = act(_conv(f, self.dtype, kernel_size=(3, 3), strides=(2, 2), padding="SAME")(h))
        h = act(_dense(self.hidden_size, self.dtype)(h.reshape(-1)))
        return _split_heads(h, self.latent_dim, self.stochastic, self.dtype)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: dense to ``H/4 x W/4``, two transposed convolutions."""

    output_shape: Sequence[int]
    features: Sequence[int] = (64, 32)
    hidden_size: int = 256
    activation: str = "relu"
    num_outputs: int = 1
    dtype: Any = None  # compute dtype of the convolutions and matmuls; None: float32

    @nn.compact
    def __call__(self, z: jax.Array) -> Any:
        act = get_activation(self.activation)
        height, width, channels = self.output_shape
        if height % 4 or width % 4:
            raise ValueError(f"ConvDecoder needs H and W divisible by 4; got {tuple(self.output_shape)}.")
        h = act(_dense(self.hidden_size, self.dtype)(z))
        h = act(_dense((height // 4) * (width // 4) * self.features[0], self.dtype)(h))
        h = h.reshape(height // 4, width // 4, self.features[0])
        for f in self.features:
            h = act(_conv_transpose(f, self.dtype, kernel_size=(3, 3), strides=(2, 2), padding="SAME")(h))
        h = _conv(channels * self.num_outputs, self.dtype, kernel_size=(3, 3), padding="SAME")(h)
        return _split_outputs(h, self.output_shape, self.num_outputs)


# He initialisation N(0, 2 / fan_in), as in the VampPrior authors' code (utils/nn.py: he_init).
_HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class GatedDense(nn.Module):
    """``h = (W1 x + b1) * sigmoid(W2 x + b2)``: the gated dense layer of the VampPrior code.

    ``x [..., fan_in] -> [..., features]``; weights He-initialised (``N(0, 2 / fan_in)``).
    """

    features: int
    dtype: Any = None  # compute dtype of the matmul (see precision()); None: float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # One [fan_in, 2 * features] matmul instead of two: the same maths, a wider product.
        both = _dense(2 * self.features, self.dtype, kernel_init=_HE_NORMAL, name="linear_and_gate")(x)
        h, gate = jnp.split(both, 2, axis=-1)
        return h * nn.sigmoid(gate)


class GatedMLPEncoder(nn.Module):
    """Gated dense layers (784-300-300 in the VampPrior code), then the Gaussian's heads.

    ``x [H, W, C] -> (mean [d], log_std [d])``. As in the authors' code the
    log-variance head is a Hardtanh to ``[-6, 2]``, i.e. ``log_std`` is clipped to
    ``log_std_bounds = (-3, 1)`` (its gradient is zero outside, as Hardtanh's).
    ``stochastic=False`` returns a code ``[d]`` (autoencoder baseline).
    """

    latent_dim: int
    hidden_sizes: Sequence[int] = (300, 300)
    stochastic: bool = True
    log_std_bounds: tuple[float, float] = (-3.0, 1.0)
    dtype: Any = None  # compute dtype of the matmuls (see precision()); None: float32

    @nn.compact
    def __call__(self, x: jax.Array) -> Any:
        h = x.reshape(-1)
        for width in self.hidden_sizes:
            h = GatedDense(width, self.dtype)(h)
        if not self.stochastic:
            return _dense(self.latent_dim, self.dtype, kernel_init=_HE_NORMAL, name="head")(h).astype(jnp.float32)
        out = _dense(2 * self.latent_dim, self.dtype, kernel_init=_HE_NORMAL, name="head")(h).astype(jnp.float32)
        return out[: self.latent_dim], jnp.clip(out[self.latent_dim:], *self.log_std_bounds)


class GatedMLPDecoder(nn.Module):
    """Gated dense layers from ``z [d]`` (40-300-300 in the VampPrior code), then a dense output
    layer giving the likelihood parameters of ``output_shape``."""

    output_shape: Sequence[int]
    hidden_sizes: Sequence[int] = (300, 300)
    num_outputs: int = 1
    dtype: Any = None  # compute dtype of the matmuls (see precision()); None: float32

    @nn.compact
    def __call__(self, z: jax.Array) -> Any:
        h = z
        for width in self.hidden_sizes:
            h = GatedDense(width, self.dtype)(h)
        size = 1
        for s in self.output_shape:
            size *= s
        out = _dense(size * self.num_outputs, self.dtype, kernel_init=_HE_NORMAL)(h)
        return _split_outputs(out, self.output_shape, self.num_outputs)


# PyTorch's default Conv2d initialisation (kaiming_uniform with a = sqrt(5): U(+-1/sqrt(fan_in))), which the
# VampPrior authors' gated convolutions keep (their he_init touches nn.Linear only).
TORCH_CONV_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _conv_any_map(lhs: jax.Array, rhs: jax.Array, window_strides, padding, **kwargs) -> jax.Array:
    """``lax.conv_general_dilated`` for Flax's NHWC / HWIO layout (no dilation, one group). Where the kernel
    is larger than the input map (the 5 x 5 kernel on the 4 x 4 maps of 8 x 8 digits), XLA:CPU's convolution
    takes a slow path (measured 15x slower, forward and gradient); there the same sums are taken as one
    product of the kernel with its ``kh * kw`` shifted slices of the padded input."""
    (kh, kw), (h, w) = rhs.shape[:2], lhs.shape[1:3]
    if kh <= h and kw <= w:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)
    (sh, sw), ((top, bottom), (left, right)) = window_strides, padding
    padded = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h, out_w = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    slices = jnp.stack([padded[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw]
                        for i in range(kh) for j in range(kw)], axis=3)
    return jnp.einsum("nhwtc,tco->nhwo", slices, rhs.reshape(kh * kw, *rhs.shape[2:]))


class GatedConv(nn.Module):
    """``h = conv1(x) * sigmoid(conv2(x))``: the gated convolution of the VampPrior code (``GatedConv2d``).

    ``x [H, W, C_in] -> [ceil(H / stride), ceil(W / stride), features]`` for an odd ``kernel``: the
    authors' symmetric padding ``kernel // 2`` on each side (for stride 2 not Flax's ``"SAME"``, which
    pads one side only).
    """

    features: int
    kernel: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # One convolution with twice the channels instead of two: the same maths, a wider product.
        pad = ((self.kernel // 2,) * 2,) * 2
        both = nn.Conv(2 * self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                       padding=pad, kernel_init=TORCH_CONV_INIT, conv_general_dilated=_conv_any_map,
                       name="conv_and_gate")(x)
        h, gate = jnp.split(both, 2, axis=-1)
        return h * nn.sigmoid(gate)
