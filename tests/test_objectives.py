"""Objectives against the closed forms of a linear-Gaussian model."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax import LinearGaussian, autoencoder_loss, elbo, iwae_bound, kl_to_standard_normal, reparameterize

DATA_DIM, LATENT_DIM = 5, 2


def _setup(orthogonal: bool, sigma: float = 0.7):
    model = LinearGaussian.random(jax.random.key(0), DATA_DIM, LATENT_DIM, sigma=sigma, orthogonal=orthogonal)
    x = model.sample(jax.random.key(1), 1)[0]
    return model, x


def _exact_posterior_encoder(model):
    def encode(x):
        mean, cov = model.posterior(x)
        return mean, 0.5 * jnp.log(jnp.diag(cov))
    return encode


def _other_encoder(x):
    return 0.3 * x[:LATENT_DIM] - 0.1, jnp.array([-0.4, 0.2])


def _mean_and_stderr(values):
    values = np.asarray(values, np.float64)
    return values.mean(), values.std(ddof=1) / math.sqrt(len(values))


def _elbos(key, x, encode, decode, n, **kw):
    keys = jax.random.split(key, n)
    return jax.jit(jax.vmap(lambda k: elbo(k, x, encode, decode, likelihood="gaussian_learned", **kw)[0]))(keys)


def test_linear_gaussian_log_marginal_matches_scipy():
    model, x = _setup(orthogonal=False)
    cov = model.weight @ model.weight.T + jnp.exp(2 * model.log_sigma) * jnp.eye(DATA_DIM)
    expected = stats.multivariate_normal(np.asarray(model.bias), np.asarray(cov, np.float64)).logpdf(np.asarray(x))
    np.testing.assert_allclose(model.log_marginal(x), expected, rtol=1e-5)
    # The ELBO identity log p(x) = ELBO(q) + KL(q || p(z|x)), from independent closed forms.
    mean, log_std = _other_encoder(x)
    np.testing.assert_allclose(model.elbo(x, mean, log_std) + model.kl_to_posterior(x, mean, log_std),
                               model.log_marginal(x), rtol=1e-5)


def test_reparameterize_is_deterministic_in_key_and_has_right_moments():
    mean, log_std = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.0, -1.0, 0.7])
    key = jax.random.key(3)
    np.testing.assert_array_equal(reparameterize(key, mean, log_std), reparameterize(key, mean, log_std))
    n = 100_000
    z = np.asarray(reparameterize(key, mean, log_std, num_samples=n), np.float64)
    assert z.shape == (n, 3)
    std = np.exp(np.asarray(log_std))
    assert np.all(np.abs(z.mean(0) - mean) < 4 * std / math.sqrt(n))
    assert np.all(np.abs(z.std(0) - std) < 4 * std / math.sqrt(2 * n))


def test_reparameterize_gradients():
    mean, log_std = jnp.array([0.3, -0.2]), jnp.array([0.1, -0.5])
    key = jax.random.key(4)
    eps = jax.random.normal(key, (2,))
    d_mean = jax.jacobian(lambda m: reparameterize(key, m, log_std))(mean)
    d_log_std = jax.jacobian(lambda s: reparameterize(key, mean, s))(log_std)
    np.testing.assert_allclose(d_mean, np.eye(2), atol=1e-7)
    np.testing.assert_allclose(d_log_std, np.diag(np.exp(log_std) * eps), rtol=1e-6)


def test_exact_posterior_monte_carlo_kl_elbo_is_exact_for_every_key():
    model, x = _setup(orthogonal=True)
    values = _elbos(jax.random.key(5), x, _exact_posterior_encoder(model), model.decode, 50, kl="monte_carlo")
    np.testing.assert_allclose(values, np.full(50, model.log_marginal(x)), rtol=1e-5, atol=1e-4)


def test_exact_posterior_analytic_kl_elbo_is_exact_in_expectation():
    model, x = _setup(orthogonal=True)
    values = _elbos(jax.random.key(6), x, _exact_posterior_encoder(model), model.decode, 20_000)
    mean, stderr = _mean_and_stderr(values)
    assert np.std(values) > 0.01  # a random estimator ...
    assert abs(mean - float(model.log_marginal(x))) < 4 * stderr  # ... that is unbiased


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
@pytest.mark.parametrize("num_samples", [1, 4])
def test_elbo_expectation_is_log_marginal_minus_posterior_kl(kl, num_samples):
    model, x = _setup(orthogonal=False)
    values = _elbos(jax.random.key(7), x, _other_encoder, model.decode, 20_000, kl=kl, num_samples=num_samples)
    mean, stderr = _mean_and_stderr(values)
    truth = float(model.log_marginal(x) - model.kl_to_posterior(x, *_other_encoder(x)))
    assert float(model.kl_to_posterior(x, *_other_encoder(x))) > 0.5  # a visibly loose bound
    assert abs(mean - truth) < 4 * stderr, (mean, truth, stderr)


def test_beta_weights_the_kl_term():
    model, x = _setup(orthogonal=False)
    key = jax.random.key(8)
    value, aux = elbo(key, x, _other_encoder, model.decode, likelihood="gaussian_learned", beta=3.0)
    np.testing.assert_allclose(value, aux["reconstruction"] - 3.0 * aux["kl"], rtol=1e-6)
    np.testing.assert_allclose(aux["elbo"], aux["reconstruction"] - aux["kl"], rtol=1e-6)


def test_iwae_at_one_sample_equals_monte_carlo_kl_elbo():
    model, x = _setup(orthogonal=False)
    key = jax.random.key(9)
    bound = iwae_bound(key, x, _other_encoder, model.decode, likelihood="gaussian_learned", num_samples=1)
    value, _ = elbo(key, x, _other_encoder, model.decode, likelihood="gaussian_learned", kl="monte_carlo")
    np.testing.assert_allclose(bound, value, rtol=1e-6)


def test_autoencoder_loss_is_squared_error_plus_constant():
    x = jnp.array([0.2, 0.9, 0.4])
    encode = lambda v: v[:2]
    decode = lambda z: jnp.array([z[0], z[1], 0.0])
    loss = autoencoder_loss(x, encode, decode, likelihood="gaussian")
    np.testing.assert_allclose(loss, 0.5 * 0.4**2 + 1.5 * math.log(2 * math.pi), rtol=1e-6)


class TransformsTest(chex.TestCase):
    """Same numbers with and without jit; vmap equals a loop over examples."""

    def _problem(self):
        model, _ = _setup(orthogonal=False)
        xs = model.sample(jax.random.key(10), 3)
        return model, xs

    @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
    def test_elbo_iwae_ae(self):
        model, xs = self._problem()
        key = jax.random.key(11)
        fns = {
            "elbo": lambda k, x: elbo(k, x, _other_encoder, model.decode, likelihood="gaussian_learned",
                                      num_samples=3)[0],
            "iwae": lambda k, x: iwae_bound(k, x, _other_encoder, model.decode, likelihood="gaussian_learned",
                                            num_samples=3),
            "ae": lambda k, x: autoencoder_loss(x, lambda v: _other_encoder(v)[0], model.decode,
                                                likelihood="gaussian_learned"),
        }
        keys = jax.random.split(key, 3)
        for name, fn in fns.items():
            looped = np.array([fn(k, x) for k, x in zip(keys, xs)])
            np.testing.assert_allclose(self.variant(jax.vmap(fn))(keys, xs), looped, rtol=1e-5, err_msg=name)
            np.testing.assert_allclose(self.variant(fn)(keys[0], xs[0]), looped[0], rtol=1e-5, err_msg=name)


def test_bad_inputs_raise_clear_errors():
    model, x = _setup(orthogonal=False)
    key = jax.random.key(0)
    decode = lambda z: jnp.zeros(DATA_DIM)
    with pytest.raises(ValueError, match="Unknown likelihood 'gauss'"):
        elbo(key, x, _other_encoder, decode, likelihood="gauss")
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        elbo(key, x, _other_encoder, decode, likelihood="gaussian", beta=-1.0)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        elbo(key, x, _other_encoder, decode, likelihood="gaussian", num_samples=0)
    with pytest.raises(ValueError, match="Unknown kl='exact'"):
        elbo(key, x, _other_encoder, decode, likelihood="gaussian", kl="exact")
    with pytest.raises(ValueError, match=r"needs data in \[0, 1\].*\[0, 255\]"):
        elbo(key, jnp.array([0.0, 255.0]), lambda v: (v, v), lambda z: z, likelihood="bernoulli")
    with pytest.raises(ValueError, match=r"both of shape \[latent_dim\].*\(2,\) and \(3,\)"):
        elbo(key, x, lambda v: (v[:2], v[:3]), decode, likelihood="gaussian")
    with pytest.raises(ValueError, match="decoder output has shape"):
        elbo(key, x, _other_encoder, lambda z: z, likelihood="gaussian")
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        reparameterize(key, jnp.zeros(2), jnp.zeros(2), num_samples=-3)


@pytest.mark.parametrize("kl", ["analytic", "monte_carlo"])
def test_elbo_expectation_resolves_kl_terms_of_hundreds_of_standard_errors(kl):
    # ELBO = log p(x) - KL(q || p(z|x)), with a q whose KL terms dwarf the Monte-Carlo error: x far from
    # the data mean (KL to the prior ~6 nats) and q the exact posterior's mean shifted by (0.5, -0.4)
    # with 0.74 times its standard deviations (KL to the exact posterior ~2.6 nats). A doubled KL, a
    # dropped KL or an ELBO that leaves out the posterior mismatch is off by hundreds of standard errors.
    model, x = _setup(orthogonal=False)
    x = 3.0 * x

    def encode(v):
        mean, cov = model.posterior(v)
        return mean + jnp.array([0.5, -0.4]), 0.5 * jnp.log(jnp.diag(cov)) - 0.3

    values = _elbos(jax.random.key(8), x, encode, model.decode, 20_000, kl=kl)
    mean, stderr = _mean_and_stderr(values)
    kl_posterior = float(model.kl_to_posterior(x, *encode(x)))
    kl_prior = float(kl_to_standard_normal(*encode(x)))
    assert kl_posterior > 50 * stderr and kl_prior > 50 * stderr, (kl_posterior, kl_prior, stderr)  # power
    truth = float(model.log_marginal(x)) - kl_posterior
    assert abs(mean - truth) < 4 * stderr, (mean, truth, stderr)


@pytest.mark.parametrize("kl, mixture_prior", [("auto", False), ("monte_carlo", False), ("monte_carlo", True)])
def test_the_mean_log_std_path_is_bitwise_the_reference_computation(kl, mixture_prior):
    """The (mean, log_std) path of elbo / iwae_bound is the pre-posterior-object computation, bit for bit
    (reparameterise, mean log-likelihood, closed-form or Monte-Carlo KL), so committed results do not move."""
    from vae_jax import distributions, priors

    model, x = _setup(orthogonal=False)
    prior = (priors.GaussianMixture(jnp.zeros(3), jnp.arange(6.0).reshape(3, 2) - 2.0, jnp.zeros((3, 2))).log_prob
             if mixture_prior else None)
    key, lik = jax.random.key(7), "gaussian_learned"

    def reference(k):
        mean, log_std = _other_encoder(x)
        z = reparameterize(k, mean, log_std, 3)
        recon = jnp.mean(jax.vmap(lambda zk: distributions.log_likelihood(lik, x, model.decode(zk)))(z))
        if kl == "auto":
            kl_value = distributions.kl_to_standard_normal(mean, log_std)
        else:
            log_q = jax.vmap(distributions.gaussian_log_prob, in_axes=(0, None, None))(z, mean, log_std)
            kl_value = jnp.mean(log_q - jax.vmap(prior or distributions.standard_normal_log_prob)(z))
        log_w = jax.vmap(lambda zk: distributions.log_likelihood(lik, x, model.decode(zk))
                         + (prior or distributions.standard_normal_log_prob)(zk)
                         - distributions.gaussian_log_prob(zk, mean, log_std))(z)
        return recon - kl_value, recon, kl_value, jax.nn.logsumexp(log_w) - math.log(3)

    def library(k):
        value, aux = elbo(k, x, _other_encoder, model.decode, likelihood=lik, num_samples=3, kl=kl, prior=prior)
        bound = iwae_bound(k, x, _other_encoder, model.decode, likelihood=lik, num_samples=3, prior=prior)
        return value, aux["reconstruction"], aux["kl"], bound

    for fn in (jax.jit, lambda f: f):
        for got, want in zip(fn(library)(key), fn(reference)(key)):
            np.testing.assert_array_equal(got, want)


def test_a_prior_that_returns_a_vector_is_refused():
    # Issue 24: a per-dimension log-density (forgot to sum) broadcast into a wrong ELBO and IWAE bound.
    x, encode = jnp.ones(3), lambda v: (jnp.zeros(2), jnp.zeros(2))
    decode = lambda z: jnp.concatenate([z, z[:1]])  # noqa: E731
    vector_prior = lambda z: -0.5 * z ** 2  # noqa: E731
    for fn in (lambda: elbo(jax.random.key(0), x, encode, decode, likelihood="gaussian", prior=vector_prior),
               lambda: iwae_bound(jax.random.key(0), x, encode, decode, likelihood="gaussian", num_samples=2,
                                  prior=vector_prior)):
        with pytest.raises(ValueError, match=r"prior must return log p\(z\) of one z \[2\] as a scalar"):
            fn()
    value, _ = elbo(jax.random.key(0), x, encode, decode, likelihood="gaussian",
                    prior=lambda z: jnp.sum(vector_prior(z)) - jnp.log(2 * jnp.pi))  # a scalar prior is fine
    assert jnp.shape(value) == ()
