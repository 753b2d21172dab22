"""Tests of experiments.density_table: quick rows end to end, honest labels, resume, early stopping, the TFDS guard."""

import json
import os
import shlex
import socket
import time

import jax
import numpy as np
import pytest

from experiments import _density_io as dio
from experiments import density_table as dt
from vae_jax import checkpoints, hooks
from vae_jax import data as vdata
from vae_jax.config import ModelConfig

needs_fmnist = pytest.mark.skipif(
    not os.path.isfile(f"{vdata.DEFAULT_DATA_DIR}/t10k-images-idx3-ubyte.gz"),
    reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it)")
QUICK = ["--quick", "--no-progress", "--test-size", "20", "--num-samples", "20"]


@needs_fmnist
def test_quick_rows_write_results_labelled_as_not_the_protocol(tmp_path):
    rows = dt.main(["--out", str(tmp_path), *QUICK, "--epochs", "2", "--models", "vamp_warmup", "iwae5"])
    assert [r["name"] for r in rows] == ["vamp_warmup", "iwae5"]
    for r in rows:
        saved = json.loads((tmp_path / "models" / r["name"] / "result.json").read_text())
        assert saved["command"] == r["command"] and saved["stop_reason"] == "max epochs"
        assert not saved["protocol"] and not saved["config"]["full_protocol"]
        assert len(saved["history"]) == 2 and saved["environment"]["versions"]["jax"] == jax.__version__
        assert r["best_validation_objective"] == max(h["validation_objective"] for h in r["history"])
        # 20-sample log p(x) sits above the 1-sample ELBO of the same 20 images
        assert -800 < r["test_elbo"] < r["test_log_px_mean"] < 0 and r["test_log_px_stderr"] > 0
        values = np.load(tmp_path / "models" / r["name"] / r["test_log_px_values"])  # per image, for paired rows
        assert values.shape == (20,) and values.mean() == pytest.approx(r["test_log_px_mean"])
    assert rows[0]["label"] == "VampPrior (K=10) + warm-up" and rows[0]["kl_warmup_epochs"] == 1
    table = (tmp_path / "table.md").read_text()
    assert table.count("VampPrior (K=10) + warm-up, ours") == 1 and table.count("IWAE k=5, ours") == 1
    assert "(protocol)" not in table and "NOT the protocol: 2 epochs, max epochs, 20 test images, 20 samples" in table
    assert "-228.70" in table and "-224.67" in table
    # the command rebuilds the same configuration
    argv = shlex.split(rows[0]["command"])[3:]
    again = dt.make_config(dt.build_parser().parse_args(argv))
    assert again.to_dict() == {k: v for k, v in rows[0]["config"].items() if not k.endswith("_images")} | \
        {"full_protocol": False}
    assert dt.StudyConfig.from_dict(rows[0]["config"]) == dt.with_images(again, 500, 200, 20)
    with pytest.raises(SystemExit, match="--resume"):  # a finished OUT is not overwritten
        dt.main(["--out", str(tmp_path), *QUICK, "--epochs", "2", "--models", "iwae5"])
    dt.snapshot(tmp_path, tmp_path / "snap")
    (pair,) = json.loads((tmp_path / "snap" / "paired_differences.json").read_text())["pairs"]
    assert pair["mean_difference"] == pytest.approx(rows[0]["test_log_px_mean"] - rows[1]["test_log_px_mean"])


@needs_fmnist
def test_an_interrupted_warmup_run_resumes_to_the_uninterrupted_result_bitwise(tmp_path, monkeypatch):
    args = [*QUICK, "--epochs", "3", "--warmup-epochs", "2", "--models", "vae_warmup"]
    whole = dt.main(["--out", str(tmp_path / "a"), *args])[0]

    calls, write_status = [], dt.Status.__call__

    def interrupt(self, epoch, state, history):
        calls.append(epoch)
        write_status(self, epoch, state, history)
        if epoch == 1:  # after the checkpoint of epoch 1 (Status runs after Checkpoint)
            raise KeyboardInterrupt

    monkeypatch.setattr(dt.Status, "__call__", interrupt)
    with pytest.raises(KeyboardInterrupt):
        dt.main(["--out", str(tmp_path / "b"), *args])
    status_free = json.loads((tmp_path / "b" / "models" / "config.json").read_text())
    assert status_free["epochs"] == 3 and not (tmp_path / "b" / "models" / "vae_warmup" / "result.json").exists()
    with pytest.raises(SystemExit, match="--resume"):
        dt.main(["--out", str(tmp_path / "b"), *args])
    assert dt.snapshot(tmp_path / "b", tmp_path / "snap") == ["vae_warmup"]
    partial = json.loads((tmp_path / "snap" / "vae_warmup.json").read_text())
    assert partial["state"] == "partial" and partial["resume_command"].endswith("--resume")
    assert [row["epoch"] for row in partial["history"]] == [1.0]
    # the best checkpoint so far, evaluated beside training: labelled interim, carried by the snapshot
    (early,) = dt.main(["--out", str(tmp_path / "b"), "--interim", "vae_warmup", "--no-progress"])
    assert early["state"] == "interim" and early["best_epoch"] == early["epochs_when_evaluated"] == 1
    assert early["test_images"] == 20 and early["num_samples"] == 20  # the run's own settings
    assert -800 < early["test_elbo"] < early["test_log_px_mean"] < 0
    dt.snapshot(tmp_path / "b", tmp_path / "snap")
    partial = json.loads((tmp_path / "snap" / "vae_warmup.json").read_text())
    assert partial["interim_evaluation"]["test_log_px_mean"] == early["test_log_px_mean"]
    assert np.load(tmp_path / "b" / "models" / "vae_warmup" / "interim_test_log_px.npy").shape == (20,)
    resumed = dt.main(["--out", str(tmp_path / "b"), *args, "--resume"])[0]
    with pytest.raises(SystemExit, match="has finished"):
        dt.main(["--out", str(tmp_path / "b"), "--interim", "vae_warmup"])
    assert calls == [1, 2, 3]
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(whole["history"])  # same losses, betas and validation values
    for key in ("test_elbo", "test_log_px_mean", "best_epoch"):
        assert resumed[key] == whole[key]
    states = []
    for run in ("a", "b"):
        with checkpoints.RunCheckpoints(tmp_path / run / "models" / "vae_warmup" / "checkpoints",
                                        metric="validation_objective") as ckpt:
            template = dt.row_setup("vae_warmup", dt.StudyConfig.from_dict(whole["config"]),
                                    np.zeros((500, 28, 28, 1), np.float32))[3]
            states.append(ckpt.restore(template, which="latest")[0])
    assert int(states[0].step) == int(states[1].step) == 3 * 5 and int(states[1].kl_warmup_steps) == 2 * 5
    for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_warmup_early_stopping_counts_patience_after_the_warmup():
    stop = hooks.EarlyStopping("v", patience=3, count_from=5)
    history = [{"epoch": e, "v": -e if e > 2 else float(e)} for e in range(1, 12)]  # best at epoch 2
    reasons = {e: stop(e, None, history[:e]) for e in range(1, 12)}
    assert [e for e, r in reasons.items() if r] == [8, 9, 10, 11]  # 5 (end of warm-up) + 3
    assert "best 2.0000 at epoch 2" in reasons[8]
    no_warmup = hooks.EarlyStopping("v", patience=3, count_from=0)
    assert [e for e in range(1, 12) if no_warmup(e, None, history[:e])] == [5, 6, 7, 8, 9, 10, 11]


def test_labels_say_protocol_only_for_a_finished_full_run():
    row = dict(label="VAE", epochs=400, stop_reason="early stopping: ...", test_images=10000, num_samples=5000)
    assert dt.row_label(dict(row, protocol=True)) == "VAE, ours (protocol)"
    assert dt.row_label(dict(row, protocol=False, epochs=12, stop_reason="time limit: 5.0 of 5 minutes",
                             test_images=1000)) == \
        "VAE, ours (NOT the protocol: 12 epochs, time limit, 1000 test images, 5000 samples)"


def test_full_protocol_flag_follows_the_sizes(tmp_path):
    parse = lambda *a: dt.make_config(dt.build_parser().parse_args(["--out", str(tmp_path), *a]))  # noqa: E731
    assert parse().full_protocol
    for flags in (["--max-minutes", "50"], ["--test-size", "200"], ["--num-samples", "1000"], ["--epochs", "3"],
                  ["--architecture", "mlp"], ["--quick"], ["--patience", "10"], ["--learning-rate", "1e-3"],
                  ["--batch-size", "50"], ["--warmup-epochs", "10"], ["--num-components", "50"]):
        assert not parse(*flags).full_protocol, flags


def test_resume_of_a_missing_out_is_refused_and_creates_nothing(tmp_path):
    # Issue 24: `density_table --resume` on a typo'd --out started a new study there.
    with pytest.raises(SystemExit, match="--resume needs a run, and there is no folder"):
        dt.main(["--out", str(tmp_path / "typo"), "--quick", "--resume", "--no-progress"])
    assert not (tmp_path / "typo").exists()


def test_a_saved_configuration_blocks_only_when_a_row_was_trained_under_it(tmp_path):
    cfg = dt.make_config(dt.build_parser().parse_args(["--out", str(tmp_path), "--quick"]))
    other = dt.make_config(dt.build_parser().parse_args(["--out", str(tmp_path), "--quick", "--learning-rate", "1e-3"]))
    dt._check_saved_config(tmp_path, other)  # a run that failed before any checkpoint ...
    dt._check_saved_config(tmp_path, cfg)  # ... does not block the corrected command
    assert json.loads((tmp_path / "models" / "config.json").read_text())["learning_rate"] == 5e-4
    (tmp_path / "models" / "vae" / "checkpoints" / "1").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"another configuration .*learning_rate=0.0005 \(now 0.001\)"):
        dt._check_saved_config(tmp_path, other)


@pytest.mark.parametrize("name", ["vae", "vae_warmup", "vamp_warmup", "iwae5"])
def test_the_records_rebuild_the_committed_protocol_results(name):
    # docs/results/density_table was made with dict configs and tuple rows: the records must give the same
    # configuration (so a resume of that OUT is not refused), model, label, prior and k.
    import dataclasses
    from pathlib import Path

    saved = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "density_table" /
                        f"{name}.json").read_text())
    cfg = dt.with_images(dt.make_config(dt.build_parser().parse_args(["--out", "x"])), 50000, 10000, 10000)
    assert cfg.to_dict() == saved["config"] | {"net": dict(saved["config"]["net"], hidden_sizes=[300, 300])}
    assert dt.StudyConfig.from_dict(saved["config"]) == cfg and cfg.full_protocol
    model = dataclasses.asdict(dt.model_config(cfg, name))
    model["hidden_sizes"] = list(model["hidden_sizes"])
    assert {k: model[k] for k in saved["model_config"]} == saved["model_config"]
    defaults = dataclasses.asdict(ModelConfig())  # fields added since (num_layers, flow) keep their defaults
    assert {k: model[k] for k in model.keys() - saved["model_config"].keys()} == \
        {k: defaults[k] for k in model.keys() - saved["model_config"].keys()}
    row = dt.ROWS[name]
    assert (row.title(cfg.num_components), row.prior, row.iwae_k) == (saved["label"], saved["prior"], saved["iwae_k"])


def test_rows_are_records_that_name_a_model_an_objective_and_warmup():
    assert dt.ROWS["vamp_warmup"].model["prior"] == "vamp" and dt.ROWS["vamp_warmup"].warmup
    assert (dt.ROWS["iwae5"].objective, dt.ROWS["iwae5"].iwae_k, dt.ROWS["vae"].iwae_k) == ("iwae", 5, None)
    cfg = dt.make_config(dt.build_parser().parse_args(["--out", "x", "--quick"]))
    assert dt.model_config(cfg, "vamp_warmup").prior == "vamp" and dt.model_config(cfg, "vamp_warmup").latent_dim == 8
    assert dt.ROWS["vamp_warmup"].title(cfg.num_components) == "VampPrior (K=10) + warm-up"
    with pytest.raises(ValueError, match="warm-up weights the KL term"):
        dt.Row("IWAE with warm-up", objective="iwae", num_samples=5, warmup=True)


def test_mnist_without_data_or_network_fails_fast_without_calling_tfds_load(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    probed = []
    monkeypatch.setattr(dio, "_reachable", lambda host, timeout: probed.append(host) or False)
    monkeypatch.setattr(vdata, "load_tfds", lambda *a, **k: pytest.fail("tfds.load of an unprepared dataset"))
    start = time.perf_counter()
    with pytest.raises(SystemExit, match="cannot run here.*not prepared.*no network"):
        dt.main(["--out", str(tmp_path / "out"), "--quick", "--dataset", "mnist",
                 "--tfds-data-dir", str(tmp_path / "tfds")])
    assert time.perf_counter() - start < 10 and probed == ["storage.googleapis.com"]


def test_tfds_ready_finds_prepared_and_cached_datasets(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core.download import resource

    monkeypatch.setattr(dio, "_reachable", lambda host, timeout: pytest.fail("probed the network"))
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
    monkeypatch.setattr(dio, "_reachable", lambda host, timeout: False)
    assert not dt.tfds_ready("mnist", str(tmp_path / "b"))[0]
    (downloads / f"{fnames[0]}.INFO").write_text("{}")
    ready, message = dt.tfds_ready("mnist", str(tmp_path / "b"))
    assert ready and "cached" in message
    monkeypatch.setattr(dio, "_reachable", lambda host, timeout: True)
    assert dt.tfds_ready("mnist", str(tmp_path / "c"))[0]


def test_reachable_probe_on_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert dt._reachable("127.0.0.1", 2.0, port=port)
    assert not dt._reachable("127.0.0.1", 2.0, port=port)  # closed now: refused at once


@pytest.mark.parametrize("flag", [["--epochs", "0"], ["--num-samples", "0"], ["--patience", "0"],
                                  ["--num-components", "0"], ["--warmup-epochs", "-1"]])
def test_bad_sizes_raise(flag, tmp_path):
    with pytest.raises(ValueError, match=">= "):
        dt.make_config(dt.build_parser().parse_args(["--out", str(tmp_path), *flag]))


@needs_fmnist
def test_a_row_another_process_trains_is_skipped_and_the_next_row_trained(tmp_path):
    import subprocess
    import sys
    folder = tmp_path / "models" / "vae_warmup"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from vae_jax.checkpoints import RunLock\n"
        f"with RunLock({str(folder)!r}):\n    print('held', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rows = dt.main(["--out", str(tmp_path), *QUICK, "--epochs", "1", "--models", "vae_warmup", "vae"])
    finally:
        holder.kill()
        holder.wait()
    assert [r["name"] for r in rows] == ["vae"]
    assert not (folder / "result.json").exists() and (tmp_path / "models" / "vae" / "result.json").is_file()


def test_snapshot_reads_a_history_whose_later_rows_leave_a_column_empty(tmp_path):
    folder = tmp_path / "run" / "models" / "vae"
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"name": "vae", "label": "VAE", "epochs": 2}))
    (folder / "history.csv").write_text("epoch,train_grad_norm,validation_objective\n1,46.0,-270.5\n2,,-260.25\n")
    assert dt.snapshot(tmp_path / "run", tmp_path / "snap") == ["vae"]
    history = json.loads((tmp_path / "snap" / "vae.json").read_text())["history"]
    assert history == [{"epoch": 1.0, "train_grad_norm": 46.0, "validation_objective": -270.5},
                       {"epoch": 2.0, "validation_objective": -260.25}]


def test_a_snapshot_keeps_rows_finished_in_another_run_folder_and_their_pairs(tmp_path):
    # Rows finished in one run folder, newer rows trained in another: one snapshot folder holds all.
    evaluation = dict(test_log_px_mean=-230.0, test_log_px_stderr=0.75, test_elbo=-233.0, active_units=12,
                      latent_dim=40, best_epoch=2, epochs=2, stop_reason="early stopping: x",
                      history=[{"epoch": 1, "validation_objective": -240.0}])
    old, new, snap = tmp_path / "old" / "models", tmp_path / "new" / "models", tmp_path / "snap"
    for name, values in (("vae", [-229.0, -231.0]), ("vae_warmup", [-228.0, -230.0])):
        (old / name).mkdir(parents=True)
        (old / name / "result.json").write_text(json.dumps(dict(evaluation, name=name, label=name)))
        np.save(old / name / "test_log_px.npy", np.array(values))
    assert dt.snapshot(tmp_path / "old", snap) == ["vae", "vae_warmup"]
    (new / "hvae_warmup").mkdir(parents=True)
    (new / "hvae_warmup" / "status.json").write_text(json.dumps(dict(
        name="hvae_warmup", label="HVAE", epochs=1, state="training", resume_command="python -m x --resume")))
    (snap / "iwae5.json").write_text(json.dumps({"name": "iwae5", "state": "partial"}))  # stale: its run is gone
    assert dt.snapshot(tmp_path / "new", snap) == ["vae", "vae_warmup", "hvae_warmup"]
    assert json.loads((snap / "vae.json").read_text())["test_log_px_mean"] == -230.0
    assert json.loads((snap / "hvae_warmup.json").read_text())["state"] == "partial"
    assert not (snap / "iwae5.json").exists()
    (pair,) = json.loads((snap / "paired_differences.json").read_text())["pairs"]
    assert (pair["a"], pair["b"], pair["mean_difference"]) == ("vae", "vae_warmup", pytest.approx(-1.0))
    with pytest.raises(SystemExit, match="holds no density-table run"):
        dt.snapshot(tmp_path / "typo", snap)
    assert (snap / "vae.json").is_file()


def test_paired_differences_against_a_hand_computation(tmp_path):
    models = tmp_path / "run" / "models"
    rows = {"vae": ("result.json", "test_log_px.npy", [1.0, 2.0, 3.0, 4.0], 7),
            "vamp_warmup": ("interim.json", "interim_test_log_px.npy", [0.0, 2.0, 2.0, 5.0], 3),
            "iwae5": ("interim.json", "interim_test_log_px.npy", [0.0, 1.0, 2.0], 5)}  # 3 images: not paired
    for name, (meta, values, v, best) in rows.items():
        (models / name).mkdir(parents=True)
        (models / name / meta).write_text(json.dumps({"best_epoch": best}))
        np.save(models / name / values, np.asarray(v))
    (pair,) = dt.paired_differences(tmp_path / "run")
    # a - b = [1, 0, 1, -1]: mean 1/4, sample variance 11/12, paired s.e. sqrt(11/12) / 2
    assert (pair["a"], pair["b"], pair["a_evaluation"], pair["b_evaluation"]) == ("vae", "vamp_warmup", "final",
                                                                                  "interim")
    assert (pair["a_best_epoch"], pair["b_best_epoch"], pair["test_images"]) == (7, 3, 4)
    assert pair["mean_difference"] == pytest.approx(0.25)
    assert pair["paired_stderr"] == pytest.approx(np.sqrt(11 / 12) / 2)
    # unpaired: variances 5/3 and 17/4 over 4 images
    assert pair["unpaired_stderr"] == pytest.approx(np.sqrt((5 / 3 + 17 / 4) / 4))


def test_snapshot_rewrites_the_pages_state_and_pairs_tables(tmp_path):
    models = tmp_path / "run" / "models"
    history = [{"epoch": 1, "validation_objective": -240.0, "seconds": 7.0},
               {"epoch": 2, "validation_objective": -235.5, "seconds": 8.0}]
    evaluation = dict(test_log_px_mean=-230.0, test_log_px_stderr=0.75, test_elbo=-233.0, active_units=12,
                      latent_dim=40, best_epoch=2)
    (models / "vae").mkdir(parents=True)
    (models / "vae" / "result.json").write_text(json.dumps(dict(
        evaluation, name="vae", label="VAE", epochs=2, stop_reason="early stopping: no better value",
        history=history)))
    np.save(models / "vae" / "test_log_px.npy", np.array([-229.0, -231.0]))
    (models / "iwae5").mkdir()
    (models / "iwae5" / "status.json").write_text(json.dumps(dict(
        name="iwae5", label="IWAE k=5", epochs=1, state="training", resume_command="python -m x --resume")))
    (models / "iwae5" / "history.csv").write_text("epoch,validation_objective,seconds\n1,-236.25,40.0\n")
    (models / "iwae5" / "interim.json").write_text(json.dumps(dict(evaluation, test_log_px_mean=-229.5, best_epoch=1)))
    np.save(models / "iwae5" / "interim_test_log_px.npy", np.array([-228.0, -231.0]))
    page = tmp_path / "page.md"
    page.write_text("before\n<!-- state -->\nold\n<!-- /state -->\nmiddle\n<!-- pairs -->\n<!-- /pairs -->\nafter\n")
    dt.main(["--out", str(tmp_path / "run"), "--snapshot", str(tmp_path / "snap"), "--page", str(page)])
    text = page.read_text()
    assert text.startswith("before\n<!-- state -->\nAt the snapshot of 20") and "old" not in text
    assert "UTC:\n\n| model |" in text
    assert "| VAE | **finished** (early stopping) | 2 | -235.50 (2) | 8 | final: -230.00 ± 0.75, test ELBO -233.00, " \
           "12/40 active units (epoch 2) | none (finished) |" in text
    assert "| IWAE k=5 | **partial** (training) | 1 | -236.25 (1) (the 5-sample bound) | 40 | interim: -229.50 ± 0.75" \
           in text and "`python -m x --resume` |" in text
    # pairs: a - b = [-1, 0]: mean -0.5, paired s.e. sqrt(0.5) / sqrt(2) = 0.5
    assert "\nmiddle\n<!-- pairs -->\n| a − b |" in text and text.endswith("<!-- /pairs -->\nafter\n")
    assert "| VAE − IWAE k=5 | -0.50 | 0.50 |" in text and "final (2), interim (1) |" in text
    assert (tmp_path / "snap" / "table.png").stat().st_size > 10_000  # the dot plot beside the published rows
    with pytest.raises(SystemExit):  # --page alone: an argparse error, not a silent no-op
        dt.main(["--out", str(tmp_path / "run"), "--page", str(page)])
    with pytest.raises(SystemExit, match="no such file"):
        dt.main(["--out", str(tmp_path / "run"), "--snapshot", str(tmp_path / "snap"), "--page",
                 str(tmp_path / "missing.md")])
    page.write_text("no markers\n")
    with pytest.raises(SystemExit, match="state"):
        dt.main(["--out", str(tmp_path / "run"), "--snapshot", str(tmp_path / "snap"), "--page", str(page)])


def test_a_folder_of_other_files_or_a_file_is_refused_and_left_alone(tmp_path):
    # Issue 24: the study wrote its table, results and figures beside someone's files in a non-empty folder.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.json").write_text("mine")
    with pytest.raises(SystemExit, match="holds files that no density-table run wrote"):
        dt.main(["--out", str(theirs), "--quick", "--no-progress"])
    assert [p.name for p in theirs.iterdir()] == ["results.json"] and (theirs / "results.json").read_text() == "mine"
    with pytest.raises(SystemExit) as exit_:  # the parser's one line: a file is no folder
        dt.main(["--out", str(theirs / "results.json"), "--quick", "--no-progress"])
    assert exit_.value.code == 2 and (theirs / "results.json").read_text() == "mine"
