"""The objective and ``log p(x)`` of any model with ``bind(params) -> Bound`` and a ``likelihood``.

Shared by :class:`vae_jax.models.VAE` and the posterior-object models
(:mod:`vae_jax.hierarchical`, :mod:`vae_jax.flow_models`): both are the library's
pure objectives over the bound callables, so they are written once.
"""

from __future__ import annotations

from typing import Any

import jax

from vae_jax import objectives


class BoundObjectives:
    """Mixin: needs ``self.bind(params) -> (encode, decode, prior)`` and ``self.likelihood``."""

    def objective(self, params: Any, key: jax.Array, x: jax.Array, **kwargs) -> tuple[jax.Array, dict]:
        """:func:`vae_jax.objectives.elbo` of this model (Monte-Carlo KL for posterior objects and
        learned priors); ``kwargs``: beta, num_samples, kl.

        Other objectives and gradient estimators of the same model (IWAE, DReG, score function, ...)
        come from :func:`vae_jax.estimators.make_estimator`.
        """
        encode, decode, prior = self.bind(params)
        return objectives.elbo(key, x, encode, decode, likelihood=self.likelihood, prior=prior, **kwargs)

    def log_marginal(self, params: Any, key: jax.Array, x: jax.Array, *, num_samples: int = 5000,
                     chunk_size: int = 500) -> jax.Array:
        """Importance-sampled ``log p(x)`` over every latent (:func:`vae_jax.objectives.log_marginal`), nats."""
        encode, decode, prior = self.bind(params)
        return objectives.log_marginal(key, x, encode, decode, likelihood=self.likelihood, prior=prior,
                                       num_samples=num_samples, chunk_size=chunk_size)
