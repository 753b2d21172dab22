"""vae_jax._checks: value checks at the concrete boundary, and kept under jit / vmap with ``checked``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj
from vae_jax import objectives
from vae_jax._checks import check_finite_number, check_hparams, checked


def _encode(x):
    return x.reshape(-1)[:2], jnp.zeros(2)


def _decode(z):
    return jnp.tile(z, 2)


ELBO = jax.vmap(functools.partial(objectives.elbo, encode=_encode, decode=_decode))
X = jnp.full((3, 4), 0.5)
KEYS = jax.random.split(jax.random.key(0), 3)


def test_checked_gives_the_same_values_on_good_data():
    plain, checked_values = jax.jit(ELBO)(KEYS, X), checked(ELBO)(KEYS, X)
    np.testing.assert_array_equal(plain[0], checked_values[0])


@pytest.mark.parametrize("x, message", [
    (16 * X, r"needs data in \[0, 1\]; got values in \[8"),
    (X.at[1, 1].set(jnp.nan), "without NaN or inf; got 1 non-finite values"),
])
def test_value_checks_hold_under_jit_and_vmap_when_checked(x, message):
    jax.jit(ELBO)(KEYS, x)  # documented: plain jit skips value checks (the values are tracers)
    with pytest.raises(ValueError, match=message):
        checked(ELBO)(KEYS, x)
    with pytest.raises(ValueError, match=message):  # eager (not jitted) checkify too
        checked(ELBO, jit=False)(KEYS, x)


def test_negative_beta_is_caught_under_jit_when_checked():
    elbo_beta = jax.vmap(lambda k, x, b: objectives.elbo(k, x, _encode, _decode, beta=b), in_axes=(0, 0, None))
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        checked(elbo_beta)(KEYS, X, -1.0)
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        checked(elbo_beta)(KEYS, X, jnp.inf)


def test_evaluate_checks_data_and_hparams_at_its_concrete_boundary():
    # The probe: evaluate of 16 * x returned an ELBO of -8887; evaluate's scan is compiled,
    # so the check must run before it.
    model = vj.build_model(vj.ModelConfig(latent_dim=2, hidden_sizes=(8,)), (2, 2, 1))
    params = model.init(jax.random.key(0), jnp.zeros((2, 2, 1)))
    x = jnp.full((5, 2, 2, 1), 0.5)
    vj.evaluate(model.objective, params, x, jax.random.key(1))
    for bad in (16 * x, x.at[0, 0, 0, 0].set(jnp.nan)):
        with pytest.raises(ValueError, match="Bernoulli model needs data"):
            vj.evaluate(model.objective, params, bad, jax.random.key(1))


def test_hparams_and_numbers():
    check_hparams({"beta": 0.0, "other": np.float32(2.0)})
    for bad, message in (({"beta": -1.0}, "beta must be finite and >= 0"),
                         ({"beta": np.inf}, "hyper-parameter beta must be finite"),
                         ({"temperature": np.nan}, "hyper-parameter temperature must be finite")):
        with pytest.raises(ValueError, match=message):
            check_hparams(bad)
    assert check_finite_number(np.float32(0.5), "lr", positive=True) == 0.5
    for bad in (float("inf"), float("nan"), 0.0, True, "1"):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            check_finite_number(bad, "lr", positive=True)


def test_train_config_takes_numpy_integers_and_refuses_inf():
    config = vj.config.TrainConfig(num_samples=np.int64(2), epochs=np.int32(3), learning_rate=np.float32(1e-3))
    assert type(config.num_samples) is int and type(config.epochs) is int and type(config.learning_rate) is float
    for kwargs, message in (({"learning_rate": float("inf")}, "learning_rate must be a finite number > 0"),
                            ({"beta": float("inf")}, "beta must be a finite number"),
                            ({"beta": -1.0}, "beta must be >= 0"),
                            ({"seed": -1}, "seed must be an int >= 0"),
                            ({"batch_size": 0}, "batch_size must be a positive int")):
        with pytest.raises(ValueError, match=message):
            vj.config.TrainConfig(**kwargs)
