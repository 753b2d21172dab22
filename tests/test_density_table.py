"""Tests of experiments.density_table: the quick protocol end to end, early stopping, the TFDS guard."""

import json
import os
import shlex
import socket
import time

import jax
import numpy as np
import pytest

from experiments import density_table as dt
from vae_jax import data as vdata
from vae_jax import models, training

needs_fmnist = pytest.mark.skipif(
    not os.path.isfile(f"{vdata.DEFAULT_DATA_DIR}/t10k-images-idx3-ubyte.gz"),
    reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it)")


@needs_fmnist
def test_quick_run_writes_a_table_whose_command_reproduces_its_config_and_stops_on_time(tmp_path):
    results = dt.main(["--out", str(tmp_path), "--quick", "--max-minutes", "0", "--no-progress"])
    for name in ("results.json", "config.json", "table.md", "validation.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["command"] == results["command"]
    cfg = results["config"]
    assert cfg["size"] == "quick" and not cfg["full_protocol"]
    assert (cfg["train_images"], cfg["validation_images"], cfg["test_images"]) == (500, 200, 50)
    argv = shlex.split(results["command"])[3:]
    again = dt.make_config(dt.build_parser().parse_args(argv))
    assert again == {k: v for k, v in cfg.items() if not k.endswith("_images")}
    assert [r["name"] for r in results["models"]] == ["VAE", "IWAE k=2"]
    for r in results["models"]:
        values = [h["validation_objective"] for h in r["history"]]
        assert (r["epochs"], r["stopped_by"]) == (1, "time budget")  # --max-minutes 0: one epoch
        assert r["best_validation_objective"] == max(values)
        assert -800 < r["test_elbo"] < -150 and 0 <= r["active_units"] <= 8
        # 50-sample log p(x) sits above the (1-sample) ELBO of 50 test images
        assert r["test_elbo"] < r["test_log_px_mean"] < 0 and r["test_log_px_stderr"] > 0
    table = (tmp_path / "table.md").read_text()
    assert "-228.70" in table and "quick run" in table


def _digits_setup():
    x = vdata.load_digits().images
    model = models.build_model(models.ModelConfig(latent_dim=2, hidden_sizes=(16,)), x.shape[1:])
    validation = vdata.binarize_static(x[:100], 0)
    return model, x[100:600], validation


def _cfg(**changes):
    return dict(dict(learning_rate=0.05, batch_size=50, epochs=40, patience=2, max_minutes=None), **changes)


def test_early_stopping_keeps_the_best_validation_parameters():
    model, train, validation = _digits_setup()
    key = jax.random.key(0)
    params, info = dt.train_model(model, model.objective, train, validation, key, _cfg(), progress=False)
    values = [h["validation_objective"] for h in info["history"]]
    assert info["stopped_by"] == "early stopping" and info["epochs"] < 40
    assert info["epochs"] == info["best_epoch"] + 2  # patience 2
    assert info["best_validation_objective"] == max(values) == values[info["best_epoch"] - 1]
    # the returned parameters are those of the best epoch: same validation value with the same draws
    key_val = jax.random.split(key, 3)[2]
    again = training.evaluate(model.objective, params, validation, key_val)["objective"]
    np.testing.assert_allclose(again, info["best_validation_objective"], rtol=1e-5)


def test_mnist_without_data_or_network_fails_fast_without_calling_tfds_load(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    probed = []
    monkeypatch.setattr(dt, "_reachable", lambda host, timeout: probed.append(host) or False)
    monkeypatch.setattr(vdata, "load_tfds", lambda *a, **k: pytest.fail("tfds.load of an unprepared dataset"))
    start = time.perf_counter()
    with pytest.raises(SystemExit, match="cannot run here.*not prepared.*no network"):
        dt.main(["--out", str(tmp_path / "out"), "--quick", "--dataset", "mnist",
                 "--tfds-data-dir", str(tmp_path / "tfds")])
    assert time.perf_counter() - start < 10 and probed == ["storage.googleapis.com"]
    assert not (tmp_path / "out").exists()


def test_tfds_ready_finds_prepared_and_cached_datasets(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core.download import resource

    monkeypatch.setattr(dt, "_reachable", lambda host, timeout: pytest.fail("probed the network"))
    cls = tfds.builder_cls("mnist")
    prepared = tmp_path / "a" / "mnist" / str(cls.VERSION)
    prepared.mkdir(parents=True)
    (prepared / "dataset_info.json").write_text("{}")
    assert dt.tfds_ready("mnist", str(tmp_path / "a"))[0]
    downloads = tmp_path / "b" / "downloads"
    downloads.mkdir(parents=True)
    fnames = [resource.get_dl_fname(url, info.checksum) for url, info in cls.url_infos.items()]
    for i, fname in enumerate(fnames):
        (downloads / fname).write_bytes(b"x")
        if i:  # the first file lacks its .INFO: not cached yet
            (downloads / f"{fname}.INFO").write_text("{}")
    monkeypatch.setattr(dt, "_reachable", lambda host, timeout: False)
    assert not dt.tfds_ready("mnist", str(tmp_path / "b"))[0]
    (downloads / f"{fnames[0]}.INFO").write_text("{}")
    ready, message = dt.tfds_ready("mnist", str(tmp_path / "b"))
    assert ready and "cached" in message
    monkeypatch.setattr(dt, "_reachable", lambda host, timeout: True)
    assert dt.tfds_ready("mnist", str(tmp_path / "c"))[0]


def test_reachable_probe_on_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert dt._reachable("127.0.0.1", 2.0, port=port)
    assert not dt._reachable("127.0.0.1", 2.0, port=port)  # closed now: refused at once


@pytest.mark.parametrize("flag", [["--iwae-k", "0"], ["--epochs", "0"], ["--num-samples", "0"]])
def test_bad_sizes_raise(flag, tmp_path):
    with pytest.raises(ValueError, match=">= 1"):
        dt.make_config(dt.build_parser().parse_args(["--out", str(tmp_path), *flag]))
