"""Models: networks bundled into ONE pure ``bind(params) -> (encode, decode, prior)`` seam.

- :mod:`~vae_jax.models.gaussian`: :class:`VAE` and :class:`AE` (Flax networks, Gaussian latents).
- :mod:`~vae_jax.models.discrete`: :class:`DiscreteVAE` (pure JAX, Bernoulli or categorical latents).
- :mod:`~vae_jax.models.factory`: :func:`build_model` from a :class:`vae_jax.config.ModelConfig`.
"""

from vae_jax.config import ModelConfig
from vae_jax.models.discrete import DiscreteBound, DiscreteVAE, linear_sbn, nonlinear_sbn
from vae_jax.models.factory import ARCHITECTURES, KINDS, LATENTS, build_model, check_config
from vae_jax.models.gaussian import AE, VAE, Bound

__all__ = ["AE", "ARCHITECTURES", "Bound", "DiscreteBound", "DiscreteVAE", "KINDS", "LATENTS", "ModelConfig", "VAE",
           "build_model", "check_config", "linear_sbn", "nonlinear_sbn"]
