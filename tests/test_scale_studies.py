"""The studies take `vae-jax train`'s scale options through the same code (vae_jax.scale).

Truth: the same study on one device, in memory (the same batches and draws), to
float32 tolerance; TensorBoard's own event reader for the event files. The
runs on several devices are subprocesses with 2 forced CPU devices (the flag
must be set before jax starts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import _common, density_table, likelihoods, prior_samples
from vae_jax import data as vdata
from vae_jax import models

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--quick", "--no-progress", "--test-size", "20", "--num-samples", "20", "--epochs", "2", "--models", "vae"]
needs_fmnist = pytest.mark.skipif(
    not os.path.isfile(f"{vdata.DEFAULT_DATA_DIR}/t10k-images-idx3-ubyte.gz"),
    reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it)")


def _on_two_devices(module: str, *argv) -> subprocess.CompletedProcess:
    flags = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=2"]))
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu"), timeout=600)


def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@needs_fmnist
def test_density_table_on_two_devices_streamed_and_tracked_matches_one_device(tmp_path):
    (one,) = density_table.main(["--out", str(tmp_path / "one"), *QUICK])
    run = _on_two_devices("experiments.density_table", "--out", tmp_path / "two", *QUICK, "--devices", "all",
                          "--data-source", "disk", "--track", "tensorboard")
    assert run.returncode == 0, run.stderr
    row = tmp_path / "two" / "models" / "vae"
    two = json.loads((row / "result.json").read_text())
    for name in ("test_elbo", "test_log_px_mean", "best_validation_objective"):
        np.testing.assert_allclose(two[name], one[name], rtol=2e-5, err_msg=name)
    for name in ("train_loss", "validation_objective"):
        np.testing.assert_allclose([h[name] for h in two["history"]], [h[name] for h in one["history"]], rtol=2e-5)
    # The options are saved only when not the defaults, so the folders of earlier runs keep their configuration.
    assert (two["config"]["devices"], two["config"]["data_source"]) == ("all", "disk")
    assert "devices" not in one["config"] and "data_source" not in one["config"]
    assert (row / "train_images.npy").is_file() and not (tmp_path / "one" / "models" / "vae" / "tensorboard").exists()
    np.testing.assert_allclose(_scalars(row / "tensorboard", "validation_objective"),
                               [(h["epoch"], h["validation_objective"]) for h in two["history"]], rtol=1e-6)
    with pytest.raises(SystemExit, match="another configuration.*devices='all'"):
        density_table.main(["--out", str(tmp_path / "two"), *QUICK, "--resume"])  # on one device: refused


def test_a_study_model_trained_with_tensorboard_writes_its_epochs_and_images(tmp_path):
    images = np.random.default_rng(0).random((256, 8, 8, 1), dtype=np.float32)
    model = models.build_model(models.ModelConfig(latent_dim=2, hidden_sizes=(16,)), images.shape[1:])
    state, history, _ = _common.train(model, images, epochs=2, batch_size=64, progress=False, desc="vae d=2",
                                      track="tensorboard", logdir=tmp_path / "tensorboard", beta=1.0)
    np.testing.assert_allclose(_scalars(tmp_path / "tensorboard" / "vae_d_2", "train_loss"),
                               [(h["epoch"], h["train_loss"]) for h in history], rtol=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard" / "vae_d_2"))
    events.Reload()
    assert {"reconstructions", "prior_samples"} <= set(events.Tags()["images"])


def test_the_studies_parse_the_scale_options_and_track_by_default_only_at_full_size(tmp_path):
    parse = lambda *a: likelihoods.parse_args(["--out", str(tmp_path), *a])  # noqa: E731
    assert (parse("--quick").devices, parse("--quick").track, parse().track) == ("one", "none", "tensorboard")
    assert (parse("--devices", "all", "--track", "none").devices, parse("--quick", "--track", "tensorboard").track
            ) == ("all", "tensorboard")


@pytest.mark.slow
@needs_fmnist
def test_prior_samples_on_two_devices_matches_one_device(tmp_path):
    argv = ["--quick", "--no-progress", "--num-samples", "16", "--epochs", "1"]
    one = prior_samples.main(["--out", str(tmp_path / "one"), *argv])
    run = _on_two_devices("experiments.prior_samples", "--out", tmp_path / "two", *argv, "--devices", "all")
    assert run.returncode == 0, run.stderr
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    for kind in ("ae", "vae"):
        np.testing.assert_allclose(two[kind]["final_train_loss"], one[kind]["final_train_loss"], rtol=2e-5)
    np.testing.assert_allclose(two["ae"]["code_sd"], one["ae"]["code_sd"], rtol=1e-5)
    # The VAE's collapsed units get gradients near 0, whose float32 rounding Adam turns into steps of
    # either sign (g / sqrt(v)): their codes, so the statistics of all codes, agree to percents only.
    np.testing.assert_allclose(two["vae"]["fitted_gaussian_kl_q_samples"], one["vae"]["fitted_gaussian_kl_q_samples"],
                               rtol=2e-2)
