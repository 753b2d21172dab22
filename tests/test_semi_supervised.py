"""Semi-supervised M2: the summed-out label against enumeration and a closed-form log p(x)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import conditional, data, networks, semi_supervised, training
from vae_jax.conditional import ConditionalLinearGaussian
from vae_jax.semi_supervised import M2, m2

D, d, K = 5, 2, 3


def test_unlabelled_bound_is_the_label_enumerated_sum():
    model = m2((4, 4, 1), num_classes=4, latent_dim=3, hidden_sizes=(8,), classifier_sizes=(8,))
    x = jax.random.uniform(jax.random.key(0), (4, 4, 1))
    params = model.init(jax.random.key(1), x)
    key = jax.random.key(2)
    objective = jax.jit(functools.partial(model.objective, params, key, num_samples=2))
    value, aux = objective((x, jnp.asarray(semi_supervised.UNLABELLED)))
    bound = jax.jit(lambda k, c: semi_supervised.labelled_bound(
        k, x, c, functools.partial(model.cvae.bind, params), num_classes=4, likelihood="bernoulli", num_samples=2)[0])
    bounds = np.array([float(bound(jax.random.fold_in(key, c), c)) for c in range(4)])
    logits = np.asarray(model.classify(params, x), np.float64)
    q = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    enumerated = np.sum(q * (bounds - np.log(q)))
    np.testing.assert_allclose(float(value), enumerated, rtol=1e-6)
    assert float(aux["labelled"]) == 0.0 and float(aux["classifier_log_prob"]) == 0.0
    # A labelled example: its class's bound plus alpha log q(y|x), the same draws.
    value, aux = jax.jit(functools.partial(objective, alpha=0.7))((x, jnp.asarray(2)))
    np.testing.assert_allclose(float(value), bounds[2] + 0.7 * np.log(q[2]), rtol=1e-6)
    np.testing.assert_allclose(float(aux["bound"]), bounds[2], rtol=1e-6)


def _exact_m2(classifier_noise):
    """M2 on a conditional linear-Gaussian model: exact q(z|x,y) and (noise 0) the exact q(y|x).

    The classes share the covariance S of p(x|y) = N(m_y, S), so p(y|x) is a softmax of
    m_y^T S^-1 x - m_y^T S^-1 m_y / 2: an affine classifier can be exact."""
    lg = ConditionalLinearGaussian.random(jax.random.key(0), D, d, K, learned_prior=False)
    cvae, params = lg.exact_model(num_classes=K, learned_prior=False)
    means, cov = jax.vmap(lambda c: lg.marginal(c))(jnp.eye(K))
    gain = jnp.linalg.solve(cov[0], means.T)                            # [D, K] = S^-1 m_y
    head = {"kernel": gain + classifier_noise * jax.random.normal(jax.random.key(1), gain.shape),
            "bias": -0.5 * jnp.sum(means.T * gain, axis=0)}
    model = M2(cvae, networks.MLPEncoder(K, (), stochastic=False))
    return lg, model, {**params, "classifier": {"head": head}}


@pytest.mark.parametrize("classifier_noise", [0.0, 0.5])
def test_unlabelled_bound_against_the_exact_log_p_x(classifier_noise):
    lg, model, params = _exact_m2(classifier_noise)
    xs = 2.0 * jax.random.normal(jax.random.key(2), (6, D))
    keys = jax.random.split(jax.random.key(3), 6)
    got = jax.jit(jax.vmap(lambda k, x: model.objective(params, k, (x, jnp.asarray(-1)), kl="monte_carlo")[0]))(
        keys, xs)
    log_joint = jax.vmap(lambda x: jax.vmap(lambda c: lg.log_marginal(x, c))(jnp.eye(K)))(xs) - np.log(K)
    log_p_x = jax.nn.logsumexp(log_joint, axis=1)
    log_q = jax.nn.log_softmax(jax.vmap(lambda x: model.classify(params, x))(xs))
    kl = jnp.sum(jnp.exp(log_q) * (log_q - (log_joint - log_p_x[:, None])), axis=1)  # KL(q(y|x) || p(y|x))
    # With q(z|x,y) exact, U(x) = log p(x) - KL(q(y|x) || p(y|x)): log p(x) itself for the exact classifier.
    np.testing.assert_allclose(got, log_p_x - kl, rtol=2e-6, atol=2e-4)
    if classifier_noise:
        assert float(jnp.max(kl)) > 0.1 and bool(jnp.all(got <= log_p_x + 1e-4))  # a visible gap, never above
    else:
        np.testing.assert_allclose(kl, 0.0, atol=1e-4)


def test_mixed_batches_train():
    split = data.load_digits()
    x = jnp.asarray(split.images[:256])
    y = jnp.asarray(np.where(np.arange(256) % 4 == 0, split.labels[:256], semi_supervised.UNLABELLED))
    model = m2((8, 8, 1), latent_dim=4, hidden_sizes=(32,), classifier_sizes=(32,))
    alpha = semi_supervised.paper_alpha(256, 64)
    state = training.create_train_state(model, jax.random.key(0), x[0], optax.adam(3e-3), alpha=alpha)
    step = training.make_train_step(model.objective)
    losses, labelled_log_q = [], []
    for i in range(60):
        rows = slice(64 * (i % 4), 64 * (i % 4 + 1))
        state, metrics = step(state, (x[rows], y[rows]), jax.random.key(i))
        losses.append(float(metrics["loss"]))
        labelled_log_q.append(float(metrics["classifier_log_prob"] / metrics["labelled"]))
    assert np.isfinite(losses).all() and np.mean(losses[-8:]) < np.mean(losses[:8]) - 5.0
    assert np.mean(labelled_log_q[-8:]) > np.mean(labelled_log_q[:8]) + 0.2  # the classifier learns


def test_bad_inputs_are_one_line_errors():
    model = m2((4, 4, 1), num_classes=3, latent_dim=2, hidden_sizes=(8,), classifier_sizes=(8,))
    x = jnp.full((4, 4, 1), 0.5)
    params = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"M2 needs labelled examples \(x, y\)"):
        model.objective(params, jax.random.key(1), x)
    for label in (3, -2):
        with pytest.raises(ValueError, match=rf"label {label} is outside \[-1, 3\)"):
            model.objective(params, jax.random.key(1), (x, jnp.asarray(label)))
    with pytest.raises(ValueError, match="num_classes and the N"):
        M2(conditional.conditional_vae((4, 4, 1), latent_dim=2, num_classes=3, learned_prior=True),
           networks.MLPEncoder(3, (), stochastic=False))
    with pytest.raises(ValueError, match="0 < num_labelled <= num_examples"):
        semi_supervised.paper_alpha(100, 0)


def test_evaluation_is_the_label_free_bound_and_the_classifier_error():
    model = m2((4, 4, 1), num_classes=3, latent_dim=2, hidden_sizes=(8,), classifier_sizes=(8,))
    xs = jax.random.uniform(jax.random.key(0), (6, 4, 4, 1))
    params = model.init(jax.random.key(1), xs[0])
    ys = jnp.array([0, 1, 2, 0, 1, 2])
    for i in range(6):
        key = jax.random.key(10 + i)
        value, aux = model.evaluation(params, key, (xs[i], ys[i]))
        hidden = model.objective(params, key, (xs[i], jnp.asarray(semi_supervised.UNLABELLED)))[0]
        log_q = jax.nn.log_softmax(model.classify(params, xs[i]))
        assert float(value) == float(aux["bound"]) == float(hidden)  # the label plays no part in the bound
        assert float(aux["error"]) == float(jnp.argmax(log_q) != ys[i])
        np.testing.assert_allclose(aux["classifier_log_prob"], log_q[ys[i]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"label -1 is outside \[0, 3\)"):
        model.evaluation(params, jax.random.key(1), (xs[0], jnp.asarray(-1)))
