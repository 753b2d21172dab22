"""Tests of vae_jax.priors against independent float64 truth, and of the mixture-prior linear-Gaussian model."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import distributions, objectives, priors
from vae_jax.linear_gaussian import LinearGaussian, MixtureLinearGaussian


def reference_log_prob(logits, means, log_stds, z):
    """Textbook mixture log-density, float64 numpy, one component at a time."""
    logits, means, log_stds, z = (np.asarray(a, np.float64) for a in (logits, means, log_stds, z))
    log_w = logits - (logits.max() + np.log(np.sum(np.exp(logits - logits.max()))))
    terms = np.array([log_w[k] + np.sum(-0.5 * (z - means[k]) ** 2 / np.exp(2 * log_stds[k])
                                        - log_stds[k] - 0.5 * math.log(2 * math.pi))
                      for k in range(len(logits))])
    return terms.max() + np.log(np.sum(np.exp(terms - terms.max())))


def random_mixture(key, k=7, d=5):
    k1, k2, k3 = jax.random.split(key, 3)
    return priors.GaussianMixture(jax.random.normal(k1, (k,)), 2.0 * jax.random.normal(k2, (k, d)),
                                  jax.random.uniform(k3, (k, d), minval=-3.0, maxval=1.0))  # stds 0.05 to 2.7


def test_mixture_log_prob_matches_a_float64_log_sum_exp_with_and_without_jit_and_vmap():
    mix = random_mixture(jax.random.key(0))
    # points near a component (the quadratic-form expansion must not lose them), between, and far out
    z = jnp.concatenate([mix.means[:3] + 0.01, jax.random.normal(jax.random.key(1), (20, 5)),
                         8.0 * jnp.ones((1, 5))])
    truth = np.array([reference_log_prob(*mix, zi) for zi in z])
    batched = jax.jit(jax.vmap(mix.log_prob))(z)
    one_by_one = np.array([float(mix.log_prob(zi)) for zi in z])
    # float32 expansion of the quadratic form: the error is about eps32 * sum_j p_j (z_j^2 + m_j^2),
    # up to ~1e-3 nats for components with std 0.05 at |z| ~ 4 (documented in vae_jax.priors)
    np.testing.assert_allclose(batched, truth, rtol=2e-5, atol=2e-3)
    np.testing.assert_allclose(one_by_one, truth, rtol=2e-5, atol=2e-3)
    assert truth.min() < -100  # the far point is really far: the test covers the tail


def test_one_component_and_standard_normal_are_the_gaussian_densities():
    z = jax.random.normal(jax.random.key(2), (4,))
    mean, log_std = jnp.array([0.5, -1.0, 0.0, 2.0]), jnp.array([0.1, -0.5, 0.3, 0.0])
    one = priors.GaussianMixture(jnp.array([3.7]), mean[None], log_std[None])
    np.testing.assert_allclose(one.log_prob(z), distributions.gaussian_log_prob(z, mean, log_std), rtol=1e-6)
    np.testing.assert_allclose(priors.StandardNormal(4).log_prob(z), distributions.standard_normal_log_prob(z),
                               rtol=1e-6)


def test_mixture_samples_have_the_mixture_moments():
    mix = random_mixture(jax.random.key(3), k=4, d=3)
    n = 200_000
    x = np.asarray(mix.sample(jax.random.key(4), n), np.float64)
    w = np.asarray(jax.nn.softmax(mix.logits), np.float64)
    m, v = np.asarray(mix.means, np.float64), np.exp(2 * np.asarray(mix.log_stds, np.float64))
    mean = w @ m
    var = w @ (v + m ** 2) - mean ** 2
    assert x.shape == (n, 3)
    assert np.all(np.abs(x.mean(0) - mean) < 4 * np.sqrt(var / n))
    np.testing.assert_allclose(x.var(0), var, rtol=0.02)


def test_vamp_prior_is_the_equal_weight_mixture_of_encoded_clipped_pseudo_inputs():
    params = priors.init_vamp(jax.random.key(5), num_components=400, input_shape=(2, 3, 1))
    u = params["pseudo_inputs"]
    assert u.shape == (400, 2, 3, 1)
    assert abs(float(u.mean()) - 0.05) < 0.002 and abs(float(u.std()) - 0.01) < 0.001  # the authors' init
    params = {"pseudo_inputs": u.at[0, 0, 0, 0].set(-0.5).at[1, 0, 0, 0].set(1.7)}
    clipped = priors.pseudo_inputs(params)
    assert float(clipped[0, 0, 0, 0]) == 0.0 and float(clipped[1, 0, 0, 0]) == 1.0

    A = jax.random.normal(jax.random.key(6), (2, 6))
    encode = lambda x: (A @ x.reshape(-1), jnp.tanh(A @ x.reshape(-1)) - 1.0)  # noqa: E731
    vamp = priors.vamp(params, encode)
    z = jnp.array([0.3, -0.2])
    means = np.stack([np.asarray(encode(x)[0]) for x in clipped])
    log_stds = np.stack([np.asarray(encode(x)[1]) for x in clipped])
    np.testing.assert_allclose(vamp.log_prob(z), reference_log_prob(np.zeros(400), means, log_stds, z), rtol=1e-5)
    # gradients reach the pseudo-inputs inside [0, 1] only (clipping, like the authors' Hardtanh)
    grad = jax.grad(lambda p: priors.vamp(p, encode).log_prob(z))(params)["pseudo_inputs"]
    assert float(grad[0, 0, 0, 0]) == 0.0 and float(grad[1, 0, 0, 0]) == 0.0
    assert float(jnp.abs(grad[2:]).sum()) > 0


def test_learned_mixture_init_and_bad_params_raise():
    params = priors.init_mixture(jax.random.key(7), num_components=10, latent_dim=3)
    assert {k: v.shape for k, v in params.items()} == {"logits": (10,), "means": (10, 3), "log_stds": (10, 3)}
    with pytest.raises(ValueError, match="mixture prior needs params with keys"):
        priors.mixture({"means": params["means"]})
    with pytest.raises(ValueError, match="vamp prior needs"):
        priors.pseudo_inputs(params)
    with pytest.raises(ValueError, match="num_components"):
        priors.init_mixture(jax.random.key(0), num_components=0, latent_dim=3)
    with pytest.raises(ValueError, match="n must"):
        priors.StandardNormal(3).sample(jax.random.key(0), 0)


def test_mixture_linear_gaussian_reduces_to_the_linear_gaussian_for_one_standard_component():
    lg = LinearGaussian.random(jax.random.key(8), 6, 3, sigma=0.7)
    mlg = MixtureLinearGaussian(lg.weight, lg.bias, lg.log_sigma, jnp.zeros(1), jnp.zeros((1, 3)), jnp.zeros((1, 3)))
    x = lg.sample(jax.random.key(9), 5)
    np.testing.assert_allclose(jax.vmap(mlg.log_marginal)(x), jax.vmap(lg.log_marginal)(x), rtol=1e-5)


def test_importance_sampled_log_px_converges_to_the_closed_form_gaussian_mixture():
    mlg = MixtureLinearGaussian.random(jax.random.key(10), 4, 2, 5, sigma=1.0)
    x = mlg.sample(jax.random.key(11), 8)
    exact = np.asarray(jax.vmap(mlg.log_marginal)(x), np.float64)
    prior = mlg.prior()
    lik = "gaussian_learned"
    # Proposal per x: a broad Gaussian, then moment-matched to its own importance weights (adaptive IS),
    # widened 1.5x; the estimate uses fresh draws.
    broad = (jnp.zeros(2), jnp.log(jnp.std(prior.sample(jax.random.key(12), 10_000), axis=0)) + 0.3)

    def proposal(key, v):
        z = objectives.reparameterize(key, *broad, 20_000)
        w = jax.nn.softmax(objectives.log_importance_weights(z, v, *broad, mlg.decode, likelihood=lik,
                                                             prior=prior.log_prob))
        mean = w @ z
        return mean, 0.5 * jnp.log(w @ jnp.square(z - mean[None])) + math.log(1.5)

    means, log_stds = jax.jit(jax.vmap(proposal))(jax.random.split(jax.random.key(13), len(x)), x)

    def estimate(num_samples, seed):
        def one(key, v, m, s):
            return objectives.log_marginal(key, v, lambda _: (m, s), mlg.decode, likelihood=lik,
                                           num_samples=num_samples, chunk_size=10_000, prior=prior.log_prob)
        keys = jax.random.split(jax.random.key(seed), len(x))
        return np.asarray(jax.jit(jax.vmap(one))(keys, x, means, log_stds), np.float64) - exact

    few = np.concatenate([estimate(3, s) for s in range(14, 20)])
    many = estimate(100_000, 20)
    assert np.abs(many).max() < 0.02 and np.abs(many).mean() < 0.006 and np.abs(few).mean() > 10 * np.abs(many).mean()
    assert few.mean() < 0  # the small-K estimate is biased low (Jensen), as an IWAE bound must be


def test_prior_constructors_refuse_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="latent_dim must be a positive int; got -1"):
        priors.StandardNormal(-1)
    with pytest.raises(ValueError, match="scale must be a finite number; got nan"):
        priors.init_mixture(key, num_components=2, latent_dim=3, scale=float("nan"))
    with pytest.raises(ValueError, match="std must be a finite number >= 0; got -1"):
        priors.init_vamp(key, num_components=2, input_shape=(2, 2, 1), std=-1)
    with pytest.raises(ValueError, match="input_shape's sides must be a positive int"):
        priors.init_vamp(key, num_components=2, input_shape=(2, 0, 1))
    good = priors.init_mixture(key, num_components=2, latent_dim=3)
    for name, shape in (("logits", (3,)), ("means", (2, 4)), ("log_stds", (2, 2))):
        with pytest.raises(ValueError, match=r"logits \[K\], means \[K, d\] and log_stds \[K, d\]"):
            priors.mixture({**good, name: jnp.zeros(shape)})
    assert priors.StandardNormal(3).latent_dim == 3 and priors.mixture(good).means.shape == (2, 3)
