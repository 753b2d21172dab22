"""Conditional VAE: the library's bounds against a conditional linear-Gaussian model in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import conditional, data, training
from vae_jax.conditional import ConditionalLinearGaussian, conditional_vae

D, d, K = 5, 2, 3


def _labels(num_classes):
    """Five labels: ints, or random arrays of length K (the same affine truth conditions on either)."""
    if num_classes:
        return jnp.array([0, 1, 2, 1, 0])
    return jax.random.normal(jax.random.key(7), (5, K))


@pytest.mark.parametrize("num_classes", [K, None])
@pytest.mark.parametrize("learned_prior", [True, False])
def test_exact_posterior_makes_every_bound_log_p_x_given_y(num_classes, learned_prior):
    # With q(z|x,y) the exact posterior every importance weight is log p(x|y): the ELBO (Monte-Carlo
    # KL), the IWAE bound and log_marginal equal the closed form for any draw.
    lg = ConditionalLinearGaussian.random(jax.random.key(0), D, d, K, learned_prior=learned_prior)
    model, params = lg.exact_model(num_classes=num_classes, learned_prior=learned_prior)
    assert jax.tree.structure(params) == jax.tree.structure(model.init(jax.random.key(1), jnp.zeros(D)))
    xs, ys = 2.0 * jax.random.normal(jax.random.key(2), (5, D)), _labels(num_classes)
    keys = jax.random.split(jax.random.key(3), 5)
    truth = jax.vmap(lambda x, y: lg.log_marginal(x, conditional.condition(y, num_classes=num_classes)))(xs, ys)

    @jax.jit
    @jax.vmap
    def bounds(k, x, y):
        return (model.objective(params, k, (x, y), kl="monte_carlo", num_samples=2)[0],
                model.iwae_bound(params, k, (x, y), num_samples=3),
                model.log_marginal(params, k, (x, y), num_samples=8, chunk_size=3))

    for got in bounds(keys, xs, ys):
        np.testing.assert_allclose(got, truth, rtol=2e-6, atol=2e-4)
    # The label matters: the wrong label's log p(x|y') differs by nats, not rounding.
    wrong = jax.vmap(lambda x, y: lg.log_marginal(x, conditional.condition(y, num_classes=num_classes)))(
        xs, (ys + 1) % K if num_classes else -ys)
    assert np.min(np.abs(np.asarray(wrong - truth))) > 0.1


def test_elbo_of_an_inexact_q_matches_the_closed_form():
    lg = ConditionalLinearGaussian.random(jax.random.key(0), D, d, K)
    model, params = lg.exact_model(num_classes=K)
    head = params["encoder"]["head"]
    noise = jax.random.normal(jax.random.key(4), head["kernel"].shape)
    params = {**params, "encoder": {"head": {"kernel": head["kernel"] + 0.3 * noise, "bias": head["bias"] + 0.2}}}
    x, y = jnp.linspace(-1.0, 2.0, D), jnp.asarray(2)
    c = conditional.condition(y, num_classes=K)
    mean, log_std = model.bind(params, y).encode(x)
    truth = float(lg.elbo(x, c, mean, log_std))
    keys = jax.random.split(jax.random.key(5), 20000)
    draws = np.asarray(jax.vmap(lambda k: model.objective(params, k, (x, y))[0])(keys), np.float64)
    stderr = draws.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - truth) < 4 * stderr
    gap = float(lg.log_marginal(x, c)) - truth  # KL(q || p(z|x,y)) > 0, far beyond the Monte-Carlo error
    assert gap > 20 * stderr


def test_samples_follow_the_label():
    lg = ConditionalLinearGaussian.random(jax.random.key(0), D, d, K)
    model, params = lg.exact_model(num_classes=K)
    labels = jnp.repeat(jnp.arange(K), 4000)
    samples = np.asarray(model.sample(params, jax.random.key(6), labels)).reshape(K, 4000, D)
    for c in range(K):
        mean, cov = lg.marginal(conditional.condition(c, num_classes=K))
        # decoder means at z ~ p(z|y): mean W mu_y + V c + b, covariance W diag(tau^2) W^T.
        np.testing.assert_allclose(samples[c].mean(0), mean, atol=0.1)
        np.testing.assert_allclose(np.cov(samples[c].T), cov - jnp.exp(2 * lg.log_sigma) * jnp.eye(D), atol=0.15)


def test_bad_inputs_are_one_line_errors():
    model = conditional_vae((4, 4, 1), latent_dim=2, num_classes=3, hidden_sizes=(8,))
    x = jnp.full((4, 4, 1), 0.5)
    params = model.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"needs labelled examples \(x, y\); got ArrayImpl"):
        model.objective(params, jax.random.key(1), x)
    for label, match in [(3, r"label 3 is outside \[0, 3\)"), (-1, r"label -1 is outside \[0, 3\)"),
                         (1.0, "labels must be integers")]:
        with pytest.raises(ValueError, match=match):
            model.objective(params, jax.random.key(1), (x, jnp.asarray(label)))
    with pytest.raises(ValueError, match="not both or neither"):
        conditional_vae((4, 4, 1), latent_dim=2)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        conditional_vae((4, 4, 1), latent_dim=2, num_classes=1)


def test_train_step_on_labelled_digits_improves():
    split = data.load_digits()
    x, y = jnp.asarray(split.images[:256]), jnp.asarray(split.labels[:256])
    model = conditional_vae((8, 8, 1), latent_dim=4, num_classes=10, hidden_sizes=(32,), learned_prior=True)
    state = training.create_train_state(model, jax.random.key(0), x[0], optax.adam(3e-3))
    step = training.make_train_step(model.objective)
    losses = []
    for i in range(60):
        batch = (x[64 * (i % 4):64 * (i % 4 + 1)], y[64 * (i % 4):64 * (i % 4 + 1)])
        state, metrics = step(state, batch, jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all() and np.mean(losses[-8:]) < np.mean(losses[:8]) - 5.0
