"""Truth tests of iwae_bound and log_marginal on the linear-Gaussian model (exact log p(x)).

The proposals are fixed diagonal Gaussians built from the exact posterior
``N(m, S)`` of :class:`vae_jax.LinearGaussian`, so every tolerance below comes
from a closed form: the chi-square divergence of the proposal (the relative
variance of the importance weights) or the exact ELBO.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import LinearGaussian, elbo, iwae_bound, log_marginal

DATA_DIM, LATENT_DIM = 6, 3
LIK = "gaussian_learned"


def _model(orthogonal=False, sigma=0.7):
    return LinearGaussian.random(jax.random.key(0), DATA_DIM, LATENT_DIM, sigma=sigma, orthogonal=orthogonal)


def _data(model, n=4):
    return model.sample(jax.random.key(1), n)


def _proposal(model, x, *, scale=1.0, shift=0.0):
    """``encode`` returning the exact posterior marginals, widened by ``scale``, shifted by ``shift``."""
    mean, cov = model.posterior(x)
    mean = mean + shift
    log_std = jnp.log(scale * jnp.sqrt(jnp.diag(cov)))
    return (lambda _: (mean, log_std)), mean, log_std


def _chi2_plus_one(post_mean, post_cov, mean, log_std):
    """``E_q[(p(z|x) / q(z))^2]`` for p = N(a, P), q = N(b, Q = diag(exp(2 log_std))), in float64.

    ``|Q|^1/2 |P|^-1 |A|^-1/2 exp((h' A^-1 h - c) / 2)`` with ``A = 2P^-1 - Q^-1``,
    ``h = 2P^-1 a - Q^-1 b`` and ``c = 2a'P^-1 a - b'Q^-1 b``.
    """
    a, b, p = (np.asarray(v, np.float64) for v in (post_mean, mean, post_cov))
    q = np.diag(np.exp(2 * np.asarray(log_std, np.float64)))
    p_inv, q_inv = np.linalg.inv(p), np.linalg.inv(q)
    big_a = 2 * p_inv - q_inv
    assert np.all(np.linalg.eigvalsh(big_a) > 0), "proposal too narrow: the weights have infinite variance"
    h, c = 2 * p_inv @ a - q_inv @ b, 2 * a @ p_inv @ a - b @ q_inv @ b
    log_value = (0.5 * np.linalg.slogdet(q)[1] - np.linalg.slogdet(p)[1] - 0.5 * np.linalg.slogdet(big_a)[1]
                 + 0.5 * (h @ np.linalg.solve(big_a, h) - c))
    return np.exp(log_value)


def test_5000_samples_within_001_nats_for_a_good_proposal():
    # A diagonal q can only be this good (chi-square < 0.02) where the posterior is
    # diagonal: the orthogonal model, with q 5% wider and 0.05 sd off the exact posterior.
    model = _model(orthogonal=True)

    @jax.jit
    @jax.vmap
    def run(key, x):
        post_mean, post_cov = model.posterior(x)
        encode, mean, log_std = _proposal(model, x, scale=1.05, shift=0.05 * jnp.sqrt(jnp.diag(post_cov)))
        estimate = log_marginal(key, x, encode, model.decode, likelihood=LIK, num_samples=5000, chunk_size=1000)
        return estimate, model.log_marginal(x), post_mean, post_cov, mean, log_std

    xs = _data(model)
    estimate, exact, *moments = run(jax.random.split(jax.random.key(10), len(xs)), xs)
    for i in range(len(xs)):
        rel_var = _chi2_plus_one(*(m[i] for m in moments)) - 1.0
        # delta method: sd(log estimate) ~ sqrt(rel_var / N); 0.01 nats is then beyond 4 sd
        assert 1e-3 < rel_var and np.sqrt(rel_var / 5000) < 0.0025, rel_var
    np.testing.assert_array_less(np.abs(estimate - exact), 0.01)


def test_a_poor_proposal_misses_by_more_than_001_nats():
    """The check above has power: a narrow, shifted q with 50 draws is biased low by far more."""
    model = _model(orthogonal=True)
    x = _data(model)[0]
    sd = jnp.sqrt(jnp.diag(model.posterior(x)[1]))
    encode, _, _ = _proposal(model, x, scale=0.7, shift=1.5 * sd)
    keys = jax.random.split(jax.random.key(0), 200)
    estimates = np.asarray(jax.jit(jax.vmap(lambda k: log_marginal(k, x, encode, model.decode, likelihood=LIK,
                                                                   num_samples=50)))(keys))
    gap = float(model.log_marginal(x)) - estimates.mean()
    assert gap > 0.05 and gap > 5 * estimates.std(ddof=1) / np.sqrt(len(keys)), gap


def test_iwae_bound_increases_with_k_towards_exact_in_expectation():
    model = _model()
    x = _data(model)[0]
    encode, mean, log_std = _proposal(model, x, scale=0.8, shift=0.4)
    exact = float(model.log_marginal(x))
    num_keys, ks = 1000, (1, 2, 8, 64, 512)
    means, ses = [], []
    for k in ks:
        keys = jax.random.split(jax.random.key(k), num_keys)
        bounds = np.asarray(jax.jit(jax.vmap(
            lambda key, k=k: iwae_bound(key, x, encode, model.decode, likelihood=LIK, num_samples=k)))(keys))
        means.append(bounds.mean())
        ses.append(bounds.std(ddof=1) / np.sqrt(num_keys))
    means, ses = np.array(means), np.array(ses)
    # k = 1: the expectation is the exact ELBO of q
    assert abs(means[0] - float(model.elbo(x, mean, log_std))) < 4 * ses[0]
    # non-decreasing in k within standard errors, never above log p(x), and a clear overall gain
    steps = np.diff(means)
    assert np.all(steps > -3 * np.sqrt(ses[1:] ** 2 + ses[:-1] ** 2)), (means, ses)
    assert np.all(means < exact + 3 * ses), (means, exact)
    assert means[-1] - means[0] > 20 * np.hypot(ses[0], ses[-1])
    assert exact - means[-1] < 0.2 * (exact - means[0])


def test_exact_posterior_proposal_is_exact_for_every_k():
    model = _model(orthogonal=True)
    ks = (1, 3, 50)

    @jax.jit
    @jax.vmap
    def run(key, x):
        post_mean, post_cov = model.posterior(x)
        encode = lambda _: (post_mean, 0.5 * jnp.log(jnp.diag(post_cov)))
        values = [f(jax.random.fold_in(key, k), x, encode, model.decode, likelihood=LIK, num_samples=k)
                  for k in ks for f in (iwae_bound, functools.partial(log_marginal, chunk_size=2))]
        return jnp.stack(values), model.log_marginal(x), post_cov

    xs = _data(model, 3)
    values, exact, post_cov = run(jax.random.split(jax.random.key(5), len(xs)), xs)
    for cov in post_cov:  # the exact posterior lies in q's (diagonal) family
        np.testing.assert_allclose(cov, jnp.diag(jnp.diag(cov)), atol=1e-6)
    np.testing.assert_allclose(values, jnp.broadcast_to(exact[:, None], values.shape), rtol=1e-5, atol=1e-4)


def _reference_log_marginal(key, x, model, mean, log_std, n):
    """Unchunked float64 numpy computation of the same draws (draw i from fold_in(key, i))."""
    eps = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), mean.shape)) for i in range(n)])
    mean, std = np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64))
    w, b, sigma = (np.asarray(a, np.float64) for a in (model.weight, model.bias, jnp.exp(model.log_sigma)))
    z = mean + std * eps

    def log_normal(v, m, s):
        return np.sum(-0.5 * ((v - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi), axis=-1)

    log_w = (log_normal(np.asarray(x, np.float64), z @ w.T + b, sigma) + log_normal(z, 0.0, 1.0)
             - log_normal(z, mean, std))
    top = log_w.max()
    return top + np.log(np.mean(np.exp(log_w - top)))


def test_chunked_equals_unchunked_to_float32_rounding():
    model = _model()
    x = _data(model)[1]
    encode, mean, log_std = _proposal(model, x, scale=1.5)
    key, n = jax.random.key(7), 150
    values = [float(jax.jit(lambda k, c=c: log_marginal(k, x, encode, model.decode, likelihood=LIK,
                                                        num_samples=n, chunk_size=c))(key))
              for c in (n, 1, 7, 1000)]  # 7 leaves a padded last chunk; 1000 > n is clipped
    reference = _reference_log_marginal(key, x, model, mean, log_std, n)
    np.testing.assert_allclose(values, reference, rtol=2e-6, atol=1e-5)
    assert abs(reference - float(model.log_marginal(x))) < 0.2  # the draws are real importance samples


def test_iwae_bound_at_k1_equals_monte_carlo_kl_elbo_with_the_same_key():
    model = _model()

    @jax.jit
    @jax.vmap
    def run(key, x):
        encode, _, _ = _proposal(model, x, scale=1.3, shift=0.2)
        bound = iwae_bound(key, x, encode, model.decode, likelihood=LIK, num_samples=1)
        value, aux = elbo(key, x, encode, model.decode, likelihood=LIK, num_samples=1, kl="monte_carlo")
        return bound, value, aux["elbo"]

    xs = _data(model)
    bound, value, elbo_value = run(jax.random.split(jax.random.key(100), len(xs)), xs)
    np.testing.assert_allclose(bound, value, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(bound, elbo_value, rtol=1e-6, atol=1e-5)
    assert np.ptp(np.asarray(bound)) > 0.1  # distinct examples, not one repeated value


def _bernoulli_parts():
    x = jnp.array([0.0, 1.0, 1.0, 0.0])
    encode = lambda v: (jnp.zeros(2), jnp.zeros(2))
    decode = lambda z: jnp.concatenate([z, -z])
    return x, encode, decode


@pytest.mark.parametrize("fn", ["iwae_bound", "log_marginal"])
@pytest.mark.parametrize("num_samples", [0, -3, 2.0, True, None])
def test_bad_num_samples_raise(fn, num_samples):
    x, encode, decode = _bernoulli_parts()
    f = {"iwae_bound": iwae_bound, "log_marginal": log_marginal}[fn]
    with pytest.raises(ValueError, match="num_samples"):
        f(jax.random.key(0), x, encode, decode, likelihood="bernoulli", num_samples=num_samples)


@pytest.mark.parametrize("chunk_size", [0, -1, 1.5])
def test_bad_chunk_size_raises(chunk_size):
    x, encode, decode = _bernoulli_parts()
    with pytest.raises(ValueError, match="chunk_size"):
        log_marginal(jax.random.key(0), x, encode, decode, num_samples=10, chunk_size=chunk_size)


@pytest.mark.parametrize("fn", [iwae_bound, log_marginal])
def test_bad_likelihood_data_and_encoder_raise(fn):
    x, encode, decode = _bernoulli_parts()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="likelihood"):
        fn(key, x, encode, decode, likelihood="poisson", num_samples=4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(key, 2.0 * x, encode, decode, likelihood="bernoulli", num_samples=4)
    for bad in (lambda v: (jnp.zeros((1, 2)), jnp.zeros((1, 2))), lambda v: (jnp.zeros(2), jnp.zeros(3))):
        with pytest.raises(ValueError, match="latent_dim"):
            fn(key, x, bad, decode, likelihood="bernoulli", num_samples=4)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])


def _iwae_gradient_draws(model, x, q, keys, num_samples):
    """Per-draw gradients ``[draws, P]`` of the batch-mean ``iwae_bound`` (float32, the library's code)
    w.r.t. every model parameter and q's per-example ``(mean, log_std)``."""
    def bound(params, key):
        keys_b = jax.random.split(key, x.shape[0])
        return jnp.mean(jax.vmap(lambda k, xb, m, s: iwae_bound(
            k, xb, lambda _: (m, s), params["model"].decode, likelihood=LIK, num_samples=num_samples))(
                keys_b, x, params["q"]["mean"], params["q"]["log_std"]))
    grads = jax.jit(jax.vmap(jax.grad(bound), in_axes=(None, 0)))({"model": model, "q": q}, keys)
    return np.concatenate([np.asarray(g, np.float64).reshape(len(keys), -1) for g in jax.tree.leaves(grads)], 1)


def _reference_iwae_gradient_draws(model, x, q, key, draws, num_samples):
    """The same ``[draws, P]`` gradients in float64 from closed forms only: ``log w = log p(x) + log p(z|x)
    - log q(z)`` with the exact ``log p(x)`` and posterior of the linear-Gaussian model and jax.scipy's
    densities (no ``vae_jax.objectives`` code)."""
    def bound(params, eps):                                      # eps [B, k, d]
        lg = params["model"]

        def one(xb, m, s, e):
            z = m[None] + jnp.exp(s)[None] * e
            post_mean, post_cov = lg.posterior(xb)
            log_ratio = jax.vmap(lambda zk: jax.scipy.stats.multivariate_normal.logpdf(zk, post_mean, post_cov)
                                 - jnp.sum(jax.scipy.stats.norm.logpdf(zk, m, jnp.exp(s))))(z)
            return lg.log_marginal(xb) + jax.scipy.special.logsumexp(log_ratio) - jnp.log(num_samples)
        return jnp.mean(jax.vmap(one)(x, params["q"]["mean"], params["q"]["log_std"], eps))

    with jax.enable_x64(True):
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), {"model": model, "q": q})
        eps = jax.random.normal(key, (draws, x.shape[0], num_samples, LATENT_DIM), jnp.float64)
        grads = jax.jit(jax.vmap(jax.grad(bound), in_axes=(None, 0)))(params, eps)
        return np.concatenate([np.asarray(g).reshape(draws, -1) for g in jax.tree.leaves(grads)], 1)


def test_k_sample_bound_gradient_matches_a_float64_closed_form_reference():
    # The gradient of iwae_bound for k = 5 (float32, 2000 draws) against an independent float64 reference
    # (30,000 draws of a bound written from the exact log p(x) and posterior): every parameter of the
    # model and of q within 5 standard errors; the exact ELBO gradient (k = 1) is > 20 away (power).
    model, k = _model(), 5
    x = _data(model)
    means, stds = zip(*[_proposal(model, xb, scale=1.2, shift=0.3)[1:] for xb in x])
    q = {"mean": jnp.stack(means), "log_std": jnp.stack(stds)}
    ours = _iwae_gradient_draws(model, x, q, jax.random.split(jax.random.key(11), 2000), k)
    reference = _reference_iwae_gradient_draws(model, x, q, jax.random.key(12), 30_000, k)
    stderr = np.sqrt(ours.var(0, ddof=1) / len(ours) + reference.var(0, ddof=1) / len(reference))
    z = np.abs(ours.mean(0) - reference.mean(0)) / stderr
    assert ours.shape[1] == 6 * 3 + 6 + 1 + 2 * 4 * 3 and z.max() < 5.0, (z.max(), z.argmax())
    elbo_gradient = _flat(jax.grad(lambda p: jnp.mean(jax.vmap(p["model"].elbo)(x, p["q"]["mean"], p["q"]["log_std"])))(
        {"model": model, "q": q}))
    assert np.max(np.abs(ours.mean(0) - elbo_gradient) / stderr) > 20.0
