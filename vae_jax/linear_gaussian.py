"""A linear-Gaussian latent variable model with everything in closed form.

``p(z) = N(0, I_d)``, ``p(x | z) = N(W z + b, sigma^2 I_D)``. Its marginal
``p(x) = N(b, W W^T + sigma^2 I)``, its posterior ``p(z | x)``, the ELBO of any
diagonal Gaussian ``q`` and so the ELBO's exact gradient are known, which makes
it the ground truth for objectives, likelihood estimators and gradient
estimators. Imports ``jax`` only; works on one example (vmap over a batch).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions as D

_LOG_2PI = math.log(2.0 * math.pi)


class LinearGaussian(NamedTuple):
    """Parameters: ``weight [D, d]``, ``bias [D]``, scalar ``log_sigma``."""

    weight: jax.Array
    bias: jax.Array
    log_sigma: jax.Array

    @classmethod
    def random(cls, key: jax.Array, data_dim: int, latent_dim: int, *, sigma: float = 1.0,
               orthogonal: bool = False) -> "LinearGaussian":
        """A random model; ``orthogonal=True`` gives W orthogonal columns, so the
        exact posterior is diagonal (inside the family of a diagonal q)."""
        k_w, k_b = jax.random.split(key)
        weight = jax.random.normal(k_w, (data_dim, latent_dim)) / math.sqrt(latent_dim)
        if orthogonal:
            q, _ = jnp.linalg.qr(weight)
            weight = q * jnp.linspace(0.5, 2.0, latent_dim)[None]
        bias = 0.5 * jax.random.normal(k_b, (data_dim,))
        return cls(weight, bias, jnp.log(jnp.asarray(sigma, jnp.float32)))

    def decode(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``z [d] -> (mean [D], log_std [D])``: parameters for ``"gaussian_learned"``."""
        mean = self.weight @ z + self.bias
        return mean, jnp.broadcast_to(self.log_sigma, mean.shape)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws of x from p(x): ``[n, D]``."""
        k_z, k_x = jax.random.split(key)
        z = jax.random.normal(k_z, (n, self.weight.shape[1]))
        noise = jax.random.normal(k_x, (n, self.weight.shape[0]))
        return z @ self.weight.T + self.bias[None] + jnp.exp(self.log_sigma) * noise

    def log_marginal(self, x: jax.Array) -> jax.Array:
        """Exact ``log p(x)`` for ``x [D]``, in nats."""
        data_dim = x.shape[0]
        cov = self.weight @ self.weight.T + jnp.exp(2 * self.log_sigma) * jnp.eye(data_dim)
        chol = jnp.linalg.cholesky(cov)
        r = jax.scipy.linalg.solve_triangular(chol, x - self.bias, lower=True)
        return -0.5 * (r @ r) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * data_dim * _LOG_2PI

    def posterior(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Exact ``p(z | x) = N(mean [d], cov [d, d])``."""
        latent_dim = self.weight.shape[1]
        precision = jnp.eye(latent_dim) + self.weight.T @ self.weight * jnp.exp(-2 * self.log_sigma)
        cov = jnp.linalg.inv(precision)
        mean = cov @ self.weight.T @ (x - self.bias) * jnp.exp(-2 * self.log_sigma)
        return mean, cov

    def kl_to_posterior(self, x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
        """``KL(N(mean, diag(exp(log_std))^2) || p(z | x))`` in closed form, nats."""
        post_mean, post_cov = self.posterior(x)
        post_precision = jnp.linalg.inv(post_cov)
        var = jnp.exp(2 * log_std)
        diff = post_mean - mean
        _, logdet_post = jnp.linalg.slogdet(post_cov)
        return 0.5 * (jnp.sum(jnp.diag(post_precision) * var) + diff @ post_precision @ diff
                      - mean.shape[0] + logdet_post - 2 * jnp.sum(log_std))

    def elbo(self, x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
        """Exact ELBO of the diagonal Gaussian q for ``x [D]`` (nats).

        ``E_q log p(x|z) = log N(x; W mean + b, sigma^2 I) - sum_j s_j^2 ||W_j||^2 / (2 sigma^2)``
        minus the closed-form KL to the prior. Differentiable in every argument
        and in the model parameters, which gives exact ELBO gradients.
        """
        sigma2 = jnp.exp(2 * self.log_sigma)
        fit = D.gaussian_log_prob(x, self.weight @ mean + self.bias, self.log_sigma)
        spread = jnp.sum(jnp.exp(2 * log_std) * jnp.sum(jnp.square(self.weight), axis=0)) / (2 * sigma2)
        return fit - spread - D.kl_to_standard_normal(mean, log_std)
