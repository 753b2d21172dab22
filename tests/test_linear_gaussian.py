"""Closed forms of linear_gaussian held to independent computations (joint Gaussians in NumPy)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.linear_gaussian import LinearGaussian, TwoLevelLinearGaussian

D, D1, D2 = 6, 3, 2


_exact_factors = jax.jit(lambda model, x: model.exact_factors(x))


def _model(diagonal_posterior):
    # jitted: eagerly, the construction's dozens of small linear-algebra ops each compile (~14 s)
    model = jax.jit(TwoLevelLinearGaussian.random, static_argnums=(1, 2, 3), static_argnames="diagonal_posterior")(
        jax.random.key(0), D, D1, D2, diagonal_posterior=diagonal_posterior)
    return model, model.sample(jax.random.key(1), 1)[0]


def _joint_posterior(model, x):
    """p(z1, z2 | x) by conditioning the joint Gaussian of (z1, z2) on x = [W 0] z + b + noise (float64)."""
    w, a, s1 = (np.asarray(v, np.float64) for v in (model.weight, model.weight2, np.exp(model.log_std1)))
    prior_mean = np.concatenate([np.asarray(model.bias2, np.float64), np.zeros(D2)])
    prior_cov = np.block([[a @ a.T + np.diag(s1 ** 2), a], [a.T, np.eye(D2)]])
    h = np.concatenate([w, np.zeros((D, D2))], axis=1)
    sigma2 = float(np.exp(2 * model.log_sigma))
    cov = np.linalg.inv(np.linalg.inv(prior_cov) + h.T @ h / sigma2)
    mean = cov @ (np.linalg.solve(prior_cov, prior_mean) + h.T @ (np.asarray(x, np.float64) - np.asarray(model.bias)) / sigma2)
    return mean, cov


def _q_joint(factors):
    """Mean and covariance of the hierarchical q over (z1, z2)."""
    top_mean, top_log_std, gain, offset, bottom_log_std = (np.asarray(f, np.float64) for f in factors)
    cov2 = np.diag(np.exp(2 * top_log_std))
    cov1 = gain @ cov2 @ gain.T + np.diag(np.exp(2 * bottom_log_std))
    mean = np.concatenate([gain @ top_mean + offset, top_mean])
    return mean, np.block([[cov1, gain @ cov2], [(gain @ cov2).T, cov2]])


def _kl(mean_q, cov_q, mean_p, cov_p):
    precision = np.linalg.inv(cov_p)
    diff = mean_p - mean_q
    return 0.5 * (np.trace(precision @ cov_q) + diff @ precision @ diff - len(mean_q)
                  + np.linalg.slogdet(cov_p)[1] - np.linalg.slogdet(cov_q)[1])


@pytest.mark.parametrize("diagonal_posterior", [True, False])
def test_two_level_log_marginal_is_a_one_level_model_over_noise_and_top(diagonal_posterior):
    """x = W (A z2 + a + s1 e1) + b + sigma e: a one-level LinearGaussian over (e1, z2)."""
    model, x = _model(diagonal_posterior)
    flat = LinearGaussian(jnp.concatenate([model.weight * jnp.exp(model.log_std1)[None], model.weight @ model.weight2],
                                          axis=1), model.weight @ model.bias2 + model.bias, model.log_sigma)
    np.testing.assert_allclose(model.log_marginal(x), flat.log_marginal(x), rtol=1e-5)


@pytest.mark.parametrize("diagonal_posterior", [True, False])
def test_posterior_factors_are_the_joint_posterior_factored(diagonal_posterior):
    model, x = _model(diagonal_posterior)
    mean, cov = _joint_posterior(model, x)
    top_mean, top_cov = model.posterior_top(x)
    np.testing.assert_allclose(top_mean, mean[D1:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(top_cov, cov[D1:, D1:], rtol=1e-4, atol=1e-6)
    gain, offset, bottom_cov = model.posterior_bottom(x)
    conditional_gain = cov[:D1, D1:] @ np.linalg.inv(cov[D1:, D1:])
    np.testing.assert_allclose(gain, conditional_gain, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(offset, mean[:D1] - conditional_gain @ mean[D1:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bottom_cov, cov[:D1, :D1] - conditional_gain @ cov[D1:, :D1], rtol=1e-4, atol=1e-6)
    off_diagonal = np.abs(np.asarray(top_cov) - np.diag(np.diag(top_cov))).max() + np.abs(
        np.asarray(bottom_cov) - np.diag(np.diag(bottom_cov))).max()
    assert (off_diagonal < 1e-5) if diagonal_posterior else (off_diagonal > 1e-2)


@pytest.mark.parametrize("diagonal_posterior", [True, False])
def test_hierarchical_elbo_is_log_marginal_minus_joint_kl(diagonal_posterior):
    """ELBO(q) = log p(x) - KL(q(z1, z2 | x) || p(z1, z2 | x)) for the exact factors (KL = 0 when the
    model's posterior factors are diagonal) and for perturbed ones."""
    model, x = _model(diagonal_posterior)
    factors = _exact_factors(model, x)
    post_mean, post_cov = _joint_posterior(model, x)
    log_p = float(model.log_marginal(x))
    if diagonal_posterior:
        np.testing.assert_allclose(model.elbo(x, *factors), log_p, rtol=1e-5)
    perturbed = [f + 0.2 * jax.random.normal(k, f.shape) for f, k in zip(factors, jax.random.split(jax.random.key(2), 5))]
    for q in (factors, perturbed):
        expected = log_p - _kl(*_q_joint(q), post_mean, post_cov)
        np.testing.assert_allclose(model.elbo(x, *q), expected, rtol=1e-5, atol=1e-5)
    assert float(model.elbo(x, *perturbed)) < log_p - 1e-3


def test_best_diagonal_gap_is_the_minimum_kl_and_has_a_closed_form():
    model = LinearGaussian.random(jax.random.key(3), 5, 3, sigma=0.3)
    x = model.sample(jax.random.key(4), 1)[0]
    best = model.best_diagonal(x)
    np.testing.assert_allclose(model.kl_to_posterior(x, *best), model.diagonal_gap(), rtol=1e-4)
    _, cov = model.posterior(x)
    precision = np.linalg.inv(np.asarray(cov, np.float64))
    corr_precision = precision / np.sqrt(np.outer(np.diag(precision), np.diag(precision)))
    np.testing.assert_allclose(model.diagonal_gap(), -0.5 * np.linalg.slogdet(corr_precision)[1], rtol=1e-4)
    grad_mean, grad_log_std = jax.grad(lambda m, s: model.kl_to_posterior(x, m, s), argnums=(0, 1))(*best)
    np.testing.assert_allclose(grad_mean, 0.0, atol=1e-4)
    np.testing.assert_allclose(grad_log_std, 0.0, atol=1e-4)
    for k in jax.random.split(jax.random.key(5), 3):
        other = (best[0] + 0.05 * jax.random.normal(k, (3,)), best[1] - 0.05)
        assert model.kl_to_posterior(x, *other) > model.diagonal_gap()
