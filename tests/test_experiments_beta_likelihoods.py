"""Tests of experiments.beta_vae and experiments.likelihoods.

Helpers are checked against closed forms (mutual information of a label
copy, exact bin probabilities of a flat Gaussian, the dequantization bin);
each ``--quick`` run is checked for every promised file and for relations
between its numbers that hold robustly at that size.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from experiments import beta_vae, likelihoods
from vae_jax import models

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _read(out):
    return json.loads((out / "results.json").read_text()), json.loads((out / "config.json").read_text())


def _assert_pngs(out, names):
    for name in names:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


@pytest.fixture(scope="module")
def beta_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("beta_vae")
    beta_vae.main(["--out", str(out), "--quick", "--no-progress", "--track", "tensorboard"])
    return out


@pytest.fixture(scope="module")
def likelihood_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("likelihoods")
    likelihoods.main(["--out", str(out), "--quick", "--no-progress"])
    return out


@pytest.mark.parametrize("module", [beta_vae, likelihoods])
def test_help_describes_the_experiment(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


# ------------------------------------------------------------------ beta_vae
def test_class_mig_of_a_label_copy_is_one_and_of_two_copies_zero():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 500)
    copy = labels + 1e-3 * rng.standard_normal(labels.size)  # bins narrower than 1: each holds one class
    noise = rng.standard_normal(labels.size)
    one = beta_vae.class_mig(np.stack([copy, noise], 1), labels)
    assert one["label_entropy"] == pytest.approx(math.log(10), rel=1e-12)
    assert one["mutual_information"][0] == pytest.approx(math.log(10), rel=1e-9)
    # independent noise: only the binning bias, about (bins - 1)(classes - 1) / (2N) = 0.017 nats
    assert 0.0 <= one["mutual_information"][1] < 0.05
    assert one["mig"] > 0.97 and one["top_mi_fraction"] == pytest.approx(1.0)
    two = beta_vae.class_mig(np.stack([copy, copy, noise], 1), labels)
    assert two["mig"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="means must be"):
        beta_vae.class_mig(copy[:, None], labels)
    with pytest.raises(ValueError, match="two classes"):
        beta_vae.class_mig(np.stack([copy, noise], 1), np.zeros_like(labels))


def _digits_model(likelihood="bernoulli", latent_dim=3):
    return models.build_model(models.ModelConfig(latent_dim=latent_dim, likelihood=likelihood,
                                                 hidden_sizes=(16,)), (8, 8, 1))


def test_traversal_moves_one_unit_and_passes_through_the_reconstruction():
    model = _digits_model()
    x = jax.random.uniform(jax.random.key(0), (8, 8, 1))
    params = model.init(jax.random.key(1), x)
    images = beta_vae.traversal(model, params, x, np.array([0, 2]), steps=5)
    assert images.shape == (10, 8, 8, 1)
    reconstruction = np.asarray(model.reconstruct(params, x))
    np.testing.assert_allclose(images[2], reconstruction, atol=1e-6)  # delta = 0 in each row's middle
    np.testing.assert_allclose(images[7], reconstruction, atol=1e-6)
    assert np.abs(images[0] - images[4]).max() > 1e-3


def test_train_sweep_with_equal_betas_trains_equal_models():
    model = _digits_model()
    images = np.asarray(jax.random.uniform(jax.random.key(0), (128, 8, 8, 1)))
    states, history = beta_vae.train_sweep(model, images, [1.0, 1.0, 8.0], epochs=2, batch_size=32,
                                           learning_rate=1e-2, seed=0, progress=False)
    assert np.asarray(states.hparams["beta"]).tolist() == [1.0, 1.0, 8.0]
    assert len(history) == 2 and len(history[-1]["train_kl"]) == 3
    for leaf in jax.tree.leaves(states.params):  # same init, batches and noise: beta is the only difference
        np.testing.assert_allclose(leaf[0], leaf[1], rtol=1e-5, atol=1e-6)
    assert history[-1]["train_kl"][2] < history[-1]["train_kl"][0]


def test_beta_quick_run_writes_every_file(beta_run):
    _assert_pngs(beta_run, ["rate_distortion.png", "traversals.png", "active_units.png"])
    results, config = _read(beta_run)
    assert config["quick"] is True and config["betas"] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert [m["beta"] for m in results["models"]] == config["betas"]


def test_beta_quick_run_tracks_each_beta_of_the_stacked_sweep(beta_run, tensorboard_events):
    results, config = _read(beta_run)
    for i, beta in enumerate(config["betas"]):  # each model's own column of the stacked rows, and its images
        events = tensorboard_events(beta_run / "tensorboard" / f"beta_{beta:g}")
        assert [step for step, _ in events["scalars"]["train_loss"]] == [1, 2]
        assert events["scalars"]["train_loss"][-1][1] == pytest.approx(results["final_train_loss"][i], rel=1e-6)
        assert {"reconstructions", "prior_samples"} <= set(events["images"])


def test_beta_quick_run_trades_rate_for_distortion(beta_run):
    rows = _read(beta_run)[0]["models"]
    rates = np.array([m["rate"] for m in rows])
    distortions = np.array([m["distortion"] for m in rows])
    assert np.all(np.diff(rates) < 0), rates  # KL falls as beta rises
    assert np.all(np.diff(distortions) > -1.0), distortions  # reconstruction worsens (1-nat slack)
    assert distortions[-1] > distortions[0] + 5.0
    for m in rows:
        assert m["elbo"] == pytest.approx(-(m["rate"] + m["distortion"]), rel=1e-5)
        variances = np.array(m["posterior_mean_variance"])
        assert m["active_units"] == int(np.sum(variances > beta_vae.ACTIVE_THRESHOLD))
        assert 0.0 <= m["mig"] <= m["top_mi_fraction"] <= 1.0
        assert m["label_entropy"] == pytest.approx(math.log(10), abs=0.01)  # ~balanced test classes
    assert rows[-1]["active_units"] <= rows[0]["active_units"]


# --------------------------------------------------------------- likelihoods
def test_dequantize_stays_inside_each_pixel_bin():
    k = np.tile(np.arange(256), 200).astype(np.float32)
    y = np.asarray(likelihoods.dequantize(jax.random.key(0), jnp.asarray(k / 255.0)))
    np.testing.assert_array_equal(np.floor(y * 256), k)
    offset = y * 256 - k  # ~ U(0, 1)
    assert abs(offset.mean() - 0.5) < 4 * math.sqrt(1 / 12 / offset.size)


def _constant_decoder(likelihood, bias):
    """A model with q(z|x) = N(0, I) (zero encoder) and a decoder that outputs ``bias`` everywhere."""
    model = likelihoods.build(likelihood, (8, 8, 1), latent_dim=2)
    params = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0), jnp.zeros((8, 8, 1))))
    last = max(params["decoder"], key=lambda name: int(name.split("_")[-1]))
    params["decoder"][last]["bias"] = jnp.full_like(params["decoder"][last]["bias"], bias)
    return model, params


@pytest.mark.parametrize("raw", [-100.0, -8.0, 0.0, 5.0])
def test_learned_sigma_is_floored_softly(raw):
    model, params = _constant_decoder("gaussian_learned", raw)
    _, log_std = model.decode(params, jnp.zeros(2))
    floor = likelihoods.MIN_LOG_STD
    assert floor == pytest.approx(-math.log(256 * math.sqrt(2 * math.pi)))
    expected = floor + math.log1p(math.exp(raw - floor))
    np.testing.assert_allclose(log_std, expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(log_std) >= np.float32(floor))  # equal only where softplus underflows


def test_gaussian_log_likelihood_is_the_discrete_bin_probability():
    # Flat decoder (sigma ~ 20): the density is constant across a bin of width 1/256, so the
    # dequantized bound equals log of the exact bin probability Phi((k+1)/256) - Phi(k/256).
    model, params = _constant_decoder("gaussian_learned", 3.0)
    mean, log_std = (np.asarray(v, np.float64) for v in model.decode(params, jnp.zeros(2)))
    k = np.asarray(jax.random.randint(jax.random.key(1), (8, 8, 1), 0, 256)).astype(np.float64)
    cdf = lambda v: stats.norm.cdf(v, mean, np.exp(log_std))  # noqa: E731
    exact = np.sum(np.log(cdf((k + 1) / 256) - cdf(k / 256)))
    x = jnp.asarray(k / 255, jnp.float32)
    estimate = model.log_marginal(params, jax.random.key(2), x, num_samples=4, chunk_size=4)
    assert float(estimate) == pytest.approx(exact, abs=2e-3)
    value, aux = model.objective(params, jax.random.key(3), x, beta=1.0)  # q = prior: KL = 0, ELBO exact
    assert float(aux["kl"]) == pytest.approx(0.0, abs=1e-6)
    assert float(value) == pytest.approx(exact, abs=2e-3)


def test_likelihood_quick_run_writes_every_file(likelihood_run):
    _assert_pngs(likelihood_run, ["reconstructions.png", "samples.png"])
    results, config = _read(likelihood_run)
    assert config["quick"] is True
    assert set(results["models"]) == set(likelihoods.LIKELIHOODS)


def test_likelihood_quick_run_numbers_are_consistent(likelihood_run):
    results = _read(likelihood_run)[0]
    models_ = results["models"]
    bound = (0.5 * math.log(2 * math.pi) + math.log(256)) / math.log(2)  # sigma = 1 can do no better
    assert results["gaussian_sigma1_bound_bits_per_dim"] == pytest.approx(bound)
    assert models_["gaussian"]["bits_per_dim"] > bound - 0.01
    assert models_["gaussian_learned"]["bits_per_dim"] < models_["gaussian"]["bits_per_dim"] - 0.5
    assert models_["bernoulli"]["bits_per_dim"] < 1.0  # beats the uniform model of binary pixels
    for m in models_.values():
        assert m["bits_per_dim"] == pytest.approx(-m["log_likelihood"] / (784 * math.log(2)))
        assert m["log_likelihood"] > m["elbo"] - 0.5  # importance sampling tightens the ELBO
    learned = models_["gaussian_learned"]
    assert learned["log_sigma_quantiles"]["min"] > likelihoods.MIN_LOG_STD
    assert 0.0 <= learned["fraction_at_floor"] <= 1.0
