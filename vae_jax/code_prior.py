"""An autoregressive prior over a grid of discrete codes: a PixelCNN-style masked convolution stack.

``p(c) = prod_i p(c_i | c_<i)`` in raster order (row by row, left to right). The first layer's
mask ("A") lets position ``i`` see only positions ``< i``; later layers ("B") also see their own
position's features, which themselves saw only ``< i``. So the logits at ``i`` never depend on
codes at ``>= i`` (tested with ``jax.jacfwd``), ``log p(c)`` is one pass and sampling is
``h * w`` passes. This is the plain masked stack (van den Oord et al., 2016), with its blind
spot (it does not see every earlier position up and to the right); no gated vertical and
horizontal stacks. Used as the second stage of a :class:`vae_jax.vq.VQVAE`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.vq import check_num_codes

Params = Any


def causal_mask(kernel_size: int, *, include_center: bool) -> np.ndarray:
    """``[k, k, 1, 1]`` float mask: 1 on the rows above the centre and on the centre row left of it
    (and the centre itself with ``include_center``), 0 elsewhere."""
    mask = np.zeros((kernel_size, kernel_size, 1, 1), np.float32)
    centre = kernel_size // 2
    mask[:centre] = 1.0
    mask[centre, :centre + int(include_center)] = 1.0
    return mask


class MaskedConv(nn.Module):
    """A SAME-padded convolution ``[h, w, C_in] -> [h, w, features]`` with a :func:`causal_mask` kernel."""

    features: int
    kernel_size: int
    include_center: bool

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        shape = (self.kernel_size, self.kernel_size, h.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        kernel = kernel * causal_mask(self.kernel_size, include_center=self.include_center)
        out = jax.lax.conv_general_dilated(h[None], kernel, (1, 1), "SAME",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out[0] + bias.reshape(1, 1, -1)


class PixelCNN(nn.Module):
    """One-hot codes ``[h, w, K] ->`` logits ``[h, w, K]`` of ``p(c_i | c_<i)``: a mask-A layer, then
    ``num_layers - 1`` residual mask-B layers, then a 1x1 output layer."""

    num_codes: int
    features: int = 64
    num_layers: int = 3
    kernel_size: int = 3

    @nn.compact
    def __call__(self, one_hot: jax.Array) -> jax.Array:
        h = nn.relu(MaskedConv(self.features, self.kernel_size, include_center=False)(one_hot))
        for _ in range(self.num_layers - 1):
            h = h + nn.relu(MaskedConv(self.features, self.kernel_size, include_center=True)(h))
        return MaskedConv(self.num_codes, 1, include_center=True)(h)


@dataclasses.dataclass(frozen=True)
class CodePrior:
    """The prior as a model of one code grid ``c [h, w]`` (int): ``init``, ``objective`` (``log p(c)``),
    so :func:`vae_jax.training.make_train_step` and ``fit`` train it on ``[N, h, w]`` code arrays.

    Attributes:
      net: a :class:`PixelCNN`.
      grid_shape: ``(h, w)``.
    """

    net: PixelCNN
    grid_shape: tuple[int, int]

    def __post_init__(self):
        check_num_codes(self.net.num_codes)

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.grid_shape

    def init(self, key: jax.Array, codes: jax.Array) -> Params:
        return self.net.init(key, self._one_hot(codes))["params"]

    def _one_hot(self, codes: jax.Array) -> jax.Array:
        return jax.nn.one_hot(codes, self.net.num_codes, dtype=jnp.float32)

    def logits(self, params: Params, codes: jax.Array) -> jax.Array:
        """``[h, w, K]`` logits of ``p(c_i | c_<i)``."""
        return self.net.apply({"params": params}, self._one_hot(codes))

    def log_prob(self, params: Params, codes: jax.Array) -> jax.Array:
        """``log p(c)`` of one grid ``[h, w]``, nats."""
        log_p = jax.nn.log_softmax(self.logits(params, codes))
        return jnp.sum(jnp.take_along_axis(log_p, codes[..., None], axis=-1))

    def objective(self, params: Params, key: jax.Array, codes: jax.Array) -> tuple[jax.Array, dict]:
        """``log p(c)`` to maximise (``key`` unused); aux ``log_prob``."""
        del key
        value = self.log_prob(params, codes)
        return value, {"log_prob": value}

    def sample(self, params: Params, key: jax.Array, n: int) -> jax.Array:
        """``n`` grids ``[n, h, w]`` int32, drawn position by position in raster order."""
        height, width = self.grid_shape

        def one(k):
            def body(i, codes):
                row, col = i // width, i % width
                logits = self.logits(params, codes)[row, col]
                return codes.at[row, col].set(jax.random.categorical(jax.random.fold_in(k, i), logits))

            return jax.lax.fori_loop(0, height * width, body, jnp.zeros(self.grid_shape, jnp.int32))

        return jax.vmap(one)(jax.random.split(key, n))


def code_prior(grid_shape: Sequence[int], num_codes: int, *, features: int = 64, num_layers: int = 3,
               kernel_size: int = 3) -> CodePrior:
    """A :class:`CodePrior` over ``grid_shape = (h, w)`` grids of ``num_codes`` codes."""
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 3; got {kernel_size}.")
    return CodePrior(PixelCNN(check_num_codes(num_codes), features, num_layers, kernel_size),
                     tuple(int(s) for s in grid_shape))
