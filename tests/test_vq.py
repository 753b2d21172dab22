"""VQ-VAE and its autoregressive code prior: definitions, hand computations, masks, enumeration."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import code_prior, data, distributions, training, vq


def test_quantize_is_the_nearest_code():
    z_e = jax.random.normal(jax.random.key(0), (5, 3, 4))
    codebook = jax.random.normal(jax.random.key(1), (7, 4))
    z_q, indices = vq.quantize(z_e, codebook)
    distance = ((np.asarray(z_e)[..., None, :] - np.asarray(codebook)) ** 2).sum(-1)
    np.testing.assert_array_equal(indices, distance.argmin(-1))
    np.testing.assert_array_equal(z_q, np.asarray(codebook)[distance.argmin(-1)])


def test_straight_through_and_loss_gradients_are_their_definitions():
    z_e = jax.random.normal(jax.random.key(0), (6, 3))
    codebook = jax.random.normal(jax.random.key(1), (4, 3))
    weight = jax.random.uniform(jax.random.key(2), (6, 3))
    loss = lambda z: jnp.sum(weight * z ** 2 + jnp.sin(z))  # noqa: E731  a loss of z_q
    z_q, indices = vq.quantize(z_e, codebook)

    def through(z, cb):
        return loss(vq.straight_through(z, vq.quantize(z, cb)[0]))

    grad_z, grad_codebook = jax.grad(through, argnums=(0, 1))(z_e, codebook)
    # d/dz_e is d/dz_q at the forward value (z_e + (z_q - z_e): z_q up to one rounding), exactly.
    np.testing.assert_array_equal(grad_z, jax.grad(loss)(vq.straight_through(z_e, z_q)))
    np.testing.assert_allclose(grad_z, jax.grad(loss)(z_q), rtol=1e-6)
    np.testing.assert_array_equal(grad_codebook, 0.0)
    # Codebook loss moves the codes only, 2 (e_k - z_i) summed over the z_i assigned to k; commitment
    # moves the encoder only, 2 (z_e - z_q).
    g = jax.grad(lambda z, cb: vq.vq_losses(z, vq.quantize(z, cb)[0])[0], argnums=(0, 1))(z_e, codebook)
    assignment = np.eye(4)[np.asarray(indices)]                                    # [6, 4]
    np.testing.assert_allclose(g[1], 2 * (assignment.sum(0)[:, None] * codebook - assignment.T @ z_e), rtol=1e-5)
    np.testing.assert_array_equal(g[0], 0.0)
    g = jax.grad(lambda z, cb: vq.vq_losses(z, vq.quantize(z, cb)[0])[1], argnums=(0, 1))(z_e, codebook)
    np.testing.assert_allclose(g[0], 2 * (z_e - z_q), rtol=1e-6)
    np.testing.assert_array_equal(g[1], 0.0)


def test_ema_update_by_hand():
    rng = np.random.default_rng(0)
    cluster_size, embed_sum = rng.uniform(0.5, 2.0, 3), rng.normal(size=(3, 2))
    z, indices = rng.normal(size=(5, 2)), np.array([0, 2, 0, 0, 2])      # code 1 unused
    decay, eps = 0.9, 0.01
    new_size, new_sum = cluster_size.copy(), embed_sum.copy()
    for k in range(3):
        members = [z[i] for i in range(5) if indices[i] == k]
        new_size[k] = decay * cluster_size[k] + (1 - decay) * len(members)
        new_sum[k] = decay * embed_sum[k] + (1 - decay) * sum(members, np.zeros(2))
    n = new_size.sum()
    expected = np.stack([new_sum[k] / ((new_size[k] + eps) / (n + 3 * eps) * n) for k in range(3)])
    ema, codebook = vq.ema_update(vq.CodebookEMA(jnp.asarray(cluster_size, jnp.float32),
                                                 jnp.asarray(embed_sum, jnp.float32)),
                                  jnp.asarray(z, jnp.float32), jnp.asarray(indices), decay=decay, epsilon=eps)
    np.testing.assert_allclose(ema.cluster_size, new_size, rtol=1e-6)
    np.testing.assert_allclose(ema.embed_sum, new_sum, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(codebook, expected, rtol=1e-5, atol=1e-6)


def test_codebook_usage():
    usage = vq.codebook_usage(jnp.array([[0, 0], [1, 3]]), 5)
    np.testing.assert_allclose(usage["perplexity"], np.exp(-(0.5 * np.log(0.5) + 0.5 * np.log(0.25))), rtol=1e-6)
    assert float(usage["dead_codes"]) == 2.0
    np.testing.assert_allclose(vq.codebook_usage(jnp.arange(8) % 4, 4)["perplexity"], 4.0, rtol=1e-6)


def _random_prior(grid, num_codes, scale):
    prior = code_prior.code_prior(grid, num_codes, features=8, num_layers=3)
    params = prior.init(jax.random.key(0), jnp.zeros(grid, jnp.int32))
    keys = iter(jax.random.split(jax.random.key(1), 100))
    # Random biases too (zero at init), so no unit is dead by construction.
    return prior, jax.tree.map(lambda p: scale * jax.random.normal(next(keys), p.shape), params)


def test_masks_never_let_a_position_see_itself_or_later_ones():
    height, width, num_codes = 3, 4, 3
    prior, params = _random_prior((height, width), num_codes, 0.7)
    one_hot = jax.random.uniform(jax.random.key(2), (height, width, num_codes))  # any input: the maps are affine-ReLU
    jac = jax.jit(jax.jacfwd(lambda h: prior.net.apply({"params": params}, h)))(one_hot)
    jac = np.abs(np.asarray(jac)).reshape(height * width, num_codes, height * width, num_codes).sum((1, 3))
    for i in range(height * width):
        np.testing.assert_array_equal(jac[i, i:], 0.0)     # itself and every later position: exactly zero
        if i % width:
            assert jac[i, i - 1] > 0                        # the left neighbour is seen
    assert (jac[np.tril_indices(height * width, -1)] > 0).mean() > 0.5


def test_log_prob_normalises_and_samples_follow_it():
    prior, params = _random_prior((2, 2), 2, 1.5)
    grids = jnp.asarray(list(itertools.product(range(2), repeat=4)), jnp.int32).reshape(16, 2, 2)
    probs = np.exp(np.asarray(jax.vmap(prior.log_prob, in_axes=(None, 0))(params, grids), np.float64))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)   # a leak through the masks breaks this
    assert probs.max() > 2 / 16                              # far from uniform
    samples = np.asarray(jax.jit(prior.sample, static_argnums=2)(params, jax.random.key(3), 8000))
    counts = np.array([(samples.reshape(-1, 4) @ (2 ** np.arange(3, -1, -1)) == c).sum() for c in range(16)])
    np.testing.assert_array_less(np.abs(counts / 8000 - probs), 5 * np.sqrt(probs * (1 - probs) / 8000) + 1e-3)


def test_prior_trains_with_fit_towards_the_entropy():
    # Grids all 0 or all 1: the first code is a fair coin, the rest are determined: log p >= -log 2.
    codes = jnp.repeat(jnp.arange(64) % 2, 4).reshape(64, 2, 2).astype(jnp.int32)
    prior = code_prior.code_prior((2, 2), 2, features=16)
    state = training.create_train_state(prior, jax.random.key(0), codes[0], optax.adam(1e-2))
    result = training.fit(training.make_train_step(prior.objective), state, codes, jax.random.key(1),
                          epochs=40, batch_size=32, progress=False)
    final = result.history[-1]["train_loss"]
    assert np.log(2) - 1e-3 < final < np.log(2) + 0.1 < result.history[0]["train_loss"]


def test_log_joint_lower_bounds_the_enumerated_log_p_x():
    model = vq.vq_vae((4, 4, 1), num_codes=2, embedding_dim=3, features=(8,), likelihood="bernoulli")
    prior, prior_params = _random_prior((2, 2), 2, 1.0)
    x = jax.random.uniform(jax.random.key(4), (4, 4, 1))
    params = model.init(jax.random.key(5), x)
    grids = jnp.asarray(list(itertools.product(range(2), repeat=4)), jnp.int32).reshape(16, 2, 2)
    log_joint = jax.jit(jax.vmap(lambda c: distributions.log_likelihood("bernoulli", x, model.decode_codes(params, c))
                                 + prior.log_prob(prior_params, c)))(grids)
    code_log_prob = lambda c: prior.log_prob(prior_params, c)  # noqa: E731
    bound, codes = jax.jit(lambda p: (model.log_joint(p, x, code_log_prob), model.codes(p, x)))(params)
    np.testing.assert_allclose(bound, log_joint[int(codes.reshape(-1) @ (2 ** jnp.arange(3, -1, -1)))], rtol=1e-6)
    assert float(bound) <= float(jax.nn.logsumexp(log_joint))
    np.testing.assert_allclose(vq.bits_per_dim(0.0, 784), 8.0, rtol=1e-6)    # the uniform density
    np.testing.assert_allclose(vq.bits_per_dim(-784 * np.log(2), 784), 9.0, rtol=1e-6)


def test_objective_terms_of_both_codebook_updates():
    x = jax.random.uniform(jax.random.key(0), (4, 4, 1))
    for update in vq.CODEBOOK_UPDATES:
        model = vq.vq_vae((4, 4, 1), num_codes=3, embedding_dim=2, features=(4,), likelihood="bernoulli",
                          codebook_update=update)
        params = model.init(jax.random.key(1), x)
        value, aux = model.objective(params, jax.random.key(2), x, beta=0.5)
        z_q = params["codebook"][model.codes(params, x)]
        z_e = model.encode(params, x)
        np.testing.assert_allclose(aux["codebook_loss"], jnp.sum((z_e - z_q) ** 2), rtol=1e-6)
        np.testing.assert_allclose(aux["commitment_loss"], aux["codebook_loss"], rtol=1e-6)  # equal in value
        expected = aux["reconstruction"] - 0.5 * aux["commitment_loss"] - (update == "loss") * aux["codebook_loss"]
        np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_ema_train_step_on_digits():
    x = jnp.asarray(data.load_digits().images[:128])
    model = vq.vq_vae((8, 8, 1), num_codes=8, embedding_dim=4, features=(16,), likelihood="bernoulli",
                      codebook_update="ema")
    state = training.create_train_state(model, jax.random.key(0), x[0], optax.adam(3e-3), beta=0.25)
    noise = jax.random.uniform(jax.random.key(1), (2, 8, 8, 1))        # no two grid vectors alike
    params = vq.codebook_from_data(model, state.params, jax.random.key(1), noise)
    z_e = np.asarray(jax.vmap(model.encode, in_axes=(None, 0))(params, noise)).reshape(-1, 4)
    rows = [int(np.flatnonzero((z_e == code).all(1))[0]) for code in np.asarray(params["codebook"])]
    assert len(set(rows)) == 8                           # 8 encoder outputs of 8 different grid positions
    params = vq.codebook_from_data(model, state.params, jax.random.key(1), x[:2])
    with pytest.raises(ValueError, match="holds 4 encoder outputs; initialising 8 codes"):
        vq.codebook_from_data(model, state.params, jax.random.key(1), x[:1, :4, :4])
    state = vq.with_codebook_ema(state.replace(params=params))
    z_e = jax.vmap(model.encode, in_axes=(None, 0))(state.params, x[:64])
    _, expected = vq.ema_update(vq.init_ema(state.params["codebook"]), z_e.reshape(-1, 4),
                                vq.quantize(z_e, state.params["codebook"])[1].reshape(-1), decay=0.9)
    step = vq.make_train_step(model, decay=0.9)
    losses = []
    for i in range(40):
        state, metrics = step(state, x[64 * (i % 2):64 * (i % 2 + 1)], jax.random.key(i))
        if i == 0:  # the step's codebook is the EMA of the codes it assigned, by hand
            np.testing.assert_allclose(state.params["codebook"], expected, rtol=1e-5, atol=1e-6)
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0
    assert 1.0 <= float(metrics["perplexity"]) <= 8.0 and 0 <= float(metrics["dead_codes"]) < 8


def test_bad_configurations_are_one_line_errors():
    with pytest.raises(ValueError, match=r"at least 2 codes \(num_codes >= 2\); got 1"):
        vq.vq_vae((8, 8, 1), num_codes=1)
    with pytest.raises(ValueError, match="at least 2 codes"):
        code_prior.code_prior((2, 2), 1)
    with pytest.raises(ValueError, match="at least 2 codes"):
        vq.quantize(jnp.zeros((3, 2)), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="codebook_update must be one of"):
        vq.vq_vae((8, 8, 1), codebook_update="kmeans")
    with pytest.raises(ValueError, match="divisible by 4"):
        vq.vq_vae((6, 6, 1))
    model = vq.vq_vae((4, 4, 1), num_codes=2, embedding_dim=2, features=(4,), codebook_update="ema")
    state = training.create_train_state(model, jax.random.key(0), jnp.zeros((4, 4, 1)), optax.adam(1e-3))
    with pytest.raises(ValueError, match="with_codebook_ema"):
        vq.make_train_step(model)(state, jnp.zeros((2, 4, 4, 1)), jax.random.key(1))
