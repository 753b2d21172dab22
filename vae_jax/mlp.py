"""A dense network as two pure functions of a list of layers (imports ``jax`` only).

The small networks that are not models of their own: the encoder and decoder of
:class:`vae_jax.models.DiscreteVAE`, NVIL's baseline and RELAX's control variate
(:mod:`vae_jax.estimators`), FactorVAE's discriminator (:mod:`vae_jax.tc`). The
Flax networks of the Gaussian models are in :mod:`vae_jax.networks`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable] = {"leaky_relu": lambda h: jax.nn.leaky_relu(h, 0.3), "tanh": jnp.tanh,
                                    "relu": jax.nn.relu}
Layers = list[dict[str, jax.Array]]


def check_activation(activation: str) -> None:
    """Raises ``ValueError`` unless ``activation`` is a key of :data:`ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; expected one of {tuple(ACTIVATIONS)}.")


def _dense(key, fan_in, fan_out):
    return {"w": jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in), "b": jnp.zeros((fan_out,))}


def init(key: jax.Array, sizes: Sequence[int]) -> Layers:
    """Parameters of a dense network with layer widths ``sizes`` (input first), LeCun-normal weights."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [_dense(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def apply(layers: Sequence[dict[str, jax.Array]], h: jax.Array, activation: str = "leaky_relu") -> jax.Array:
    """``h [n_in] -> [n_out]``: affine layers with ``activation`` between them (none after the last)."""
    act = ACTIVATIONS[activation]
    for i, layer in enumerate(layers):
        h = h @ layer["w"] + layer["b"]
        if i < len(layers) - 1:
            h = act(h)
    return h
