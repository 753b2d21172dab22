"""Log-densities and the KL against textbook formulas and Monte Carlo."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax import distributions


class DistributionsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
    def test_gaussian_log_prob_matches_textbook(self):
        rng = np.random.default_rng(0)
        x, mean, log_std = (rng.normal(size=7).astype(np.float32) for _ in range(3))
        expected = stats.norm.logpdf(x, loc=mean, scale=np.exp(log_std)).sum()
        got = self.variant(distributions.gaussian_log_prob)(x, mean, log_std)
        np.testing.assert_allclose(got, expected, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
    def test_standard_normal_log_prob(self):
        z = np.array([0.3, -1.2, 2.0], np.float32)
        np.testing.assert_allclose(self.variant(distributions.standard_normal_log_prob)(z), stats.norm.logpdf(z).sum(), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
    def test_bernoulli_log_prob_matches_textbook(self):
        logits = np.array([-2.0, 0.0, 0.5, 3.0], np.float32)
        x = np.array([0.0, 1.0, 1.0, 0.0], np.float32)
        p = 1 / (1 + np.exp(-logits.astype(np.float64)))
        expected = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p))
        np.testing.assert_allclose(self.variant(distributions.bernoulli_log_prob)(logits, x), expected, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
    def test_kl_zero_at_standard_normal(self):
        kl = self.variant(distributions.kl_to_standard_normal)(jnp.zeros(5), jnp.zeros(5))
        self.assertEqual(float(kl), 0.0)


def test_bernoulli_finite_at_extreme_logits():
    logits = jnp.array([1000.0, -1000.0, 1000.0, -1000.0])
    x = jnp.array([1.0, 0.0, 0.0, 1.0])
    value = distributions.bernoulli_log_prob(logits, x)
    grad = jax.grad(distributions.bernoulli_log_prob)(logits, x)
    # The two right answers cost 0 nats; the two wrong ones 1000 nats each.
    np.testing.assert_allclose(value, -2000.0, rtol=1e-6)
    np.testing.assert_allclose(grad, x - jax.nn.sigmoid(logits))
    assert jnp.all(jnp.isfinite(grad))


def test_kl_matches_monte_carlo():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=4).astype(np.float32)
    log_std = rng.normal(scale=0.5, size=4).astype(np.float32)
    z = mean + np.exp(log_std) * rng.normal(size=(200_000, 4)).astype(np.float32)
    log_ratio = (stats.norm.logpdf(z, mean, np.exp(log_std)) - stats.norm.logpdf(z)).sum(1)
    estimate, stderr = log_ratio.mean(), log_ratio.std() / math.sqrt(len(log_ratio))
    kl = float(distributions.kl_to_standard_normal(mean, log_std))
    assert kl > 0
    assert abs(kl - estimate) < 4 * stderr, (kl, estimate, stderr)


def test_log_likelihood_dispatch_and_errors():
    x = jnp.array([0.0, 1.0])
    np.testing.assert_allclose(distributions.log_likelihood("gaussian", x, x), -math.log(2 * math.pi), rtol=1e-6)
    np.testing.assert_allclose(distributions.log_likelihood("gaussian_learned", x, (x, jnp.zeros(2))),
                               distributions.log_likelihood("gaussian", x, x))
    np.testing.assert_allclose(distributions.likelihood_mean("bernoulli", jnp.zeros(2)), [0.5, 0.5])
    with pytest.raises(ValueError, match="Unknown likelihood 'poisson'"):
        distributions.log_likelihood("poisson", x, x)
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2,\)"):
        distributions.log_likelihood("bernoulli", x, jnp.zeros(3))
    with pytest.raises(ValueError, match="needs the decoder to return \\(mean, log_std\\)"):
        distributions.log_likelihood("gaussian_learned", x, x)
    with pytest.raises(ValueError, match="got a tuple"):
        distributions.log_likelihood("gaussian", x, (x, x))
