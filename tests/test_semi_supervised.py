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


def _small_m2():
    model = m2((4, 4, 1), num_classes=4, latent_dim=3, hidden_sizes=(8,), classifier_sizes=(8,))
    xs = jax.random.uniform(jax.random.key(0), (2, 4, 4, 1))
    return model, model.init(jax.random.key(1), xs[0]), xs


def _enumerated(model, params, key, x, y=None, alpha=0.0):
    """float64 by hand: U(x) = sum_c q(c|x) (L(x, c) - log q(c|x)), class c's ELBO with fold_in(key, c), or
    L(x, y) + alpha log q(y|x) with the key itself; every L from labelled_bound."""
    bound = jax.jit(lambda k, c: semi_supervised.labelled_bound(
        k, x, c, functools.partial(model.cvae.bind, params), num_classes=4, likelihood="bernoulli", num_samples=2)[0])
    logits = np.asarray(model.classify(params, x), np.float64)
    log_q = logits - logits.max() - np.log(np.sum(np.exp(logits - logits.max())))
    if y is not None:
        return float(bound(key, y)) + alpha * log_q[y]
    bounds = np.array([float(bound(jax.random.fold_in(key, c), c)) for c in range(4)])
    return np.sum(np.exp(log_q) * (bounds - log_q))


@pytest.mark.parametrize("alpha, share", [(0.7, 0.3), (2.0, 1.0), (5.0, 0.0)])
def test_objective_is_the_weighted_labelled_and_label_enumerated_bounds(alpha, share):
    model, params, xs = _small_m2()
    key = jax.random.key(2)
    value, aux = jax.jit(functools.partial(model.objective, params, key, num_samples=2, alpha=alpha,
                                           labelled_share=share))((xs, jnp.asarray(2)))
    key_u, key_l = jax.random.split(key)
    unlabelled, labelled = _enumerated(model, params, key_u, xs[0]), _enumerated(model, params, key_l, xs[1], 2, alpha)
    np.testing.assert_allclose(float(value), share * labelled + (1 - share) * unlabelled, rtol=1e-6)
    np.testing.assert_allclose(float(aux["unlabelled_bound"]), unlabelled, rtol=1e-6)
    log_q = jax.nn.log_softmax(model.classify(params, xs[1]))[2]
    np.testing.assert_allclose(float(aux["labelled_bound"]), labelled - alpha * float(log_q), rtol=1e-6)
    np.testing.assert_allclose(float(aux["classifier_log_prob"]), float(log_q), rtol=1e-6)


def test_the_labelled_term_alone_trains_the_classifier_by_alpha_times_its_log_likelihood():
    model, params, xs = _small_m2()
    grad = jax.grad(lambda p: model.objective(p, jax.random.key(3), (xs, jnp.asarray(1)), alpha=3.0,
                                              labelled_share=1.0)[0])(params)
    direct = jax.grad(lambda c: jax.nn.log_softmax(model.classify({"classifier": c}, xs[1]))[1])(params["classifier"])
    for a, b in zip(jax.tree.leaves(grad["classifier"]), jax.tree.leaves(direct)):
        np.testing.assert_allclose(a, 3.0 * b, rtol=1e-5, atol=1e-7)
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(direct)) > 1e-3  # a gradient with teeth
    # With the unlabelled share, the first image's U(x) moves the classifier too.
    mixed = jax.grad(lambda p: model.objective(p, jax.random.key(3), (xs, jnp.asarray(1)), alpha=3.0,
                                               labelled_share=0.5)[0])(params)
    assert not np.allclose(jax.tree.leaves(mixed["classifier"])[0], 1.5 * jax.tree.leaves(direct)[0], atol=1e-6)


def test_paired_examples_cycle_the_labelled_set_against_the_unlabelled_images():
    x = np.arange(23, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # image i is all i
    y = np.full(23, semi_supervised.UNLABELLED, np.int32)
    labelled = np.array([2, 5, 11, 17, 20])
    y[labelled] = [0, 1, 2, 0, 1]
    pairs, labels = semi_supervised.paired_examples(x, y, seed=4)
    assert pairs.shape == (18, 2, 3) and labels.dtype == np.int32
    unlabelled_ids, labelled_ids = pairs[:, 0, 0].astype(int), pairs[:, 1, 0].astype(int)
    assert sorted(unlabelled_ids) == sorted(set(range(23)) - set(labelled))  # each unlabelled image once
    counts = np.bincount(labelled_ids, minlength=23)[labelled]
    assert counts.sum() == 18 and set(counts) == {3, 4}  # every labelled one, 18 / 5 rounded down or up
    np.testing.assert_array_equal(labels, y[labelled_ids])  # each labelled image with its own label
    again, other = (semi_supervised.paired_examples(x, y, seed=s)[0] for s in (4, 5))
    assert np.array_equal(again, pairs) and not np.array_equal(other, pairs)
    # More labelled than unlabelled: the unlabelled images are cycled instead, every labelled one once.
    few = semi_supervised.paired_examples(x[:6], np.array([0, 1, -1, 2, 0, -1], np.int32), seed=0)[0]
    assert sorted(few[:, 1, 0].astype(int)) == [0, 1, 3, 4] and sorted(few[:, 0, 0].astype(int)) == [2, 2, 5, 5]


def test_paired_training_resumes_bitwise_and_each_epoch_pairs_anew():
    split = data.load_digits()
    x, y = split.images[:96], np.where(np.arange(96) % 6 == 0, split.labels[:96], -1).astype(np.int32)
    pairs = semi_supervised.paired_examples(x, y, seed=0)
    model = m2((8, 8, 1), latent_dim=2, hidden_sizes=(8,), classifier_sizes=(8,))
    step = training.make_train_step(model.objective)

    def state():
        return training.create_train_state(model, jax.random.key(0), x[0], optax.adam(1e-3), alpha=2.0,
                                           labelled_share=0.25)

    straight = training.fit(step, state(), pairs, jax.random.key(1), epochs=2, batch_size=16, progress=False)
    first = training.fit(step, state(), pairs, jax.random.key(1), epochs=1, batch_size=16, progress=False)
    resumed = training.fit(step, first.state, pairs, jax.random.key(1), epochs=2, batch_size=16,
                           history=first.history, progress=False)
    for a, b in zip(jax.tree.leaves(straight.state.params), jax.tree.leaves(resumed.state.params)):
        np.testing.assert_array_equal(a, b)
    assert straight.history == resumed.history and straight.history[0] != straight.history[1]


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
    got = jax.jit(jax.vmap(lambda k, x: semi_supervised.unlabelled_bound(
        model.bounds(params, k, x, kl="monte_carlo"), model.classify(params, x))))(keys, xs)
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


def test_paired_batches_train():
    split = data.load_digits()
    y = np.where(np.arange(256) % 8 == 0, split.labels[:256], semi_supervised.UNLABELLED).astype(np.int32)
    pairs, labels = semi_supervised.paired_examples(split.images[:256], y, seed=0)
    model = m2((8, 8, 1), latent_dim=4, hidden_sizes=(32,), classifier_sizes=(32,))
    state = training.create_train_state(model, jax.random.key(0), pairs[0, 0], optax.adam(3e-3),
                                        alpha=semi_supervised.paper_alpha(256, 32), labelled_share=0.5)
    step = training.make_train_step(model.objective)
    bounds, log_q = [], []
    for i in range(56):
        rows = slice(32 * (i % 7), 32 * (i % 7 + 1))
        state, metrics = step(state, (pairs[rows], labels[rows]), jax.random.key(i))
        bounds.append(float(metrics["unlabelled_bound"]))
        log_q.append(float(metrics["classifier_log_prob"]))
    assert np.isfinite(bounds).all() and np.mean(bounds[-7:]) > np.mean(bounds[:7]) + 5.0
    assert np.mean(log_q[-7:]) > np.mean(log_q[:7]) + 0.5  # the classifier learns its labels


def test_bad_inputs_are_one_line_errors():
    model = m2((4, 4, 1), num_classes=3, latent_dim=2, hidden_sizes=(8,), classifier_sizes=(8,))
    x = jnp.full((2, 4, 4, 1), 0.5)
    params = model.init(jax.random.key(0), x[0])
    objective = functools.partial(model.objective, params, jax.random.key(1), alpha=1.0, labelled_share=0.5)
    with pytest.raises(ValueError, match=r"M2 needs labelled examples \(x, y\)"):
        objective(x)
    with pytest.raises(ValueError, match=r"an unlabelled and a labelled image of shape \(4, 4, 1\).*got x of shape "
                                         r"\(4, 4, 1\)"):
        objective((x[0], jnp.asarray(0)))
    for label in (3, -1):
        with pytest.raises(ValueError, match=rf"label {label} is outside \[0, 3\)"):
            objective((x, jnp.asarray(label)))
    with pytest.raises(ValueError, match="num_classes and the N"):
        M2(conditional.conditional_vae((4, 4, 1), latent_dim=2, num_classes=3, learned_prior=True),
           networks.MLPEncoder(3, (), stochastic=False))
    for n in (0, 101):
        with pytest.raises(ValueError, match="0 < num_labelled <= num_examples"):
            semi_supervised.paper_share(100, n)
    with pytest.raises(ValueError, match="needs labelled and unlabelled examples .* got 0 labelled and 3"):
        semi_supervised.paired_examples(np.zeros((3, 2)), np.full(3, -1), seed=0)
    with pytest.raises(ValueError, match="same length; got 3 and 2"):
        semi_supervised.paired_examples(np.zeros((3, 2)), np.zeros(2, int), seed=0)


def test_evaluation_is_the_label_free_bound_and_the_classifier_error():
    model = m2((4, 4, 1), num_classes=3, latent_dim=2, hidden_sizes=(8,), classifier_sizes=(8,))
    xs = jax.random.uniform(jax.random.key(0), (6, 4, 4, 1))
    params = model.init(jax.random.key(1), xs[0])
    ys = jnp.array([0, 1, 2, 0, 1, 2])
    for i in range(6):
        key = jax.random.key(10 + i)
        value, aux = model.evaluation(params, key, (xs[i], ys[i]))
        hidden = semi_supervised.unlabelled_bound(model.bounds(params, key, xs[i]), model.classify(params, xs[i]))
        log_q = jax.nn.log_softmax(model.classify(params, xs[i]))
        assert float(value) == float(aux["bound"]) == float(hidden)  # the label plays no part in the bound
        assert float(aux["error"]) == float(jnp.argmax(log_q) != ys[i])
        np.testing.assert_allclose(aux["classifier_log_prob"], log_q[ys[i]], rtol=1e-6)
    with pytest.raises(ValueError, match=r"label -1 is outside \[0, 3\)"):
        model.evaluation(params, jax.random.key(1), (xs[0], jnp.asarray(-1)))
