"""beta-TCVAE: the minibatch TC estimators against closed forms and direct computation, and its train step."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from vae_jax import distributions
from vae_jax import models, tc, tc_training, training


def _gaussian_posteriors(key, cov, n, s):
    """Means ~ N(0, cov - s^2 I), std s: the aggregate posterior is N(0, cov) as n grows."""
    k1, k2 = jax.random.split(key)
    chol = jnp.linalg.cholesky(jnp.asarray(cov) - s ** 2 * jnp.eye(len(cov)))
    mean = jax.random.normal(k1, (n, len(cov))) @ chol.T
    log_std = jnp.full_like(mean, math.log(s))
    return mean + s * jax.random.normal(k2, mean.shape), mean, log_std


@pytest.mark.parametrize("cov", [[[1.0, 0.8], [0.8, 1.0]], [[1.0, 0.0], [0.0, 2.0]],
                                 [[1.0, 0.5, 0.3], [0.5, 1.0, -0.4], [0.3, -0.4, 1.5]]])
def test_tc_of_a_correlated_gaussian_matches_the_closed_form(cov):
    """TC(N(0, S)) = (sum_l log S_ll - log det S) / 2; mss and batch estimators from 3000 draws."""
    cov = np.asarray(cov)
    exact = 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])
    z, mean, log_std = _gaussian_posteriors(jax.random.key(0), cov, 3000, 0.4)
    for weighting in ("mss", "batch"):
        estimate = float(tc.total_correlation(z, mean, log_std, dataset_size=10 ** 6, weighting=weighting))
        assert estimate == pytest.approx(exact, abs=0.03), weighting
    # the paper's minibatch-weighted sampling: the batch estimate plus (L - 1) log N, exactly
    mws = float(tc.total_correlation(z, mean, log_std, dataset_size=10 ** 6, weighting="mws"))
    batch = float(tc.total_correlation(z, mean, log_std, dataset_size=10 ** 6, weighting="batch"))
    assert mws - batch == pytest.approx((len(cov) - 1) * math.log(10 ** 6), rel=1e-5)


def _mixture_setup():
    mean = jnp.array([[-1.0, 0.5], [0.3, 0.2], [1.2, 1.5], [0.0, -1.0], [2.0, -0.5]])
    log_std = jnp.log(jnp.array([[0.5, 0.3], [0.7, 0.9], [0.4, 0.6], [1.0, 0.5], [0.3, 0.3]]))
    return mean, log_std


def test_decomposition_terms_equal_a_direct_numpy_computation():
    mean, log_std = _mixture_setup()
    z = mean + jnp.exp(log_std) * jax.random.normal(jax.random.key(1), mean.shape)
    n_data = 1000
    out = tc.kl_decomposition(z, mean, log_std, dataset_size=n_data, weighting="mws")
    zn, mn, sn = (np.asarray(a, np.float64) for a in (z, mean, jnp.exp(log_std)))
    m = len(zn)
    log_q = norm.logpdf(zn[:, None, :], mn[None], sn[None])  # [i, j, l]
    log_qz = logsumexp(log_q.sum(2), axis=1) - math.log(n_data * m)
    log_prod = (logsumexp(log_q, axis=1) - math.log(n_data * m)).sum(1)
    log_qzx = norm.logpdf(zn, mn, sn).sum(1)
    log_pz = norm.logpdf(zn).sum(1)
    np.testing.assert_allclose(out["mutual_information"], log_qzx - log_qz, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["total_correlation"], log_qz - log_prod, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["dimensionwise_kl"], log_prod - log_pz, rtol=1e-5, atol=1e-5)
    # the three terms telescope to the Monte-Carlo KL of each example's own posterior
    kl = jax.vmap(distributions.gaussian_log_prob)(z, mean, log_std) - jax.vmap(distributions.standard_normal_log_prob)(z)
    np.testing.assert_allclose(out["mutual_information"] + out["total_correlation"] + out["dimensionwise_kl"], kl,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["kl"], kl, rtol=1e-5, atol=1e-5)


def test_batch_estimator_is_unbiased_when_the_batch_is_the_dataset():
    """A 5-component mixture q(z): TC by numerical integration on a grid vs the mean estimate over draws."""
    mean, log_std = _mixture_setup()
    mn, sn = np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64))
    g = np.linspace(-7, 7, 1401)
    h = g[1] - g[0]
    marg = [norm.pdf(g[:, None], mn[:, l], sn[:, l]).mean(1) for l in range(2)]  # q(z_l) on the grid
    joint = np.mean(norm.pdf(g[:, None, None], mn[:, 0], sn[:, 0]) * norm.pdf(g[None, :, None], mn[:, 1], sn[:, 1]),
                    axis=2)
    exact = h * h * np.sum(joint * (np.log(joint) - np.log(marg[0])[:, None] - np.log(marg[1])[None, :]))
    assert 0.05 < exact < 1.0
    keys = jax.random.split(jax.random.key(2), 20000)
    draw = jax.vmap(lambda k: mean + jnp.exp(log_std) * jax.random.normal(k, mean.shape))(keys)
    estimates = np.asarray(jax.vmap(lambda z: tc.total_correlation(z, mean, log_std, dataset_size=5,
                                                                    weighting="batch"))(draw))
    stderr = estimates.std() / np.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < 4 * stderr + 1e-4, (estimates.mean(), exact, stderr)


def test_weight_matrices():
    for m, n in ((4, 10), (8, 8), (2, 1000)):
        w = np.exp(np.asarray(tc.log_weight_matrix(m, n, "mss"), np.float64))
        np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(np.diag(w), 1.0 / n, rtol=1e-6)
        np.testing.assert_allclose(np.exp(np.asarray(tc.log_weight_matrix(m, n, "mws"))).sum(1), 1.0 / n, rtol=1e-6)
        np.testing.assert_allclose(np.exp(np.asarray(tc.log_weight_matrix(m, n, "batch"))).sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [(dict(weighting="nope"), "Unknown weighting"),
                                           (dict(dataset_size=3), "dataset_size"),
                                           (dict(dataset_size=0), "dataset_size"), (dict(dataset_size=2.5), "dataset_size")])
def test_bad_arguments_raise(kwargs, match):
    z = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match=match):
        tc.total_correlation(z, z, z, **{"dataset_size": 10, **kwargs})


def test_shape_errors_raise():
    with pytest.raises(ValueError, match=r"\[M, L\]"):
        tc.log_density_matrix(jnp.zeros((4, 2)), jnp.zeros((4, 3)), jnp.zeros((4, 2)))


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny():
    config = models.ModelConfig(latent_dim=3, hidden_sizes=(16,))
    data = (jax.random.uniform(jax.random.key(0), (64, 6, 6, 1)) > 0.6).astype(jnp.float32)
    return models.build_model(config, data.shape[1:]), data


def _state(model, data, beta):
    return training.create_train_state(model, jax.random.key(1), data[0], optax.adam(1e-3), beta=beta)


def test_beta_one_is_the_monte_carlo_elbo_step(tiny):
    model, data = tiny
    batch, key = data[:16], jax.random.key(5)
    tc_step = tc_training.make_tc_train_step(model, dataset_size=64, grad_norm=True)
    elbo_step = training.make_train_step(functools.partial(model.objective, kl="monte_carlo"), grad_norm=True)
    s1, m1 = tc_step(_state(model, data, 1.0), batch, key)
    s2, m2 = elbo_step(_state(model, data, 1.0), batch, key)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["elbo"], m2["elbo"], rtol=1e-5)
    np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_tc_weight_adds_beta_minus_one_times_tc(tiny):
    model, data = tiny
    batch, key = data[:16], jax.random.key(6)
    step = tc_training.make_tc_train_step(model, dataset_size=64, weighting="mss")
    _, m1 = step(_state(model, data, 1.0), batch, key)
    _, m6 = step(_state(model, data, 6.0), batch, key)
    np.testing.assert_allclose(m6["loss"] - m1["loss"], 5.0 * m1["total_correlation"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m1["mutual_information"] + m1["total_correlation"] + m1["dimensionwise_kl"],
                               m1["kl"], rtol=1e-5, atol=1e-5)


def test_tc_step_runs_in_fit_and_stacked_epochs(tiny):
    model, data = tiny
    step = tc_training.make_tc_train_step(model, dataset_size=64, dynamic_binarization=True)
    result = training.fit(step, _state(model, data, 4.0), data, jax.random.key(2), epochs=3, batch_size=16,
                          progress=False)
    state, history = result[0], result[1]
    losses = [h.get("train_loss", h.get("loss")) for h in history]  # fit's row names: old and new
    assert len(history) == 3 and np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert int(state.step) == 12
    optimizer = optax.adam(1e-3)
    states = training.stack([training.create_train_state(model, jax.random.key(i), data[0], optimizer, beta=b)
                             for i, b in enumerate((1.0, 8.0))])
    states, metrics = training.train_epoch_stacked(step, states, data, jax.random.split(jax.random.key(3), 2),
                                                   batch_size=16)
    assert metrics["loss"].shape == (2,) and np.all(np.isfinite(metrics["total_correlation"]))


def test_missing_beta_raises(tiny):
    model, data = tiny
    state = training.create_train_state(model, jax.random.key(1), data[0], optax.adam(1e-3))
    with pytest.raises(ValueError, match="beta"):
        tc_training.make_tc_train_step(model, dataset_size=64)(state, data[:8], jax.random.key(0))


# ---------------------------------------------------------------- FactorVAE

def test_permute_dims_keeps_each_marginal_exactly_and_breaks_the_dependence():
    z1 = jax.random.normal(jax.random.key(0), (2000,))
    z = jnp.stack([z1, z1, -2.0 * z1], axis=1)  # perfectly dependent columns
    zp = tc.permute_dims(jax.random.key(1), z)
    for column in range(3):  # every column is a permutation of itself: the same multiset of values
        np.testing.assert_array_equal(np.sort(np.asarray(zp[:, column])), np.sort(np.asarray(z[:, column])))
    corr = np.corrcoef(np.asarray(zp).T)
    assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 0.1)  # was +-1; 0.1 is 4.5 standard errors at M=2000
    assert float(jnp.mean(zp[:, 0] == zp[:, 1])) < 0.01  # the columns are permuted independently


TC_OPTIMIZER = optax.adam(3e-3)


@functools.partial(jax.jit, static_argnames=("steps", "batch"))
def _train_discriminator(disc, chol, key, *, steps, batch):
    def body(disc, k):
        k_z, k_perm = jax.random.split(k)
        disc, _ = tc_training.discriminator_step(disc, TC_OPTIMIZER, k_perm, jax.random.normal(k_z, (batch, 2)) @ chol.T)
        return disc, None
    return jax.lax.scan(body, disc, jax.random.split(key, steps))[0]


def _trained_discriminator_tc(rho, *, steps=1500, batch=256):
    """Trains D with the library's discriminator_step on draws of N(0, [[1, rho], [rho, 1]]) vs their
    permutations; returns its density-ratio TC on 20000 fresh draws, and those draws' logits."""
    disc = tc.init_discriminator(jax.random.key(0), 2, TC_OPTIMIZER, hidden_sizes=(64, 64))
    chol = jnp.linalg.cholesky(jnp.array([[1.0, rho], [rho, 1.0]]))
    disc = _train_discriminator(disc, chol, jax.random.key(1), steps=steps, batch=batch)
    z = jax.random.normal(jax.random.key(2), (20000, 2)) @ chol.T
    logits = jax.vmap(tc.discriminator_logit, in_axes=(None, 0))(disc.params, z)
    return float(jnp.mean(logits)), np.asarray(z), np.asarray(logits)


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_density_ratio_tc_of_a_trained_discriminator_matches_the_closed_form(rho):
    """TC(N(0, [[1, r], [r, 1]])) = -log(1 - r^2) / 2 (0.511 nats at r = 0.8, 0 at r = 0): the
    discriminator's mean logit on fresh draws within 0.06 nats, and its logit follows the exact
    log-ratio log q(z) - log q(z1) q(z2) point by point."""
    exact = -0.5 * math.log(1 - rho ** 2)
    estimate, z, logits = _trained_discriminator_tc(rho)
    assert estimate == pytest.approx(exact, abs=0.06)
    if rho:
        log_ratio = (-0.5 * math.log(1 - rho ** 2)
                     - (rho ** 2 * (z ** 2).sum(1) - 2 * rho * z[:, 0] * z[:, 1]) / (2 * (1 - rho ** 2)))
        assert np.corrcoef(logits, log_ratio)[0, 1] > 0.9


VAE_OPTIMIZER = optax.adam(1e-3)  # one object: stacked states must share it
D_OPTIMIZER = optax.adam(1e-3, b1=0.5, b2=0.9)


@pytest.fixture(scope="module")
def factor_step(tiny):
    return tc_training.make_factor_vae_train_step(tiny[0], D_OPTIMIZER)  # one step, compiled once for the tests below


def _factor_state(model, data, gamma, optimizer, hidden=(32, 32)):
    state = training.create_train_state(model, jax.random.key(1), data[0], VAE_OPTIMIZER, gamma=gamma)
    return tc.add_discriminator(state, jax.random.key(2), optimizer, latent_dim=model.latent_dim, hidden_sizes=hidden)


def test_factor_vae_objective_is_the_elbo_minus_gamma_times_the_discriminator_logit(tiny):
    model, data = tiny
    disc = tc.init_discriminator(jax.random.key(3), model.latent_dim, optax.adam(1e-3), hidden_sizes=(8,))
    params = model.init(jax.random.key(4), data[0])
    objective = tc.make_factor_vae_objective(model)
    key, x = jax.random.key(5), data[0]
    v0, aux0 = objective(params, key, x, gamma=0.0, discriminator=disc)
    v_elbo, aux_elbo = model.objective(params, key, x)
    assert float(v0) == float(v_elbo) and float(aux0["elbo"]) == float(aux_elbo["elbo"])
    mean, log_std = model.encode(params, x)
    z = mean + jnp.exp(log_std) * jax.random.normal(key, (1, model.latent_dim))[0]
    logit = tc.discriminator_logit(disc.params, z)
    v30, aux30 = objective(params, key, x, gamma=30.0, discriminator=disc)
    np.testing.assert_allclose(aux30["total_correlation"], logit, rtol=1e-6)
    np.testing.assert_allclose(v30, v_elbo - 30.0 * logit, rtol=1e-6)


def test_factor_vae_steps_train_both_parameter_sets(tiny, factor_step):
    model, data = tiny
    step = factor_step
    state = _factor_state(model, data, 10.0, D_OPTIMIZER)
    before = jax.tree.map(np.asarray, (state.params, state.estimator_state["discriminator"].params))
    for i in range(5):
        state, metrics = step(state, data[16 * (i % 4):16 * (i % 4 + 1)], jax.random.key(10 + i))
        assert all(np.isfinite(float(v)) for v in metrics.values())
    after = (state.params, state.estimator_state["discriminator"].params)
    for old, new in zip(before, after):  # the VAE's and the discriminator's parameters both moved
        assert max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new))) > 1e-4
    assert int(state.step) == 5 and int(state.estimator_state["discriminator"].opt_state[0].count) == 5
    assert 0.0 <= float(metrics["discriminator_accuracy"]) <= 1.0


def test_at_gamma_zero_the_vae_trains_exactly_as_a_plain_vae(tiny, factor_step):
    """The discriminator never reaches the VAE's gradient: gamma = 0 gives the plain ELBO step's parameters."""
    model, data = tiny
    plain_step = training.make_train_step(model.objective)
    s1 = _factor_state(model, data, 0.0, D_OPTIMIZER)
    s2 = training.create_train_state(model, jax.random.key(1), data[0], optax.adam(1e-3))
    for i in range(3):
        key = jax.random.key(20 + i)
        s1, _ = factor_step(s1, data[:16], key)
        s2, _ = plain_step(s2, data[:16], jax.random.split(key, 3)[0])
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_factor_vae_stacked_over_gamma_and_its_errors(tiny, factor_step):
    model, data = tiny
    step = factor_step
    states = training.stack([_factor_state(model, data, g, D_OPTIMIZER) for g in (10.0, 40.0)])
    states, metrics = training.train_epoch_stacked(step, states, data, jax.random.split(jax.random.key(3), 2),
                                                   batch_size=16)
    assert metrics["loss"].shape == (2,) and np.all(np.isfinite(metrics["discriminator_loss"]))
    plain = training.create_train_state(model, jax.random.key(1), data[0], optax.adam(1e-3), gamma=1.0)
    with pytest.raises(ValueError, match="add_discriminator"):
        step(plain, data[:8], jax.random.key(0))
    with pytest.raises(ValueError, match="z must be"):
        tc.permute_dims(jax.random.key(0), jnp.zeros(5))


def test_a_factor_vae_state_round_trips_through_checkpoints_and_keeps_training(tiny, factor_step, tmp_path):
    """The discriminator and its Adam state live in estimator_state: a checkpoint keeps them bitwise, and the
    restored run's next step is the uninterrupted run's."""
    from vae_jax.checkpoints import RunCheckpoints
    model, data = tiny
    state = _factor_state(model, data, 10.0, D_OPTIMIZER)
    for i in range(2):
        state, _ = factor_step(state, data[:16], jax.random.key(40 + i))
    with RunCheckpoints(tmp_path / "ck", metric="v", create=True) as ckpts:
        ckpts.save(1, state, history=[{"epoch": 1, "v": -1.0}])
    fresh = _factor_state(model, data, 10.0, D_OPTIMIZER)  # the template: same structure, initial values
    with RunCheckpoints(tmp_path / "ck", metric="v") as ckpts:
        restored, history = ckpts.restore(fresh)
    assert history == [{"epoch": 1, "v": -1.0}]
    for a, b in zip(jax.tree.leaves((state.params, state.estimator_state)),
                    jax.tree.leaves((restored.params, restored.estimator_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), strict=True)
    assert int(restored.estimator_state["discriminator"].opt_state[0].count) == 2
    moved = [float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree.leaves(fresh.estimator_state), jax.tree.leaves(restored.estimator_state))]
    assert max(moved) > 1e-4  # the template's discriminator really was replaced
    next_a, _ = factor_step(state, data[16:32], jax.random.key(50))
    next_b, _ = factor_step(restored, data[16:32], jax.random.key(50))
    for a, b in zip(jax.tree.leaves((next_a.params, next_a.estimator_state)),
                    jax.tree.leaves((next_b.params, next_b.estimator_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
