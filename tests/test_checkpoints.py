"""vae_jax.checkpoints: bitwise round trips, latest + best retention, atomicity, checksums, the run lock."""

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vae_jax as vj
from vae_jax.checkpoints import (CheckpointError, CheckpointWarning, ConfigMismatchError, RunCheckpoints, RunLock,
                                 RunLockedError)

# TensorStore's reads abandoned by a failed restore of a damaged checkpoint are collected later, in
# whichever test runs then: not an error of that test.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

METRIC = "validation_elbo"
VALUES = [-50.0, -30.0, -40.0, -35.0]  # epoch 2 is the best, epoch 4 the latest


def _state(hidden=(8,), seed=0):
    model = vj.build_model(vj.ModelConfig(latent_dim=2, hidden_sizes=hidden), (4, 4, 1))
    return vj.create_train_state(model, jax.random.key(seed), jnp.zeros((4, 4, 1)), optax.adam(1e-3), beta=2.0)


def _state_at(epoch):
    """A distinct state per epoch: trained-looking params, optimiser moments and step count."""
    state = _state()
    shift = lambda tree: jax.tree.map(lambda a: a + jnp.asarray(epoch / 7, a.dtype), tree)  # noqa: E731
    return state.replace(step=jnp.asarray(epoch * 11, jnp.int32), params=shift(state.params),
                         opt_state=shift(state.opt_state))


def _history(epochs):
    return [{"epoch": e, "train_loss": 60.0 - e, METRIC: VALUES[e - 1]} for e in range(1, epochs + 1)]


def _assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint folder after 4 epochs with the metrics VALUES."""
    directory = tmp_path_factory.mktemp("run") / "checkpoints"
    with RunCheckpoints(directory, metric=METRIC, create=True) as ckpts:
        for epoch in range(1, 5):
            ckpts.save(epoch, _state_at(epoch), history=_history(epoch))
    return directory


def test_keeps_latest_and_best_and_restores_them_bitwise(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["2", "4"]
    with RunCheckpoints(saved, metric=METRIC) as ckpts:
        assert (ckpts.latest_epoch, ckpts.best_epoch) == (4, 2)
        latest, latest_history = ckpts.restore(_state(), which="latest")
        best, best_history = ckpts.restore(_state(), which="best")
    _assert_bitwise_equal(latest.params, _state_at(4).params)
    _assert_bitwise_equal(latest.opt_state, _state_at(4).opt_state)
    assert int(latest.step) == 44 and float(latest.hparams["beta"]) == 2.0
    assert latest.tx is not None and latest_history == _history(4)
    _assert_bitwise_equal(best.params, _state_at(2).params)
    assert best_history == _history(2)


def test_restored_state_keeps_training(saved):
    with RunCheckpoints(saved, metric=METRIC) as ckpts:
        state, _ = ckpts.restore(_state())
    grads = jax.tree.map(jnp.ones_like, state.params)
    stepped = state.apply_gradients(grads=grads)
    assert int(stepped.step) == 45  # the optimiser continues from the saved step count


def test_half_written_checkpoint_is_ignored_and_replaced(saved, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved, directory)
    # What a process killed inside Orbax's save leaves: a partial temporary step folder.
    partial = directory / "5.orbax-checkpoint-tmp"
    shutil.copytree(directory / "4", partial)
    shutil.rmtree(partial / "state")
    with RunCheckpoints(directory, metric=METRIC) as ckpts:
        assert ckpts.latest_epoch == 4
        state, history = ckpts.restore(_state())
        _assert_bitwise_equal(state.params, _state_at(4).params)
        history = history + [{"epoch": 5, "train_loss": 55.0, METRIC: -20.0}]
        ckpts.save(5, _state_at(5), history=history)
    assert sorted(p.name for p in directory.iterdir()) == ["5"]  # latest and best at once
    with RunCheckpoints(directory, metric=METRIC) as ckpts:
        assert (ckpts.latest_epoch, ckpts.best_epoch) == (5, 5)
        _assert_bitwise_equal(ckpts.restore(_state())[0].params, _state_at(5).params)


def test_missing_folder_names_it(tmp_path):
    missing = tmp_path / "no_such_run" / "checkpoints"
    with pytest.raises(CheckpointError, match="No checkpoint folder.*no_such_run/checkpoints"):
        RunCheckpoints(missing, metric=METRIC)


def test_empty_folder_has_nothing_to_restore(tmp_path):
    with RunCheckpoints(tmp_path / "ck", metric=METRIC, create=True) as ckpts:
        assert ckpts.latest_epoch is None and ckpts.best_epoch is None
        with pytest.raises(CheckpointError, match=f"No checkpoint in '{tmp_path}/ck'"):
            ckpts.restore(_state())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Orbax's abandoned reads
def test_corrupt_checkpoint_names_the_folder(saved, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved, directory)
    for path in (directory / "4" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    with RunCheckpoints(directory, metric=METRIC) as ckpts:
        with pytest.raises(CheckpointError, match=f"Corrupt checkpoint 4: '{directory}/4' is damaged"):
            ckpts.restore(_state())
        best, _ = ckpts.restore(_state(), which="best")  # the untouched best one still loads
    _assert_bitwise_equal(best.params, _state_at(2).params)


def test_checkpoint_of_another_model_is_refused(saved):
    with RunCheckpoints(saved, metric=METRIC) as ckpts:
        with pytest.raises(CheckpointError, match="does not match this model"):
            ckpts.restore(_state(hidden=(16,)))


def test_save_checks_the_history(tmp_path):
    with RunCheckpoints(tmp_path / "ck", metric=METRIC, create=True) as ckpts:
        with pytest.raises(ValueError, match="history must hold 2 epochs"):
            ckpts.save(2, _state(), history=_history(1))
        with pytest.raises(ValueError, match="the last with 'validation_elbo'"):
            ckpts.save(1, _state(), history=[{"epoch": 1}])
        assert ckpts.latest_epoch is None


def test_changed_arrays_are_a_corrupt_checkpoint_and_latest_intact_falls_back(saved, tmp_path):
    # Arrays that still decode but differ from what was saved (a flipped bit in an uncompressed
    # chunk, a stray copy): before checksums, these loaded without error as other Adam moments.
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved, directory)
    with RunCheckpoints(tmp_path / "other", metric=METRIC, create=True) as other:
        other.save(1, _state_at(3), history=_history(1))
    shutil.rmtree(directory / "4" / "state")
    shutil.copytree(tmp_path / "other" / "1" / "state", directory / "4" / "state")
    with RunCheckpoints(directory, metric=METRIC, read_only=True) as ckpts:
        with pytest.raises(CheckpointError, match="Corrupt checkpoint 4: the arrays in .* do not match the "
                           "checksum.*--checkpoint latest-intact"):
            ckpts.restore(_state())
        state, history = ckpts.restore(_state(), which="latest-intact")
    assert len(history) == 2
    _assert_bitwise_equal(state.opt_state, _state_at(2).opt_state)
    with RunCheckpoints(directory, metric=METRIC) as ckpts:  # a writer moves the corrupt one aside
        assert ckpts.discard_after(2) == [4] and ckpts.epochs == [2]
    assert (tmp_path / "checkpoints.corrupt" / "4").is_dir()


def test_checkpoint_without_a_checksum_loads_with_a_warning(saved, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved, directory)
    shutil.rmtree(directory / "4" / "integrity")  # as written before checksums existed
    with RunCheckpoints(directory, metric=METRIC, read_only=True) as ckpts:
        with pytest.warns(CheckpointWarning, match="has no checksum"):
            state, _ = ckpts.restore(_state())
    _assert_bitwise_equal(state.params, _state_at(4).params)


def test_best_is_ranked_from_the_checksummed_history_never_from_a_metrics_file(saved, tmp_path):
    # Orbax's metrics file lies outside the checksum: edited (as in issue 24: checkpoint 60 made the "best")
    # or damaged, it used to choose the best checkpoint, delete the real one, or block every read.
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved, directory)
    for step, text in (("4", '{"validation_elbo": 1000.0}'), ("2", "garbage")):
        (directory / step / "metrics").mkdir(exist_ok=True)
        (directory / step / "metrics" / "metrics").write_text(text)
    with RunCheckpoints(directory, metric=METRIC) as ckpts:
        assert (ckpts.latest_epoch, ckpts.best_epoch) == (4, 2)  # VALUES: epoch 2 is the best
        _assert_bitwise_equal(ckpts.restore(_state(), which="best")[0].params, _state_at(2).params)
        state, history = ckpts.restore(_state())
        ckpts.save(5, _state_at(5), history=history + [{"epoch": 5, "train_loss": 55.0, METRIC: -45.0}])
    assert sorted(p.name for p in directory.iterdir()) == ["2", "5"]  # the true best kept, 4 removed
    # a history that does not match its checksum ranks nothing: the next newest verified one does
    path = directory / "5" / "history" / "metadata"
    path.write_text(path.read_text().replace("-45.0", "-1.0"))
    with RunCheckpoints(directory, metric=METRIC, read_only=True) as ckpts:
        assert ckpts.best_epoch == 2
        with pytest.raises(CheckpointError, match="Corrupt checkpoint 5: the history .* does not match"):
            ckpts.restore(_state())


def test_a_changed_config_is_refused_before_the_arrays_are_read(tmp_path):
    config = {"model": {"latent_dim": 2, "hidden_sizes": [8]}, "train": {"seed": 0}}
    with RunCheckpoints(tmp_path / "ck", metric=METRIC, config=config, create=True) as ckpts:
        ckpts.save(1, _state_at(1), history=_history(1))
    with RunCheckpoints(tmp_path / "ck", metric=METRIC, config=config) as ckpts:
        _assert_bitwise_equal(ckpts.restore(_state())[0].params, _state_at(1).params)
    changed = {"model": {"latent_dim": 3, "hidden_sizes": [8]}, "train": {"seed": 1}}
    with RunCheckpoints(tmp_path / "ck", metric=METRIC, config=changed, read_only=True) as ckpts:
        with pytest.raises(ConfigMismatchError, match=r"another configuration: model.latent_dim=2 \(now 3\), "
                           r"train.seed=0 \(now 1\)"):
            ckpts.restore(_state(hidden=(16,)), which="latest-intact")  # not "corrupt", and no fallback
    integrity = tmp_path / "ck" / "1" / "integrity" / "metadata"
    integrity.write_text(integrity.read_text().replace('"seed": 0', '"seed": 5'))  # the stored copy is checksummed
    with RunCheckpoints(tmp_path / "ck", metric=METRIC, read_only=True) as ckpts:
        with pytest.raises(CheckpointError, match="do not match the checksum"):
            ckpts.restore(_state())


def test_a_field_added_after_the_run_started_is_no_change_at_its_default(tmp_path):
    # A run of an earlier version (its stored config lacks the new fields) resumes under a config
    # that holds them at their defaults, and is refused when one of them is set otherwise.
    old = {"model": {"latent_dim": 2}, "train": {"seed": 0}}
    defaults = {"model": {"latent_dim": 32, "num_codes": 64, "net": {"depth": 1}}, "train": {"seed": 0}}
    with RunCheckpoints(tmp_path / "ck", metric=METRIC, config=old, create=True) as ckpts:
        ckpts.save(1, _state_at(1), history=_history(1))
    now = {"model": {"latent_dim": 2, "num_codes": 64, "net": {"depth": 1}}, "train": {"seed": 0}}
    with RunCheckpoints(tmp_path / "ck", metric=METRIC, config=now, defaults=defaults, read_only=True) as ckpts:
        _assert_bitwise_equal(ckpts.restore(_state())[0].params, _state_at(1).params)
    for changed, message in (({"num_codes": 8}, r"model.num_codes='missing' \(now 8\)"),
                             ({"latent_dim": 32}, r"model.latent_dim=2 \(now 32\)")):
        config = {"model": dict(now["model"], **changed), "train": {"seed": 0}}
        with RunCheckpoints(tmp_path / "ck", metric=METRIC, config=config, defaults=defaults, read_only=True) as ckpts:
            with pytest.raises(ConfigMismatchError, match=message):
                ckpts.restore(_state())


def test_half_deleted_step_is_removed_by_the_writer_and_left_alone_by_readers(saved, tmp_path):
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved, directory)
    # A kill while Orbax removes an old step leaves it renamed into deleted/, part removed;
    # a kill mid-save leaves a temporary step folder that a reader must not touch.
    shutil.copytree(directory / "2", directory / "deleted" / "3")
    shutil.rmtree(directory / "deleted" / "3" / "state")
    shutil.copytree(directory / "4", directory / "5.orbax-checkpoint-tmp-123")
    with RunCheckpoints(directory, metric=METRIC, read_only=True) as ckpts:
        assert ckpts.epochs == [2, 4]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning about the leftovers
            ckpts.restore(_state())
    assert (directory / "5.orbax-checkpoint-tmp-123").is_dir()
    with RunCheckpoints(directory, metric=METRIC) as ckpts:
        assert ckpts.epochs == [2, 4]
    assert sorted(p.name for p in directory.iterdir()) == ["2", "4"]


_HOLD = """
import sys, time
from vae_jax.checkpoints import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_run_lock_admits_one_process_and_names_the_holder(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"is in use by process {holder.pid}"):
            RunLock(folder).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(folder) as lock:  # the kernel released the killed holder's lock
        with RunLock(folder):  # re-entrant within a process
            pass
        assert (folder / ".lock").read_text().strip() == str(os.getpid())
    assert lock._fd is None


def test_run_lock_refuses_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file or lies under one"):
        RunLock(tmp_path / "file").acquire()
    with pytest.raises(ValueError, match="is a file or lies under one"):
        RunLock(tmp_path / "file" / "run").acquire()
    with pytest.raises(FileNotFoundError):
        RunLock(tmp_path / "missing", create=False).acquire()


def _flip_one_byte(array, index, byte=1):
    """``array`` with byte ``byte`` of element ``index`` inverted (all 8 bits): a one-byte disk error."""
    raw = np.array(array).copy()
    raw.view(np.uint8).reshape(raw.shape + (raw.itemsize,))[index + (byte,)] ^= 0xFF
    return jnp.asarray(raw)


def test_one_flipped_byte_in_one_adam_moment_is_a_corrupt_checkpoint(saved, tmp_path):
    # The state saved as epoch 4 and the one put in its place differ in ONE byte of ONE leaf: the
    # second Adam moment of the encoder's first kernel (not the step, not the first leaf, not the
    # parameters), so a checksum that covers only some leaves passes this state as intact.
    directory = tmp_path / "checkpoints"
    shutil.copytree(saved, directory)
    state = _state_at(4)
    nu = state.opt_state[0].nu
    kernel = nu["encoder"]["Dense_0"]["kernel"]
    flipped = _flip_one_byte(kernel, (3, 5))
    assert int(np.sum(np.asarray(flipped) != np.asarray(kernel))) == 1
    damaged_nu = {**nu, "encoder": {**nu["encoder"], "Dense_0": {**nu["encoder"]["Dense_0"], "kernel": flipped}}}
    damaged = state.replace(opt_state=(state.opt_state[0]._replace(nu=damaged_nu),) + tuple(state.opt_state[1:]))
    changed = [a for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(damaged))
               if not np.array_equal(np.asarray(a), np.asarray(b))]
    assert len(changed) == 1
    with RunCheckpoints(tmp_path / "other", metric=METRIC, create=True) as other:
        other.save(4, damaged, history=_history(4))
    shutil.rmtree(directory / "4" / "state")
    shutil.copytree(tmp_path / "other" / "4" / "state", directory / "4" / "state")
    with RunCheckpoints(directory, metric=METRIC, read_only=True) as ckpts:
        with pytest.raises(CheckpointError, match="Corrupt checkpoint 4: the arrays in .* do not match the checksum"):
            ckpts.restore(_state())
