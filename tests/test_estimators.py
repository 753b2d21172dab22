"""Gradient estimators against the exact ELBO gradient of a linear-Gaussian model.

The model p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I) with an affine encoder
q(z|x) = N(A x + c, diag(exp(S x + s))^2) has an exact, differentiable ELBO
(:meth:`LinearGaussian.elbo`), so ``jax.grad`` of it is the truth that each
unbiased estimator's mean over many draws must match within standard errors.
"""

import functools
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import AffineLinearGaussian, LinearGaussian, estimators, objectives
from vae_jax.training import TrainState

DATA_DIM, LATENT_DIM, BATCH, DRAWS = 8, 3, 4, 4000
MAX_Z = 5.0  # ~90 z-scores per test: a false alarm beyond 5 standard errors has probability ~1e-5


MODEL = AffineLinearGaussian()


def _setup(orthogonal=False):
    lg = LinearGaussian.random(jax.random.key(0), DATA_DIM, LATENT_DIM, sigma=0.7, orthogonal=orthogonal)
    x = lg.sample(jax.random.key(1), BATCH)
    k = jax.random.split(jax.random.key(2), 3)
    encoder = {"A": 0.3 * jax.random.normal(k[0], (LATENT_DIM, DATA_DIM)),
               "c": 0.1 * jax.random.normal(k[1], (LATENT_DIM,)),
               "S": 0.05 * jax.random.normal(k[2], (LATENT_DIM, DATA_DIM)),
               "s": jnp.full((LATENT_DIM,), -0.5)}
    return {"encoder": encoder, "decoder": lg}, x


def _exact_posterior_params(lg):
    """Encoder parameters with q(z|x) = p(z|x) (diagonal when W has orthogonal columns)."""
    _, cov = lg.posterior(jnp.zeros(DATA_DIM))  # the posterior covariance does not depend on x
    gain = cov @ lg.weight.T * jnp.exp(-2 * lg.log_sigma)
    encoder = {"A": gain, "c": -gain @ lg.bias, "S": jnp.zeros((LATENT_DIM, DATA_DIM)),
               "s": 0.5 * jnp.log(jnp.diag(cov))}
    return {"encoder": encoder, "decoder": lg}


def _exact_gradient(params, x):
    def mean_elbo(p):
        return jnp.mean(jax.vmap(lambda xi: p["decoder"].elbo(xi, *MODEL.encode(p, xi)))(x))
    return jax.grad(mean_elbo)(params)


def _max_z(stats, truth, truth_variance=None):
    """Largest |mean - truth| / standard error over every parameter of both groups."""
    worst = 0.0
    for group in ("encoder", "decoder"):
        s = stats[group]
        t_var = truth_variance[group] if truth_variance else jax.tree.map(jnp.zeros_like, s.variance)
        z = jax.tree.map(lambda m, v, t, tv: jnp.abs(m - t) / jnp.sqrt((v + tv) / DRAWS), s.mean, s.variance,
                         truth[group], t_var)
        worst = max(worst, max(float(jnp.max(leaf)) for leaf in jax.tree.leaves(z)))
    return worst


@functools.lru_cache(maxsize=None)
def _estimator(name, options):
    # One object per setting, so that jit's cache (keyed on the static estimator) is shared across tests.
    return estimators.make_estimator(name, MODEL, **dict(options))


_CACHE = {}


def _stats(name, params, x, *, hparams=None, seed=3, **options):
    """Gradient statistics over DRAWS draws, memoised per setting (tests share them to save compilations)."""
    options = tuple(sorted(options.items()))
    cache_key = (name, options, repr(hparams), seed, float(jnp.sum(params["encoder"]["A"])))
    if cache_key not in _CACHE:
        _CACHE[cache_key] = estimators.gradient_statistics(_estimator(name, options), params, jax.random.key(seed), x,
                                                  num_draws=DRAWS, hparams=hparams)
    return _CACHE[cache_key]


UNBIASED_FOR_ELBO = [
    ("pathwise", {}, None),
    ("pathwise", {"kl": "monte_carlo", "num_samples": 2}, None),
    ("stl", {}, None),
    ("score_function", {}, None),
    ("score_function", {"baseline": "running_mean"}, {"baseline_value": -9.0}),
    ("score_function", {"baseline": "leave_one_out", "num_samples": 4}, None),
    ("iwae", {"num_samples": 1}, None),  # the one-sample IWAE bound is the Monte-Carlo ELBO
]


@pytest.mark.parametrize("name,options,hparams", UNBIASED_FOR_ELBO,
                         ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o, _ in UNBIASED_FOR_ELBO])
def test_mean_gradient_matches_exact_elbo_gradient(name, options, hparams):
    params, x = _setup()
    assert _max_z(_stats(name, params, x, hparams=hparams, **options), _exact_gradient(params, x)) < MAX_Z


def test_the_z_test_detects_a_gradient_of_another_objective():
    # Power of the check above: the k = 4 IWAE gradient is not the ELBO gradient.
    params, x = _setup()
    assert _max_z(_stats("iwae", params, x, num_samples=4), _exact_gradient(params, x)) > 50


def test_dreg_mean_matches_iwae_mean():
    params, x = _setup()
    iwae = _stats("iwae", params, x, num_samples=4)
    dreg = _stats("dreg", params, x, num_samples=4, seed=4)  # independent draws: a two-sample test
    truth = {g: iwae[g].mean for g in iwae}
    assert _max_z(dreg, truth, {g: iwae[g].variance for g in iwae}) < MAX_Z


def test_dreg_identities_for_one_key():
    params, x = _setup()
    key = jax.random.key(5)

    def grad(name, **options):
        return jax.jit(jax.grad(lambda p: estimators.make_estimator(name, MODEL, **options)(p, key, x[0])[0]))(params)

    # Decoder: DReG uses exactly the IWAE gradient. Encoder at k = 1: DReG is STL.
    for a, b in zip(jax.tree.leaves(grad("dreg", num_samples=6)["decoder"]),
                    jax.tree.leaves(grad("iwae", num_samples=6)["decoder"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grad("dreg", num_samples=1)["encoder"]),
                    jax.tree.leaves(grad("stl", num_samples=1)["encoder"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_values_are_the_true_objectives():
    params, x = _setup()
    key = jax.random.key(6)
    encode, decode = (lambda v: MODEL.encode(params, v)), (lambda z: MODEL.decode(params, z))
    kw = {"likelihood": "gaussian_learned"}
    mc_elbo = objectives.elbo(key, x[0], encode, decode, num_samples=3, kl="monte_carlo", **kw)[0]
    bound = objectives.iwae_bound(key, x[0], encode, decode, num_samples=3, **kw)
    for name, options, expected in [("stl", {}, mc_elbo), ("score_function", {}, mc_elbo),
                                    ("score_function", {"baseline": "leave_one_out"}, mc_elbo),
                                    ("iwae", {}, bound), ("dreg", {}, bound)]:
        value, aux = jax.jit(estimators.make_estimator(name, MODEL, num_samples=3, **options))(params, key, x[0])
        np.testing.assert_allclose(value, expected, rtol=1e-6)
        np.testing.assert_allclose(aux["iwae" if name in ("iwae", "dreg") else "elbo"], expected, rtol=1e-6)


def test_stl_and_dreg_encoder_gradients_vanish_at_the_exact_posterior():
    params, x = _setup(orthogonal=True)
    params = _exact_posterior_params(params["decoder"])
    exact = _exact_gradient(params, x)["encoder"]
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(exact)) < 1e-4  # q is the optimum
    pathwise = _stats("pathwise", params, x)["encoder"].total_variance
    assert pathwise > 1.0
    for name, options in [("stl", {}), ("dreg", {"num_samples": 4})]:
        stats = _stats(name, params, x, **options)
        assert float(stats["encoder"].total_variance) < 1e-9 * float(pathwise), name
        assert float(stats["decoder"].total_variance) > 1e-2  # the decoder's gradient stays noisy


def test_score_function_variance_exceeds_pathwise_by_orders_of_magnitude():
    params, x = _setup()
    pathwise = float(_stats("pathwise", params, x)["encoder"].total_variance)
    plain = float(_stats("score_function", params, x)["encoder"].total_variance)
    loo = float(_stats("score_function", params, x, baseline="leave_one_out", num_samples=4)["encoder"]
                .total_variance)
    assert plain > 300 * pathwise
    assert loo < plain / 30  # a baseline (and k = 4 averaging) removes most of it


def test_gradient_statistics_match_a_python_loop():
    params, x = _setup()
    estimator = estimators.make_estimator("dreg", MODEL, num_samples=3)
    key, n = jax.random.key(7), 6
    stats = estimators.gradient_statistics(estimator, params, key, x, num_draws=n)
    chunked = estimators.gradient_statistics(estimator, params, key, x, num_draws=n, chunk_size=4)

    def batch_mean(p, k):
        keys = jax.random.split(k, BATCH)
        return jnp.mean(jnp.stack([estimator(p, keys[i], x[i])[0] for i in range(BATCH)]))

    grad = jax.jit(jax.grad(batch_mean))
    draws = [grad(params, k) for k in jax.random.split(key, n)]
    for group in ("encoder", "decoder"):
        flat = np.stack([np.concatenate([np.ravel(l) for l in jax.tree.leaves(d[group])]) for d in draws])
        flat = flat.astype(np.float64)
        mean, var = flat.mean(0), flat.var(0, ddof=1)
        for s in (stats[group], chunked[group]):
            np.testing.assert_allclose(np.concatenate([np.ravel(m) for m in jax.tree.leaves(s.mean)]), mean,
                                       rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(np.concatenate([np.ravel(v) for v in jax.tree.leaves(s.variance)]), var,
                                       rtol=1e-3, atol=1e-6)
            np.testing.assert_allclose(s.total_variance, var.sum(), rtol=1e-3)
            np.testing.assert_allclose(s.mean_snr, np.mean(np.abs(mean) / np.sqrt(var)), rtol=1e-3)
            signal = max(np.sum(mean**2) - var.sum() / n, 0.0)  # bias-corrected squared norm
            np.testing.assert_allclose(s.norm_snr, np.sqrt(signal / var.sum()), rtol=1e-3)


def test_snr_of_deterministic_and_zero_gradients():
    def estimator(p, key, x):  # d/dw = 2 (no noise), d/du = 1 + noise, d/dv = 0
        g = p["group"]
        return 2.0 * g["w"] + g["u"] * (1.0 + jax.random.normal(key)) + 0.0 * g["v"] + 0.0 * x, {}

    params = {"group": {"w": jnp.ones(()), "u": jnp.ones(()), "v": jnp.ones(())}}
    stats = estimators.gradient_statistics(estimator, params, jax.random.key(0), jnp.zeros((1,)), num_draws=500)["group"]
    assert float(stats.snr["w"]) == np.inf and float(stats.snr["v"]) == 0.0
    assert 0.8 < float(stats.snr["u"]) < 1.2  # |1| / 1, from 500 draws
    np.testing.assert_allclose(stats.mean_snr, (0.0 + stats.snr["u"]) / 2)  # the inf is left out
    np.testing.assert_allclose(stats.mean["w"], 2.0)


def test_running_baseline_step_tracks_the_elbo():
    params, x = _setup()
    objective = estimators.make_estimator("score_function", MODEL, baseline="running_mean")
    state = TrainState.create(apply_fn=None, params=params, tx=optax.sgd(1e-3),
                              estimator_state={"baseline_value": jnp.asarray(-20.0)})

    def train_step(state, batch, key):  # a minimal step, independent of vae_jax.training
        keys = jax.random.split(key, batch.shape[0])

        def loss(p):
            values, aux = jax.vmap(lambda k, xi: objective(p, k, xi, **state.objective_kwargs()))(keys, batch)
            return -jnp.mean(values), jnp.mean(aux["elbo"])
        (value, elbo), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        return state.apply_gradients(grads=grads), {"loss": value, "elbo": elbo}

    step = estimators.with_running_baseline(train_step, decay=0.75)
    state, metrics = step(state, x, jax.random.key(8))
    np.testing.assert_allclose(metrics["loss"], -metrics["elbo"], rtol=1e-6)
    np.testing.assert_allclose(state.estimator_state["baseline_value"], 0.75 * -20.0 + 0.25 * metrics["elbo"], rtol=1e-6)


def test_bad_arguments_raise_clear_errors():
    params, x = _setup()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="Unknown estimator"):
        estimators.make_estimator("reinforced", MODEL)
    with pytest.raises(ValueError, match="'reinforce' is for discrete latents, not latent='gaussian'"):
        estimators.make_estimator("reinforce", MODEL)
    with pytest.raises(ValueError, match="unknown options"):
        estimators.make_estimator("stl", MODEL, baseline="none")
    with pytest.raises(ValueError, match="num_samples >= 2"):
        estimators.make_estimator("score_function", MODEL, baseline="leave_one_out")(params, key, x[0])
    with pytest.raises(ValueError, match="baseline_value"):
        estimators.make_estimator("score_function", MODEL, baseline="running_mean")(params, key, x[0])
    with pytest.raises(ValueError, match="Unknown baseline"):
        estimators.make_estimator("score_function", MODEL, baseline="mean")(params, key, x[0])
    with pytest.raises(ValueError, match="num_draws"):
        estimators.gradient_statistics(estimators.make_estimator("stl", MODEL), params, key, x, num_draws=1)
    with pytest.raises(ValueError, match="decay"):
        estimators.with_running_baseline(lambda s, b, k: (s, {}), decay=1.0)


def _check_study_outputs(out, results, epochs):
    for name in ("variance_through_training.png", "snr_vs_k.png", "training_curves.png", "config.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    study1, study2, study3 = (results[k] for k in ("variance_through_training", "snr_against_k", "training"))
    assert study1["epoch"][0] == 0 and study1["epoch"][-1] == epochs and sorted(set(study1["epoch"])) == study1["epoch"]
    for label in ("pathwise", "score_leave_one_out"):
        assert all(v > 0 and math.isfinite(v) for g in ("encoder", "decoder") for v in study1[label][g])
    # Same keys give the same z: the score function's decoder gradient is the pathwise one, draw by draw.
    np.testing.assert_allclose(study1["score_leave_one_out"]["decoder"], study1["pathwise"]["decoder"], rtol=1e-4)
    assert all(s > 3 * p for s, p in zip(study1["score_leave_one_out"]["encoder"], study1["pathwise"]["encoder"]))
    # DReG's decoder gradient is the IWAE one, so their decoder SNRs agree for every k.
    for study in (study2, *results["snr_against_k_linear_gaussian"].values()):
        for kind in ("mean_snr", "norm_snr"):
            np.testing.assert_allclose(study["dreg"]["decoder"][kind], study["iwae"]["decoder"][kind], rtol=1e-3)
        assert all(v > 0 and math.isfinite(v) for v in study["iwae"]["encoder"]["mean_snr"])
    for curves in study3.values():
        assert not curves["diverged"] and len(curves["test_elbo"]) == epochs
        # log p(x) by importance sampling is a tighter bound than the ELBO on every epoch.
        assert all(lp > e for lp, e in zip(curves["test_log_px"], curves["test_elbo"]))


def test_gradient_estimator_study_quick(tmp_path, tensorboard_events):
    from experiments import gradient_estimators

    results = gradient_estimators.main(["--out", str(tmp_path), "--quick", "--no-progress",
                                        "--estimators", "pathwise", "score_leave_one_out", "--track", "tensorboard"])
    assert set(results["training"]) == {"pathwise", "score_leave_one_out"}
    assert json.loads((tmp_path / "config.json").read_text())["quick"] is True
    _check_study_outputs(tmp_path, results, epochs=2)
    # Every training is tracked; study 3's test numbers join the rows it logs.
    assert "train_loss" in tensorboard_events(tmp_path / "tensorboard" / "study_1_variance")["scalars"]
    for label, curves in results["training"].items():
        events = tensorboard_events(tmp_path / "tensorboard" / f"study_3_{label}")
        for name in ("test_elbo", "test_log_px"):
            np.testing.assert_allclose(events["scalars"][name], list(enumerate(curves[name], 1)), rtol=1e-6)


@pytest.mark.slow
def test_gradient_estimator_study_full(tmp_path):
    """The full study (about 18 CPU minutes) and the findings the README reports."""
    from experiments import gradient_estimators

    results = gradient_estimators.main(["--out", str(tmp_path), "--no-progress"])
    _check_study_outputs(tmp_path, results, epochs=20)
    study1 = results["variance_through_training"]
    assert all(s > 1e3 * p for s, p in zip(study1["score"]["encoder"], study1["pathwise"]["encoder"]))
    wide = results["snr_against_k_linear_gaussian"]["wide_q"]
    assert wide["dreg"]["encoder"]["norm_snr_tail_slope"] > 0.3 and wide["iwae"]["decoder"]["norm_snr_slope"] > 0.3
    assert wide["iwae"]["encoder"]["norm_snr"][2] < 0.3 * wide["iwae"]["encoder"]["norm_snr"][0]
    narrow = results["snr_against_k_linear_gaussian"]["narrow_q"]
    assert narrow["dreg"]["encoder"]["norm_snr_slope"] < 0  # DReG does not stop the fall when q is too narrow
    training_runs = results["training"]
    assert training_runs["pathwise"]["test_log_px"][-1] > training_runs["score"]["test_log_px"][-1] + 20


class EstimatorTransformsTest(chex.TestCase):
    """Every estimator: the same value and gradient with and without jit, on and off the device."""

    @chex.variants(with_jit=True, without_jit=True, with_device=True, without_device=True)
    def test_value_and_gradient_agree(self):
        params, x = _setup()
        options = {"pathwise": {}, "score_function": {"baseline": "leave_one_out", "num_samples": 3},
                   "stl": {}, "iwae": {"num_samples": 3}, "dreg": {"num_samples": 3}}
        for name, opts in options.items():
            surrogate = estimators.make_estimator(name, MODEL, **opts)

            def value_and_grad(p, xi, seed, surrogate=surrogate):
                return jax.value_and_grad(lambda q: surrogate(q, jax.random.key(seed), xi)[0])(p)

            expected_value, expected_grad = value_and_grad(params, x[0], 5)
            value, grad = self.variant(value_and_grad)(params, x[0], 5)
            np.testing.assert_allclose(value, expected_value, rtol=1e-5, err_msg=name)
            for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(expected_grad)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
