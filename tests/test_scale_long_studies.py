"""The long studies (stacked sweeps, estimator comparisons) take `--devices` and `--track` through
`experiments._common.fit_scaled` (vae_jax.scale), as the other studies do.

Truth: each study's own training function on one device, in this process (the same
batches and draws), to float32 tolerance for the run on 2 forced CPU devices (a
subprocess: the flag must be set before jax starts). Sizes are tiny (8x8 random
images, 2 epochs): the trainings are each study's, not its data; both processes
compile with most optimisations off (compilation is nearly all of the time). Their
event files are checked by each study's --quick test, run with --track tensorboard.

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

from experiments import beta_vae, discrete_estimators, disentanglement, gradient_estimators  # noqa: E402
from vae_jax import models  # noqa: E402

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


def _train_all(out: Path, devices: str, names: list[str]) -> dict:
    return {name: STUDIES[name](out / name, devices) for name in names}


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


def test_the_long_studies_take_the_scale_options_and_store_devices_only_when_not_one(tmp_path):
    out = ["--out", str(tmp_path)]
    for module in (beta_vae, disentanglement, gradient_estimators, discrete_estimators):
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
