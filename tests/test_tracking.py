"""Trackers: TensorBoard files read back by TensorBoard's own reader; MLflow through a real server.

The MLflow tests start ``mlflow server`` on 127.0.0.1 with a SQLite store and
read the metrics back with the MLflow client; they are skipped where the
``mlflow`` extra is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

import jax
import numpy as np
import optax
import pytest

import vae_jax as vj
from vae_jax import tracking


def _tiny_fit(tmp_path, hooks, epochs=3):
    x = np.random.default_rng(0).random((64, 4, 4, 1), dtype=np.float32)
    model = vj.build_model(vj.ModelConfig(latent_dim=2, hidden_sizes=(8,)), x.shape[1:])
    state = vj.create_train_state(model, jax.random.key(0), x[0], optax.adam(1e-2), beta=1.0)
    step = vj.make_train_step(model.objective)
    result = vj.fit(step, state, x, jax.random.key(1), epochs=epochs, batch_size=16, progress=False, hooks=hooks)
    return model, x, result


def _read_events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_scalars_keeps_finite_numbers_only():
    row = {"epoch": 3, "train_elbo": np.float32(-1.5), "note": "x", "bad": float("nan"), "flag": True,
           "validation_elbo": -2}
    assert tracking.scalars(row) == {"train_elbo": -1.5, "validation_elbo": -2.0}


def test_tensorboard_scalars_and_images_read_back(tmp_path):
    logdir = tmp_path / "tb"
    x = np.random.default_rng(0).random((64, 4, 4, 1), dtype=np.float32)
    model = vj.build_model(vj.ModelConfig(latent_dim=2, hidden_sizes=(8,)), x.shape[1:])
    board = tracking.TensorBoard(logdir, images=tracking.model_images(model, x[:3], jax.random.key(5),
                                                                      num_samples=4), image_every=2)
    _, _, result = _tiny_fit(tmp_path, [board])
    board.close()
    acc = _read_events(logdir)
    values = [e.value for e in acc.Scalars("train_elbo")]
    assert [e.step for e in acc.Scalars("train_elbo")] == [1, 2, 3]
    np.testing.assert_allclose(values, [r["train_elbo"] for r in result.history], rtol=1e-6)
    assert set(acc.Tags()["images"]) == {"reconstructions", "prior_samples"}
    assert [e.step for e in acc.Images("reconstructions")] == [2]           # every second epoch
    image = acc.Images("reconstructions")[0]
    assert (image.height, image.width) == (2 * 4 + 1, 3 * 4 + 2)           # inputs over reconstructions


def test_tensorboard_resume_purges_the_steps_an_earlier_process_wrote_after_the_restart(tmp_path):
    logdir = tmp_path / "tb"
    first = tracking.TensorBoard(logdir)
    for epoch in (1, 2, 3):
        first(epoch, None, [{"train_elbo": -10.0 * epoch}])
    first.close()
    time.sleep(1.1)  # event files are named by the second they were opened in
    resumed = tracking.TensorBoard(logdir, start_epoch=1)
    for epoch in (2, 3):
        resumed(epoch, None, [{"train_elbo": -1.0 * epoch}])
    resumed.close()
    events = _read_events(logdir).Scalars("train_elbo")
    assert [(e.step, e.value) for e in events] == [(1, -10.0), (2, -2.0), (3, -3.0)]


def test_a_failing_tensorboard_writer_warns_once_and_training_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(tracking.TrackingWarning, match="TensorBoard tracking stopped"):
        board = tracking.TensorBoard(blocker / "tb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the tracker is quiet now
        _, _, result = _tiny_fit(tmp_path, [board])
    assert len(result.history) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'vae_jax[mlflow]')")
    mlflow_cli = shutil.which("mlflow", path=str(__import__("pathlib").Path(sys.executable).parent))
    if mlflow_cli is None:
        pytest.skip("the mlflow command is not installed beside this Python")
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    proc = subprocess.Popen([mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--default-artifact-root", str(folder / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start on {uri} (exit {proc.poll()})")
                time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        proc.wait(30)


def test_mlflow_metrics_params_and_artifacts_reach_a_real_server(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    tracker = tracking.MLflow(mlflow_server, experiment="test", run_name="tiny", params={"latent_dim": 2})
    _, _, result = _tiny_fit(tmp_path, [tracker])
    artifact = tmp_path / "metrics.csv"
    artifact.write_text("epoch\n1\n")
    tracker.log_artifact(artifact)
    assert tracker.close()
    client = MlflowClient(mlflow_server)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"latent_dim": "2"}
    history = client.get_metric_history(tracker.run_id, "train_elbo")
    assert [m.step for m in history] == [1, 2, 3]
    np.testing.assert_allclose([m.value for m in history], [r["train_elbo"] for r in result.history], rtol=1e-6)
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["metrics.csv"]


def test_an_unreachable_mlflow_server_costs_a_warning_not_the_run(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'vae_jax[mlflow]')")
    tracker = tracking.MLflow(f"http://127.0.0.1:{_free_port()}", timeout=0.5)
    _, _, result = _tiny_fit(tmp_path, [tracker])
    assert len(result.history) == 3
    with pytest.warns(tracking.TrackingWarning):
        tracker.close()
