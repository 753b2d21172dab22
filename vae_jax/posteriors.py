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
  diagonal Gaussian, optionally pushed through its own flow. ``z`` is the CONCATENATION ``[z_1, z_2, ..., z_L]`` (bottom layer
  first), so it is one vector ``[d_1 + ... + d_L]`` for every objective, prior and decoder;
  :func:`split_layers` cuts it back into layers.

Callables inside them are :class:`jax.tree_util.Partial` where they hold arrays, so the
objects are pytrees; objectives close over them rather than pass them through ``jit``.
An object may also have ``log_prob(z)`` (the hierarchical one, for Gaussian factors), which
STL, DReG and the score function need; arrays it holds from the generative model are wrapped
in :class:`Shared`, which :func:`stop_variational` leaves live. :func:`precision_weighted` is
the ladder's merge of two diagonal Gaussians.
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


def _layer_draw(key: jax.Array, layer: tuple) -> tuple[jax.Array, jax.Array]:
    """One draw of a layer ``(mean, log_std)`` or ``(mean, log_std, flow)`` and its log-density:
    the Gaussian's, minus the flow's ``log_det``."""
    mean, log_std = layer[0], layer[1]
    z = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    log_q = distributions.gaussian_log_prob(z, mean, log_std)
    if len(layer) == 3:
        z, log_det = layer[2](z)
        log_q = log_q - log_det
    return z, log_q


def _layer_mode(layer: tuple) -> jax.Array:
    """A layer's point code: its mean, through its flow if it has one."""
    return layer[2](layer[0])[0] if len(layer) == 3 else layer[0]


def _check_layer(layer: tuple, what: str) -> tuple:
    layer = tuple(layer)
    if len(layer) not in (2, 3) or jnp.ndim(layer[0]) != 1 or jnp.shape(layer[0]) != jnp.shape(layer[1]):
        raise ValueError(f"{what} needs (mean [d], log_std [d]) or (mean, log_std, flow); got "
                         f"{len(layer)} entries of shapes {[jnp.shape(t) for t in layer[:2]]}.")
    return layer


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
        layer = _check_layer((base_mean, base_log_std, flow), "a flow posterior")
        return cls(_layer_mode(layer), *layer)

    def sample_and_log_prob(self, key: jax.Array, num_samples: int) -> tuple[jax.Array, jax.Array]:
        """``(z [k, d], log q(z | x) [k])``, ``log q = log N(z_0) - log_det``."""
        return _draws(lambda k: _layer_draw(k, (self.base_mean, self.base_log_std, self.flow)), key, num_samples)


class HierarchicalPosterior(NamedTuple):
    """``q(z_L | x) q(z_{L-1} | x, z_L) ... q(z_1 | x, z_2)``: each factor a diagonal Gaussian,
    optionally pushed through its own flow (a third entry ``flow: z -> (z', log_det)``).

    Attributes:
      mean: ``[d_1 + ... + d_L]`` point code: each layer's mean (through its flow) given the
        point code above.
      top: ``(mean [d_L], log_std [d_L][, flow])`` of ``q(z_L | x)``.
      conditionals: ``L - 1`` callables, bottom first: ``conditionals[l](z_{l+2}) ->
        (mean, log_std[, flow])`` of ``q(z_{l+1} | x, z_{l+2})`` (x's features bound).
    """

    mean: jax.Array
    top: tuple
    conditionals: tuple

    @classmethod
    def create(cls, top: tuple, conditionals: Sequence[Callable]) -> "HierarchicalPosterior":
        """Checks the top layer's shapes and computes the point code."""
        top = _check_layer(top, "the top layer")
        conditionals = tuple(conditionals)
        layers = [_layer_mode(top)]
        for conditional in reversed(conditionals):
            layers.insert(0, _layer_mode(conditional(layers[0])))
        return cls(jnp.concatenate(layers), top, conditionals)

    def sample_and_log_prob(self, key: jax.Array, num_samples: int) -> tuple[jax.Array, jax.Array]:
        """``(z [k, d_1 + ... + d_L], log q(z | x) [k])``, ancestral: the top layer first."""
        def one(k):
            keys = jax.random.split(k, len(self.conditionals) + 1)
            z, log_q = _layer_draw(keys[0], self.top)
            layers = [z]
            for conditional, layer_key in zip(reversed(self.conditionals), keys[1:]):
                z, log_q_layer = _layer_draw(layer_key, conditional(layers[0]))
                layers.insert(0, z)
                log_q = log_q + log_q_layer
            return jnp.concatenate(layers), log_q

        return _draws(one, key, num_samples)

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``log q(z | x)`` of a given ``z [d_1 + ... + d_L]`` (nats), for Gaussian factors only (a
        factor with a flow would need its inverse): what the estimators that evaluate ``log q`` at
        stop-gradiented parameters (STL, DReG, the score function) need.

        Raises:
          ValueError: a factor has a flow, or ``z`` has another shape than the layers together.
        """
        def factor(layer: tuple, z_layer: jax.Array) -> jax.Array:
            if len(layer) == 3:
                raise ValueError("log_prob of a given z needs Gaussian factors; a factor with a flow would need "
                                 "the flow's inverse (draw z and log q together with sample_and_log_prob).")
            return distributions.gaussian_log_prob(z_layer, *layer)

        if z.shape != self.mean.shape:
            raise ValueError(f"z has shape {z.shape}; this posterior's layers need {self.mean.shape}.")
        end = z.shape[0] - self.top[0].shape[0]
        z_above = z[end:]
        total = factor(self.top, z_above)
        for conditional in reversed(self.conditionals):  # top down, as the draws
            layer = conditional(z_above)
            end -= layer[0].shape[0]
            z_above = z[end:end + layer[0].shape[0]]
            total = total + factor(layer, z_above)
        return total


class Shared(NamedTuple):
    """Arrays of the generative model that a posterior object holds because q shares them (the
    ladder's ``p(z_l | z_{l+1})`` networks), wrapped so that :func:`stop_variational` can leave them
    live. ``value``: any pytree of arrays."""

    value: Any


def _is_shared(node: Any) -> bool:
    return isinstance(node, Shared)


def stop_variational(posterior: Any) -> Any:
    """``posterior`` with the gradient stopped at q's own arrays, and :class:`Shared` ones left live.

    What STL and DReG evaluate ``log q`` with: the score of q's own parameters has mean zero and is
    dropped; a shared parameter's score in ``log q`` cancels against its score in ``log p`` draw by
    draw, so dropping it too would keep the estimator unbiased but multiply the decoder's gradient
    variance (about 390-fold for STL and 500-fold for DReG on a trained ladder HVAE:
    docs/hierarchical_flows.md).
    """
    return jax.tree_util.tree_map(lambda n: n if _is_shared(n) else jax.lax.stop_gradient(n), posterior,
                                  is_leaf=_is_shared)


def stop_shared(posterior: Any) -> Any:
    """``posterior`` with the gradient stopped at its :class:`Shared` arrays only."""
    return jax.tree_util.tree_map(lambda n: Shared(jax.lax.stop_gradient(n.value)) if _is_shared(n) else n,
                                  posterior, is_leaf=_is_shared)


def has_shared(posterior: Any) -> bool:
    """Whether ``posterior`` holds :class:`Shared` arrays."""
    return any(_is_shared(n) for n in jax.tree_util.tree_leaves(posterior, is_leaf=_is_shared))


def precision_weighted(bottom_up: tuple[jax.Array, jax.Array],
                       top_down: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """The normalised product of two diagonal Gaussians, ``N(m_a, s_a^2) N(m_b, s_b^2) / Z``: the
    ladder VAE's merge of a bottom-up estimate with the generative model's top-down ``p(z_l | z_{l+1})``
    (Sonderby et al. 2016, eq. 17-18).

    Precisions add, ``s^-2 = s_a^-2 + s_b^-2``, and the mean is the precision-weighted mean,
    ``m = (m_a s_a^-2 + m_b s_b^-2) s^2``, computed in log space (``log s = -logaddexp(-2 log s_a,
    -2 log s_b) / 2``; the weight of ``a`` is ``sigmoid(2 log s_b - 2 log s_a)``) so that neither
    precision overflows.

    Args:
      bottom_up, top_down: ``(mean [d], log_std [d])`` each (any equal shapes).

    Returns:
      ``(mean [d], log_std [d])`` of the product.
    """
    (mean_a, log_std_a), (mean_b, log_std_b) = bottom_up, top_down
    weight_a = jax.nn.sigmoid(2.0 * (log_std_b - log_std_a))
    return (weight_a * mean_a + (1.0 - weight_a) * mean_b,
            -0.5 * jnp.logaddexp(-2.0 * log_std_a, -2.0 * log_std_b))


def split_layers(z: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
    """``z [..., d_1 + ... + d_L]`` cut into ``[z_1, ..., z_L]`` (bottom first) of ``sizes``."""
    if z.shape[-1] != sum(sizes):
        raise ValueError(f"z has {z.shape[-1]} coordinates; layers of sizes {tuple(sizes)} need {sum(sizes)}.")
    bounds = [sum(sizes[:i]) for i in range(1, len(sizes))]
    return jnp.split(z, bounds, axis=-1)
