"""Discrete-latent gradient estimators against the exact gradient by enumeration.

A linear sigmoid-belief-net VAE with 8 binary latents and 12 binary pixels has
256 latent configurations, so :mod:`vae_jax.enumeration` gives its exact ELBO
(and k-sample bound) and ``jax.grad`` of it the exact gradient. Each unbiased
estimator's mean over ``DRAWS`` independent draws must be within ``MAX_Z``
standard errors of it for every parameter (about 130 z-scores per test: a false
alarm beyond 5 has probability ~1e-4); the biased ones must be far outside.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import discrete, models
from vae_jax import enumeration as EN
from vae_jax import estimators
from vae_jax import training

LATENT, BATCH, DRAWS, MAX_Z = 8, 3, 10000, 5.0
MODEL = models.DiscreteVAE((3, 4, 1), LATENT)


@functools.lru_cache(maxsize=None)
def _setup():
    x = jax.random.bernoulli(jax.random.key(10), 0.4, (BATCH, 3, 4, 1)).astype(jnp.float32)
    params = jax.jit(MODEL.init)(jax.random.key(11), x[0])
    params["encoder"] = jax.tree.map(lambda w: 1.5 * w, params["encoder"])
    params["decoder"]["prior_logits"] = 0.8 * jax.random.normal(jax.random.key(12), (LATENT,))
    return params, x


def _random_extras(name):
    """Estimator parameters far from their initial values: unbiasedness must not depend on them."""
    params, x = _setup()
    extra = estimators.init_estimator_params(name, MODEL, jax.random.key(13), x[0], hidden=7)
    if name in ("rebar", "relax"):
        extra["control"] = {**extra["control"], "log_temperature": jnp.asarray(0.6), "eta": jnp.asarray(-0.7)}
        if name == "relax":
            extra["control"]["net"] = jax.tree.map(lambda w: 3.0 * w + 0.2, extra["control"]["net"])
    if name == "nvil":
        extra["baseline"] = jax.tree.map(lambda w: 2.0 * w - 0.5, extra["baseline"])
    return {**params, **extra}


@functools.lru_cache(maxsize=None)
def _exact(num_samples=1):
    params, x = _setup()

    def objective(p):
        fns = dict(encode=lambda v: MODEL.encode(p, v), decode=lambda b: MODEL.decode(p, b),
                   prior_logits=MODEL.prior_logits(p))
        if num_samples == 1:
            values = jax.vmap(lambda xi: EN.exact_elbo(xi, **fns))(x)
        else:
            values = jax.vmap(lambda xi: EN.exact_iwae(xi, **fns, num_samples=num_samples))(x)
        return jnp.mean(values)

    return jax.jit(jax.grad(objective))(params)


_CACHE = {}


def _stats(name, *, seed=3, hparams=None, **options):
    cache_key = (name, tuple(sorted(options.items())), seed, repr(hparams))
    if cache_key not in _CACHE:
        params, x = _setup()
        estimator = estimators.make_estimator(name, MODEL, **options)
        _CACHE[cache_key] = estimators.gradient_statistics(estimator, _random_extras(name), jax.random.key(seed), x,
                                                  num_draws=DRAWS, hparams=hparams)
    return _CACHE[cache_key]


def _row(row, name):
    """A metric of a ``fit`` history row (``train_NAME`` since fit's hooks; ``NAME`` before)."""
    return row.get(f"train_{name}", row.get(name))


def _max_z(stats, truth):
    worst = 0.0
    for group in ("encoder", "decoder"):
        s = stats[group]
        z = jax.tree.map(lambda m, v, t: jnp.abs(m - t) / jnp.sqrt(v / DRAWS), s.mean, s.variance, truth[group])
        worst = max(worst, max(float(jnp.max(leaf)) for leaf in jax.tree.leaves(z)))
    return worst


UNBIASED = [
    ("reinforce", {}, None),
    ("reinforce", {"baseline": "running_mean"}, {"baseline_value": -9.0}),
    ("reinforce", {"baseline": "leave_one_out", "num_samples": 3}, None),
    ("nvil", {"num_samples": 2}, {"baseline_value": -4.0}),
    ("arm", {}, None),
    ("disarm", {"num_pairs": 2}, None),
    ("rebar", {}, None),
    ("relax", {}, None),
]


@pytest.mark.parametrize("name,options,hparams", UNBIASED,
                         ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o, _ in UNBIASED])
def test_mean_gradient_matches_exact_elbo_gradient(name, options, hparams):
    assert _max_z(_stats(name, hparams=hparams, **options), _exact()) < MAX_Z


def test_vimco_matches_the_exact_gradient_of_the_two_sample_bound():
    stats = _stats("vimco", num_samples=2)
    assert _max_z(stats, _exact(2)) < MAX_Z
    assert _max_z(stats, _exact(1)) > 20  # and it is not the ELBO's gradient: the test has power


def test_disarm_iw_matches_the_exact_gradient_of_the_two_sample_bound():
    # Two antithetic pairs: unbiased for the 2-sample bound (65,536 ordered pairs of configurations).
    stats = _stats("disarm_iw", num_samples=2)
    assert _max_z(stats, _exact(2)) < MAX_Z
    assert _max_z(stats, _exact(1)) > 20  # not the ELBO's gradient


@pytest.mark.parametrize("name,options", [("gumbel_softmax", {"temperature": 0.5}),
                                          ("straight_through", {"temperature": 1.0})])
def test_relaxed_estimators_are_biased(name, options):
    stats = _stats(name, **options)
    assert _max_z(stats, _exact()) > 20
    # ... while their variance is far below REINFORCE's.
    assert float(stats["encoder"].total_variance) < 0.1 * float(_stats("reinforce")["encoder"].total_variance)


def test_disarm_variance_not_above_arm_on_the_same_draws():
    arm, disarm = _stats("arm", seed=5), _stats("disarm", seed=5)
    np.testing.assert_allclose(arm["decoder"].total_variance, disarm["decoder"].total_variance, rtol=1e-5)
    for a, d in zip(jax.tree.leaves(arm["encoder"].variance), jax.tree.leaves(disarm["encoder"].variance)):
        assert np.all(np.asarray(d) <= np.asarray(a) * (1 + 1e-4) + 1e-9)
    assert float(disarm["encoder"].total_variance) < 0.8 * float(arm["encoder"].total_variance)


def test_nvil_baseline_gets_the_gradient_of_its_squared_error():
    # d/d(output bias) of -(f - C)^2 has mean 2 (ELBO(x) - C(x)): the exact ELBO per example.
    params, x = _setup()
    p = _random_extras("nvil")
    stats = _stats("nvil", num_samples=2, hparams={"baseline_value": -4.0})
    fns = dict(encode=lambda v: MODEL.encode(p, v), decode=lambda b: MODEL.decode(p, b),
               prior_logits=MODEL.prior_logits(p))
    elbo = jax.vmap(lambda xi: EN.exact_elbo(xi, **fns))(x)
    c = jax.vmap(lambda xi: estimators.baseline_apply(p["baseline"], xi))(x)
    truth = jnp.mean(2 * (elbo - (-4.0) - c))
    mean, var = stats["baseline"].mean[-1]["b"][0], stats["baseline"].variance[-1]["b"][0]
    assert abs(float(mean - truth)) < MAX_Z * float(jnp.sqrt(var / DRAWS))


def test_rebar_control_gets_gradient_and_decoder_gradient_does_not_depend_on_it():
    params, x = _setup()
    key = jax.random.key(20)
    grads = []
    for name, scale in [("rebar", 1.0), ("rebar", -2.0), ("relax", 1.0)]:
        p = _random_extras(name)
        p["control"] = {**p["control"], "eta": scale * p["control"]["eta"]}
        objective = estimators.make_estimator(name, MODEL)
        grads.append(jax.jit(jax.grad(lambda q: objective(q, key, x[0])[0]))(p))
    for g in grads[1:]:  # same key, same b: the decoder gradient is grad log p(x, b), whatever the control
        for a, b in zip(jax.tree.leaves(grads[0]["decoder"]), jax.tree.leaves(g["decoder"])):
            np.testing.assert_array_equal(a, b)
    # The generic function without decode_constant cancels the decoder's share in float32 arithmetic.
    p = _random_extras("rebar")
    loose = jax.jit(jax.grad(lambda q: estimators.relaxed.rebar(key, x[0], lambda v: MODEL.encode(q, v),
                                                 lambda b: MODEL.decode(q, b), prior_logits=MODEL.prior_logits(q),
                                                 control=q["control"])[0]))(p)
    for a, b in zip(jax.tree.leaves(grads[0]["decoder"]), jax.tree.leaves(loose["decoder"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for g in grads:
        assert all(float(jnp.sum(jnp.abs(leaf))) > 0 for leaf in jax.tree.leaves(g["control"]))


def test_values_are_the_true_objectives():
    params, x = _setup()
    key = jax.random.key(6)
    mc = MODEL.objective(params, key, x[0], num_samples=3)[0]
    b = discrete.sample(key, MODEL.encode(params, x[0]), num_samples=3)  # the draws of every estimator below
    bound = jax.nn.logsumexp(MODEL.log_weights(params, x[0], b)) - np.log(3)
    for name, options, expected in [("reinforce", {"num_samples": 3}, mc), ("vimco", {"num_samples": 3}, bound),
                                    ("gumbel_softmax", {"num_samples": 3}, mc),
                                    ("straight_through", {"num_samples": 3}, mc)]:
        value, aux = jax.jit(estimators.make_estimator(name, MODEL, **options))(params, key, x[0])
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        np.testing.assert_allclose(aux["iwae" if name == "vimco" else "elbo"], expected, rtol=1e-5)
    # ARM/DisARM: the mean of f over the antithetic pair, both exact draws of q.
    value = jax.jit(estimators.make_estimator("disarm", MODEL))(params, key, x[0])[0]
    u = jax.random.uniform(key, (1, LATENT))
    prob = jax.nn.sigmoid(MODEL.encode(params, x[0]))[None]
    b = jnp.concatenate([(u < prob), (1 - u < prob)]).astype(jnp.float32)
    np.testing.assert_allclose(value, jnp.mean(MODEL.log_weights(params, x[0], b)), rtol=1e-5)
    # DisARM-IW: the k-sample bound of the first draws of its k antithetic pairs.
    value, aux = jax.jit(estimators.make_estimator("disarm_iw", MODEL, num_samples=3))(params, key, x[0])
    b = (jax.random.uniform(key, (3, LATENT)) < prob).astype(jnp.float32)
    np.testing.assert_allclose(value, jax.nn.logsumexp(MODEL.log_weights(params, x[0], b)) - np.log(3), rtol=1e-5)
    np.testing.assert_allclose(aux["iwae"], value, rtol=1e-6)


def test_categorical_latents():
    model = models.DiscreteVAE((3, 4, 1), 2, num_categories=3)
    x = jax.random.bernoulli(jax.random.key(0), 0.5, (2, 3, 4, 1)).astype(jnp.float32)
    params = jax.jit(model.init)(jax.random.key(1), x[0])
    params["encoder"] = jax.tree.map(lambda w: 2.0 * w, params["encoder"])

    def exact(p):
        return jnp.mean(jax.vmap(lambda xi: EN.exact_elbo(xi, lambda v: model.encode(p, v),
                                                          lambda b: model.decode(p, b),
                                                          prior_logits=model.prior_logits(p),
                                                          latent="categorical"))(x))

    truth = jax.grad(exact)(params)
    est = estimators.make_estimator("reinforce", model, baseline="leave_one_out", num_samples=2)
    stats = estimators.gradient_statistics(est, params, jax.random.key(2), x, num_draws=DRAWS)
    assert _max_z(stats, truth) < MAX_Z
    gs = estimators.gradient_statistics(estimators.make_estimator("gumbel_softmax", model, temperature=0.5),
                               params, jax.random.key(2), x, num_draws=DRAWS)
    assert _max_z(gs, truth) > 10
    for name in [n for n, e in estimators.ESTIMATORS.items() if e.latents == ("bernoulli",)]:
        with pytest.raises(ValueError, match="Bernoulli"):
            estimators.make_estimator(name, model, **({"num_samples": 2} if name == "disarm_iw" else {}))(
                estimators.with_estimator_params(model, name).init(
                jax.random.key(0), x[0]), jax.random.key(0), x[0])


def test_disarm_training_through_fit_improves_the_elbo():
    from vae_jax import data

    images = jnp.asarray(data.load_digits().images[:1000])
    model = models.linear_sbn(images.shape[1:])  # the DisARM paper's linear model, 200 binary latents
    state = training.create_train_state(model, jax.random.key(0), images[0], optax.adam(3e-3))
    binary = jax.random.bernoulli(jax.random.key(1), images).astype(jnp.float32)

    @jax.jit
    def elbo(params):
        keys = jax.random.split(jax.random.key(2), binary.shape[0])
        return jnp.mean(jax.vmap(lambda k, v: model.objective(params, k, v, num_samples=4)[0])(keys, binary))

    before = elbo(state.params)
    step = training.make_train_step(estimators.make_estimator("disarm", model), dynamic_binarization=True)
    result = training.fit(step, state, images, jax.random.key(3), epochs=4, batch_size=50, progress=False)
    state, history = result[0], result[1]
    after = elbo(state.params)
    assert len(history) == 4 and _row(history[-1], "elbo") > _row(history[0], "elbo")
    assert after > before + 10  # nats per 8x8 image


@pytest.mark.parametrize("name", ["nvil", "relax"])
def test_learned_estimator_parameters_train_in_the_state(name):
    from vae_jax import data

    images = jnp.asarray(data.load_digits().images[:100])
    model = estimators.with_estimator_params(models.DiscreteVAE(images.shape[1:], 10), name, hidden=8)
    state = training.create_train_state(model, jax.random.key(0), images[0], optax.adam(1e-2))
    extra = "baseline" if name == "nvil" else "control"
    start = jax.tree.map(np.asarray, state.params[extra])
    step = training.make_train_step(estimators.make_estimator(name, model), dynamic_binarization=True)
    result = training.fit(step, state, images, jax.random.key(1), epochs=2, batch_size=10, progress=False)
    state, history = result[0], result[1]
    assert all(np.isfinite(_row(h, "loss")) for h in history)
    moved = [float(np.max(np.abs(np.asarray(a) - b))) for a, b in
             zip(jax.tree.leaves(state.params[extra]), jax.tree.leaves(start))]
    assert min(moved) > 1e-3
    if name == "nvil":  # the baseline fits the ELBO: its squared error falls
        assert _row(history[-1], "baseline_loss") < _row(history[0], "baseline_loss")


def test_bad_arguments_raise_clear_errors():
    params, x = _setup()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="Unknown estimator"):
        estimators.make_estimator("score", MODEL)
    with pytest.raises(ValueError, match="unknown options"):
        estimators.make_estimator("disarm", MODEL, num_samples=2)
    with pytest.raises(ValueError, match="num_samples must be an int >= 2"):
        estimators.make_estimator("reinforce", MODEL, baseline="leave_one_out")(params, key, x[0])
    with pytest.raises(ValueError, match="num_samples must be an int >= 2"):
        estimators.make_estimator("vimco", MODEL, num_samples=1)(params, key, x[0])
    with pytest.raises(ValueError, match="baseline_value"):
        estimators.make_estimator("reinforce", MODEL, baseline="running_mean")(params, key, x[0])
    with pytest.raises(ValueError, match="Unknown baseline"):
        estimators.make_estimator("reinforce", MODEL, baseline="mean")(params, key, x[0])
    with pytest.raises(ValueError, match="temperature"):
        estimators.make_estimator("gumbel_softmax", MODEL, temperature=0.0)(params, key, x[0])
    with pytest.raises(ValueError, match="control"):
        estimators.make_estimator("rebar", MODEL)({**params, "control": {"eta": 1.0}}, key, x[0])
    with pytest.raises(ValueError, match="net"):
        estimators.make_estimator("relax", MODEL)(_random_extras("rebar"), key, x[0])
    with pytest.raises(ValueError, match="prior_logits"):
        estimators.discrete.reinforce(key, x[0], lambda v: MODEL.encode(params, v), lambda b: MODEL.decode(params, b),
                     prior_logits=jnp.zeros(3))
