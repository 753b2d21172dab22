"""Posterior objects beyond ``(mean, log_std)``: flow and hierarchical q(z|x) (jax only).

An encoder may return, instead of the tuple ``(mean [d], log_std [d])``, a *posterior
object*: a ``NamedTuple`` whose first field ``mean`` is a point code ``[d]`` (so
``encode(x)[0]`` stays the deterministic code) and which has

    ``sample_and_log_prob(key, num_samples) -> (z [k, d], log_q [k])``

(reparameterised draws and their log-densities, nats). :mod:`vae_jax.objectives` takes
either: the tuple keeps its closed-form path, an object gets the Monte-Carlo KL
``log q - log p`` (:func:`is_posterior` tells them apart). Two objects live here:

- :class:`FlowPosterior`: a diagonal Gaussian pushed through a flow of :mod:`vae_jax.flows`,
  ``log q(z_K) = log N(z_0; m, s) - sum log_det``.
- :class:`HierarchicalPosterior`: ``q(z_L | x) prod_l q(z_l | x, z_{l+1})``, every factor a
  diagonal Gaussian. ``z`` is the CONCATENATION ``[z_1, z_2, ..., z_L]`` (bottom layer
  first), so it is one vector ``[d_1 + ... + d_L]`` for every objective, prior and decoder;
  :func:`split_layers` cuts it back into layers.

Callables inside them are :class:`jax.tree_util.Partial` where they hold arrays, so the
objects are pytrees; objectives close over them rather than pass them through ``jit``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax._checks import check_positive_int

Flow = Callable[[jax.Array], tuple[jax.Array, jax.Array]]  # z [d] -> (z' [d], log_det), params bound


def is_posterior(encoded: Any) -> bool:
    """Whether an encoder's output is a posterior object (has ``sample_and_log_prob``), not a tuple."""
    return hasattr(encoded, "sample_and_log_prob")


def _draws(one: Callable[[jax.Array], tuple[jax.Array, jax.Array]], key: jax.Array, num_samples: int):
    """``num_samples`` draws of ``one(key) -> (z [d], log_q)`` as ``([k, d], [k])``.

    One draw is called directly, not through a size-1 ``vmap`` (see
    ``vae_jax.objectives._mean_over_draws``: under the batch ``vmap`` the extra unit axis
    costs layouts and copies).
    """
    check_positive_int(num_samples)
    if num_samples == 1:
        z, log_q = one(key)
        return z[None], log_q[None]
    return jax.vmap(one)(jax.random.split(key, num_samples))


def _gaussian_draw(key: jax.Array, mean: jax.Array, log_std: jax.Array) -> tuple[jax.Array, jax.Array]:
    z = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return z, distributions.gaussian_log_prob(z, mean, log_std)


class FlowPosterior(NamedTuple):
    """``z_0 ~ N(base_mean, diag(exp(base_log_std))^2)``, ``z = flow(z_0)``.

    Attributes:
      mean: ``[d]`` point code, ``flow(base_mean)`` (the flow of the base mode).
      base_mean, base_log_std: ``[d]`` the base Gaussian.
      flow: ``z_0 [d] -> (z [d], log_det)``, its parameters (x-dependent ones included)
        bound, e.g. ``jax.tree_util.Partial(flows.compose(steps), params)``.
    """

    mean: jax.Array
    base_mean: jax.Array
    base_log_std: jax.Array
    flow: Flow

    @classmethod
    def create(cls, base_mean: jax.Array, base_log_std: jax.Array, flow: Flow) -> "FlowPosterior":
        """Checks the base shapes and computes the point code."""
        if jnp.ndim(base_mean) != 1 or jnp.shape(base_mean) != jnp.shape(base_log_std):
            raise ValueError("a flow posterior needs base_mean and base_log_std of shape [d]; got "
                             f"{jnp.shape(base_mean)} and {jnp.shape(base_log_std)}.")
        return cls(flow(base_mean)[0], base_mean, base_log_std, flow)

    def sample_and_log_prob(self, key: jax.Array, num_samples: int) -> tuple[jax.Array, jax.Array]:
        """``(z [k, d], log q(z | x) [k])``, ``log q = log N(z_0) - log_det``."""
        def one(k):
            z0, log_q0 = _gaussian_draw(k, self.base_mean, self.base_log_std)
            z, log_det = self.flow(z0)
            return z, log_q0 - log_det

        return _draws(one, key, num_samples)


class HierarchicalPosterior(NamedTuple):
    """``q(z_L | x) q(z_{L-1} | x, z_L) ... q(z_1 | x, z_2)``, diagonal Gaussian factors.

    Attributes:
      mean: ``[d_1 + ... + d_L]`` point code: each layer's mean given the point code above.
      top: ``(mean [d_L], log_std [d_L])`` of ``q(z_L | x)``.
      conditionals: ``L - 1`` callables, bottom first: ``conditionals[l](z_{l+2}) ->
        (mean, log_std)`` of ``q(z_{l+1} | x, z_{l+2})`` (x's features bound).
    """

    mean: jax.Array
    top: tuple[jax.Array, jax.Array]
    conditionals: tuple

    @classmethod
    def create(cls, top: tuple[jax.Array, jax.Array], conditionals: Sequence[Callable]) -> "HierarchicalPosterior":
        """Checks the top layer's shapes and computes the point code."""
        top = tuple(top)
        if len(top) != 2 or jnp.ndim(top[0]) != 1 or jnp.shape(top[0]) != jnp.shape(top[1]):
            raise ValueError("the top layer needs (mean [d_L], log_std [d_L]); got "
                             f"{[jnp.shape(t) for t in top]}.")
        conditionals = tuple(conditionals)
        layers = [top[0]]
        for conditional in reversed(conditionals):
            layers.insert(0, conditional(layers[0])[0])
        return cls(jnp.concatenate(layers), top, conditionals)

    def sample_and_log_prob(self, key: jax.Array, num_samples: int) -> tuple[jax.Array, jax.Array]:
        """``(z [k, d_1 + ... + d_L], log q(z | x) [k])``, ancestral: the top layer first."""
        def one(k):
            keys = jax.random.split(k, len(self.conditionals) + 1)
            z, log_q = _gaussian_draw(keys[0], *self.top)
            layers = [z]
            for conditional, layer_key in zip(reversed(self.conditionals), keys[1:]):
                z, log_q_layer = _gaussian_draw(layer_key, *conditional(layers[0]))
                layers.insert(0, z)
                log_q = log_q + log_q_layer
            return jnp.concatenate(layers), log_q

        return _draws(one, key, num_samples)


def split_layers(z: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
    """``z [..., d_1 + ... + d_L]`` cut into ``[z_1, ..., z_L]`` (bottom first) of ``sizes``."""
    if z.shape[-1] != sum(sizes):
        raise ValueError(f"z has {z.shape[-1]} coordinates; layers of sizes {tuple(sizes)} need {sum(sizes)}.")
    bounds = [sum(sizes[:i]) for i in range(1, len(sizes))]
    return jnp.split(z, bounds, axis=-1)
