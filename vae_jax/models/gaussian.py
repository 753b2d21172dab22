"""VAE and AE with Gaussian latents: networks bundled into pure functions of ``(params, ...)``.

All methods work on ONE example (``x [H, W, C]``, ``z [d]``) except
:meth:`VAE.sample`; batch with ``jax.vmap(fn, in_axes=(None, 0))``.
``params`` is ``{"encoder": ..., "decoder": ...}``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions, objectives, priors
from vae_jax._model_objectives import BoundObjectives
from vae_jax.objectives import Bound
from vae_jax._checks import check_example

Params = Any


@dataclasses.dataclass(frozen=True)
class _Model:
    encoder: nn.Module
    decoder: nn.Module
    likelihood: str = "bernoulli"
    latent_dim: int = 32
    input_shape: tuple[int, ...] | None = None  # (H, W, C) of one example, when known
    prior: str = "standard_normal"  # a name of vae_jax.priors.PRIORS
    num_components: int = 500  # K of the "mixture" and "vamp" priors

    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Parameters for one example ``x [H, W, C]``: ``encoder``, ``decoder`` and, for a
        learned prior, ``prior`` (mixture weights/means/log_stds, or the VampPrior's
        pseudo-inputs ``[K, H, W, C]``)."""
        k_enc, k_dec = jax.random.split(key)  # as before learned priors existed: same networks for a key
        k_prior = jax.random.fold_in(key, 2)
        params = {
            "encoder": self.encoder.init(k_enc, x)["params"],
            "decoder": self.decoder.init(k_dec, jnp.zeros((self.latent_dim,), x.dtype))["params"],
        }
        if self.prior == "mixture":
            params["prior"] = priors.init_mixture(k_prior, num_components=self.num_components,
                                                  latent_dim=self.latent_dim)
        elif self.prior == "vamp":
            params["prior"] = priors.init_vamp(k_prior, num_components=self.num_components, input_shape=x.shape)
        return params

    def prior_distribution(self, params: Params) -> "priors.StandardNormal | priors.GaussianMixture":
        """The prior p(z) of these parameters: ``.log_prob(z [d])`` and ``.sample(key, n) -> [n, d]``."""
        return priors.by_name(self.prior, params.get("prior"), functools.partial(self.encode, params),
                              self.latent_dim)

    def bind(self, params: Params) -> Bound:
        """The pure ``(encode, decode, prior)`` of these parameters (see :class:`Bound`); ``prior``
        is None for N(0, I) (so objectives use the closed-form KL), else its ``log_prob``."""
        prior = None if self.prior == "standard_normal" else self.prior_distribution(params).log_prob
        return Bound(functools.partial(self.encode, params), functools.partial(self.decode, params), prior)

    def encode(self, params: Params, x: jax.Array) -> Any:
        """ONE example ``x`` (``input_shape``, when the model has one) ``->`` the encoder's output."""
        check_example(x, self.input_shape)
        return self.encoder.apply({"params": params["encoder"]}, x)

    def decode(self, params: Params, z: jax.Array) -> Any:
        """``z [d] ->`` the parameters of p(x | z) (logits, mean, or (mean, log_std))."""
        return self.decoder.apply({"params": params["decoder"]}, z)

    def decode_mean(self, params: Params, z: jax.Array) -> jax.Array:
        """``z [d] ->`` the mean of p(x | z), an image ``[H, W, C]``."""
        return distributions.likelihood_mean(self.likelihood, self.decode(params, z))

    def code(self, params: Params, x: jax.Array) -> jax.Array:
        """The point code of ``x``, ``[d]`` (the posterior mean for a VAE)."""
        raise NotImplementedError

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array:
        """Mean of p(x | z) at the point code of ``x``: ``[H, W, C]``."""
        return self.decode_mean(params, self.code(params, x))

    def sample(self, params: Params, key: jax.Array, n: int) -> jax.Array:
        """Means of p(x | z) for ``n`` draws ``z ~ p(z)`` (the model's prior): ``[n, H, W, C]``."""
        z = self.prior_distribution(params).sample(key, n)
        return jax.vmap(self.decode_mean, in_axes=(None, 0))(params, z)


class VAE(BoundObjectives, _Model):
    """Variational autoencoder: ``encode(params, x) -> (mean [d], log_std [d])``."""

    def code(self, params: Params, x: jax.Array) -> jax.Array:
        return self.encode(params, x)[0]


class AE(_Model):
    """Deterministic autoencoder baseline: ``encode(params, x) -> code [d]``."""

    def code(self, params: Params, x: jax.Array) -> jax.Array:
        return self.encode(params, x)

    def objective(self, params: Params, key: jax.Array, x: jax.Array) -> tuple[jax.Array, dict]:
        """Minus :func:`vae_jax.objectives.autoencoder_loss` (``key`` is unused)."""
        del key
        encode, decode, _ = self.bind(params)
        value = -objectives.autoencoder_loss(x, encode, decode, likelihood=self.likelihood)
        return value, {"reconstruction": value}
