"""Discrete latent distributions and the sigmoid-belief-net VAEs, against numpy references."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import discrete, models
from vae_jax import enumeration as EN
from vae_jax import estimators

N = 40000  # draws in the frequency tests: a probability's standard error is at most 0.0025


def test_log_prob_kl_entropy_match_numpy():
    a = np.array([-30.0, -1.2, 0.0, 0.4, 25.0], np.float32)
    p = np.array([0.5, -2.0, 1.0, 0.0, 3.0], np.float32)
    b = np.array([1.0, 0.0, 1.0, 1.0, 0.0], np.float32)
    q1 = 1 / (1 + np.exp(-a.astype(np.float64)))
    ref = np.sum(np.where(b == 1, np.log(q1), np.log1p(-q1)))
    np.testing.assert_allclose(discrete.log_prob(jnp.asarray(a), jnp.asarray(b)), ref, rtol=1e-6)
    p1 = 1 / (1 + np.exp(-p.astype(np.float64)))
    kl = np.sum(q1 * np.log(q1 / p1) + (1 - q1) * (np.log1p(-q1) - np.log1p(-p1)))
    np.testing.assert_allclose(discrete.kl(jnp.asarray(a), jnp.asarray(p)), kl, rtol=1e-5)
    ent = -np.sum(q1 * np.log(q1) + (1 - q1) * np.log1p(-q1))
    np.testing.assert_allclose(discrete.entropy(jnp.asarray(a)), ent, rtol=1e-5, atol=1e-6)
    # Categorical: two groups of three.
    ac = np.array([[0.1, -1.0, 2.0], [0.0, 0.0, 3.0]])
    pc = np.array([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.5]])
    onehot = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    lq, lp = (v - np.log(np.exp(v).sum(-1, keepdims=True)) for v in (ac, pc))
    np.testing.assert_allclose(discrete.log_prob(jnp.asarray(ac), jnp.asarray(onehot), latent="categorical"),
                               np.sum(onehot * lq), rtol=1e-6)
    np.testing.assert_allclose(discrete.kl(jnp.asarray(ac), jnp.asarray(pc), latent="categorical"),
                               np.sum(np.exp(lq) * (lq - lp)), rtol=1e-5)
    np.testing.assert_allclose(discrete.entropy(jnp.asarray(ac), latent="categorical"), -np.sum(np.exp(lq) * lq),
                               rtol=1e-5)
    np.testing.assert_allclose(discrete.score(jnp.asarray(ac), jnp.asarray(onehot), latent="categorical"),
                               onehot - np.exp(lq), rtol=1e-5, atol=1e-7)


def test_score_is_the_gradient_of_log_prob():
    a, b = jnp.array([0.3, -2.0, 1.0]), jnp.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(jax.grad(discrete.log_prob)(a, b), discrete.score(a, b), rtol=1e-6)


def test_samples_have_the_right_frequencies():
    a = jnp.array([-2.0, 0.0, 1.5])
    b = discrete.sample(jax.random.key(0), a, num_samples=N)
    freq, prob = np.asarray(b.mean(0)), np.asarray(jax.nn.sigmoid(a))
    assert b.shape == (N, 3) and set(np.unique(np.asarray(b))) <= {0.0, 1.0}
    assert np.all(np.abs(freq - prob) < 5 * np.sqrt(prob * (1 - prob) / N))
    ac = jnp.array([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]])
    c = discrete.sample(jax.random.key(1), ac, latent="categorical", num_samples=N)
    assert c.shape == (N, 2, 3)
    np.testing.assert_array_equal(np.asarray(c.sum(-1)), 1.0)
    freq, prob = np.asarray(c.mean(0)), np.asarray(jax.nn.softmax(ac, -1))
    assert np.all(np.abs(freq - prob) < 5 * np.sqrt(prob * (1 - prob) / N))


@pytest.mark.parametrize("latent,logits", [("bernoulli", [0.5, -1.0]), ("categorical", [[0.5, -1.0, 0.2]])])
def test_relaxed_sample_tends_to_the_exact_sample(latent, logits):
    logits = jnp.asarray(logits)
    key = jax.random.key(2)
    soft_hot, b = discrete.relaxed_sample(key, logits, temperature=2.0, latent=latent, num_samples=200)
    soft_cold, b2 = discrete.relaxed_sample(key, logits, temperature=1e-3, latent=latent, num_samples=200)
    np.testing.assert_array_equal(b, b2)
    np.testing.assert_array_equal(b, discrete.sample(key, logits, latent=latent, num_samples=200))
    assert float(jnp.mean(jnp.abs(soft_cold - b))) < 1e-2 < float(jnp.mean(jnp.abs(soft_hot - b)))
    assert float(jnp.min(soft_hot)) > 0 and float(jnp.max(soft_hot)) < 1


def test_relaxed_bernoulli_is_a_binary_concrete():
    # P(soft > 1/2) = P(b = 1) = sigmoid(a), and the median of the logit of soft is a / t.
    a, t = 0.8, 0.5
    soft, _ = discrete.relaxed_sample(jax.random.key(3), jnp.array([a]), temperature=t, num_samples=N)
    soft = np.asarray(soft[:, 0], np.float64)
    p = 1 / (1 + math.exp(-a))
    assert abs(np.mean(soft > 0.5) - p) < 5 * math.sqrt(p * (1 - p) / N)
    logit = np.log(soft[(soft > 0) & (soft < 1)]) - np.log1p(-soft[(soft > 0) & (soft < 1)])
    # The sample median of the logistic (density 1/4 at 0) has standard error 1 / (2 (1/4) sqrt N), over t.
    assert abs(np.median(logit) - a / t) < 5 * 2 / math.sqrt(N) / t


@pytest.mark.parametrize("hidden,num_categories", [((7, 5), None), ((6,), 4)])
def test_model_shapes_and_log_weights(hidden, num_categories):
    model = models.DiscreteVAE((4, 4, 1), 3, hidden_sizes=hidden, num_categories=num_categories)
    x = jnp.round(jax.random.uniform(jax.random.key(0), (4, 4, 1)))
    params = model.init(jax.random.key(1), x)
    logits = model.encode(params, x)
    assert logits.shape == model.latent_shape
    b = discrete.sample(jax.random.key(2), logits, latent=model.latent, num_samples=5)
    assert model.decode(params, b[0]).shape == (4, 4, 1)
    log_w = model.log_weights(params, x, b[:2])
    ref = [discrete.log_joint(x, bi, lambda v: model.decode(params, v), model.prior_logits(params), latent=model.latent)
           - discrete.log_prob(logits, bi, latent=model.latent) for bi in b[:2]]
    np.testing.assert_allclose(log_w, np.array(ref), rtol=1e-5)
    value, aux = jax.jit(model.objective, static_argnames="num_samples")(params, jax.random.key(3), x,
                                                                        num_samples=4)
    assert np.isfinite(float(value)) and float(aux["kl"]) >= 0
    iwae = jax.jit(estimators.make_estimator("vimco", model, num_samples=4))(params, jax.random.key(3), x)[0]
    assert float(iwae) >= float(value) - 1e-4  # same key, same draws: log mean w >= mean log w
    assert model.sample(params, jax.random.key(4), 6).shape == (6, 4, 4, 1)


@pytest.mark.parametrize("num_categories", [None, 3])
def test_bind_code_and_log_marginal(num_categories):
    model = models.DiscreteVAE((3, 4, 1), 3, hidden_sizes=(5,), num_categories=num_categories)
    x = jnp.round(jax.random.uniform(jax.random.key(0), (3, 4, 1)))
    params = model.init(jax.random.key(1), x)
    params["decoder"]["prior_logits"] = jax.random.normal(jax.random.key(2), model.latent_shape)
    encode, decode, prior_logits = model.bind(params)
    np.testing.assert_array_equal(encode(x), model.encode(params, x))
    np.testing.assert_array_equal(prior_logits, model.prior_logits(params))
    # The mode of a factorised q: every unit / group at its most probable value.
    code = model.code(params, x)
    logits = model.encode(params, x)
    others = discrete.sample(jax.random.key(3), logits, latent=model.latent, num_samples=200)
    lq = jax.vmap(lambda b: discrete.log_prob(logits, b, latent=model.latent))(others)
    assert float(discrete.log_prob(logits, code, latent=model.latent)) >= float(jnp.max(lq))
    np.testing.assert_allclose(model.reconstruct(params, x), jax.nn.sigmoid(decode(code)), rtol=1e-6)
    # 20,000 importance samples of 3 latents (8 or 27 configurations): within 0.03 nats of the exact sum.
    exact = EN.exact_log_marginal(x, decode, prior_logits=prior_logits, latent=model.latent)
    estimate = jax.jit(functools.partial(model.log_marginal, num_samples=20000, chunk_size=3000))(
        params, jax.random.key(4), x)
    assert abs(float(estimate) - float(exact)) < 0.03
    elbo = EN.exact_elbo(x, encode, decode, prior_logits=prior_logits, latent=model.latent)
    assert float(exact) > float(elbo) + 0.05  # the test has power: the ELBO is further off
    with pytest.raises(ValueError, match="chunk_size"):
        model.log_marginal(params, jax.random.key(4), x, chunk_size=0)


def test_disarm_paper_models():
    lin, non = models.linear_sbn((28, 28, 1)), models.nonlinear_sbn((28, 28, 1))
    params = non.init(jax.random.key(0), jnp.zeros((28, 28, 1)))
    shapes = [layer["w"].shape for layer in params["encoder"]]
    assert shapes == [(784, 200), (200, 200), (200, 200)] and non.hidden_sizes == (200, 200)
    assert [layer["w"].shape for layer in lin.init(jax.random.key(0), jnp.zeros((28, 28, 1)))["encoder"]] \
        == [(784, 200)]
    assert lin.latent_dim == 200 and lin.likelihood == "bernoulli" and lin.latent == "bernoulli"


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="Unknown latent"):
        discrete.log_prob(jnp.zeros(2), jnp.zeros(2), latent="gaussian")
    with pytest.raises(ValueError, match="num_categories"):
        models.DiscreteVAE((2,), 3, num_categories=1)
    with pytest.raises(ValueError, match="activation"):
        models.DiscreteVAE((2,), 3, activation="swish")
    with pytest.raises(ValueError, match="latent_dim"):
        models.DiscreteVAE((2,), 0)
    with pytest.raises(ValueError, match="expects"):
        models.DiscreteVAE((2,), 3).init(jax.random.key(0), jnp.zeros(3))
    with pytest.raises(ValueError, match="logits of shape"):
        discrete.check_logits(jnp.zeros((2, 2)), "bernoulli")
