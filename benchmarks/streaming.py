"""Streaming from disk against the in-memory scan, and the memory of training on the full 64x64 dSprites grid.

Two measurements, one process, recorded with the 1-minute load average before
and after and the cores other processes kept busy in each timed block. The
throughput is marked invalid by ``benchmarks.run``'s rule (see DESIGN.md): a
load average of 1.5 or more before the run, or other processes using more than
0.2 cores in a timed block. The load average after the run is recorded but not
judged: the benchmark's own grid epoch keeps both cores busy for minutes.

1. Throughput, Fashion-MNIST (the first ``--examples`` training images), MLP
   784-512-512-32, batch 128: examples per second of one epoch with the
   in-memory ``lax.scan`` (``vae_jax.training.train_epoch``) and of one epoch
   streamed from a uint8 ``.npy`` file through Grain
   (``vae_jax.streaming.train_epoch_streaming``), repetitions interleaved;
   the ratio streaming / in-memory (target >= 0.9).
2. Peak resident memory (``VmHWM`` of a fresh child process) while it trains
   one streamed epoch on all 737,280 images of the 64x64 dSprites grid
   (12 GB as float32, 3 GB as the uint8 file, written once by
   ``vae_jax.dsprites.render`` in chunks under ``--cache``), MLP 4096-256-10,
   batch 128 (target < 2 GB). ``--grid-images N`` streams only the first N.

    python -m benchmarks.streaming --out benchmarks/results/streaming.json
    python -m benchmarks.streaming --quick --out /tmp/streaming.json     # seconds (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.timing import MAX_LOAD, MAX_OTHER_CORES, Runner, time_interleaved
from vae_jax import data, dsprites, models, streaming, training

BATCH = 128


def _state(model, x0, seed=0):
    return training.create_train_state(model, jax.random.key(seed), x0, optax.adam(1e-3), beta=1.0)


def throughput(images: np.ndarray, folder: Path, *, repeats: int, progress: bool) -> dict:
    """Examples per second of the in-memory scan and of the streamed epoch on the same images."""
    path = streaming.write_images(folder / "fashion.npy", [images], num=len(images))
    source = streaming.DiskImages(path)
    model = models.build_model(models.ModelConfig(latent_dim=32, hidden_sizes=(512, 512)), images.shape[1:])
    step = training.make_train_step(model.objective)
    on_device = jnp.asarray(images)
    states = {"in_memory": _state(model, images[0]), "streaming": _state(model, images[0])}
    epochs = {"in_memory": lambda s, k: training.train_epoch(step, s, on_device, k, batch_size=BATCH),
              "streaming": lambda s, k: streaming.train_epoch_streaming(step, s, source, k, batch_size=BATCH)}

    def runner(name):
        def run():
            states[name], metrics = epochs[name](states[name], jax.random.key(len(states)))
            return float(jax.block_until_ready(metrics["loss"]))
        return Runner(warm_up=run, run=run)

    timed = time_interleaved({name: runner(name) for name in epochs}, repeats=repeats, progress=progress)
    rate = {name: len(images) // BATCH * BATCH / r["median_seconds"] for name, r in timed.items()}
    return {"examples_per_second": rate, "ratio_streaming_to_in_memory": rate["streaming"] / rate["in_memory"],
            "timings": timed, "examples": len(images), "batch_size": BATCH, "model": "MLP 784-512-512-32"}


def write_grid(path: Path, num: int) -> Path:
    """The first ``num`` images of the dSprites grid as a binary uint8 file (skipped if already there)."""
    if path.is_file() and streaming.DiskImages(path, levels="binary").shape[0] == num:
        return path
    chunk = 8192
    chunks = (dsprites.render(dsprites.index_to_factors(np.arange(s, min(s + chunk, num))))
              for s in range(0, num, chunk))
    return streaming.write_images(path, chunks, num=num, levels="binary")


def _peak_rss_bytes() -> int:
    """This process's own peak resident memory: ``VmHWM``, which starts afresh at ``exec`` (``ru_maxrss``
    keeps the forking parent's peak, e.g. a test worker's)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def grid_memory_child(path: str) -> None:
    """Run in a fresh process: one streamed epoch on the grid file; prints the JSON of its peak memory."""
    source = streaming.DiskImages(path, levels="binary")
    model = models.build_model(models.ModelConfig(latent_dim=10, hidden_sizes=(256,)), source.shape[1:])
    step = training.make_train_step(model.objective)
    start = time.perf_counter()
    state, metrics = streaming.train_epoch_streaming(step, _state(model, np.zeros(source.shape[1:], np.float32)),
                                                     source, jax.random.key(0), batch_size=BATCH)
    loss = float(jax.block_until_ready(metrics["loss"]))
    print(json.dumps({"images": len(source), "seconds": time.perf_counter() - start, "loss": loss,
                      "peak_rss_bytes": _peak_rss_bytes(),
                      "float32_bytes_of_the_data": len(source) * int(np.prod(source.shape[1:])) * 4}))


def grid_memory(cache: Path, num: int) -> dict:
    path = write_grid(cache / f"dsprites64_{num}.npy", num)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.streaming", "--grid-child", str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="results JSON")
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (what the tests run)")
    p.add_argument("--examples", type=int, default=12800, help="Fashion-MNIST training images timed")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--grid-images", type=int, default=dsprites.NUM_IMAGES)
    p.add_argument("--cache", type=Path, default=Path("runs/streaming_cache"), help="folder of the grid file")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--grid-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.grid_child:
        grid_memory_child(args.grid_child)
        return 0
    if args.out is None:
        p.error("--out is required")
    examples, grid, repeats = (512, 1024, 1) if args.quick else (args.examples, args.grid_images, args.repeats)
    load_before = os.getloadavg()[0]
    images = data.load_fashion_mnist("train").images[:examples]
    with tempfile.TemporaryDirectory() as tmp:
        result = {"throughput": throughput(images, Path(tmp), repeats=repeats, progress=not args.no_progress)}
        args.cache.mkdir(parents=True, exist_ok=True)
        result["grid_memory"] = grid_memory(Path(tmp) if args.quick else args.cache, grid)
    load_after = os.getloadavg()[0]
    result.update(command=" ".join(["python -m benchmarks.streaming", *(argv or sys.argv[1:])]),
                  load_average_1min={"before": load_before, "after": load_after},
                  quick=args.quick, jax=jax.__version__)
    others = max(t["other_processes_cores"] for t in result["throughput"]["timings"].values())
    result["valid"] = bool(load_before < MAX_LOAD and others <= MAX_OTHER_CORES)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    t, g = result["throughput"], result["grid_memory"]
    print(f"streaming / in-memory: {t['ratio_streaming_to_in_memory']:.2f}x; grid of {g['images']} images: peak "
          f"{g['peak_rss_bytes'] / 2**30:.2f} GiB ({g['float32_bytes_of_the_data'] / 2**30:.1f} GiB as float32)"
          + ("" if result["valid"] else f"; INVALID: load average before {load_before:.2f} (limit {MAX_LOAD}) or "
             f"other processes up to {others:.2f} cores (limit {MAX_OTHER_CORES})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
