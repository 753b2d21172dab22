"""Data-parallel training on 4 forced CPU devices equals single-device training.

``XLA_FLAGS=--xla_force_host_platform_device_count`` must be set before jax is
imported, so the sharded runs happen in subprocesses that execute this file as
a script (``python tests/test_parallel.py OUT.npz [--processes P --process-id I
--port N]``); the single-device truth is computed in the test process with
plain :mod:`vae_jax.training`, which knows nothing of meshes.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

NUM_DEVICES = 4
BATCH_SIZE = 64
EPOCH_KEY, STEP_KEY, INIT_KEY = 1, 2, 0


def setup():
    """The tiny model, a state, the data and the step inputs shared by both sides."""
    import jax
    import optax

    import vae_jax as vj

    data = np.random.default_rng(0).random((640, 8, 8, 1), dtype=np.float32)  # grey levels in [0, 1)
    model = vj.build_model(vj.ModelConfig(latent_dim=4, hidden_sizes=(32, 16)), data.shape[1:])
    optimizer = optax.adam(1e-3)
    # One compiled init instead of Flax's op-by-op dispatch: seconds less per process.
    state = jax.jit(lambda key: vj.create_train_state(model, key, data[0], optimizer, beta=0.5))(
        jax.random.key(INIT_KEY))
    return model, state, data


def flatten(state, metrics_epoch, metrics_step) -> dict[str, np.ndarray]:
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
    out = {f"param{jax.tree_util.keystr(path)}": np.asarray(leaf.addressable_data(0)) for path, leaf in leaves}
    out.update({f"epoch_{k}": np.asarray(v.addressable_data(0)) for k, v in metrics_epoch.items()})
    out.update({f"step_{k}": np.asarray(v.addressable_data(0)) for k, v in metrics_step.items()})
    return out


def sharded_worker(out_path: str, processes: int, process_id: int, port: int) -> None:
    """Runs one sharded step and one sharded epoch on every device and saves the results."""
    import jax

    if processes > 1:
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=processes, process_id=process_id)
    from vae_jax import parallel

    assert jax.device_count() == NUM_DEVICES, jax.devices()
    model, state, data = setup()
    mesh = parallel.make_mesh()
    step = parallel.make_sharded_train_step(model.objective, mesh, dynamic_binarization=True)
    state = parallel.replicate(state, mesh)
    # Each process passes its own quarter/half of the first batch: the rows local_rows names.
    local = BATCH_SIZE // processes
    assert parallel.local_rows(mesh, BATCH_SIZE) == slice(process_id * local, (process_id + 1) * local)
    assert parallel.is_writer() == (process_id == 0)
    assert parallel.all_agree(True) and parallel.all_agree(process_id == 0) == (processes == 1)
    batch = parallel.shard_batch(data[process_id * local:(process_id + 1) * local], mesh)
    step_key = parallel.replicate(jax.random.key(STEP_KEY), mesh)
    hlo = step.lower(state, batch, step_key).compile().as_text()
    state, metrics_step = step(state, batch, step_key)
    state, metrics_epoch = parallel.train_epoch_sharded(step, state, data, jax.random.key(EPOCH_KEY),
                                                        batch_size=BATCH_SIZE, mesh=mesh)
    for leaf in jax.tree.leaves(state.params):
        assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == NUM_DEVICES
    result = flatten(state, metrics_epoch, metrics_step)
    result["hlo_has_all_reduce"] = np.asarray("all-reduce" in hlo)
    result["divisibility_errors"] = np.asarray(count_value_errors(
        lambda: parallel.shard_batch(data[:5], mesh),
        lambda: parallel.train_epoch_sharded(step, state, data, jax.random.key(0), batch_size=30, mesh=mesh)))
    np.savez(out_path, **result)


def count_value_errors(*calls) -> int:
    count = 0
    for call in calls:
        try:
            call()
        except ValueError as error:
            count += "split evenly" in str(error)
    return count


@functools.cache
def single_device_truth() -> dict[str, np.ndarray]:
    import jax

    import vae_jax as vj

    model, state, data = setup()
    step = vj.make_train_step(model.objective, dynamic_binarization=True)
    state, metrics_step = step(state, data[:BATCH_SIZE], jax.random.key(STEP_KEY))
    state, metrics_epoch = vj.train_epoch(step, state, data, jax.random.key(EPOCH_KEY), batch_size=BATCH_SIZE)
    return flatten(state, metrics_epoch, metrics_step)


def start_workers(tmp_path, processes: int) -> list[tuple[subprocess.Popen, object]]:
    """Starts ``processes`` workers with ``NUM_DEVICES / processes`` CPU devices each."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={NUM_DEVICES // processes}",
           "JAX_PLATFORMS": "cpu"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outs = [tmp_path / f"worker{i}.npz" for i in range(processes)]
    return [(subprocess.Popen([sys.executable, __file__, str(out), str(processes), str(i), str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out)
            for i, out in enumerate(outs)]


def collect(workers) -> dict[str, np.ndarray]:
    """Waits for the workers; checks that every process holds the same replicated result."""
    for worker, _ in workers:
        log, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0, log
    results = [dict(np.load(out)) for _, out in workers]
    for other in results[1:]:
        for name, value in results[0].items():
            np.testing.assert_array_equal(other[name], value, err_msg=name)
    return results[0]


def check_equal_to_single_device(sharded: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> None:
    assert sharded.pop("hlo_has_all_reduce"), "the step was not data-parallel (no all-reduce in its HLO)"
    assert sharded.pop("divisibility_errors") == 2, "an indivisible batch did not raise ValueError"
    assert sorted(sharded) == sorted(truth)
    # Observed differences are ~1e-7 relative (summation order of the gradient all-reduce).
    for name, value in truth.items():
        np.testing.assert_allclose(sharded[name], value, rtol=2e-5, atol=2e-6, err_msg=name)
    # Training moved the parameters, so agreement is not a property of the initial state alone.
    _, initial, _ = setup()
    kernel = "param['decoder']['Dense_0']['kernel']"
    assert np.max(np.abs(truth[kernel] - np.asarray(initial.params["decoder"]["Dense_0"]["kernel"]))) > 5e-3


# The default suite runs this path end to end: test_scale_cli's CLI run on 4 devices, resumed by 2 processes
# x 2 devices, matches one device's numbers. These two check the parameters leaf by leaf (slow: 36 s).
@pytest.mark.slow
def test_four_devices_match_one_device(tmp_path):
    workers = start_workers(tmp_path, processes=1)
    check_equal_to_single_device(collect(workers), single_device_truth())


@pytest.mark.slow
def test_two_processes_match_one_device(tmp_path):
    """``jax.distributed.initialize()`` with 2 processes of 2 CPU devices: the multi-host path."""
    workers = start_workers(tmp_path, processes=2)
    check_equal_to_single_device(collect(workers), single_device_truth())


if __name__ == "__main__":
    sharded_worker(sys.argv[1], processes=int(sys.argv[2]), process_id=int(sys.argv[3]), port=int(sys.argv[4]))


def test_initialize_from_env_joins_the_named_job_only_and_says_why_it_cannot(monkeypatch):
    import jax

    from vae_jax import parallel

    assert parallel.initialize_from_env({}) is False  # no coordinator: one process, jax untouched
    job = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:6789", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    with pytest.raises(ValueError, match="JAX_PROCESS_ID must be a non-negative integer; got 'one'"):
        parallel.initialize_from_env({**job, "JAX_PROCESS_ID": "one"})
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    assert parallel.initialize_from_env(job) is True
    assert parallel.initialize_from_env({"JAX_COORDINATOR_ADDRESS": "h:1"}) is True  # JAX detects the rest
    assert calls == [(("10.0.0.1:6789",), {"num_processes": 2, "process_id": 1}),
                     (("h:1",), {"num_processes": None, "process_id": None})]

    def unreachable(*a, **k):
        raise RuntimeError("DEADLINE_EXCEEDED: barrier timed out\n(a long trace)")

    monkeypatch.setattr(jax.distributed, "initialize", unreachable)
    with pytest.raises(ConnectionError, match=r"could not join the job of JAX_COORDINATOR_ADDRESS=10.0.0.1:6789 "
                                              r"\(DEADLINE_EXCEEDED: barrier timed out\)"):
        parallel.initialize_from_env(job)


def test_one_process_is_the_writer_and_holds_every_row():
    import jax.numpy as jnp

    from vae_jax import parallel

    mesh = parallel.make_mesh()  # this process's devices only
    assert parallel.is_writer() and parallel.all_agree(True) and not parallel.all_agree(False)
    assert parallel.local_rows(mesh, 8 * mesh.size) == slice(0, 8 * mesh.size)
    x = jnp.arange(3.0)
    assert parallel.host_local({"x": x})["x"] is x  # fully addressable: left as it is
    parallel.barrier("alone")  # returns at once
