"""The compiled train step, epoch scan, stacked training and evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

import vae_jax as vj
from vae_jax import schedules
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
    step = vj.make_train_step(model.objective, grad_norm=True)
    for i in range(3):
        state, metrics = step(state, train[i * 64:(i + 1) * 64], jax.random.key(i))
    assert step._cache_size() == 1
    assert set(metrics) == {"loss", "reconstruction", "kl", "elbo", "grad_norm"}
    assert all(m.shape == () and jnp.isfinite(m) for m in metrics.values())
    assert int(state.step) == 3
    assert all(jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(state.params))
    grads = jax.grad(lambda p: -jnp.mean(jax.vmap(lambda k, x: model.objective(p, k, x)[0])(
        jax.random.split(jax.random.split(jax.random.key(9))[1], 64), train[:64])))(state.params)
    _, checked = step(state, train[:64], jax.random.key(9))
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(checked["grad_norm"], norm, rtol=1e-4)  # the norm of the step's own gradient


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
    state, history, stop_reason = vj.fit(vj.make_train_step(model.objective), state, train, jax.random.key(1),
                                         epochs=30, batch_size=100, progress=False)
    after = vj.evaluate(model.objective, state.params, test, jax.random.key(5))["elbo"]
    # Measured: about -47 nats at initialisation, about -25 after 30 epochs.
    assert after > before + 15.0, (before, after)
    assert history[-1]["train_elbo"] > history[0]["train_elbo"]
    assert stop_reason == "max epochs" and [row["epoch"] for row in history] == list(range(1, 31))


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
    with pytest.raises(FloatingPointError, match=r"Non-finite training loss or parameters in epoch 1 \(steps 1-4\)"):
        vj.fit(vj.make_train_step(objective), state, train[:256], jax.random.key(0), epochs=2, batch_size=64,
               progress=False)


def test_stacked_training_matches_separate_runs(digits):
    train, _ = digits
    model = _model()
    # Plain SGD: Adam's normalisation turns float rounding of near-zero gradients into
    # parameter differences of its step size, which says nothing about stacking.
    optimizer = optax.sgd(1e-3)
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
            np.testing.assert_allclose(a, b, atol=1e-5)
    other = vj.create_train_state(model, jax.random.key(0), train[0], optimizer, beta=betas[1])
    for _ in range(3):
        other, _ = vj.train_epoch(step, other, train, keys[0], batch_size=100)
    moved = max(float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(jax.tree.leaves(unstack(states)[0].params), jax.tree.leaves(other.params)))
    assert moved > 100 * 1e-5, moved  # the tolerance above is far below what a swapped beta does
    # A larger beta buys a smaller KL.
    assert metrics["kl"][1] < metrics["kl"][0]


def test_batch_larger_than_data_is_an_error(digits):
    train, _ = digits
    model = _model()
    state = vj.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3))
    with pytest.raises(ValueError, match="batch_size=4096 is larger than the dataset"):
        vj.train_epoch(vj.make_train_step(model.objective), state, train, jax.random.key(0), batch_size=4096)


def _digits_state(train, **kwargs):
    model = _model()
    return model, vj.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3), **kwargs)


def test_fit_resumed_from_state_and_history_is_bitwise_identical(digits):
    """Three epochs, then two more from the returned state and history == five in one go."""
    train, _ = digits
    model, state = _digits_state(train, beta=1.0, kl_warmup_steps=40)  # the warm-up spans the break
    step = vj.make_train_step(model.objective)
    copy = jax.tree.map(jnp.copy, state)
    whole = vj.fit(step, state, train, jax.random.key(3), epochs=5, batch_size=128, progress=False)
    part = vj.fit(step, copy, train, jax.random.key(3), epochs=3, batch_size=128, progress=False)
    resumed = vj.fit(step, part.state, train, jax.random.key(3), epochs=5, batch_size=128,
                     history=part.history, progress=False)
    assert resumed.history == whole.history and len(whole.history) == 5
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name, kwargs", [
    ("beta", dict(beta=2.0, kl_warmup_steps=10)),  # the KL warm-up shorthand
    ("temperature", dict(temperature=schedules.linear_warmup(2.0, steps=10))),  # any hyper-parameter
])
def test_warmup_ramps_a_hyperparameter_linearly_with_the_step(digits, name, kwargs):
    """With a warm-up of W steps, step s optimises value * (s + 1) / W: measured through the value
    that the objective receives (an objective that returns it as aux)."""
    train, _ = digits

    class Scalar:
        def init(self, key, x):
            return {"w": jnp.zeros(())}

    def objective(params, key, x, **hparams):
        return params["w"] * 0.0, {"value": hparams[name]}

    state = vj.create_train_state(Scalar(), jax.random.key(0), train[0], optax.sgd(0.1), **kwargs)
    assert int(state.kl_warmup_steps) == (10 if name == "beta" else 0)
    step = vj.make_train_step(objective)
    seen = []
    for i in range(12):
        state, metrics = step(state, train[:8], jax.random.key(i))
        seen.append(float(metrics["value"]))
    np.testing.assert_allclose(seen, [2.0 * min(1.0, (s + 1) / 10) for s in range(12)], rtol=1e-6)
    stacked = stack([state, state])  # a schedule is a pytree: it stacks like any hyper-parameter
    assert stacked.hparams[name].steps.shape == (2,)


def test_hooks_add_metrics_and_early_stopping_uses_them(digits):
    from vae_jax import hooks

    train, test = digits
    model, state = _digits_state(train)
    seen = []
    # A metric that peaks at epoch 2 and then falls: patience 3 stops after epoch 5.
    fake = lambda epoch, state, history: history[-1].update(score=-abs(epoch - 2.0))  # noqa: E731
    result = vj.fit(vj.make_train_step(model.objective), state, train, jax.random.key(0), epochs=50,
                    batch_size=256, progress=False,
                    hooks=[hooks.Validate(model.objective, test, jax.random.key(1)), fake,
                           hooks.EarlyStopping("score", patience=3),
                           lambda epoch, state, history: seen.append(epoch)])
    assert seen == [1, 2, 3, 4, 5] and len(result.history) == 5
    assert result.stop_reason.startswith("early stopping: no better score in 3 epochs (best -0.0000 at epoch 2)")
    assert {"validation_elbo", "validation_kl", "validation_reconstruction"} <= set(result.history[0])
    # the validation numbers are those of evaluate on the same parameters and key
    again = vj.evaluate(model.objective, result.state.params, test, jax.random.fold_in(jax.random.key(1), 4))
    assert again["elbo"] == pytest.approx(result.history[-1]["validation_elbo"], rel=1e-6)


def test_time_limit_and_finite_checks(digits):
    from vae_jax import hooks

    train, _ = digits
    model, state = _digits_state(train)
    limit = hooks.TimeLimit(minutes=1e-9)
    result = vj.fit(vj.make_train_step(model.objective), state, train, jax.random.key(0), epochs=10,
                    batch_size=256, hooks=[limit], progress=False)
    assert len(result.history) == 1 and result.stop_reason.startswith("time limit")
    nan_metric = lambda epoch, state, history: history[-1].update(val=float("nan"))  # noqa: E731
    with pytest.raises(FloatingPointError, match="Non-finite val after epoch 2"):
        vj.fit(vj.make_train_step(model.objective), result.state, train, jax.random.key(0), epochs=3,
               batch_size=256, history=result.history, hooks=[nan_metric, hooks.RequireFinite("val")],
               progress=False)
    with pytest.raises(ValueError, match="minutes must be"):
        hooks.TimeLimit(float("inf"))
    with pytest.raises(ValueError, match="patience must be a positive int"):
        hooks.EarlyStopping("val", patience=0)


def test_create_train_state_rejects_bad_hyperparameters(digits):
    train, _ = digits
    model = _model()
    for bad, match in [(dict(beta=-1.0), "beta must be finite and >= 0"),
                       (dict(beta=float("inf")), "must be finite"),
                       (dict(kl_warmup_steps=5), "needs a beta"),
                       (dict(beta=1.0, kl_warmup_steps=-1), "must be an int >= 0"),
                       (dict(beta=schedules.linear_warmup(-1.0, steps=3)), "beta must be finite and >= 0")]:
        with pytest.raises(ValueError, match=match):
            vj.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3), **bad)
    with pytest.raises(ValueError, match="ONE input of shape"):
        vj.create_train_state(model, jax.random.key(0), train[:4], optax.adam(1e-3))
    with pytest.raises(ValueError, match="must be finite"):
        schedules.linear_warmup(float("nan"), steps=3)
    with pytest.raises(ValueError, match="warm-up steps must be an int >= 0"):
        schedules.linear_warmup(1.0, steps=1.5)


def test_uninterrupted_holds_ctrl_c_until_its_hooks_are_done():
    # CI once caught a Ctrl-C between the checkpoint's write and the log that records it: the
    # run said "no checkpoint was written" beside a checkpoint on disk.
    import os
    import signal

    from vae_jax import hooks

    ran = []

    def checkpoint(epoch, state, history):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the checkpoint is written
        ran.append("checkpoint")

    group = hooks.Uninterrupted(checkpoint, lambda e, s, h: ran.append("log"))
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a test worker may ignore SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):  # delivered, but only after both hooks ran
            group(1, None, [])
        assert ran == ["checkpoint", "log"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back
        with pytest.raises(KeyboardInterrupt):  # unwrapped, the same Ctrl-C stops the checkpoint hook itself
            checkpoint(1, None, [])
        assert ran == ["checkpoint", "log"]
    finally:
        signal.signal(signal.SIGINT, before)
    # no signal: every hook runs, and the last stop reason wins, as in fit
    assert hooks.Uninterrupted(lambda e, s, h: "a", lambda e, s, h: None, lambda e, s, h: "b")(1, None, []) == "b"
    assert hooks.Uninterrupted(lambda e, s, h: None)(1, None, []) is None
