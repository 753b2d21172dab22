"""Flax linen encoders and decoders for ONE example (batch with ``jax.vmap``).

Encoders map an image ``[H, W, C]`` to ``(mean [d], log_std [d])`` or, with
``stochastic=False`` (the autoencoder baseline), to a code ``[d]``. Decoders
map ``z [d]`` to the parameters of p(x | z): one array ``[H, W, C]``, or
``(mean, log_std)`` when ``num_outputs=2`` (Gaussian with learned sigma).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def _split_heads(h: jax.Array, latent_dim: int, stochastic: bool) -> Any:
    out = nn.Dense(2 * latent_dim if stochastic else latent_dim, name="head")(h)
    return (out[:latent_dim], out[latent_dim:]) if stochastic else out


def _split_outputs(h: jax.Array, output_shape: Sequence[int], num_outputs: int) -> Any:
    """``h [prod(output_shape) * num_outputs]`` or ``[H, W, C * num_outputs]`` -> output(s)."""
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

    @nn.compact
    def __call__(self, x: jax.Array) -> Any:
        act = get_activation(self.activation)
        h = x.reshape(-1)
        for width in self.hidden_sizes:
            h = act(nn.Dense(width)(h))
        return _split_heads(h, self.latent_dim, self.stochastic)


class MLPDecoder(nn.Module):
    """Dense layers from ``z [d]`` to the likelihood parameters of ``output_shape``."""

    output_shape: Sequence[int]
    hidden_sizes: Sequence[int] = (256, 512)
    activation: str = "relu"
    num_outputs: int = 1

    @nn.compact
    def __call__(self, z: jax.Array) -> Any:
        act = get_activation(self.activation)
        h = z
        for width in self.hidden_sizes:
            h = act(nn.Dense(width)(h))
        size = 1
        for s in self.output_shape:
            size *= s
        return _split_outputs(nn.Dense(size * self.num_outputs)(h), self.output_shape, self.num_outputs)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions (28x28 -> 14x14 -> 7x7), a dense layer, the heads.

    Works for any ``H, W`` divisible by 4.
    """

    latent_dim: int
    features: Sequence[int] = (32, 64)
    hidden_size: int = 256
    activation: str = "relu"
    stochastic: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> Any:
        act = get_activation(self.activation)
        h = x
        for f in self.features:
            h = act(nn.Conv(f, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = act(nn.Dense(self.hidden_size)(h.reshape(-1)))
        return _split_heads(h, self.latent_dim, self.stochastic)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: dense to ``H/4 x W/4``, two transposed convolutions."""

    output_shape: Sequence[int]
    features: Sequence[int] = (64, 32)
    hidden_size: int = 256
    activation: str = "relu"
    num_outputs: int = 1

    @nn.compact
    def __call__(self, z: jax.Array) -> Any:
        act = get_activation(self.activation)
        height, width, channels = self.output_shape
        if height % 4 or width % 4:
            raise ValueError(f"ConvDecoder needs H and W divisible by 4; got {tuple(self.output_shape)}.")
        h = act(nn.Dense(self.hidden_size)(z))
        h = act(nn.Dense((height // 4) * (width // 4) * self.features[0])(h))
        h = h.reshape(height // 4, width // 4, self.features[0])
        for f in self.features:
            h = act(nn.ConvTranspose(f, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = nn.Conv(channels * self.num_outputs, (3, 3), padding="SAME")(h)
        return _split_outputs(h, self.output_shape, self.num_outputs)


# He initialisation N(0, 2 / fan_in), as in the VampPrior authors' code (utils/nn.py: he_init).
_HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class GatedDense(nn.Module):
    """``h = (W1 x + b1) * sigmoid(W2 x + b2)``: the gated dense layer of the VampPrior code.

    ``x [..., fan_in] -> [..., features]``; weights He-initialised (``N(0, 2 / fan_in)``).
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # One [fan_in, 2 * features] matmul instead of two: the same maths, a wider product.
        both = nn.Dense(2 * self.features, kernel_init=_HE_NORMAL, name="linear_and_gate")(x)
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

    @nn.compact
    def __call__(self, x: jax.Array) -> Any:
        h = x.reshape(-1)
        for width in self.hidden_sizes:
            h = GatedDense(width)(h)
        if not self.stochastic:
            return nn.Dense(self.latent_dim, kernel_init=_HE_NORMAL, name="head")(h)
        out = nn.Dense(2 * self.latent_dim, kernel_init=_HE_NORMAL, name="head")(h)
        return out[: self.latent_dim], jnp.clip(out[self.latent_dim:], *self.log_std_bounds)


class GatedMLPDecoder(nn.Module):
    """Gated dense layers from ``z [d]`` (40-300-300 in the VampPrior code), then a dense output
    layer giving the likelihood parameters of ``output_shape``."""

    output_shape: Sequence[int]
    hidden_sizes: Sequence[int] = (300, 300)
    num_outputs: int = 1

    @nn.compact
    def __call__(self, z: jax.Array) -> Any:
        h = z
        for width in self.hidden_sizes:
            h = GatedDense(width)(h)
        size = 1
        for s in self.output_shape:
            size *= s
        out = nn.Dense(size * self.num_outputs, kernel_init=_HE_NORMAL)(h)
        return _split_outputs(out, self.output_shape, self.num_outputs)
