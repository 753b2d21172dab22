"""`vae-jax train` at scale: data-parallel on forced host devices and across processes, streamed from disk,
tracked in TensorBoard.

Truth: the single-device, in-memory run of the same config (the same batches and
draws), to float32 tolerance. Several processes are one job on localhost
(``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), each
with its own forced CPU devices.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from vae_jax.cli import main

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--dataset", "digits", "--validation-size", "300", "--hidden-sizes", "32", "--latent-dim", "2",
          "--batch-size", "64", "--no-progress", "--track", "none"]
SMALL_FASHION = ["--dataset", "fashion_mnist", "--train-size", "512", "--validation-size", "200", "--hidden-sizes",
                 "16", "--latent-dim", "2", "--batch-size", "64", "--no-progress"]


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


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> list[dict]:
    """The truth: ``metrics.csv`` of the DIGITS run trained 2 epochs on one device."""
    out = tmp_path_factory.mktemp("one_device") / "run"
    assert main(["train", *DIGITS, "--epochs", "2", "--out", str(out)]) == 0
    return _rows(out)


def test_four_devices_train_and_two_processes_resume_as_one_device(one_device, tmp_path):
    """Epoch 1 on 1 process x 4 devices, epoch 2 resumed by 2 processes x 2 devices (JAX_COORDINATOR_ADDRESS):
    the one-device numbers; every process restores and saves, process 0 alone writes the run's files."""
    four = tmp_path / "four"
    first = _cli_on_4_devices("train", *DIGITS, "--epochs", "1", "--devices", "all", "--out", four)
    assert first.returncode == 0, first.stderr
    resumed = _job("train", "--out", four, "--epochs", "2", "--resume", "--no-progress")
    assert [r.returncode for r in resumed] == [0, 0], resumed[0].stderr + resumed[1].stderr
    _close(one_device, _rows(four))
    assert "epoch 2/2" in resumed[0].stdout and "epoch" not in resumed[1].stdout
    assert json.loads((four / "run.json").read_text())["epochs_completed"] == 2
    bad = _cli_on_4_devices("train", *DIGITS, "--devices", "all", "--batch-size", "30", "--out", tmp_path / "b")
    assert bad.returncode == 2 and "does not divide over the 4 devices" in bad.stderr, bad.stderr
    assert bad.stderr.count("\n") == 1 and not (tmp_path / "b").exists()


def _job(*argv, processes: int = 2, devices: int = 2) -> list[subprocess.CompletedProcess]:
    """``vae-jax ARGV`` as one job of ``processes`` processes of ``devices`` CPU devices each, on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
               JAX_NUM_PROCESSES=str(processes), XLA_FLAGS=" ".join(filter(None, [
                   os.environ.get("XLA_FLAGS"), f"--xla_force_host_platform_device_count={devices}"])))
    workers = [subprocess.Popen([sys.executable, "-m", "vae_jax", *map(str, argv)], cwd=ROOT, text=True,
                                env=dict(env, JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for i in range(processes)]
    done = [subprocess.CompletedProcess(w.args, 0, *w.communicate(timeout=300)) for w in workers]
    for worker, result in zip(workers, done):
        result.returncode = worker.returncode
    return done


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer().AddRunsFromDirectory(str(folder))
    runs.Reload()
    return {tag: [(e.step, e.value) for e in runs.Scalars(".", tag)] for tag in runs.Runs()["."]["scalars"]}


@pytest.mark.slow
def test_two_processes_stream_their_rows_track_once_and_resume_as_one_device(tmp_path):
    """A fresh 2 x 2 job streamed from disk (each process reads its rows of every batch) and tracked,
    resumed by another: the one-device in-memory numbers; one image file, one event file per launch."""
    memory, two = tmp_path / "memory", tmp_path / "two"
    assert main(["train", *SMALL_FASHION, "--epochs", "2", "--track", "none", "--out", str(memory)]) == 0
    first = _job("train", *SMALL_FASHION, "--epochs", "1", "--devices", "all", "--data-source", "disk",
                 "--track", "tensorboard", "--out", two)
    assert [r.returncode for r in first] == [0, 0], first[0].stderr + first[1].stderr
    resumed = _job("train", "--out", two, "--epochs", "2", "--resume", "--no-progress")
    assert [r.returncode for r in resumed] == [0, 0], resumed[0].stderr + resumed[1].stderr
    _close(_rows(memory), _rows(two))
    assert "epoch 1/1" in first[0].stdout and "epoch" not in first[1].stdout + resumed[1].stdout
    assert len(list((two / "tensorboard").glob("events.out.tfevents.*"))) == 2  # process 0's, once per launch
    elbo = _events(two / "tensorboard")["validation_elbo"]
    np.testing.assert_allclose(elbo, [(e, float(r["validation_elbo"])) for e, r in enumerate(_rows(two), 1)],
                               rtol=1e-6)
    assert sorted(p.name for p in two.iterdir() if p.name.endswith(".npy")) == ["train_images.npy"]
    # Every process refuses what it cannot do, in one line, and none waits for the others.
    alone = _job("train", *SMALL_FASHION, "--epochs", "1", "--out", tmp_path / "alone")  # --devices one
    assert [r.returncode for r in alone] == [2, 2] and not (tmp_path / "alone").exists()
    assert all(r.stderr.strip().endswith("train with --devices all.") for r in alone), alone[0].stderr


def test_streamed_from_disk_trains_as_in_memory_and_tracks(tmp_path):
    args = [*SMALL_FASHION, "--epochs", "1"]
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
