"""The long studies (stacked sweeps, estimator comparisons) and the model-family studies (conditional,
semi-supervised M2, VQ-VAE) take `--devices` and `--track` through `experiments._common.fit_scaled`
(vae_jax.scale), as the other studies do.

Truth: each study's own training function on one device, in this process (the same
batches and draws), to float32 tolerance for the run on 2 forced CPU devices (a
subprocess: the flag must be set before jax starts). Sizes are tiny (8x8 random
images, 2 epochs): the trainings are each study's, not its data; both processes
compile with most optimisations off (compilation is nearly all of the time). Their
event files are checked by each study's --quick test, run with --track tensorboard. A family study's
piece (its training and everything scored after it, on one device) is compared whole.

Run as a script (``python tests/test_scale_long_studies.py OUT STUDY...``) it trains
the studies named on every device and writes their numbers to ``OUT/numbers.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # the subprocess: this worktree's packages first
    sys.path.insert(0, str(ROOT))

from experiments import (beta_vae, conditional, discrete_estimators, disentanglement, gradient_estimators,  # noqa: E402
                         likelihoods, semi_supervised, vq_vae)
from vae_jax import family_runs, models, training  # noqa: E402

SHAPE = (8, 8, 1)


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


def _beta_sweep(out: Path, devices: str) -> dict:
    model = models.build_model(models.ModelConfig(latent_dim=2, hidden_sizes=(16,)), SHAPE)
    _, history = beta_vae.train_sweep(model, _images(128, 0), [1.0, 4.0], epochs=2, batch_size=32,
                                      learning_rate=1e-3, seed=0, progress=False, devices=devices)
    return {"history": history}


def _factor_vae(out: Path, devices: str) -> dict:
    cfg = disentanglement.parse_args(["--quick", "--out", str(out), "--no-progress", "--batch-size", "32",
                                      "--devices", devices])
    model = models.build_model(models.ModelConfig(latent_dim=cfg.latent_dim, hidden_sizes=(16,)), SHAPE)
    _, history = disentanglement.train_seed(model, _images(128, 1), "factor_vae", [10.0, 40.0], 0, cfg)
    return {"history": history}


def _running_baseline(out: Path, devices: str) -> dict:
    cfg = gradient_estimators.parse_args(["--quick", "--out", str(out), "--no-progress", "--train-size", "128",
                                          "--batch-size", "32", "--estimators", "score_running_mean",
                                          "--devices", devices])
    model = models.build_model(models.ModelConfig(latent_dim=2, hidden_sizes=(16,)), SHAPE)
    train, test = _images(128, 2), (_images(16, 3) > 0.5).astype(np.float32)
    key = jax.random.key(0)
    curves = gradient_estimators.train_each(model, jax.random.fold_in(key, 0), train, test, test[:8], cfg, key)
    return {k: v for k, v in curves["score_running_mean"].items() if k != "seconds"}


def _relax(out: Path, devices: str) -> dict:
    fm = discrete_estimators.FashionConfig(estimators=("relax",), seeds=1, epochs=2, batch_size=32,
                                           learning_rate=1e-3, latents=4, train_size=None, quick_train=128,
                                           eval_size=8, draws=2, batch=8)
    model = models.linear_sbn(SHAPE, fm.latents)
    train = _images(128, 4)
    fixed = (train[:8] > 0.5).astype(np.float32)
    data = discrete_estimators.FashionData(train, fixed, fixed)
    curve, _ = discrete_estimators.train_one(
        model, "relax", jax.random.split(jax.random.key(0), 3), data, fm, discrete_estimators._bound_function(model),
        progress=False, desc="relax seed 0", scaled=dict(devices=devices))
    return {k: v for k, v in curve.items() if k != "seconds"}


STUDIES = {"beta_vae": _beta_sweep, "disentanglement": _factor_vae, "gradient_estimators": _running_baseline,
           "discrete_estimators": _relax}  # each: (an --out it writes nothing to, devices) -> its numbers


def _family_args(devices: str, *extra: str) -> list[str]:
    return ["--quick", "--no-progress", "--batch-size", "32", "--epochs", "2", "--devices", devices, *extra]


def _without_seconds(value: dict) -> dict:
    return {k: v for k, v in value.items() if k != "train_seconds"}


def _conditional_vae(out: Path, devices: str) -> dict:
    cfg = conditional.parse_args(_family_args(devices, "--out", str(out), "--hidden-sizes", "16", "--latent-dim", "2",
                                              "--eval-size", "4"))
    data = {"train": _images(128, 5), "train_labels": np.arange(128, dtype=np.int32) % 10,
            "test": (_images(4, 6) > 0.5).astype(np.float32), "test_labels": np.arange(4, dtype=np.int32)}
    return _without_seconds(conditional.cvae_piece(cfg, data, jax.random.key(0))[0])


def _m2_and_classifier(out: Path, devices: str) -> dict:
    cfg = semi_supervised.parse_args(_family_args(devices, "--out", str(out), "--hidden-sizes", "16",
                                                  "--latent-dim", "2", "--train-size", "128", "--labels", "20",
                                                  "--classifier-steps", "4"))
    images, labels = _images(128, 7), np.arange(128, dtype=np.int32) % 10
    test = {"images": _images(16, 8), "labels": np.arange(16) % 10}
    keep = family_runs.choose_labelled(labels, 20, 0)
    pool = (images, np.where(keep, labels, semi_supervised.semi_supervised.UNLABELLED).astype(np.int32))
    model = semi_supervised.semi_supervised.m2(SHAPE, latent_dim=2, hidden_sizes=(16,), classifier_sizes=(16,))
    m2, _ = semi_supervised.m2_piece(cfg, model, training.make_train_step(model.objective), pool, test, 0, 20,
                                     "balanced")
    classifier, _ = semi_supervised.classifier_piece(cfg, model.classifier, (images[keep], labels[keep]), test, 0)
    return {"m2": _without_seconds(m2), "classifier": _without_seconds(classifier)}


def _vq_ema(out: Path, devices: str) -> dict:
    cfg = vq_vae.parse_args(_family_args(devices, "--out", str(out), "--num-codes", "8", "--embedding-dim", "2",
                                         "--prior-epochs", "2", "--eval-size", "4", "--probe-size", "16"))
    train, test = (np.round(_images(n, seed) * 255) / 255 for n, seed in ((128, 9), (4, 10)))
    data = {"train": train, "probe": train[:16], "test": test,
            "test_dequantized": likelihoods.dequantize(jax.random.key(1), test)}
    return _without_seconds(vq_vae.vq_piece(cfg, "ema", data, jax.random.key(0))[0])


FAMILIES = {"conditional": _conditional_vae, "semi_supervised": _m2_and_classifier, "vq_vae": _vq_ema}


def _train_all(out: Path, devices: str, names: list[str]) -> dict:
    return {name: {**STUDIES, **FAMILIES}[name](out / name, devices) for name in names}


def _on_two_devices(out: Path, names: list[str]) -> subprocess.Popen:
    flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=2"]))
    return subprocess.Popen([sys.executable, __file__, str(out), *names], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu",
                                     JAX_DISABLE_MOST_OPTIMIZATIONS="1"))  # as fast_compilation, here


def _assert_close(two, one, path=""):
    """Every number of ``two`` equals ``one``'s to float32 tolerance (the same keys, lists and flags)."""
    if isinstance(one, dict):
        assert sorted(two) == sorted(one), path
        for key in one:
            _assert_close(two[key], one[key], f"{path}/{key}")
    elif isinstance(one, list):
        assert len(two) == len(one), path
        for i, (a, b) in enumerate(zip(two, one)):
            _assert_close(a, b, f"{path}[{i}]")
    elif isinstance(one, bool) or one is None:
        assert two == one, path
    else:
        np.testing.assert_allclose(two, one, rtol=2e-5, atol=1e-6, err_msg=path)


def _two_devices_match_one(tmp_path, names: list[str]) -> None:
    child = _on_two_devices(tmp_path / "two", names)  # runs beside this process's one-device trainings
    try:
        one = json.loads(json.dumps(_train_all(tmp_path / "one", "one", names)))
        log, _ = child.communicate(timeout=600)
    finally:
        child.kill()
    assert child.returncode == 0, log
    two = json.loads((tmp_path / "two" / "numbers.json").read_text())
    assert two.pop("refused") == "batch_size=33 does not divide over the 2 devices; use a multiple of 2."
    _assert_close(two, one)


def test_a_factor_vae_sweep_trains_on_two_devices_as_on_one(tmp_path, fast_compilation):
    """The default suite's share (about 25 CPU seconds, most of it compilation): a stacked sweep, with
    FactorVAE's discriminator trained beside each model."""
    _two_devices_match_one(tmp_path, ["disentanglement"])


@pytest.mark.slow
def test_every_long_study_trains_on_two_devices_as_on_one(tmp_path, fast_compilation):
    """Also the beta sweep, the running-mean baseline's wrapped step (its test ELBO and log p(x) after each
    epoch) and RELAX's learned control variate (its bounds after each epoch)."""
    _two_devices_match_one(tmp_path, list(STUDIES))


def test_m2_and_its_classifier_train_on_two_devices_as_on_one(tmp_path, fast_compilation):
    """The default suite's share of the family studies (the cheapest: about 8 s per process besides imports,
    mostly compiling M2's step; 23 s of wall clock at load 3 on 2 cores): M2's pairs with
    hidden labels (its test error after each epoch from a hook) and the classifier's labelled pairs."""
    _two_devices_match_one(tmp_path, ["semi_supervised"])


@pytest.mark.slow
def test_the_conditional_vae_and_the_vq_vae_train_on_two_devices_as_on_one(tmp_path, fast_compilation):
    """The conditional VAE's pairs (dynamically binarised), and the VQ-VAE's EMA codebook update (the codes'
    statistics summed across devices by XLA) with its PixelCNN prior fitted to the codes."""
    _two_devices_match_one(tmp_path, ["conditional", "vq_vae"])


def test_the_long_studies_take_the_scale_options_and_store_devices_only_when_not_one(tmp_path):
    out = ["--out", str(tmp_path)]
    for module in (beta_vae, disentanglement, gradient_estimators, discrete_estimators, conditional, semi_supervised,
                   vq_vae):
        quick, full = module.parse_args([*out, "--quick"]), module.parse_args(out)
        assert (quick.devices, quick.track, full.track) == ("one", "none", "tensorboard"), module.__name__
        assert module.parse_args([*out, "--devices", "all", "--track", "none"]).devices == "all"
    # The pieces of runs made before the options existed hold neither, and keep resuming.
    for argv, has in (([], False), (["--track", "none"], False), (["--devices", "all"], True)):
        cfg = disentanglement.parse_args([*out, *argv])
        assert ("devices" in cfg.part_options(), "track" in cfg.part_options()) == (has, False)
        cfg = discrete_estimators.parse_args([*out, *argv])
        assert ("devices" in cfg.fashion_options(), "devices" in cfg.enumerable_options()) == (has, has)
        assert "track" not in cfg.fashion_options()
        for family in (conditional, semi_supervised, vq_vae):
            options = family.parse_args([*out, *argv]).piece_options()
            assert ("devices" in options, "track" in options) == (has, False), family.__name__


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    numbers = _train_all(folder, "all", sys.argv[2:])
    try:  # a batch of 33 over 2 devices
        beta_vae.train_sweep(models.build_model(models.ModelConfig(latent_dim=2), SHAPE), _images(66, 0),
                             [1.0, 4.0], epochs=1, batch_size=33, learning_rate=1e-3, seed=0, devices="all")
    except ValueError as e:
        numbers["refused"] = str(e)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "numbers.json").write_text(json.dumps(numbers))
