"""Networks and models: shapes, likelihood heads, transforms, validation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import AE, VAE, ModelConfig, build_model, elbo


@pytest.mark.parametrize("architecture,shape", [("mlp", (8, 8, 1)), ("conv", (28, 28, 1))])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "gaussian_learned"])
def test_vae_shapes(architecture, shape, likelihood):
    model = build_model(ModelConfig(latent_dim=3, likelihood=likelihood, architecture=architecture,
                                    hidden_sizes=(16,)), shape)
    assert isinstance(model, VAE)
    x = jnp.full(shape, 0.5)
    params = model.init(jax.random.key(0), x)
    mean, log_std = model.encode(params, x)
    chex.assert_shape([mean, log_std], (3,))
    out = model.decode(params, mean)
    if likelihood == "gaussian_learned":
        chex.assert_shape(list(out), shape)
    else:
        chex.assert_shape(out, shape)
    chex.assert_shape(model.reconstruct(params, x), shape)
    samples = model.sample(params, jax.random.key(1), 5)
    chex.assert_shape(samples, (5, *shape))
    if likelihood == "bernoulli":
        assert 0 <= float(samples.min()) and float(samples.max()) <= 1
    value, aux = model.objective(params, jax.random.key(2), x)
    assert set(aux) == {"reconstruction", "kl", "elbo"} and jnp.isfinite(value)


def test_vae_objective_is_the_elbo_of_its_networks():
    model = build_model(ModelConfig(latent_dim=2, hidden_sizes=(8,)), (4, 4, 1))
    x = jnp.linspace(0, 1, 16).reshape(4, 4, 1)
    params = model.init(jax.random.key(0), x)
    key = jax.random.key(1)
    by_model = model.objective(params, key, x, beta=2.0, num_samples=3)[0]
    by_hand = elbo(key, x, lambda v: model.encoder.apply({"params": params["encoder"]}, v),
                   lambda z: model.decoder.apply({"params": params["decoder"]}, z), beta=2.0, num_samples=3)[0]
    np.testing.assert_allclose(by_model, by_hand, rtol=1e-6)


def test_ae_is_deterministic():
    model = build_model(ModelConfig(kind="ae", latent_dim=2, hidden_sizes=(8,)), (4, 4, 1))
    assert isinstance(model, AE)
    x = jnp.linspace(0, 1, 16).reshape(4, 4, 1)
    params = model.init(jax.random.key(0), x)
    chex.assert_shape(model.encode(params, x), (2,))
    v1, _ = model.objective(params, jax.random.key(1), x)
    v2, _ = model.objective(params, jax.random.key(2), x)
    assert float(v1) == float(v2)


class ModelTransformsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_encode_decode_jit_and_vmap(self):
        model = build_model(ModelConfig(latent_dim=2, architecture="conv"), (8, 8, 1))
        xs = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
        params = model.init(jax.random.key(1), xs[0])
        batched = self.variant(jax.vmap(model.reconstruct, in_axes=(None, 0)))(params, xs)
        for i in range(3):
            np.testing.assert_allclose(batched[i], model.reconstruct(params, xs[i]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(latent_dim=0), "latent_dim must be a positive int"),
    (dict(latent_dim=-2), "latent_dim must be a positive int"),
    (dict(architecture="resnet"), "Unknown architecture 'resnet'"),
    (dict(kind="gan"), "Unknown model kind 'gan'"),
    (dict(likelihood="poisson"), "Unknown likelihood 'poisson'"),
    (dict(activation="sigmoidish"), "Unknown activation 'sigmoidish'"),
    (dict(hidden_sizes=()), "hidden_sizes must be positive"),
])
def test_bad_configs(kwargs, match):
    config = ModelConfig(**kwargs)  # a plain record: build_model checks it, once
    with pytest.raises(ValueError, match=match):
        build_model(config, (4, 4, 1))


def test_bad_input_shapes():
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        build_model(ModelConfig(), (784,))
    model = build_model(ModelConfig(architecture="conv"), (10, 10, 1))
    with pytest.raises(ValueError, match="divisible by 4"):
        model.init(jax.random.key(0), jnp.zeros((10, 10, 1)))


def test_gated_dense_is_the_gated_formula_with_he_initialisation():
    from vae_jax.networks import GatedDense

    layer = GatedDense(300)
    x = jax.random.normal(jax.random.key(0), (784,))
    params = layer.init(jax.random.key(1), x)["params"]
    kernel, bias = params["linear_and_gate"]["kernel"], params["linear_and_gate"]["bias"]
    w1, w2, b1, b2 = kernel[:, :300], kernel[:, 300:], bias[:300], bias[300:]
    expected = (x @ w1 + b1) * (1.0 / (1.0 + np.exp(-(x @ w2 + b2))))
    np.testing.assert_allclose(layer.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-6)
    # He initialisation, N(0, 2 / fan_in), as in the VampPrior code: sample std within 2%
    np.testing.assert_allclose(float(jnp.std(kernel)), np.sqrt(2 / 784), rtol=0.02)


def test_gated_mlp_vae_clips_log_std_like_the_authors_log_variance_hardtanh():
    model = build_model(ModelConfig(latent_dim=4, hidden_sizes=(32, 32), architecture="gated_mlp"), (28, 28, 1))
    x = jnp.full((28, 28, 1), 0.5)
    params = model.init(jax.random.key(0), x)
    assert set(params) == {"encoder", "decoder"} and model.bind(params).prior is None
    head = params["encoder"]["head"]
    big = dict(params, encoder=dict(params["encoder"], head={"kernel": head["kernel"], "bias": head["bias"] + 50.0}))
    _, log_std = model.encode(big, x)
    np.testing.assert_array_equal(log_std, jnp.ones(4))  # log sigma^2 = 2 at most
    small = dict(params, encoder=dict(params["encoder"], head={"kernel": head["kernel"], "bias": head["bias"] - 50}))
    np.testing.assert_array_equal(model.encode(small, x)[1], -3 * jnp.ones(4))


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_learned_priors_live_in_the_params_and_drive_bind_elbo_and_sample(prior):
    from vae_jax import distributions, priors

    model = build_model(ModelConfig(latent_dim=3, hidden_sizes=(16,), prior=prior, num_components=7),
                        (8, 8, 1))
    x = jnp.full((8, 8, 1), 0.5)
    params = model.init(jax.random.key(0), x)
    expected_shape = (7, 8, 8, 1) if prior == "vamp" else (7, 3)
    assert (params["prior"]["pseudo_inputs"] if prior == "vamp" else params["prior"]["means"]).shape == expected_shape
    encode, decode, log_prior = model.bind(params)
    dist = model.prior_distribution(params)
    z = jnp.array([0.1, -0.4, 2.0])
    np.testing.assert_allclose(log_prior(z), dist.log_prob(z), rtol=1e-6)
    if prior == "vamp":  # the mixture of the encoder's posteriors at the clipped pseudo-inputs
        means, log_stds = jax.vmap(encode)(priors.pseudo_inputs(params["prior"]))
        direct = jax.nn.logsumexp(jax.vmap(lambda m, s: distributions.gaussian_log_prob(z, m, s))(means, log_stds))
        np.testing.assert_allclose(log_prior(z), direct - np.log(7), rtol=1e-5)
    # the ELBO's KL is Monte Carlo against this prior: log q(z|x) - log p(z) at the same draw
    value, aux = model.objective(params, jax.random.key(1), x)
    m, s = encode(x)
    z1 = m + jnp.exp(s) * jax.random.normal(jax.random.key(1), (1, 3))[0]
    np.testing.assert_allclose(aux["kl"], distributions.gaussian_log_prob(z1, m, s) - log_prior(z1), rtol=1e-4)
    # sample decodes draws of the prior, not of N(0, I)
    draws = dist.sample(jax.random.key(2), 5)
    np.testing.assert_allclose(model.sample(params, jax.random.key(2), 5),
                               jax.vmap(lambda zz: model.decode_mean(params, zz))(draws), rtol=1e-6)
    # gradients reach the prior's parameters
    grads = jax.grad(lambda p: model.objective(p, jax.random.key(1), x)[0])(params)
    assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grads["prior"]))) > 0


@pytest.mark.parametrize("changes,match", [(dict(prior="flat"), "Unknown prior"),
                                           (dict(num_components=0), "num_components"),
                                           (dict(kind="ae", prior="vamp"), "no prior"),
                                           (dict(architecture="gated"), "Unknown architecture")])
def test_bad_prior_configs_raise(changes, match):
    with pytest.raises(ValueError, match=match):
        build_model(ModelConfig(**changes), (4, 4, 1))
