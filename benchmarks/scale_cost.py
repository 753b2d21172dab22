"""What the scale options cost here: seconds per epoch of `vae-jax train`'s placements, small.

Each setting trains in fresh processes (the device count is fixed when jax
starts) through :func:`vae_jax.scale.placement`, the code path of the CLI and
the studies: Fashion-MNIST (the first ``--examples`` training images), MLP
784-512-256-32, batch 128, one compiling epoch, then the median of
``--epochs`` timed epochs.

- ``one``: one device, the in-memory ``lax.scan`` (the default);
- ``all_2``: ``--devices all`` on 2 forced host devices of one process;
- ``disk``: ``--data-source disk`` (uint8 file streamed through Grain);
- ``processes_2``: ``--devices all`` in a job of 2 processes of 1 device each
  (``JAX_COORDINATOR_ADDRESS`` on localhost), timed in process 0.

Forced host devices and processes share the same CPU cores: on this 2-core
machine they measure the cost of the machinery (collectives, sharding), not a
speed-up. Valid by ``benchmarks.timing``'s rule: a 1-minute load average below 1.5
before the run and other processes (not the benchmark's own children) using at most
0.2 cores over it; the load average after is recorded, not judged (the 2-process
setting alone keeps both cores busy).

    python -m benchmarks.scale_cost --out benchmarks/results/scale_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import timing

SETTINGS = {"one": ("one", "memory", 1, 1), "all_2": ("all", "memory", 2, 1), "disk": ("one", "disk", 1, 1),
            "processes_2": ("all", "memory", 1, 2)}  # devices, data_source, devices per process, processes
BATCH = 128


def child(setting: str, examples: int, epochs: int, folder: str) -> None:
    """Times the epochs of ``setting`` in this process and prints ``{"seconds_per_epoch": ...}`` (process 0)."""
    from vae_jax import parallel

    parallel.initialize_from_env()
    import jax
    import numpy as np
    import optax

    from vae_jax import data, models, scale, training

    devices, source, *_ = SETTINGS[setting]
    images = data.load_dataset("fashion_mnist").train.images[:examples]
    model = models.build_model(models.ModelConfig(latent_dim=32, hidden_sizes=(512, 256)), images.shape[1:])
    state = training.create_train_state(model, jax.random.key(0), images[0], optax.adam(1e-3), beta=1.0)
    step = training.make_train_step(model.objective, dynamic_binarization=True)
    placed = scale.placement(state, step, images, batch_size=BATCH, devices=devices, data_source=source,
                             folder=folder)
    epoch_fn = placed.epoch_fn or training.train_epoch
    state, train = placed.state, placed.data
    if isinstance(train, np.ndarray):  # as training.fit puts it on the device
        train = jax.numpy.asarray(train)
    seconds = []
    for e in range(epochs + 1):  # the first compiles
        start = time.perf_counter()
        state, metrics = epoch_fn(placed.step, state, train, jax.random.key(e), batch_size=BATCH)
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - start)
    if parallel.is_writer():
        print(json.dumps({"seconds_per_epoch": float(np.median(seconds[1:])), "first_epoch_seconds": seconds[0],
                          "devices": jax.device_count(), "processes": jax.process_count()}))


def measure(setting: str, examples: int, epochs: int) -> dict:
    """Runs ``setting`` in fresh processes; the JSON line of process 0."""
    _, _, per_process, processes = SETTINGS[setting]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={per_process}")
    if processes > 1:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(processes))
    with tempfile.TemporaryDirectory() as folder:
        argv = [sys.executable, "-m", "benchmarks.scale_cost", "--child", setting, "--examples", str(examples),
                "--epochs", str(epochs), "--folder", folder]
        workers = [subprocess.Popen(argv, env=dict(env, JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for i in range(processes)]
        outputs = [w.communicate(timeout=900) for w in workers]
    if any(w.returncode for w in workers):
        raise RuntimeError(f"{setting} failed: {outputs[0][1][-2000:]}")
    return json.loads([line for line in outputs[0][0].splitlines() if line.startswith("{")][-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="results JSON")
    p.add_argument("--examples", type=int, default=4096, help="training images (default 4096)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after the compiling one (default 3)")
    p.add_argument("--child", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.examples, args.epochs, args.folder)
        return 0
    if args.out is None:
        p.error("--out is required")
    load_before, snapshot = os.getloadavg(), timing.cpu_snapshot()
    results = {name: measure(name, args.examples, args.epochs) for name in SETTINGS}
    others = timing.other_processes_cores(snapshot, timing.cpu_snapshot()) if snapshot else None
    base = results["one"]["seconds_per_epoch"]
    report = dict(command="python -m benchmarks.scale_cost " + " ".join(sys.argv[1:] if argv is None else argv),
                  examples=args.examples, batch_size=BATCH, net="MLP 784-512-256-32", timed_epochs=args.epochs,
                  settings=results, ratio_to_one={k: v["seconds_per_epoch"] / base for k, v in results.items()},
                  load_average_1_5_15_before=list(load_before), load_average_1_5_15_after=list(os.getloadavg()),
                  other_processes_cores=others, cpu_count=os.cpu_count(),
                  valid=load_before[0] < timing.MAX_LOAD and others is not None and others <= timing.MAX_OTHER_CORES)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratio_to_one"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
