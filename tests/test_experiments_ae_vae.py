"""Experiments reconstructions, latent_2d and prior_samples: quick runs and their helpers.

Each quick run (real Fashion-MNIST, 2000 / 500 images, 3 epochs) runs once per
module and is checked for every promised file and for relations that hold
even at that size; the helpers are checked against closed forms.
"""

import json

import jax
import numpy as np
import pytest

from experiments import _common
from experiments import latent_2d, prior_samples, reconstructions
from vae_jax import distributions, plotting

D_PIXELS = 28 * 28


def _run(module, tmp_path_factory, *extra):
    out = tmp_path_factory.mktemp(module.__name__.split(".")[-1])
    results = module.main(["--out", str(out), "--quick", "--no-progress", *extra])
    return out, results


def _check_files(out, results, figures):
    for name in [*figures, "results.json", "config.json"]:
        assert (out / name).stat().st_size > 0, name
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(_common._jsonable(results)))
    config = json.loads((out / "config.json").read_text())
    assert config["study"]["quick"] is True and config["study"]["epochs"] == 3
    assert config["data"]["train"] == 2000 and config["data"]["test"] == 500
    return config


@pytest.fixture(scope="module")
def recon_run(tmp_path_factory):
    return _run(reconstructions, tmp_path_factory)


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    return _run(latent_2d, tmp_path_factory, "--grid-size", "6")


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory):
    return _run(prior_samples, tmp_path_factory, "--num-samples", "16")


# -- reconstructions ------------------------------------------------------------------------

def test_reconstructions_files_and_error_relations(recon_run):
    out, results = recon_run
    config = _check_files(out, results, ["reconstructions.png"])
    assert config["model"]["latent_dim"] == 32 and len(config["shown_test_indices"]) == 10
    errors, floor = results["per_image_errors"], results["cross_entropy_floor"]
    for kind in ("ae", "vae"):
        se, ce = errors[kind]["squared_error"], errors[kind]["cross_entropy"]
        assert np.isfinite(se) and np.isfinite(ce)
        # Both beat the constant mean-image predictor; the cross-entropy never beats its floor.
        assert se < 0.9 * errors["mean_image"]["squared_error"]
        assert ce < errors["mean_image"]["cross_entropy"] - 10.0
        assert ce > floor
    # The lecture's claim: without the KL term the AE reconstructs better than the VAE.
    assert errors["ae"]["squared_error"] < errors["vae"]["squared_error"]
    assert errors["ae"]["cross_entropy"] < errors["vae"]["cross_entropy"]
    vae = results["vae_test"]
    assert vae["elbo"] == pytest.approx(vae["reconstruction_log_likelihood"] - vae["kl"], rel=1e-4)
    assert vae["kl"] > 0 and vae["elbo"] < -floor


def test_reconstruction_errors_closed_form():
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    got = reconstructions.reconstruction_errors(np.zeros((28, 28, 1), np.float32), x)  # p = 1/2
    assert got["cross_entropy"] == pytest.approx(D_PIXELS * np.log(2.0), rel=1e-5)
    assert got["squared_error"] == pytest.approx(np.mean(np.sum((x - 0.5) ** 2, axis=(1, 2, 3))), rel=1e-5)


def test_cross_entropy_floor_closed_form():
    assert reconstructions.cross_entropy_floor(np.ones((2, 28, 28, 1))) == 0.0
    half = np.full((2, 28, 28, 1), 0.5)
    assert reconstructions.cross_entropy_floor(half) == pytest.approx(D_PIXELS * np.log(2.0))
    x = np.random.default_rng(1).random((4, 28, 28, 1))
    logit = np.log(x) - np.log1p(-x)  # p = x reaches the floor
    assert reconstructions.reconstruction_errors(logit, x)["cross_entropy"] == pytest.approx(
        reconstructions.cross_entropy_floor(x), rel=1e-4)


# -- latent_2d ------------------------------------------------------------------------------

def test_latent_2d_files_and_codes(latent_run):
    out, results = latent_run
    config = _check_files(out, results, ["latent_2d.png"])
    assert config["model"]["latent_dim"] == 2
    for kind in ("ae", "vae"):
        r = results[kind]
        assert np.all(np.isfinite(r["mean"])) and np.all(np.asarray(r["sd"]) > 0)
        assert np.all(np.asarray(r["percentile_1"]) < np.asarray(r["percentile_99"]))
        assert 0 < r["fitted_gaussian_kl"] < np.inf
        assert r["knn5_test_accuracy"] > 0.3  # chance is 0.1 for the 10 classes
    assert 0 < results["vae"]["fitted_gaussian_kl_q_samples"] < np.inf


def test_box_grid_spans_the_box_in_latent_grid_order():
    lower, upper = np.array([-1.0, 2.0]), np.array([5.0, 3.0])
    grid = latent_2d.box_grid(lower, upper, 4)
    assert grid.shape == (16, 2)
    np.testing.assert_allclose(grid.min(axis=0), lower, rtol=1e-6)
    np.testing.assert_allclose(grid.max(axis=0), upper, rtol=1e-6)
    unit = plotting.latent_grid(4, 1.0)
    np.testing.assert_array_equal(np.argsort(grid[:, 0], kind="stable"), np.argsort(unit[:, 0], kind="stable"))
    np.testing.assert_array_equal(np.argsort(grid[:, 1], kind="stable"), np.argsort(unit[:, 1], kind="stable"))


# -- prior_samples --------------------------------------------------------------------------

def test_prior_samples_files_and_vae_codes_closer_to_prior(prior_run):
    out, results = prior_run
    config = _check_files(out, results, ["prior_samples.png"])
    assert config["model"]["latent_dim"] == 32
    ae_kl = results["ae"]["fitted_gaussian_kl_codes"]
    vae_kl = results["vae"]["fitted_gaussian_kl_q_samples"]
    assert 0 < vae_kl < np.inf and 0 < ae_kl < np.inf
    assert vae_kl < 0.5 * ae_kl  # the VAE's aggregate posterior is far closer to N(0, I)
    assert 0 <= results["vae"]["active_units"] <= 32
    assert len(results["ae"]["code_sd"]) == 32


def test_fitted_gaussian_kl_matches_diagonal_closed_form_and_is_rotation_invariant():
    rng = np.random.default_rng(0)
    n, mean, sd = 200_000, np.array([0.5, -1.0, 0.0, 2.0]), np.array([0.3, 1.0, 2.0, 0.8])
    codes = mean + sd * rng.standard_normal((n, 4))
    truth = float(distributions.kl_to_standard_normal(mean, np.log(sd)))
    assert _common.fitted_gaussian_kl(codes) == pytest.approx(truth, abs=0.03)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))  # N(0, I) is invariant under rotations
    assert _common.fitted_gaussian_kl(codes @ q.T) == pytest.approx(_common.fitted_gaussian_kl(codes), rel=1e-9)
    assert _common.fitted_gaussian_kl(rng.standard_normal((n, 4))) == pytest.approx(0.0, abs=5e-3)


def test_fitted_gaussian_kl_rejects_too_few_codes():
    with pytest.raises(ValueError, match="N > d"):
        _common.fitted_gaussian_kl(np.zeros((3, 3)))


def test_aggregate_posterior_samples_draw_from_q():
    class Fixed:  # q(z | x) = N((x0, -x0), diag(0.5^2, 2^2)) for every image x
        def encode(self, params, x):
            m = x.reshape(-1)[0]
            return jax.numpy.stack([m, -m]), jax.numpy.log(jax.numpy.array([0.5, 2.0]))

    x = np.full((20_000, 2, 2, 1), 0.25, np.float32)
    z = _common.aggregate_posterior_samples(Fixed(), None, jax.random.key(0), x)
    assert z.shape == (20_000, 2)
    assert np.all(np.abs(z.mean(axis=0) - [0.25, -0.25]) < 4 * np.array([0.5, 2.0]) / np.sqrt(20_000))
    np.testing.assert_allclose(z.std(axis=0), [0.5, 2.0], rtol=0.03)


def test_help_describes_each_experiment(capsys):
    for module in (reconstructions, latent_2d, prior_samples):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "Full size:" in text and "--quick" in text and "docs/ae_vs_vae.md" in text
