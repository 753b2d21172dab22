"""Training and evaluation over labelled pairs ``(x, y)``: the same step, epoch scan, fit and evaluate."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import conditional, data, evaluation, semi_supervised, training
from vae_jax.conditional import ConditionalLinearGaussian, conditional_vae


@pytest.fixture(scope="module")
def digits():
    split = data.load_digits()
    return jnp.asarray(split.images[:200]), jnp.asarray(split.labels[:200])


def test_fit_over_pairs_equals_a_hand_written_loop_over_the_same_batches(digits):
    x, y = digits
    model = conditional_vae((8, 8, 1), latent_dim=3, num_classes=10, hidden_sizes=(16,), learned_prior=True)
    tx = optax.adam(3e-3)
    state = training.create_train_state(model, jax.random.key(0), x[0], tx, beta=0.5)
    params0 = jax.tree.map(jnp.copy, state.params)  # fit donates the state
    fitted = training.fit(training.make_train_step(model.objective, dynamic_binarization=True), state, (x, y),
                          jax.random.key(1), epochs=2, batch_size=50, progress=False)

    # The same schedule by hand: epoch e shuffles with fold_in(key, e); each step binarises x (not y)
    # and draws one key per example; an eager Adam update per batch.
    def loss(params, key, xb, yb):
        key_data, key_obj = jax.random.split(key)
        xb = jax.random.bernoulli(key_data, xb).astype(jnp.float32)
        keys = jax.random.split(key_obj, xb.shape[0])
        values = jax.vmap(lambda k, xi, yi: model.objective(params, k, (xi, yi), beta=0.5)[0])(keys, xb, yb)
        return -jnp.mean(values)

    params, opt_state, epoch_losses = params0, tx.init(params0), []
    grad = jax.jit(jax.value_and_grad(loss))
    for epoch in range(2):
        key_perm, key_steps = jax.random.split(jax.random.fold_in(jax.random.key(1), epoch))
        order = np.asarray(jax.random.permutation(key_perm, 200))[:200].reshape(4, 50)
        losses = []
        for index, key in zip(order, jax.random.split(key_steps, 4)):
            value, grads = grad(params, key, x[index], y[index])
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            losses.append(float(value))
        epoch_losses.append(np.mean(losses))
    for a, b in zip(jax.tree.leaves(fitted.state.params), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose([r["train_loss"] for r in fitted.history], epoch_losses, rtol=1e-5)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params0)))
    assert moved > 1e-2  # eight Adam steps of 3e-3 moved the parameters: the comparison has teeth


def test_m2_step_loss_is_the_weighted_batch_means_by_hand(digits):
    x, labels = digits
    y = np.where(np.arange(12) % 3 == 0, np.asarray(labels[:12]), semi_supervised.UNLABELLED).astype(np.int32)
    pairs, pair_labels = semi_supervised.paired_examples(np.asarray(x[:12]), y, seed=0)  # 8 pairs, 4 labelled
    model = semi_supervised.m2((8, 8, 1), latent_dim=2, hidden_sizes=(16,), classifier_sizes=(16,))
    alpha, share = 2.5, 0.2
    state = training.create_train_state(model, jax.random.key(0), pairs[0, 0], optax.adam(1e-3), alpha=alpha,
                                        labelled_share=share)
    params = jax.tree.map(jnp.copy, state.params)  # the step donates the state
    _, metrics = training.make_train_step(model.objective)(state, (pairs, pair_labels), jax.random.key(3))

    # By hand, from the per-class ELBOs and the classifier (float64): s times the labelled batch mean of
    # L(x_l, y) + alpha log q(y|x_l) plus 1 - s times the unlabelled one of U(x_u); keys as the step draws them.
    keys = jax.random.split(jax.random.split(jax.random.key(3))[1], 8)
    labelled, unlabelled = [], []
    for i in range(8):
        key_u, key_l = jax.random.split(keys[i])
        u_bounds = np.asarray(model.bounds(params, key_u, pairs[i, 0]), np.float64)
        l_bound = float(semi_supervised.labelled_bound(key_l, pairs[i, 1], pair_labels[i],
                                                       lambda c: model.cvae.bind(params, c), num_classes=10,
                                                       likelihood="bernoulli")[0])
        log_q = [np.asarray(jax.nn.log_softmax(model.classify(params, pairs[i, j])), np.float64) for j in (0, 1)]
        unlabelled.append(np.sum(np.exp(log_q[0]) * (u_bounds - log_q[0])))
        labelled.append(l_bound + alpha * log_q[1][pair_labels[i]])
    np.testing.assert_allclose(float(metrics["loss"]), -(share * np.mean(labelled) + (1 - share) * np.mean(unlabelled)),
                               rtol=1e-5)


def test_evaluate_and_log_marginal_over_pairs_give_the_closed_form_with_a_padded_last_batch():
    lg = ConditionalLinearGaussian.random(jax.random.key(0), 5, 2, 3)
    model, params = lg.exact_model(num_classes=3)
    xs = 2.0 * jax.random.normal(jax.random.key(2), (7, 5))
    ys = jnp.array([0, 1, 2, 1, 0, 2, 2])
    truth = jax.vmap(lambda x, y: lg.log_marginal(x, conditional.condition(y, num_classes=3)))(xs, ys)
    # The exact posterior makes every draw's ELBO log p(x|y): 7 examples in batches of 3 (two padded rows).
    out = evaluation.evaluate(model.objective, params, (xs, ys), jax.random.key(4), batch_size=3)
    assert out["elbo"] == pytest.approx(float(jnp.mean(truth)), rel=2e-6)
    estimate = evaluation.log_marginal(model, params, (np.asarray(xs), np.asarray(ys)), jax.random.key(5),
                                       num_samples=4, chunk_size=2, batch_size=3, progress=False)
    np.testing.assert_allclose(estimate.values, truth, rtol=2e-6)
    # The label is used: shifted labels give another number.
    other = evaluation.evaluate(model.objective, params, (xs, (ys + 1) % 3), jax.random.key(4), batch_size=3)
    assert abs(other["elbo"] - out["elbo"]) > 0.1


def test_pairs_whose_arrays_differ_in_length_are_one_line_errors(digits):
    x, y = digits
    model = conditional_vae((8, 8, 1), latent_dim=2, num_classes=10, hidden_sizes=(8,))
    state = training.create_train_state(model, jax.random.key(0), x[0], optax.adam(1e-3))
    step = training.make_train_step(model.objective)
    with pytest.raises(ValueError, match="must share their first axis N"):
        training.fit(step, state, (x, y[:100]), jax.random.key(1), epochs=1, batch_size=50, progress=False)
    with pytest.raises(ValueError, match="must share their first axis N"):
        evaluation.evaluate(model.objective, state.params, (x, y[:100]), jax.random.key(1))
    with pytest.raises(ValueError, match="larger than the dataset"):
        training.fit(step, state, (x[:20], y[:20]), jax.random.key(1), epochs=1, batch_size=50, progress=False)
