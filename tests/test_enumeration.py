"""Exact enumeration against a brute-force float64 numpy sum and finite differences."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import models
from vae_jax import enumeration as EN


def _model(num_categories=None, latent_dim=5, hidden=()):
    return models.DiscreteVAE((3, 2, 1), latent_dim, hidden_sizes=hidden, activation="tanh",
                          num_categories=num_categories)


def _params(model, seed=0):
    x = jax.random.bernoulli(jax.random.key(seed + 100), 0.4, model.input_shape).astype(jnp.float32)
    params = model.init(jax.random.key(seed), x)
    # Non-zero prior logits and larger encoder weights, so every term matters.
    params["decoder"]["prior_logits"] = 0.7 * jax.random.normal(jax.random.key(seed + 1), model.latent_shape)
    params["encoder"] = jax.tree.map(lambda w: 1.5 * w + 0.1, params["encoder"])
    return params, x


def _np_forward(layers, h):
    for i, layer in enumerate(layers):
        h = h @ np.asarray(layer["w"], np.float64) + np.asarray(layer["b"], np.float64)
        if i < len(layers) - 1:
            h = np.tanh(h)
    return h


def _np_log_softplus(a):
    return np.logaddexp(0.0, a)


def _np_terms(model, params, x):
    """(q, log p(x, b), log q(b)) for every configuration, float64 numpy, independent of the JAX code."""
    xf = np.asarray(x, np.float64).ravel()
    logits = _np_forward(params["encoder"], xf).reshape(model.latent_shape)
    prior = np.asarray(params["decoder"]["prior_logits"], np.float64)
    if model.num_categories is None:
        configs = [np.array(c, np.float64) for c in itertools.product([0, 1], repeat=model.latent_dim)]

        def log_pmf(a, b):
            return float(np.sum(b * a - _np_log_softplus(a)))
    else:
        eye = np.eye(model.num_categories)
        configs = [eye[list(c)] for c in itertools.product(range(model.num_categories), repeat=model.latent_dim)]

        def log_pmf(a, b):
            return float(np.sum(b * (a - np.log(np.sum(np.exp(a), -1, keepdims=True)))))
    log_q = np.array([log_pmf(logits, b) for b in configs])
    log_px_b = np.array([np.sum(xf * (z := _np_forward(params["decoder"]["layers"], b.ravel()))
                                - _np_log_softplus(z)) for b in configs])
    log_p = np.array([log_pmf(prior, b) for b in configs]) + log_px_b
    return log_q, log_p


def _np_elbo(model, params, x):
    log_q, log_p = _np_terms(model, params, x)
    return float(np.sum(np.exp(log_q) * (log_p - log_q)))


def _jax_fns(model, params, x):
    return dict(encode=lambda v: model.encode(params, v), decode=lambda b: model.decode(params, b),
                prior_logits=model.prior_logits(params), latent=model.latent)


def test_configurations_are_every_distinct_state():
    b = EN.configurations((4,))
    assert b.shape == (16, 4) and len({tuple(r) for r in np.asarray(b).tolist()}) == 16
    c = EN.configurations((2, 3), latent="categorical")
    assert c.shape == (9, 2, 3)
    np.testing.assert_array_equal(np.asarray(c).sum(-1), 1.0)
    assert len({tuple(np.asarray(r).ravel()) for r in c}) == 9
    with pytest.raises(ValueError, match="too many"):
        EN.configurations((21,))
    with pytest.raises(ValueError, match="latent"):
        EN.configurations((2, 3), latent="bernoulli")


@pytest.mark.parametrize("num_categories,latent_dim", [(None, 5), (3, 2)], ids=["bernoulli", "categorical"])
def test_exact_elbo_and_log_marginal_match_numpy_float64(num_categories, latent_dim):
    model = _model(num_categories, latent_dim, hidden=(4,))
    params, x = _params(model)
    log_q, log_p = _np_terms(model, params, x)
    np.testing.assert_allclose(np.exp(log_q).sum(), 1.0, rtol=1e-9)  # the numpy reference sums a distribution
    fns = _jax_fns(model, params, x)
    np.testing.assert_allclose(EN.exact_elbo(x, **fns), _np_elbo(model, params, x), rtol=1e-5)
    log_px = np.logaddexp.reduce(log_p)
    np.testing.assert_allclose(EN.exact_log_marginal(x, fns["decode"], prior_logits=fns["prior_logits"],
                                                     latent=model.latent), log_px, rtol=1e-5)
    # The gap log p(x) - ELBO is KL(q || posterior) > 0.
    assert log_px - _np_elbo(model, params, x) > 1e-3


def test_exact_iwae_matches_numpy_and_is_monotone_in_k():
    model = _model(None, 4)
    params, x = _params(model, seed=3)
    fns = _jax_fns(model, params, x)
    log_q, log_p = _np_terms(model, params, x)
    log_w = log_p - log_q
    k2 = sum(np.exp(log_q[i] + log_q[j]) * (np.logaddexp(log_w[i], log_w[j]) - math.log(2))
             for i in range(16) for j in range(16))
    bounds = [float(EN.exact_iwae(x, **fns, num_samples=k)) for k in (1, 2, 3)]
    np.testing.assert_allclose(bounds[0], _np_elbo(model, params, x), rtol=1e-5)
    np.testing.assert_allclose(bounds[1], k2, rtol=1e-5)
    log_px = np.logaddexp.reduce(log_p)
    assert bounds[0] < bounds[1] < bounds[2] < log_px
    with pytest.raises(ValueError, match="too many"):
        EN.exact_iwae(x, **fns, num_samples=6)
    with pytest.raises(ValueError, match="positive int"):
        EN.exact_iwae(x, **fns, num_samples=0)


def test_exact_gradient_matches_float64_finite_differences():
    model = _model(None, 4, hidden=(3,))
    params, x = _params(model, seed=5)

    def elbo(p):
        return EN.exact_elbo(x, **_jax_fns(model, p, x))

    grad = jax.grad(elbo)(params)
    eps = 1e-5
    # Every parameter of the encoder's first layer, a decoder weight and each prior logit.
    for path, shape in [(("encoder", 0, "w"), (6, 3)), (("decoder", "layers", 1, "w"), (3, 6)),
                        (("decoder", "prior_logits"), (4,))]:
        for index in itertools.islice(np.ndindex(*shape), 0, None, 3):
            def at(delta):
                leaf = params
                for p in path:
                    leaf = leaf[p]
                tweaked = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
                target = tweaked
                for p in path[:-1]:
                    target = target[p]
                target[path[-1]] = np.array(leaf, np.float64)
                target[path[-1]][index] += delta
                return _np_elbo(model, tweaked, x)

            numeric = (at(eps) - at(-eps)) / (2 * eps)
            analytic = grad
            for p in path:
                analytic = analytic[p]
            np.testing.assert_allclose(float(analytic[index]), numeric, rtol=2e-3, atol=2e-4)


def test_exact_elbo_is_jittable_and_rejects_bad_shapes():
    model = _model(None, 3)
    params, x = _params(model)
    fns = _jax_fns(model, params, x)
    np.testing.assert_allclose(jax.jit(lambda v: EN.exact_elbo(v, **fns))(x), EN.exact_elbo(x, **fns), rtol=1e-6)
    with pytest.raises(ValueError, match="prior_logits"):
        EN.exact_elbo(x, **{**fns, "prior_logits": jnp.zeros(4)})
