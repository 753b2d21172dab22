"""The Flax networks of :class:`vae_jax.hierarchical.HierarchicalVAE`: gated dense (HVAE) or gated
convolutional (ConvHVAE), after the VampPrior authors' ``models/HVAE_2level.py`` and
``models/convHVAE_2level.py`` (github.com/jmtomczak/vae_vampprior).

The two nets share every piece that has no image in it: the z-branch and joint layer of
``q(z_l | x, z_{l+1})``, the Gaussian and flow heads, ``p(z_l | z_{l+1})`` and the z1/z2 branches
of ``p(x | z_1, z_2)``. ``net="conv"`` swaps three pieces:

- the top encoder ``q(z_L | x)`` (gated dense 300-300 -> a stack of gated convolutions, flattened);
- the x-branch of ``q(z_l | x, z_{l+1})`` (gated dense 300 -> another stack, flattened); the
  z-branch is then as wide as those features (294 = 6 x 7 x 7 on 28 x 28 images);
- after the joint layer of ``p(x | z_1, z_2)`` (gated dense 300 -> dense logits becomes gated dense
  to H*W*C, an image, four gated 3 x 3 convolutions, a 1 x 1 convolution).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.networks import TORCH_CONV_INIT, GatedConv, GatedDense, _split_outputs
from vae_jax._posterior_heads import HE_NORMAL, FlowHead, GaussianHead
from vae_jax.posteriors import split_layers

NETS = ("gated_mlp", "conv")
BOTTLENECK = 6  # channels of the last encoder convolution (the authors' h_size = 6 x 7 x 7 = 294)


def conv_stacks(channels: Sequence[int]) -> dict[str, tuple[tuple[int, int, int], ...]]:
    """``(features, kernel, stride)`` of every gated convolution, the authors' with ``channels = (32, 64)``:
    ``"top"`` of ``q(z_L | x)``, ``"x"`` of ``q(z_l | x, z_{l+1})``'s x-branch, ``"out"`` of ``p(x | z_1, z_2)``."""
    small, large = channels
    return {"top": ((small, 7, 1), (small, 3, 2), (large, 5, 1), (large, 3, 2), (BOTTLENECK, 3, 1)),
            "x": ((small, 3, 1), (small, 3, 2), (large, 3, 1), (large, 3, 2), (BOTTLENECK, 3, 1)),
            "out": ((large, 3, 1),) * 4}


def conv_feature_size(input_shape: Sequence[int]) -> int:
    """Length of the flattened encoder stacks' output for images ``(H, W, C)``: ``6 ceil(H/4) ceil(W/4)``."""
    return BOTTLENECK * math.ceil(input_shape[0] / 4) * math.ceil(input_shape[1] / 4)


class GatedConvStack(nn.Module):
    """Gated convolutions ``x [H, W, C] -> [H', W', C']``; ``flatten``: the output as ``[H' W' C']``."""

    layers: Sequence[tuple[int, int, int]]
    flatten: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for features, kernel, stride in self.layers:
            x = GatedConv(features, kernel, stride)(x)
        return x.reshape(-1) if self.flatten else x


class HierarchicalEncoder(nn.Module):
    """``q(z_L | x)`` and ``q(z_l | x, z_{l+1})``; ``latent_sizes`` bottom first. With ``flow`` (not
    ``"none"``) every layer also gets a :class:`vae_jax._posterior_heads.FlowHead` on the hidden layer
    that feeds its Gaussian head, and each layer is ``(mean, log_std, step_params)``. ``net="conv"``:
    the gated convolutions of :func:`conv_stacks` with ``conv_channels``, and z-branches of
    ``z_branch_size`` units (:func:`conv_feature_size`; ``None``: ``hidden_size``). ``ladder=True``:
    no z-branches; each lower layer has a bottom-up Gaussian of x alone (:meth:`bottom_up`), which
    :class:`vae_jax.hierarchical.HierarchicalVAE` merges with ``p(z_l | z_{l+1})``."""

    latent_sizes: Sequence[int]
    hidden_size: int = 300
    flow: str = "none"
    flow_steps: int = 2
    made_hidden_sizes: Sequence[int] = (320, 320)
    context_dim: int = 100
    net: str = "gated_mlp"
    conv_channels: Sequence[int] = (32, 64)
    z_branch_size: int | None = None
    ladder: bool = False

    def setup(self):
        below = len(self.latent_sizes) - 1
        if self.net == "conv":
            stacks = conv_stacks(self.conv_channels)
            self.top_layers = [GatedConvStack(stacks["top"])]
            self.x_branches = [GatedConvStack(stacks["x"]) for _ in range(below)]
        else:
            self.top_layers = [GatedDense(self.hidden_size), GatedDense(self.hidden_size)]
            self.x_branches = [GatedDense(self.hidden_size) for _ in range(below)]
        self.z_branches = [GatedDense(self.z_branch_size or self.hidden_size) for _ in range(below)]
        self.joints = [GatedDense(self.hidden_size) for _ in range(below)]
        self.heads = [GaussianHead(size) for size in self.latent_sizes]  # bottom first; the last is the top's
        if self.flow != "none":
            self.flow_heads = [FlowHead(size, self.flow, self.flow_steps, self.made_hidden_sizes, self.context_dim)
                               for size in self.latent_sizes]

    def _input(self, x: jax.Array) -> jax.Array:
        return x if self.net == "conv" else x.reshape(-1)

    def _layer(self, level: int, h: jax.Array) -> tuple:
        mean, log_std = self.heads[level](h)
        return (mean, log_std) if self.flow == "none" else (mean, log_std, self.flow_heads[level](h))

    def top(self, x: jax.Array) -> tuple:
        """``(mean [d_L], log_std [d_L][, flow step parameters])`` of ``q(z_L | x)``."""
        h = self._input(x)
        for layer in self.top_layers:
            h = layer(h)
        return self._layer(len(self.latent_sizes) - 1, h)

    def x_features(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """The x-branch of every lower layer's ``q(z_l | x, z_{l+1})``, ``L - 1`` arrays ``[features]``."""
        return tuple(branch(self._input(x)) for branch in self.x_branches)

    def conditional(self, level: int, h_x: jax.Array, z_above: jax.Array) -> tuple:
        """``(mean, log_std[, flow step parameters])`` of ``q(z_{level+1} | x, z_{level+2})``."""
        h = jnp.concatenate([h_x, self.z_branches[level](z_above)])
        return self._layer(level, self.joints[level](h))

    def bottom_up(self, level: int, h_x: jax.Array) -> tuple:
        """``(mean, log_std[, flow step parameters])`` of layer ``level + 1`` from x alone (``ladder``):
        the x-branch's features through the joint layer to the heads."""
        return self._layer(level, self.joints[level](h_x))

    def __call__(self, x: jax.Array) -> tuple:
        """Touches every layer (for ``init``); returns the top layer."""
        for level, h_x in enumerate(self.x_features(x)):
            if self.ladder:
                self.bottom_up(level, h_x)
            else:
                self.conditional(level, h_x, jnp.zeros((self.latent_sizes[level + 1],), x.dtype))
        return self.top(x)


class HierarchicalDecoder(nn.Module):
    """``p(z_l | z_{l+1})`` and ``p(x | z_1, z_2)``; ``latent_sizes`` bottom first, ``len >= 2``.
    ``net="conv"``: the joint layer is an image ``output_shape`` refined by gated convolutions."""

    output_shape: Sequence[int]
    latent_sizes: Sequence[int]
    hidden_size: int = 300
    num_outputs: int = 1
    net: str = "gated_mlp"
    conv_channels: Sequence[int] = (32, 64)

    def setup(self):
        below = len(self.latent_sizes) - 1
        self.prior_first = [GatedDense(self.hidden_size) for _ in range(below)]
        self.prior_second = [GatedDense(self.hidden_size) for _ in range(below)]
        self.prior_heads = [GaussianHead(size) for size in self.latent_sizes[:-1]]
        self.z1_branch, self.z2_branch = GatedDense(self.hidden_size), GatedDense(self.hidden_size)
        size = math.prod(self.output_shape)
        if self.net == "conv":
            self.joint = GatedDense(size)
            self.out_layers = GatedConvStack(conv_stacks(self.conv_channels)["out"], flatten=False)
            self.out = nn.Conv(self.output_shape[-1] * self.num_outputs, (1, 1), kernel_init=TORCH_CONV_INIT)
        else:
            self.joint = GatedDense(self.hidden_size)
            self.out = nn.Dense(size * self.num_outputs, kernel_init=HE_NORMAL)

    def conditional_prior(self, level: int, z_above: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mean, log_std)`` of ``p(z_{level+1} | z_{level+2})``."""
        return self.prior_heads[level](self.prior_second[level](self.prior_first[level](z_above)))

    def likelihood_params(self, z: jax.Array) -> Any:
        """``z [d_1 + ... + d_L] ->`` the parameters of p(x | z_1, z_2) (logits ``[H, W, C]``, or
        ``(mean, log_std)`` for ``num_outputs=2``)."""
        z1, z2 = split_layers(z, self.latent_sizes)[:2]
        h = self.joint(jnp.concatenate([self.z1_branch(z1), self.z2_branch(z2)]))
        if self.net == "conv":  # the channels of the 1 x 1 convolution: C of each output
            return _split_outputs(self.out(self.out_layers(h.reshape(tuple(self.output_shape)))),
                                  self.output_shape, self.num_outputs)
        out = self.out(h)
        if self.num_outputs == 1:
            return out.reshape(tuple(self.output_shape))
        mean, log_std = jnp.split(out, 2)
        return mean.reshape(tuple(self.output_shape)), log_std.reshape(tuple(self.output_shape))

    def __call__(self, z: jax.Array) -> Any:
        """Touches every layer (for ``init``); returns :meth:`likelihood_params`."""
        for level, size in enumerate(self.latent_sizes[1:]):
            self.conditional_prior(level, jnp.zeros((size,), z.dtype))
        return self.likelihood_params(z)
