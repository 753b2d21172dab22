"""The compiled train step, epoch scan, stacked training and evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import vae_jax as vj
from vae_jax.training import stack, train_epoch_stacked, unstack


@pytest.fixture(scope="module")
def digits():
    images = (load_digits().images[..., None] / 16).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(images))
    return jnp.asarray(images[perm[:1500]]), jnp.asarray(images[perm[1500:]])


def _model(**kw):
    return vj.build_model(vj.ModelConfig(latent_dim=8, hidden_sizes=(128, 64), **kw), (8, 8, 1))


def test_step_is_finite_and_compiles_once(digits):
    train, _ = digits
    model = _model()
    state = vj.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3))
    step = vj.make_train_step(model.objective)
    for i in range(3):
        state, metrics = step(state, train[i * 64:(i + 1) * 64], jax.random.key(i))
    assert step._cache_size() == 1
    assert set(metrics) == {"loss", "reconstruction", "kl", "elbo", "grad_norm"}
    assert all(m.shape == () and jnp.isfinite(m) for m in metrics.values())
    assert int(state.step) == 3
    assert all(jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(state.params))


def test_objective_gradient_matches_finite_differences(digits):
    """The gradient the step follows, against central differences in float32."""
    train, _ = digits
    model = _model()
    params = model.init(jax.random.key(0), train[0])
    keys = jax.random.split(jax.random.key(1), 32)

    def loss(bias0):
        p = jax.tree.map(lambda a: a, params)
        p["decoder"]["Dense_2"]["bias"] = p["decoder"]["Dense_2"]["bias"].at[0].set(bias0)
        return -jnp.mean(jax.vmap(lambda k, x: model.objective(p, k, x)[0])(keys, train[:32]))

    b = params["decoder"]["Dense_2"]["bias"][0]
    h = 1e-2
    fd = (loss(b + h) - loss(b - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(loss)(b), fd, rtol=2e-3, atol=2e-4)


def test_training_raises_heldout_elbo(digits):
    train, test = digits
    model = _model()
    state = vj.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3))
    before = vj.evaluate(model.objective, state.params, test, jax.random.key(5))["elbo"]
    state, history = vj.fit(vj.make_train_step(model.objective), state, train, jax.random.key(1), epochs=30,
                            batch_size=100, progress=False)
    after = vj.evaluate(model.objective, state.params, test, jax.random.key(5))["elbo"]
    # Measured: about -47 nats at initialisation, about -25 after 30 epochs.
    assert after > before + 15.0, (before, after)
    assert history[-1]["elbo"] > history[0]["elbo"]


def test_train_epoch_compiles_once_and_uses_every_batch(digits):
    train, _ = digits
    model = _model()
    state = vj.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3))
    step = vj.make_train_step(model.objective)
    state, _ = vj.train_epoch(step, state, train, jax.random.key(0), batch_size=128)
    compiled = vj.train_epoch._cache_size()  # module-level jit: other tests add entries too
    state, _ = vj.train_epoch(step, state, train, jax.random.key(1), batch_size=128)
    assert vj.train_epoch._cache_size() == compiled
    assert int(state.step) == 2 * (1500 // 128)


def test_dynamic_binarization_happens_inside_the_step(digits):
    train, _ = digits

    def objective(params, key, x):
        del key
        return jnp.sum(params["w"] * x), {"non_binary": jnp.sum(x * (1 - x))}

    class Linear:
        def init(self, key, x):
            return {"w": jnp.zeros_like(x)}

    for binarize, expect_binary in [(True, True), (False, False)]:
        state = vj.create_train_state(Linear(), jax.random.key(0), train[0], optax.sgd(0.1))
        _, metrics = vj.make_train_step(objective, dynamic_binarization=binarize)(state, train[:64], jax.random.key(1))
        assert (float(metrics["non_binary"]) == 0.0) == expect_binary


def test_evaluate_uses_every_example_once(digits):
    _, test = digits
    model = _model(kind="ae")
    params = model.init(jax.random.key(0), test[0])
    data = test[:17]
    per_example = [float(model.objective(params, None, x)[0]) for x in data]
    for batch_size in (5, 17, 100):
        result = vj.evaluate(model.objective, params, data, jax.random.key(0), batch_size=batch_size)
        np.testing.assert_allclose(result["objective"], np.mean(per_example), rtol=1e-5)


def test_fit_stops_on_non_finite_loss(digits):
    train, _ = digits

    class Scalar:
        def init(self, key, x):
            return {"w": jnp.ones(())}

    def objective(params, key, x, **_):
        return jnp.log(params["w"] - 10.0), {}  # log of a negative number: NaN

    state = vj.create_train_state(Scalar(), jax.random.key(0), train[0], optax.sgd(0.1))
    with pytest.raises(FloatingPointError, match="Non-finite loss nan in epoch 0"):
        vj.fit(vj.make_train_step(objective), state, train[:256], jax.random.key(0), epochs=2, batch_size=64,
               progress=False)


def test_stacked_training_matches_separate_runs(digits):
    train, _ = digits
    model = _model()
    optimizer = optax.adam(1e-3)
    betas = [0.5, 4.0]
    states = stack([vj.create_train_state(model, jax.random.key(i), train[0], optimizer, beta=b)
                    for i, b in enumerate(betas)])
    step = vj.make_train_step(model.objective)
    keys = jax.random.split(jax.random.key(9), 2)
    for _ in range(3):
        states, metrics = train_epoch_stacked(step, states, train, keys, batch_size=100)
    assert metrics["kl"].shape == (2,)
    for i, beta in enumerate(betas):
        single = vj.create_train_state(model, jax.random.key(i), train[0], optimizer, beta=beta)
        for _ in range(3):
            single, m = vj.train_epoch(step, single, train, keys[i], batch_size=100)
        np.testing.assert_allclose(metrics["loss"][i], m["loss"], rtol=1e-4)
        for a, b in zip(jax.tree.leaves(unstack(states)[i].params), jax.tree.leaves(single.params)):
            np.testing.assert_allclose(a, b, atol=1e-4)
    # A larger beta buys a smaller KL.
    assert metrics["kl"][1] < metrics["kl"][0]


def test_batch_larger_than_data_is_an_error(digits):
    train, _ = digits
    model = _model()
    state = vj.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3))
    with pytest.raises(ValueError, match="batch_size=4096 is larger than the dataset"):
        vj.train_epoch(vj.make_train_step(model.objective), state, train, jax.random.key(0), batch_size=4096)
