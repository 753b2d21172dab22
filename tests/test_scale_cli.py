"""`vae-jax train` at scale: data-parallel on forced host devices, streamed from disk, tracked in TensorBoard.

Truth: the single-device, in-memory run of the same config (the same batches and
draws), to float32 tolerance.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from vae_jax.cli import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--dataset", "digits", "--validation-size", "300", "--hidden-sizes", "32", "--latent-dim", "2",
          "--batch-size", "64", "--no-progress", "--track", "none"]


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _close(a: list[dict], b: list[dict], columns=("train_loss", "validation_elbo")) -> None:
    assert len(a) == len(b)
    for name in columns:
        np.testing.assert_allclose([float(r[name]) for r in a], [float(r[name]) for r in b], rtol=2e-5)


def _cli_on_4_devices(*argv) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS=" ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                          "--xla_force_host_platform_device_count=4"])))
    return subprocess.run([sys.executable, "-m", "vae_jax", *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_all_four_devices_train_and_resume_as_one_device(tmp_path):
    one, four = tmp_path / "one", tmp_path / "four"
    assert main(["train", *DIGITS, "--epochs", "2", "--out", str(one)]) == 0
    first = _cli_on_4_devices("train", *DIGITS, "--epochs", "1", "--devices", "all", "--out", four)
    assert first.returncode == 0, first.stderr
    resumed = _cli_on_4_devices("train", "--out", four, "--epochs", "2", "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    _close(_rows(one), _rows(four))
    bad = _cli_on_4_devices("train", *DIGITS, "--devices", "all", "--batch-size", "30", "--out", tmp_path / "b")
    assert bad.returncode == 2 and "does not divide over the 4 devices" in bad.stderr, bad.stderr
    assert bad.stderr.count("\n") == 1 and not (tmp_path / "b").exists()


def test_streamed_from_disk_trains_as_in_memory_and_tracks(tmp_path):
    args = ["--dataset", "fashion_mnist", "--train-size", "512", "--validation-size", "200", "--hidden-sizes", "16",
            "--latent-dim", "2", "--batch-size", "64", "--epochs", "1", "--no-progress"]
    memory, disk = tmp_path / "memory", tmp_path / "disk"
    assert main(["train", *args, "--track", "none", "--out", str(memory)]) == 0
    assert main(["train", *args, "--data-source", "disk", "--track", "tensorboard", "--out", str(disk)]) == 0
    assert (disk / "train_images.npy").is_file()
    _close(_rows(memory), _rows(disk))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(disk / "tensorboard"))
    events.Reload()
    np.testing.assert_allclose(events.Scalars("validation_elbo")[0].value, float(_rows(disk)[0]["validation_elbo"]),
                               rtol=1e-6)
    assert "reconstructions" in events.Tags()["images"]


def test_disk_streaming_refuses_images_that_are_not_8_bit(tmp_path, capsys):
    assert main(["train", *DIGITS, "--epochs", "1", "--data-source", "disk", "--out", str(tmp_path / "r")]) == 2
    assert "not k/255 levels" in capsys.readouterr().err
