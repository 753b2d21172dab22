"""vae_jax.runs: the lock, the folder rules, the atomic writers, and the one resumable fit."""

import json
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vae_jax as vj
from vae_jax import hooks, runs, training

METRIC = "validation_elbo"


def test_the_lock_file_is_removed_on_release_and_a_replaced_file_is_locked_again(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    with runs.RunLock(folder):
        assert (folder / ".lock").read_text().strip() == str(os.getpid())
    assert list(folder.iterdir()) == []  # nothing left behind
    # A process that opened .lock just before its holder removed it must not lock the removed file:
    # once locked, the path must still name the file it holds, else it tries again.
    real_stat, calls = os.stat, []

    def replaced_once(path, *a, **k):
        result = real_stat(path, *a, **k)
        if str(path).endswith(".lock"):
            calls.append(path)
            if len(calls) == 1:  # as if the holder had removed it and another process created it anew
                return os.stat_result((result.st_mode, result.st_ino + 1, *result[2:]))
        return result

    monkeypatch.setattr(runs.lock.os, "stat", replaced_once)
    with runs.RunLock(folder) as lock:
        assert len(calls) == 2 and lock._fd is not None


def test_atomic_writers_share_one_strategy_and_leave_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    runs.write_json(path, {"x": 1})
    runs.write_csv(tmp_path / "m.csv", [{"epoch": 1, "loss": 2.5}, {"epoch": 2, "loss": 1.5}])
    assert (tmp_path / "m.csv").read_bytes() == b"epoch,loss\r\n1,2.5\r\n2,1.5\r\n"  # as csv writes it
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "m.csv").stat().st_mode) == 0o644
    monkeypatch.setattr(runs.files.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left")))
    for write in (lambda: runs.write_json(path, {"x": 2}), lambda: runs.write_csv(path, [{"epoch": 1}])):
        with pytest.raises(OSError, match="No space left"):
            write()
    assert json.loads(path.read_text()) == {"x": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["a.json",
                                                                                                     "m.csv"]
    with pytest.raises(ValueError, match="Out of range float"):
        runs.write_json(path, {"x": float("nan")}, allow_nan=False)


def test_read_json_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="Run status '.*missing.json' not found"):
        runs.read_json(tmp_path / "missing.json", what="Run status")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="Run status '.*bad.json' is not valid JSON"):
        runs.read_json(tmp_path / "bad.json", what="Run status")


def test_folder_rules(tmp_path):
    out = tmp_path / "run"
    assert runs.check_run_folder(out, resume=False) == []  # missing: created by the lock
    out.mkdir()
    assert runs.check_run_folder(out, resume=False) == []  # empty
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files that no run wrote \(notes.txt\); nothing was overwritten"):
        runs.check_run_folder(out, resume=False)
    (out / "notes.txt").unlink()
    (out / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no run wrote \(config.json\)"):  # without the marker: someone's file
        runs.check_run_folder(out, resume=False)
    (out / "run.json").write_text("{}")  # a run stopped before its first checkpoint
    assert runs.check_run_folder(out, resume=False) == []
    (out / "tensorboard").mkdir()  # ... after its tracker and its streamed images were written
    (out / "train_images.npy").write_bytes(b"")
    assert runs.check_run_folder(out, resume=False) == []
    with pytest.raises(ValueError, match="needs a checkpoint"):
        runs.check_run_folder(out, resume=True)
    (out / "checkpoints" / "3").mkdir(parents=True)
    with pytest.raises(ValueError, match="already holds a run; add --resume"):
        runs.check_run_folder(out, resume=False)
    assert runs.check_run_folder(out, resume=True, epochs=3) == [3]
    with pytest.raises(ValueError, match="--epochs 2 is below the 3 epochs"):
        runs.check_run_folder(out, resume=True, epochs=2)
    (out / "config.json").unlink()
    with pytest.raises(ValueError, match="holds checkpoints but no config.json"):
        runs.check_run_folder(out, resume=True)
    with pytest.raises(ValueError, match="is a file or lies under one"):
        runs.check_run_folder(out / "run.json", resume=True)
    with pytest.raises(ValueError, match="there is no folder"):
        runs.check_run_folder(tmp_path / "typo", resume=True)


def test_a_failed_fresh_run_removes_the_folder_it_created(tmp_path):
    with pytest.raises(RuntimeError):
        with runs.RunFolder(tmp_path / "new", resume=False):
            raise RuntimeError("bad dataset")
    assert not (tmp_path / "new").exists()
    with runs.RunFolder(tmp_path / "kept", resume=False) as run:
        runs.write_json(run.path / "run.json", {"status": "starting"})
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["run.json"]


@pytest.mark.parametrize("text, seconds", [('{"seconds": 12.5}', 12.5), ("{", 0.0), ("[]", 0.0),
                                           ('{"seconds": null}', 0.0), ('{"seconds": -3}', 0.0)])
def test_previous_seconds_never_stops_a_resume(text, seconds, tmp_path):
    path = tmp_path / "run.json"
    path.write_text(text)
    if seconds:
        assert runs.previous_seconds(path) == seconds
    else:
        with pytest.warns(RuntimeWarning, match="is damaged"):
            assert runs.previous_seconds(path) == 0.0
    assert runs.previous_seconds(tmp_path / "missing.json") == 0.0


def test_bound_config_drops_the_free_fields_at_every_level():
    config = {"model": {"latent_dim": 2}, "train": {"epochs": 5, "seed": 0, "data_dir": "/x"}}
    assert runs.bound_config(config, ("epochs", "data_dir")) == {"model": {"latent_dim": 2}, "train": {"seed": 0}}


def _setup():
    model = vj.build_model(vj.ModelConfig(latent_dim=2, hidden_sizes=(8,)), (4, 4, 1))
    state = training.create_train_state(model, jax.random.key(0), jnp.zeros((4, 4, 1)), optax.adam(1e-2), beta=1.0)
    data = (jax.random.uniform(jax.random.key(1), (64, 4, 4, 1)) > 0.5).astype(jnp.float32)
    return model, state, data


class _StopAt:
    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, epoch, state, history):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _fit(folder, epochs, *, resume, logs=(), status=None):
    model, state, data = _setup()
    plan = runs.FitPlan(training.make_train_step(model.objective), data, jax.random.key(2), epochs, 16, METRIC,
                        hooks.Validate(model.objective, data[:16], jax.random.key(3)), config={"seed": 0},
                        logs=logs, progress=False)
    with runs.RunFolder(folder, resume=resume, layout=runs.Layout("status", frozenset())) as run:
        return runs.resumable_fit(run, state, plan, status=status)


def test_resumable_fit_after_ctrl_c_ends_bitwise_as_an_uninterrupted_fit(tmp_path):
    whole = _fit(tmp_path / "whole", 3, resume=False)
    reports = []
    with pytest.raises(runs.Interrupted) as stop:
        _fit(tmp_path / "cut", 3, resume=False, logs=(_StopAt(2),),
             status=lambda history, **fields: reports.append((len(history), fields["status"])))
    assert stop.value.epochs == 2 and "the checkpoint of epoch 2" in stop.value.kept
    assert reports == [(2, "interrupted")] and isinstance(stop.value, KeyboardInterrupt)
    resumed = _fit(tmp_path / "cut", 3, resume=True)
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    best = max(whole.history, key=lambda r: r[METRIC])["epoch"]
    assert whole.best_epoch == best
    for a, b in zip(jax.tree.leaves((resumed.state, resumed.best_state)), jax.tree.leaves((whole.state,
                                                                                            whole.best_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
