"""A linear-Gaussian latent variable model with everything in closed form.

``p(z) = N(0, I_d)``, ``p(x | z) = N(W z + b, sigma^2 I_D)``. Its marginal
``p(x) = N(b, W W^T + sigma^2 I)``, its posterior ``p(z | x)``, the ELBO of any
diagonal Gaussian ``q`` and so the ELBO's exact gradient are known, which makes
it the ground truth for objectives, likelihood estimators and gradient
estimators. Imports ``jax`` only; works on one example (vmap over a batch).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vae_jax import distributions, priors
from vae_jax._checks import LOG_2PI


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
        return -0.5 * (r @ r) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * data_dim * LOG_2PI

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
        fit = distributions.gaussian_log_prob(x, self.weight @ mean + self.bias, self.log_sigma)
        spread = jnp.sum(jnp.exp(2 * log_std) * jnp.sum(jnp.square(self.weight), axis=0)) / (2 * sigma2)
        return fit - spread - distributions.kl_to_standard_normal(mean, log_std)


class AffineLinearGaussian:
    """A duck-typed VAE with everything exact: an affine Gaussian encoder
    ``q(z|x) = N(A x + c, diag(exp(S x + s))^2)`` and the :class:`LinearGaussian` decoder.

    ``params = {"encoder": {"A", "c", "S", "s"}, "decoder": LinearGaussian}``; the
    exact ELBO of these parameters is :meth:`exact_elbo`, so ``jax.grad`` of it is the
    truth that gradient estimators (:func:`vae_jax.estimators.make_estimator`) are held to.
    """

    likelihood = "gaussian_learned"

    @staticmethod
    def params(key: jax.Array, *, width: float = 1.0, data_dim: int = 8, latent_dim: int = 3,
               mean_noise: float = 0.1, sigma: float = 0.7) -> dict[str, Any]:
        """A random model with orthogonal columns (diagonal posterior) and an encoder near its posterior.

        q has the posterior's standard deviations times ``width`` and the posterior
        mean map plus N(0, ``mean_noise``^2) perturbations (``width=1, mean_noise=0``:
        q is the exact posterior).
        """
        k_model, k_a, k_c = jax.random.split(key, 3)
        lg = LinearGaussian.random(k_model, data_dim, latent_dim, sigma=sigma, orthogonal=True)
        _, cov = lg.posterior(jnp.zeros(data_dim))  # the same for every x
        gain = cov @ lg.weight.T * jnp.exp(-2 * lg.log_sigma)
        encoder = {"A": gain + mean_noise * jax.random.normal(k_a, gain.shape),
                   "c": -gain @ lg.bias + mean_noise * jax.random.normal(k_c, (latent_dim,)),
                   "S": jnp.zeros((latent_dim, data_dim)), "s": 0.5 * jnp.log(jnp.diag(cov)) + math.log(width)}
        return {"encoder": encoder, "decoder": lg}

    def encode(self, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x [D] -> (mean [d], log_std [d])``."""
        e = params["encoder"]
        return e["A"] @ x + e["c"], e["S"] @ x + e["s"]

    def decode(self, params: dict, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``z [d] -> (mean [D], log_std [D])``."""
        return params["decoder"].decode(z)

    def bind(self, params: dict):
        """``(encode, decode, prior)`` with ``params`` bound; the prior is N(0, I) (``None``)."""
        return functools.partial(self.encode, params), functools.partial(self.decode, params), None

    def exact_elbo(self, params: dict, x: jax.Array) -> jax.Array:
        """The exact ELBO of ``x [D]`` in nats (differentiable in ``params``)."""
        return params["decoder"].elbo(x, *self.encode(params, x))


class MixtureLinearGaussian(NamedTuple):
    """The linear-Gaussian decoder under a mixture-of-Gaussians prior: p(x) is a Gaussian mixture.

    ``p(z) = sum_k pi_k N(m_k, diag(s_k^2))`` (a :class:`vae_jax.priors.GaussianMixture`),
    ``p(x | z) = N(W z + b, sigma^2 I_D)``, so
    ``p(x) = sum_k pi_k N(x; W m_k + b, W diag(s_k^2) W^T + sigma^2 I)`` in closed form: the
    truth that importance-sampled ``log p(x)`` with a learned (mixture or VampPrior-like) prior
    is held to. Parameters: ``weight [D, d]``, ``bias [D]``, scalar ``log_sigma``, and the
    mixture's ``logits [K]``, ``means [K, d]``, ``log_stds [K, d]``.
    """

    weight: jax.Array
    bias: jax.Array
    log_sigma: jax.Array
    logits: jax.Array
    means: jax.Array
    log_stds: jax.Array

    @classmethod
    def random(cls, key: jax.Array, data_dim: int, latent_dim: int, num_components: int, *,
               sigma: float = 0.5, spread: float = 2.0) -> "MixtureLinearGaussian":
        """A random model whose ``K`` components sit ``spread`` apart (a clearly multimodal p(z))."""
        k_lg, k_logits, k_means, k_stds = jax.random.split(key, 4)
        lg = LinearGaussian.random(k_lg, data_dim, latent_dim, sigma=sigma)
        return cls(lg.weight, lg.bias, lg.log_sigma, 0.5 * jax.random.normal(k_logits, (num_components,)),
                   spread * jax.random.normal(k_means, (num_components, latent_dim)),
                   jnp.log(jax.random.uniform(k_stds, (num_components, latent_dim), minval=0.3, maxval=1.0)))

    def prior(self):
        """p(z) as a :class:`vae_jax.priors.GaussianMixture` (``log_prob``, ``sample``)."""
        return priors.GaussianMixture(self.logits, self.means, self.log_stds)

    def decode(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``z [d] -> (mean [D], log_std [D])``: parameters for ``"gaussian_learned"``."""
        mean = self.weight @ z + self.bias
        return mean, jnp.broadcast_to(self.log_sigma, mean.shape)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws of x from p(x): ``[n, D]``."""
        k_z, k_x = jax.random.split(key)
        z = self.prior().sample(k_z, n)
        return z @ self.weight.T + self.bias[None] + jnp.exp(self.log_sigma) * jax.random.normal(
            k_x, (n, self.weight.shape[0]))

    def log_marginal(self, x: jax.Array) -> jax.Array:
        """Exact ``log p(x)`` of ``x [D]``: log-sum-exp over components of Gaussian log-densities, nats."""
        data_dim = x.shape[0]

        def component(mean, log_std):
            factor = self.weight * jnp.exp(log_std)[None]
            cov = factor @ factor.T + jnp.exp(2 * self.log_sigma) * jnp.eye(data_dim)
            chol = jnp.linalg.cholesky(cov)
            r = jax.scipy.linalg.solve_triangular(chol, x - self.weight @ mean - self.bias, lower=True)
            return -0.5 * (r @ r) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * data_dim * LOG_2PI

        log_components = jax.vmap(component)(self.means, self.log_stds)
        return jax.nn.logsumexp(jax.nn.log_softmax(self.logits) + log_components)
