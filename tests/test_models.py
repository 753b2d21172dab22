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
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_bad_input_shapes():
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        build_model(ModelConfig(), (784,))
    model = build_model(ModelConfig(architecture="conv"), (10, 10, 1))
    with pytest.raises(ValueError, match="divisible by 4"):
        model.init(jax.random.key(0), jnp.zeros((10, 10, 1)))
