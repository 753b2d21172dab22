"""A linear-Gaussian latent variable model with everything in closed form.

``p(z) = N(0, I_d)``, ``p(x | z) = N(W z + b, sigma^2 I_D)``. Its marginal
``p(x) = N(b, W W^T + sigma^2 I)``, its posterior ``p(z | x)``, the ELBO of any
diagonal Gaussian ``q`` and so the ELBO's exact gradient are known, which makes
it the ground truth for objectives, likelihood estimators and gradient
estimators. :class:`TwoLevelLinearGaussian` (``z2 -> z1 -> x``) does the same for
hierarchical posteriors. Imports ``jax`` only; works on one example (vmap over a batch).
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

    def best_diagonal(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The diagonal Gaussian closest to ``p(z | x)`` in ``KL(q || p(z | x))``: the posterior
        mean and variances ``1 / Lambda_ii`` (``Lambda`` the posterior precision). Returns
        ``(mean [d], log_std [d])``; its gap to ``log p(x)`` is :meth:`diagonal_gap`."""
        mean, cov = self.posterior(x)
        return mean, -0.5 * jnp.log(jnp.diag(jnp.linalg.inv(cov)))

    def diagonal_gap(self) -> jax.Array:
        """``log p(x) - max_{diagonal q} ELBO = 1/2 (sum_i log Lambda_ii - log det Lambda)``, nats
        (the same for every x): what a correlated posterior costs a diagonal q."""
        latent_dim = self.weight.shape[1]
        precision = jnp.eye(latent_dim) + self.weight.T @ self.weight * jnp.exp(-2 * self.log_sigma)
        return 0.5 * (jnp.sum(jnp.log(jnp.diag(precision))) - jnp.linalg.slogdet(precision)[1])

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


def _gaussian_log_density(x: jax.Array, mean: jax.Array, cov: jax.Array) -> jax.Array:
    """``log N(x; mean, cov)`` (full covariance, by Cholesky), nats."""
    chol = jnp.linalg.cholesky(cov)
    r = jax.scipy.linalg.solve_triangular(chol, x - mean, lower=True)
    return -0.5 * (r @ r) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * x.shape[0] * LOG_2PI


class TwoLevelLinearGaussian(NamedTuple):
    """``p(z2) = N(0, I)``, ``p(z1 | z2) = N(A z2 + a, diag(s1^2))``, ``p(x | z1) = N(W z1 + b, sigma^2 I)``.

    Everything is Gaussian, so ``log p(x)``, the posterior factors ``p(z2 | x)`` and
    ``p(z1 | x, z2)``, and the ELBO of any hierarchical diagonal-Gaussian q are closed
    forms: the truth for hierarchical posteriors (:class:`vae_jax.posteriors.HierarchicalPosterior`).
    ``z`` is the concatenation ``[z1 (d1), z2 (d2)]``, bottom layer first, as there.

    Parameters: ``weight`` W ``[D, d1]``, ``bias`` b ``[D]``, scalar ``log_sigma``, ``weight2`` A
    ``[d1, d2]``, ``bias2`` a ``[d1]``, ``log_std1`` ``log s1 [d1]``.
    """

    weight: jax.Array
    bias: jax.Array
    log_sigma: jax.Array
    weight2: jax.Array
    bias2: jax.Array
    log_std1: jax.Array

    @classmethod
    def random(cls, key: jax.Array, data_dim: int, d1: int, d2: int, *, sigma: float = 0.7,
               diagonal_posterior: bool = False) -> "TwoLevelLinearGaussian":
        """A random model. ``diagonal_posterior=True`` makes both exact factors diagonal (inside the
        family of a hierarchical diagonal q): W gets orthogonal columns and A columns orthogonal
        under ``W^T C^-1 W`` (``C = W S1 W^T + sigma^2 I``), with ``d2 <= d1``."""
        k_w, k_b, k_a, k_a2, k_s = jax.random.split(key, 5)
        lg = LinearGaussian.random(k_w, data_dim, d1, sigma=sigma, orthogonal=diagonal_posterior)
        log_std1 = jnp.log(jax.random.uniform(k_s, (d1,), minval=0.4, maxval=1.0))
        weight2 = jax.random.normal(k_a, (d1, d2)) / math.sqrt(d2)
        if diagonal_posterior:
            model = cls(lg.weight, lg.bias, lg.log_sigma, weight2, jnp.zeros(d1), log_std1)
            gram = model._top_gram()  # diagonal when W has orthogonal columns
            q, _ = jnp.linalg.qr(jax.random.normal(k_a, (d1, d2)))
            weight2 = q * jnp.linspace(0.7, 1.5, d2)[None] / jnp.sqrt(jnp.diag(gram))[:, None]
        return cls(lg.weight, lg.bias, lg.log_sigma, weight2, 0.3 * jax.random.normal(k_a2, (d1,)), log_std1)

    def _noise1(self) -> jax.Array:
        return jnp.diag(jnp.exp(2 * self.log_std1))

    def _top_gram(self) -> jax.Array:
        """``W^T C^-1 W`` with ``C = W S1 W^T + sigma^2 I``: what x says about z1 once z1's noise is out."""
        cov = self.weight @ self._noise1() @ self.weight.T + jnp.exp(2 * self.log_sigma) * jnp.eye(self.bias.shape[0])
        return self.weight.T @ jnp.linalg.solve(cov, self.weight)

    def sizes(self) -> tuple[int, int]:
        """``(d1, d2)``."""
        return self.weight2.shape

    def decode(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``z = [z1, z2] -> (W z1 + b, log_sigma)``: parameters for ``"gaussian_learned"`` (x ignores z2)."""
        mean = self.weight @ z[: self.sizes()[0]] + self.bias
        return mean, jnp.broadcast_to(self.log_sigma, mean.shape)

    def prior_log_prob(self, z: jax.Array) -> jax.Array:
        """``log p(z2) + log p(z1 | z2)`` of ``z = [z1, z2]``, nats."""
        d1 = self.sizes()[0]
        z1, z2 = z[:d1], z[d1:]
        return (distributions.standard_normal_log_prob(z2)
                + distributions.gaussian_log_prob(z1, self.weight2 @ z2 + self.bias2, self.log_std1))

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws of x from p(x): ``[n, D]``."""
        k2, k1, kx = jax.random.split(key, 3)
        d1, d2 = self.sizes()
        z2 = jax.random.normal(k2, (n, d2))
        z1 = z2 @ self.weight2.T + self.bias2[None] + jnp.exp(self.log_std1)[None] * jax.random.normal(k1, (n, d1))
        noise = jnp.exp(self.log_sigma) * jax.random.normal(kx, (n, self.bias.shape[0]))
        return z1 @ self.weight.T + self.bias[None] + noise

    def log_marginal(self, x: jax.Array) -> jax.Array:
        """Exact ``log p(x) = log N(x; W a + b, W (A A^T + S1) W^T + sigma^2 I)``, nats."""
        cov_z1 = self.weight2 @ self.weight2.T + self._noise1()
        cov = self.weight @ cov_z1 @ self.weight.T + jnp.exp(2 * self.log_sigma) * jnp.eye(x.shape[0])
        return _gaussian_log_density(x, self.weight @ self.bias2 + self.bias, cov)

    def posterior_top(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Exact ``p(z2 | x) = N(mean [d2], cov [d2, d2])``."""
        d1, d2 = self.sizes()
        cov_x = self.weight @ self._noise1() @ self.weight.T + jnp.exp(2 * self.log_sigma) * jnp.eye(x.shape[0])
        load = self.weight @ self.weight2                                              # x = load z2 + ... + noise
        cov = jnp.linalg.inv(jnp.eye(d2) + load.T @ jnp.linalg.solve(cov_x, load))
        return cov @ load.T @ jnp.linalg.solve(cov_x, x - self.weight @ self.bias2 - self.bias), cov

    def posterior_bottom(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Exact ``p(z1 | x, z2) = N(gain z2 + offset, cov)``: ``(gain [d1, d2], offset [d1], cov [d1, d1])``."""
        inv_noise = jnp.diag(jnp.exp(-2 * self.log_std1))
        sigma2 = jnp.exp(2 * self.log_sigma)
        cov = jnp.linalg.inv(inv_noise + self.weight.T @ self.weight / sigma2)
        return (cov @ inv_noise @ self.weight2,
                cov @ (inv_noise @ self.bias2 + self.weight.T @ (x - self.bias) / sigma2), cov)

    def exact_factors(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """``(top_mean, top_log_std, gain, offset, bottom_log_std)``: the exact factors with their
        covariances cut to the diagonal (exact when built with ``diagonal_posterior=True``)."""
        top_mean, top_cov = self.posterior_top(x)
        gain, offset, bottom_cov = self.posterior_bottom(x)
        return (top_mean, 0.5 * jnp.log(jnp.diag(top_cov)), gain, offset, 0.5 * jnp.log(jnp.diag(bottom_cov)))

    def elbo(self, x: jax.Array, top_mean: jax.Array, top_log_std: jax.Array, gain: jax.Array,
             offset: jax.Array, bottom_log_std: jax.Array) -> jax.Array:
        """Exact ELBO of ``q(z2|x) = N(top_mean, diag(e^{2 top_log_std}))``,
        ``q(z1|x, z2) = N(gain z2 + offset, diag(e^{2 bottom_log_std}))``, nats.

        ``E_q[log p(x|z1) + log p(z1|z2) + log p(z2)] + H[q]`` from q's joint moments, each term a
        Gaussian expectation (no use of :meth:`log_marginal`: an independent closed form).
        """
        d1, d2 = self.sizes()
        cov2 = jnp.diag(jnp.exp(2 * top_log_std))
        mean1, cross = gain @ top_mean + offset, gain @ cov2                          # E z1, Cov(z1, z2)
        cov1 = gain @ cov2 @ gain.T + jnp.diag(jnp.exp(2 * bottom_log_std))
        sigma2 = jnp.exp(2 * self.log_sigma)
        fit_x = (distributions.gaussian_log_prob(x, self.weight @ mean1 + self.bias, self.log_sigma)
                 - jnp.trace(self.weight.T @ self.weight @ cov1) / (2 * sigma2))
        r_mean = mean1 - self.weight2 @ top_mean - self.bias2                           # r = z1 - A z2 - a
        r_cov = cov1 - self.weight2 @ cross.T - cross @ self.weight2.T + self.weight2 @ cov2 @ self.weight2.T
        fit_z1 = (-0.5 * jnp.sum((jnp.square(r_mean) + jnp.diag(r_cov)) * jnp.exp(-2 * self.log_std1))
                  - jnp.sum(self.log_std1) - 0.5 * d1 * LOG_2PI)
        fit_z2 = -0.5 * (top_mean @ top_mean + jnp.trace(cov2)) - 0.5 * d2 * LOG_2PI
        entropy = jnp.sum(top_log_std) + jnp.sum(bottom_log_std) + 0.5 * (d1 + d2) * (1.0 + LOG_2PI)
        return fit_x + fit_z1 + fit_z2 + entropy
