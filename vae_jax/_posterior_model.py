"""What the flow and hierarchical VAEs share with :class:`vae_jax.models.VAE`'s surface.

A mixin (no fields) for frozen dataclasses that define ``likelihood``, ``prior`` (a name of
:data:`vae_jax.priors.PRIORS`), ``num_components``, ``top_latent_dim``, ``encode``,
``decode``, ``bind``, ``init_params(key, x)`` and ``top_gaussian(params, x) -> (mean, log_std)`` (the Gaussian of the
top layer, which the VampPrior mixes at its pseudo-inputs). It gives them the objective,
``log_marginal``, the learned top prior's parameters and the deterministic uses.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from vae_jax import distributions, priors
from vae_jax._model_objectives import BoundObjectives

Params = Any


@functools.partial(jax.jit, static_argnums=0)
def _init(model: Any, key: jax.Array, x: jax.Array) -> Params:
    return model.init_params(key, x)


class PosteriorModelMixin(BoundObjectives):
    """``init``, ``objective``, ``log_marginal``, ``top_prior``, ``decode_mean``, ``code``, ``reconstruct``."""

    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Parameters for one example ``x [H, W, C]`` (:meth:`init_params`, compiled: run eagerly, the
        many small initialisers of a deep model each compile on their own, ~10x slower)."""
        return _init(self, key, x)

    def init_top_prior(self, key: jax.Array, x: jax.Array) -> dict:
        """``{"prior": ...}`` for a learned top prior (mixture or VampPrior pseudo-inputs), else ``{}``."""
        if self.prior == "mixture":
            return {"prior": priors.init_mixture(key, num_components=self.num_components,
                                                 latent_dim=self.top_latent_dim)}
        if self.prior == "vamp":
            return {"prior": priors.init_vamp(key, num_components=self.num_components, input_shape=x.shape)}
        if self.prior != "standard_normal":
            raise ValueError(f"Unknown prior {self.prior!r}; expected one of {priors.PRIORS}.")
        return {}

    def top_prior(self, params: Params) -> "priors.StandardNormal | priors.GaussianMixture":
        """p(z_top) of these parameters; the VampPrior mixes :meth:`top_gaussian` at the pseudo-inputs."""
        return priors.by_name(self.prior, params.get("prior"), functools.partial(self.top_gaussian, params),
                              self.top_latent_dim)

    def decode_mean(self, params: Params, z: jax.Array) -> jax.Array:
        """``z [d] ->`` the mean of p(x | z), an image ``[H, W, C]``."""
        return distributions.likelihood_mean(self.likelihood, self.decode(params, z))

    def code(self, params: Params, x: jax.Array) -> jax.Array:
        """The point code of ``x``, ``[d]``: the posterior object's ``mean``."""
        return self.encode(params, x).mean

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array:
        """Mean of p(x | z) at the point code of ``x``: ``[H, W, C]``."""
        return self.decode_mean(params, self.code(params, x))
