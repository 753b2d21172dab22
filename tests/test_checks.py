"""vae_jax._checks: value checks at the concrete boundary, and kept under jit / vmap with ``checked``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj
from vae_jax import objectives
from vae_jax._checks import check_finite_number, check_hparams, checked
from vae_jax.build import validate


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


def test_evaluate_checks_data_however_the_objective_is_wrapped():
    # The issues' probes: evaluate of 16 * x returned an ELBO of -8887, and of 3 * x through jax.jit or a
    # lambda (which hid the model from the check) an ELBO too. The explicit likelihood is checked before
    # anything compiles; the objective's own checks run inside the compiled scan, whatever the wrapper.
    model = vj.build_model(vj.ModelConfig(latent_dim=2, hidden_sizes=(8,)), (2, 2, 1))
    params = model.init(jax.random.key(0), jnp.zeros((2, 2, 1)))
    x = jnp.full((5, 2, 2, 1), 0.5)
    good = vj.evaluate(model.objective, params, x, jax.random.key(1))
    unchecked = vj.evaluate(model.objective, params, x, jax.random.key(1), check=False)
    assert good == pytest.approx(unchecked, rel=1e-6)
    wrapped = (model.objective, jax.jit(model.objective), lambda p, k, xi, **h: model.objective(p, k, xi, **h))
    for bad, message in ((16 * x, r"needs data in \[0, 1\]"), (3 * x, r"needs data in \[0, 1\]"),
                         (x.at[0, 0, 0, 0].set(jnp.nan), "NaN or inf")):
        with pytest.raises(ValueError, match="a Bernoulli model needs data"):
            vj.evaluate(jax.jit(model.objective), params, bad, jax.random.key(1), likelihood="bernoulli")
        for objective in wrapped:
            with pytest.raises(ValueError, match=message):
                vj.evaluate(objective, params, bad, jax.random.key(1))


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
    validate(vj.config.RunConfig(vj.ModelConfig(), config))
    for kwargs, message in (({"learning_rate": float("inf")}, "learning_rate must be a finite number > 0"),
                            ({"beta": float("inf")}, "beta must be a finite number"),
                            ({"beta": -1.0}, "beta must be finite and >= 0"),
                            ({"seed": -1}, "seed must be an int >= 0"),
                            ({"batch_size": 0}, "batch_size must be a positive int")):
        with pytest.raises(ValueError, match=message):
            validate(vj.config.RunConfig(vj.ModelConfig(), vj.config.TrainConfig(**kwargs)))


def test_checked_elbo_names_a_nan_beta():
    # The probe: checked(elbo) with beta NaN said "got -inf".
    elbo_beta = jax.vmap(lambda k, x, b: objectives.elbo(k, x, _encode, _decode, beta=b), in_axes=(0, 0, None))
    with pytest.raises(ValueError, match="beta must be finite and >= 0; got nan"):
        checked(elbo_beta)(KEYS, X, jnp.nan)


def test_gaussian_elbo_of_nan_data_is_an_error_not_nan():
    x = jnp.asarray([0.5, jnp.nan, 1.0, 2.0])
    with pytest.raises(ValueError, match="likelihood='gaussian' needs data without NaN or inf; got 1"):
        objectives.elbo(KEYS[0], x, _encode, _decode, likelihood="gaussian")
    with pytest.raises(ValueError, match="likelihood='gaussian_learned' needs data without NaN"):
        objectives.elbo(KEYS[0], x, _encode, lambda z: (_decode(z), jnp.zeros(4)), likelihood="gaussian_learned")
    elbo_x = jax.vmap(lambda k, xi: objectives.elbo(k, xi, _encode, _decode, likelihood="gaussian")[0])
    assert np.isnan(np.asarray(jax.jit(elbo_x)(KEYS[:1], x[None]))).all()  # unchecked under jit, documented
    with pytest.raises(ValueError, match="needs data without NaN"):
        checked(elbo_x)(KEYS[:1], x[None])
