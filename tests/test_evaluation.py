"""Tests of vae_jax.evaluation: dataset log p(x) against the exact linear-Gaussian value, active units."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vae_jax as vj
from vae_jax import evaluation
from vae_jax import objectives
from vae_jax.data import load_digits
from vae_jax.training import batch_objective


@dataclasses.dataclass(frozen=True)
class LinearGaussianVAE:
    """A VAE-like model whose params are a LinearGaussian and whose encoder is its exact
    (diagonal, for an orthogonal W) posterior; ``shift`` moves q off the posterior."""

    shift: float = 0.0
    likelihood: str = "gaussian_learned"

    def encode(self, params, x):
        mean, cov = params.posterior(x)
        return mean + self.shift, 0.5 * jnp.log(jnp.diag(cov))

    def log_marginal(self, params, key, x, *, num_samples, chunk_size):
        return objectives.log_marginal(key, x, lambda v: self.encode(params, v), params.decode,
                              likelihood=self.likelihood, num_samples=num_samples, chunk_size=chunk_size)


@dataclasses.dataclass(frozen=True)
class LinearEncoder:
    """``encode(params, x) = (A x, 0)``: posterior means with a known covariance over data."""

    likelihood: str = "gaussian"

    def encode(self, params, x):
        return params @ x, jnp.zeros(params.shape[0])


def _linear_gaussian(orthogonal):
    lg = vj.LinearGaussian.random(jax.random.key(0), 5, 2, sigma=0.8, orthogonal=orthogonal)
    return lg, lg.sample(jax.random.key(1), 11)


def test_exact_posterior_gives_the_exact_value_of_every_example_and_its_summary():
    lg, x = _linear_gaussian(orthogonal=True)
    result = evaluation.log_marginal(LinearGaussianVAE(), lg, x, jax.random.key(2), num_samples=4,
                                     chunk_size=3, batch_size=4, progress=False)
    exact = np.asarray(jax.vmap(lg.log_marginal)(x), np.float64)
    assert result.values.shape == (11,)
    np.testing.assert_allclose(result.values, exact, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result.mean, exact.mean(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result.stderr, exact.std(ddof=1) / np.sqrt(11), rtol=1e-4)


def test_values_do_not_depend_on_batch_size_and_match_per_example_calls():
    lg, x = _linear_gaussian(orthogonal=False)
    model, key = LinearGaussianVAE(shift=0.3), jax.random.key(3)
    runs = [evaluation.log_marginal(model, lg, x, key, num_samples=64, chunk_size=16, batch_size=b,
                                    progress=False).values for b in (3, 11, 100)]
    for values in runs[1:]:
        np.testing.assert_allclose(values, runs[0], rtol=1e-6, atol=1e-5)
    one = jax.jit(lambda k, v: model.log_marginal(lg, k, v, num_samples=64, chunk_size=16))
    direct = [float(one(jax.random.fold_in(key, i), x[i])) for i in range(len(x))]
    np.testing.assert_allclose(runs[0], direct, rtol=1e-6, atol=1e-5)
    # a shifted q is a real importance sampler: below log p(x) on average, but close
    gap = np.asarray(jax.vmap(lg.log_marginal)(x)) - runs[0]
    assert 0 < gap.mean() < 0.5


def test_an_interrupted_log_marginal_resumes_from_its_file_to_the_same_values(tmp_path, monkeypatch):
    lg, x = _linear_gaussian(orthogonal=False)
    model, key, file = LinearGaussianVAE(shift=0.3), jax.random.key(4), tmp_path / "px.npz"
    run = functools.partial(evaluation.log_marginal, model, lg, x, key, num_samples=32, chunk_size=8, batch_size=3,
                            progress=False)
    whole = run().values
    real, calls = evaluation._batch_log_marginal, []

    def dies_at_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_batch_log_marginal", dies_at_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run(resume_file=file)
    monkeypatch.setattr(evaluation, "_batch_log_marginal", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    resumed = run(resume_file=file).values
    assert len(calls) == 3 + 2  # 11 examples in batches of 3: 2 saved, 2 computed after the restart
    np.testing.assert_array_equal(resumed, whole)
    assert evaluation.resume_file_seconds(file) > 0
    # other inputs (another key; other parameters) start afresh instead of reusing the values
    calls.clear()
    other_key = functools.partial(evaluation.log_marginal, model, lg, x, jax.random.key(5), num_samples=32,
                                  chunk_size=8, batch_size=3, progress=False)
    other = other_key(resume_file=file).values
    assert len(calls) == 4
    np.testing.assert_array_equal(other, other_key().values)
    calls.clear()
    moved = jax.tree.map(lambda a: a + 0.01, lg)
    evaluation.log_marginal(model, moved, x, jax.random.key(5), num_samples=32, chunk_size=8, batch_size=3,
                            progress=False, resume_file=file)
    assert len(calls) == 4


def test_padded_last_batch_compiles_once():
    lg, x = _linear_gaussian(orthogonal=True)
    model = LinearGaussianVAE(shift=0.123)  # a model no other test compiles
    compiled = (evaluation._batch_log_marginal_eigen if evaluation._use_eigen()
                else evaluation._batch_log_marginal_default)  # the CPU path compiles with Eigen matmuls
    before = compiled._cache_size()
    for n in (11, 7, 5):  # 4 + 4 + 3, 4 + 3, 4 + 1: every call has shape [4, 5]
        evaluation.log_marginal(model, lg, x[:n], jax.random.key(0), num_samples=8, chunk_size=8,
                                batch_size=4, progress=False)
    assert compiled._cache_size() == before + 1


def test_posterior_mean_variance_and_active_units_match_numpy():
    scales = np.array([1.0, 0.0, 0.2, 0.05, 0.0], np.float32)  # variances 1, 0, 0.04, 0.0025, 0
    params = jnp.asarray(np.diag(scales)[:, :5])
    x = np.random.default_rng(0).standard_normal((400, 5)).astype(np.float32)
    expected = np.var(x.astype(np.float64) * scales, axis=0)
    model = LinearEncoder()
    for batch_size in (1000, 64):
        np.testing.assert_allclose(evaluation.posterior_mean_variance(model, params, x, batch_size=batch_size),
                                   expected, rtol=1e-5, atol=1e-9)
    assert expected[2] > 0.01 > expected[3] > 0.001  # the thresholds below separate them clearly
    assert evaluation.active_units(model, params, x) == 2
    assert evaluation.active_units(model, params, x, threshold=0.001) == 3
    assert evaluation.active_units(model, params, x, threshold=0.0) == 3
    assert evaluation.active_units(model, params, x, threshold=10.0) == 0


def test_trained_vae_on_digits_iwae_estimate_exceeds_its_elbo():
    x = (load_digits().images[:300] > 0.5).astype(np.float32)
    model = vj.build_model(vj.ModelConfig(latent_dim=4, hidden_sizes=(32,)), x.shape[1:])
    state = vj.create_train_state(model, jax.random.key(0), x[0], optax.adam(3e-3))
    state, *_ = vj.fit(vj.make_train_step(model.objective), state, x[:200], jax.random.key(1), epochs=5,
                      batch_size=50, progress=False)
    test = x[200:]
    elbo_100 = functools.partial(model.objective, num_samples=100)  # a low-noise ELBO per example
    _, aux = jax.jit(batch_objective, static_argnums=0)(elbo_100, state.params, jax.random.key(2), test, {})
    result = evaluation.log_marginal(model, state.params, test, jax.random.key(3), num_samples=200,
                                     chunk_size=50, batch_size=32, progress=False)
    assert np.all(np.isfinite(result.values)) and result.values.shape == (100,)
    # E[IWAE_200] >= ELBO for every example: the paired gap is positive beyond 5 standard errors
    gap = result.values - np.asarray(aux["elbo"], np.float64)
    assert gap.mean() > 5 * gap.std(ddof=1) / np.sqrt(len(gap)), (gap.mean(), gap.std(ddof=1))
    assert 0 <= evaluation.active_units(model, state.params, test) <= 4


def test_bad_inputs_raise():
    lg, x = _linear_gaussian(orthogonal=True)
    model, key = LinearGaussianVAE(), jax.random.key(0)
    with pytest.raises(ValueError, match="at least one example"):
        evaluation.log_marginal(model, lg, x[:0], key, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluation.log_marginal(model, lg, x, key, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="num_samples"):
        evaluation.log_marginal(model, lg, x, key, num_samples=0, progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluation.log_marginal(model, lg, x, key, num_samples=5, chunk_size=-2, progress=False)
    with pytest.raises(ValueError, match="threshold"):
        evaluation.active_units(model, lg, x, threshold=-0.1)
    bernoulli = vj.build_model(vj.ModelConfig(latent_dim=2, hidden_sizes=(8,)), (2, 2, 1))
    params = bernoulli.init(key, jnp.zeros((2, 2, 1)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluation.log_marginal(bernoulli, params, 2.0 * np.ones((3, 2, 2, 1), np.float32), key, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluation.active_units(bernoulli, params, -np.ones((3, 2, 2, 1), np.float32))


def test_examples_of_the_wrong_shape_name_the_shape_the_model_takes():
    model = vj.build_model(vj.ModelConfig(latent_dim=2, hidden_sizes=(8,)), (8, 8, 1))
    params = model.init(jax.random.key(0), jnp.zeros((8, 8, 1)))
    one, other = jnp.full((8, 8, 1), 0.5), jnp.full((3, 4, 4, 1), 0.5)
    with pytest.raises(ValueError, match=r"data must be \[N, 8, 8, 1\] for this model; got shape \(8, 8, 1\) "
                                         r"\(one example\? add the batch axis"):
        evaluation.log_marginal(model, params, one, jax.random.key(1), num_samples=2, progress=False)
    with pytest.raises(ValueError, match=r"data must be \[N, 8, 8, 1\]"):
        evaluation.log_marginal(model, params, other, jax.random.key(1), num_samples=2, progress=False)
    for data in (one, other):  # evaluate sees the objective only: the model says what it takes
        with pytest.raises(ValueError, match=r"the model takes ONE example of shape \(8, 8, 1\); got shape"):
            vj.evaluate(model.objective, params, data, jax.random.key(1))
    discrete = vj.build_model(vj.ModelConfig(latent="bernoulli", latent_dim=3, hidden_sizes=()), (8, 8, 1))
    with pytest.raises(ValueError, match=r"ONE example of shape \(8, 8, 1\)"):
        vj.evaluate(discrete.objective, discrete.init(jax.random.key(0), one), other, jax.random.key(1))
