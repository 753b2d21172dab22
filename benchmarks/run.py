"""Training throughput of vae_jax against PyTorch, sweeps, and log p(x) evaluation.

    python -m benchmarks.run                      # full size, writes benchmarks/results/<backend>.json
    python -m benchmarks.run --quick --out /tmp/bench.json   # seconds; what the tests run

One process measures everything, with the repetitions of the implementations
interleaved, so that the ratios are fair even when the machine's load drifts:

- the machine's float32 matmul rate (:mod:`benchmarks.matmul`);
- examples per second of one Fashion-MNIST epoch (60000 examples) of the MLP
  VAE 784-512-512 / 32 latents / Bernoulli / Adam at batch 128 and 1024, and of
  the density table's model 784-300-300 / 40 latents at batch 100, for vae_jax's
  epoch scan, vae_jax's jitted step called from Python, the same model and epoch
  written by hand in plain JAX (the zero-cost-abstraction baseline,
  :func:`benchmarks.jax_vae.handwritten_runner`), PyTorch eager and
  ``torch.compile``, all float32, and in bfloat16 (``--precisions``): vae_jax's
  epoch scan with ``ModelConfig(compute_dtype="bfloat16")`` and PyTorch eager and
  compiled under ``torch.autocast(dtype=torch.bfloat16)``; each one's FLOP rate
  (:mod:`benchmarks.flops`) as a fraction of the float32 matmul rate, and its ratio
  to the fastest PyTorch configuration at that batch size;
- vae_jax's epoch scan once more in each precision compiled with
  ``jax_vae.PER_STEP_COPIES``: XLA:CPU's default copy insertion, which copies half
  of the parameters every step, where ``train_epoch`` compiles with region
  analysis and updates them in place (the same numbers), on the CPU only;
- a sweep of 8 models (4 betas x 2 seeds), one epoch each: one vmapped
  computation vs one model after the other;
- importance-sampled log p(x) with 5000 samples: seconds per 1000 test images,
  float32 and bf16 (the same parameters and draws, so the bf16 bias is measured).

The report records the CPU's model name and its bf16 capability (the
``/proc/cpuinfo`` flags avx512_bf16, amx_bf16, avx512f, avx2, and a kind such as
"AVX2 without bf16" or "AVX512-BF16"): bf16 matmuls are fast only on a CPU with
bf16 instructions, so a table is comparable only with tables of the same kind.
``--quick`` runs PyTorch on one thread for 4 batches an epoch, its compiled rows
with the ``aot_eager`` backend instead of Inductor (a check that everything runs,
in seconds; never a measurement).

The 1-minute load average is sampled before and after every timed block, and the
CPU time other processes used during its timed rounds is measured (from
``/proc/stat`` less this process's own CPU time): on 2 cores a second busy process collapses PyTorch's
threads, which would flatter vae_jax. A run whose load average before it started
exceeds ``--max-load`` (1.5), or during which other processes kept more than
``--max-other-cores`` (0.2) cores busy in any block, is written with
``"timings_valid": false`` and its table is printed under a warning: do not report
it. (The load average during the run is recorded but not used as the test: the
benchmark's own two threads hold it near 2 on a 2-core machine.)

Full size takes about 6 minutes on a quiet 2-core CPU; run it when the machine
is otherwise idle (the load average is recorded in the JSON). On a GPU or TPU
the same command runs there (JAX picks the device; PyTorch runs on CUDA where
its build has it, else it is left out).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import jax
import numpy as np

from benchmarks import flops, jax_vae, matmul, torch_vae
from benchmarks.timing import MAX_LOAD, MAX_OTHER_CORES, time_interleaved
from vae_jax.data import binarize, load_dataset

PER_STEP_COPIES = ", per-step copies"  # the epoch scan compiled with jax_vae.PER_STEP_COPIES (XLA:CPU only)
FLOAT32_IMPLEMENTATIONS = ("vae_jax epoch scan", "vae_jax epoch scan" + PER_STEP_COPIES, "vae_jax per-step loop",
                           "hand-written jax step", "pytorch eager", "pytorch compile")
BF16_IMPLEMENTATIONS = ("vae_jax epoch scan bf16", "vae_jax epoch scan bf16" + PER_STEP_COPIES,
                        "pytorch eager bf16 autocast", "pytorch compile bf16 autocast")
IMPLEMENTATIONS = FLOAT32_IMPLEMENTATIONS + BF16_IMPLEMENTATIONS
PRECISIONS = ("float32", "bfloat16")
TARGETS = {"scan_over_handwritten_at_128": 0.97, "scan_over_torch_compile_at_128": 1.2, "scan_over_torch_eager_at_128": 1.5,
           "scan_fraction_of_matmul_rate_at_1024": 0.7,
           "best_vae_jax_over_fastest_pytorch_at_128": 1.0, "best_vae_jax_over_fastest_pytorch_at_1024": 1.0}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="JSON file to write (default benchmarks/results/<jax backend>.json)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (a smaller model, 512 examples) to check that everything runs")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per implementation (median kept)")
    parser.add_argument("--sweep-repeats", type=int, default=2, help="timed epochs of each sweep variant")
    parser.add_argument("--examples", type=int, default=60000, help="training examples per epoch")
    parser.add_argument("--hidden-sizes", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--density-batch-size", type=int, default=100,
                        help="batch size of the density table's model block (0: leave that block out)")
    parser.add_argument("--density-hidden-sizes", type=int, nargs="+", default=[300, 300])
    parser.add_argument("--density-latent-dim", type=int, default=40)
    parser.add_argument("--sweep-batch-size", type=int, default=128)
    parser.add_argument("--log-marginal-images", type=int, default=100, help="test images evaluated")
    parser.add_argument("--log-marginal-samples", type=int, default=5000)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="float32 rows, bfloat16 rows (vae_jax compute_dtype, PyTorch autocast), or both")
    parser.add_argument("--max-load", type=float, default=MAX_LOAD,
                        help="1-minute load average before the run above which the timings are flagged invalid")
    parser.add_argument("--max-other-cores", type=float, default=MAX_OTHER_CORES,
                        help="cores kept busy by other processes (mean over a timed block) above which the "
                             "timings are flagged invalid")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="PyTorch's intra-op threads (0: its default, one per core)")
    parser.add_argument("--torch-batches", type=int, default=0,
                        help="batches of each timed PyTorch epoch (0: the whole epoch)")
    parser.add_argument("--torch-compile-backend", default=None, choices=("inductor", "aot_eager"),
                        help="backend of the 'pytorch compile' rows (default inductor, PyTorch's default and the "
                             "one timed; --quick: aot_eager, which traces and differentiates the same graph without "
                             "Inductor's tens of seconds of C++ compilation)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.quick:
        args.torch_threads, args.torch_batches = 1, 4
        args.batch_sizes, args.repeats, args.sweep_repeats, args.examples = [32], 1, 1, 512
        args.hidden_sizes, args.latent_dim, args.sweep_batch_size = [64, 64], 8, 64
        args.density_batch_size = 0  # the second block runs the same code at other widths: left out
        args.log_marginal_images, args.log_marginal_samples = 8, 100
        args.torch_compile_backend = args.torch_compile_backend or "aot_eager"
    args.torch_compile_backend = args.torch_compile_backend or "inductor"
    if min(args.batch_sizes) > args.examples or min(args.repeats, args.sweep_repeats) < 1:
        parser.error("need --repeats >= 1, --sweep-repeats >= 1 and batch sizes <= --examples")
    return args


CPU_FLAGS = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")
"""The ``/proc/cpuinfo`` flags that decide how fast bf16 (and float32) matmuls can be on an x86 CPU."""


def cpu_capability(cpuinfo: str) -> dict:
    """The CPU's model name, its bf16-relevant flags and a one-phrase kind, from ``/proc/cpuinfo``'s text.

    Returns:
      ``{"model_name", "flags": {flag: bool for CPU_FLAGS}, "kind"}``; ``kind`` is one of
      "AMX-BF16", "AVX512-BF16", "AVX-512 without bf16", "AVX2 without bf16", or "unknown"
      (no x86 flags listed, e.g. another architecture or no ``/proc``).
    """
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's entry
    flags = set(fields.get("flags", "").split())
    has = {flag: flag in flags for flag in CPU_FLAGS}
    kinds = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512 without bf16"),
             ("avx2", "AVX2 without bf16"))
    kind = next((name for flag, name in kinds if has[flag]), "unknown")
    return {"model_name": fields.get("model name", platform.processor() or "unknown"), "flags": has, "kind": kind}


def machine_info() -> dict:
    """CPU model, bf16 capability and cores, JAX's devices, load average, library versions."""
    import flax
    import jaxlib
    import optax
    import torch

    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    capability = cpu_capability(cpuinfo)
    return {
        "cpu": capability["model_name"], "cpu_capability": capability, "cpu_cores": os.cpu_count(),
        "load_average_1_5_15_min_before": list(os.getloadavg()),
        "jax_backend": jax.default_backend(), "jax_devices": [d.device_kind for d in jax.devices()],
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "jaxlib": jaxlib.__version__,
                     "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
                     "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
    }


def training_runners(data, models: dict, args, batch_size: int, torch_device: str | None, *,
                     hidden_sizes, latent_dim: int) -> dict:
    """One runner per implementation of the requested precisions (``models``: vae_jax model by precision)."""
    common = dict(batch_size=batch_size, seed=0)
    torch_common = dict(hidden_sizes=hidden_sizes, latent_dim=latent_dim, device=torch_device, **common)
    runners = {}
    for precision, names in zip(PRECISIONS, (FLOAT32_IMPLEMENTATIONS, BF16_IMPLEMENTATIONS)):
        if precision not in args.precisions:
            continue
        runners[names[0]] = jax_vae.epoch_scan_runner(models[precision], data, **common)
        if jax.default_backend() == "cpu":
            runners[names[1]] = jax_vae.epoch_scan_runner(models[precision], data, **common,
                                                          compiler_options=jax_vae.PER_STEP_COPIES)
        if precision == "float32":
            runners[names[2]] = jax_vae.per_step_runner(models[precision], data, **common)
            runners[names[3]] = jax_vae.handwritten_runner(data, hidden_sizes=hidden_sizes, latent_dim=latent_dim,
                                                           **common)
        if torch_device is not None:
            for name, compile in zip(names[-2:], (False, True)):
                runners[name] = torch_vae.runner(data, compile=compile and args.torch_compile_backend,
                                                 autocast=precision == "bfloat16",
                                                 max_batches=args.torch_batches or None, **torch_common)
    return runners


def sample_load(report: dict, when: str) -> None:
    """Appends the 1-, 5- and 15-minute load averages to ``report["load"]``."""
    report.setdefault("load", []).append({"when": when, "load_average_1_5_15_min": list(os.getloadavg())})


def torch_device_for_backend() -> str | None:
    """PyTorch runs where JAX runs: the CPU, or CUDA beside a JAX GPU if torch has it."""
    import torch

    if jax.default_backend() == "cpu":
        return "cpu"
    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else None


def main(argv=None) -> dict:
    """Parses ``argv``, measures everything, writes and prints the report (PyTorch's threads restored after)."""
    import torch

    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        return measure(args, argv)
    finally:
        torch.set_num_threads(threads)


def measure(args: argparse.Namespace, argv=None) -> dict:
    """The benchmark of :func:`main` (its docstring) for parsed ``args``; returns the report."""
    out = args.out or pathlib.Path("benchmarks/results") / f"{jax.default_backend()}.json"
    progress = not args.no_progress
    report = {"command": " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine_info(),
              "config": {k: v for k, v in vars(args).items() if k not in ("out", "no_progress")}}
    dataset = load_dataset("fashion_mnist")
    train = binarize(dataset.train.images[: args.examples], "static", seed=0)
    test = binarize(dataset.test.images[: args.log_marginal_images], "static", seed=1)
    sizes = (int(np.prod(train.shape[1:])), args.hidden_sizes, args.latent_dim)
    models = {p: jax_vae.build(train.shape[1:], hidden_sizes=args.hidden_sizes, latent_dim=args.latent_dim,
                               compute_dtype=p) for p in PRECISIONS}
    model = models["float32"]

    shapes, group_seconds = (((256, 256, 256),), 0.02) if args.quick else (matmul.SHAPES, 0.2)
    report["matmul"] = matmul.matmul_rates(shapes, repeats=args.repeats + 2, min_seconds=group_seconds)
    peak = max(row["gflops"] for row in report["matmul"])
    report["matmul_rate_gflops"] = peak

    torch_device = torch_device_for_backend()
    report["train"], scan_runner = [], None
    blocks = [(args.hidden_sizes, args.latent_dim, args.batch_sizes, models)]
    if args.density_batch_size:  # the density table's model (plain ReLU layers), at its batch size
        density = {p: jax_vae.build(train.shape[1:], hidden_sizes=args.density_hidden_sizes,
                                    latent_dim=args.density_latent_dim, compute_dtype=p) for p in PRECISIONS}
        blocks.append((args.density_hidden_sizes, args.density_latent_dim, [args.density_batch_size], density))
    for hidden_sizes, latent_dim, batch_sizes, block_models in blocks:
        sizes_here = (sizes[0], hidden_sizes, latent_dim)
        label = "-".join(str(n) for n in sizes_here[:1] + tuple(hidden_sizes) + (latent_dim,))
        for batch_size in batch_sizes:
            runners = training_runners(train, block_models, args, batch_size, torch_device,
                                       hidden_sizes=hidden_sizes, latent_dim=latent_dim)
            if block_models is models:
                scan_runner = scan_runner or next(r for n, r in runners.items() if n.startswith("vae_jax epoch scan"))
            sample_load(report, f"before training {label} at batch {batch_size}")
            timed = time_interleaved(runners, repeats=args.repeats, progress=progress)
            sample_load(report, f"after training {label} at batch {batch_size}")
            for name, result in timed.items():
                examples = runners[name].examples or train.shape[0] // batch_size * batch_size
                gflops = flops.train_step_flops(*sizes_here) * examples / result["median_seconds"] / 1e9
                report["train"].append({"implementation": name, "model": label, "batch_size": batch_size,
                                        "examples": examples, "examples_per_second": examples / result["median_seconds"],
                                        "gflops": gflops, "fraction_of_matmul_rate": gflops / peak,
                                        "final_loss": result.pop("last_value"), **result})

    sweep = jax_vae.sweep_runners(model, train, batch_size=args.sweep_batch_size, betas=(0.5, 1.0, 2.0, 4.0),
                                  seeds=(0, 1))
    sweep_times = time_interleaved(sweep, repeats=args.sweep_repeats, progress=progress)
    sample_load(report, "after the sweep")
    report["sweep"] = {"models": 8, "betas": [0.5, 1.0, 2.0, 4.0], "seeds": [0, 1],
                       "batch_size": args.sweep_batch_size, "examples": train.shape[0],
                       **{f"{name}_seconds": t["median_seconds"] for name, t in sweep_times.items()},
                       "other_processes_cores": sweep_times["stacked"]["other_processes_cores"],
                       "sequential_over_stacked": sweep_times["sequential"]["median_seconds"]
                       / sweep_times["stacked"]["median_seconds"]}

    # XLA:CPU's default sends matmuls to YNNPACK; for log p(x)'s large matmuls Eigen is faster here.
    # bf16: the same parameters and draws through the bf16 model, so its bias against float32 is measured.
    variants = {"default XLA": None, "Eigen matmuls": {"xla_cpu_experimental_ynn_fusion_type": ""}, "bf16": None}
    eval_models = {"default XLA": model, "Eigen matmuls": model, "bf16": models["bfloat16"]}
    runners = {name: jax_vae.log_marginal_runner(eval_models[name], scan_runner.params, test,
                                                 num_samples=args.log_marginal_samples,
                                                 chunk_size=min(500, args.log_marginal_samples), batch_size=50,
                                                 compiler_options=options)
               for name, options in variants.items()
               if (name != "Eigen matmuls" or jax.default_backend() == "cpu")
               and (name != "bf16" or "bfloat16" in args.precisions)}
    sample_load(report, "before log p(x)")
    total_flops = flops.log_marginal_flops(*sizes, num_samples=args.log_marginal_samples) * test.shape[0]
    report["log_marginal"] = []
    for name, result in time_interleaved(runners, repeats=args.repeats, progress=progress).items():
        report["log_marginal"].append({
            "compiler": name, "compiler_options": variants[name], "images": test.shape[0],
            "num_samples": args.log_marginal_samples, "chunk_size": min(500, args.log_marginal_samples),
            "seconds_per_1000_images": result["median_seconds"] * 1000 / test.shape[0],
            "gflops": total_flops / result["median_seconds"] / 1e9,
            "fraction_of_matmul_rate": total_flops / result["median_seconds"] / 1e9 / peak,
            "mean_log_px_nats": result["last_value"], "seconds": result["seconds"],
            "other_processes_cores": result["other_processes_cores"]})
    reference = next(m for m in report["log_marginal"] if m["compiler"] == "default XLA")["mean_log_px_nats"]
    for m in report["log_marginal"]:
        m["difference_to_float32_nats"] = m["mean_log_px_nats"] - reference
    report["ratios"] = ratios(report["train"])
    report["machine"]["load_average_1_5_15_min_after"] = list(os.getloadavg())
    sample_load(report, "end")
    report["max_load_average_1_min"] = max(s["load_average_1_5_15_min"][0] for s in report["load"])
    others = [r["other_processes_cores"] for r in report["train"] + report["log_marginal"]
              + [report["sweep"]] if r["other_processes_cores"] is not None]
    report["max_other_processes_cores"] = max(others) if others else None
    report["timings_valid"] = bool(report["machine"]["load_average_1_5_15_min_before"][0] <= args.max_load
                                   and (not others or max(others) <= args.max_other_cores))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    print(f"\nwritten to {out}")
    return report


def ratios(rows: list[dict]) -> dict:
    """The issue's targets as measured ratios, where the run has the rows they need.

    Also sets each row's ``ratio_to_fastest_pytorch``: its examples/s over those of the
    fastest PyTorch configuration (any precision) at its batch size.
    """
    main_model = rows[0]["model"] if rows else None
    rate = {(r["implementation"], r["batch_size"]): r for r in rows if r["model"] == main_model}
    out = {}
    for model, batch_size in sorted({(r["model"], r["batch_size"]) for r in rows}):
        here = [r for r in rows if (r["model"], r["batch_size"]) == (model, batch_size)]
        peers = [r for r in here if r["implementation"].startswith("pytorch")]
        ours = [r for r in here if r["implementation"].startswith("vae_jax")]
        if not peers:
            continue
        fastest = max(peers, key=lambda r: r["examples_per_second"])
        for r in here:
            r["ratio_to_fastest_pytorch"] = r["examples_per_second"] / fastest["examples_per_second"]
            r["fastest_pytorch"] = fastest["implementation"]
        key = f"best_vae_jax_over_fastest_pytorch_at_{batch_size}"
        if key in TARGETS and ours and model == main_model:
            out[key] = max(r["ratio_to_fastest_pytorch"] for r in ours)
    scan128 = rate.get((IMPLEMENTATIONS[0], 128))
    for key, other in (("scan_over_handwritten_at_128", "hand-written jax step"),
                       ("scan_over_torch_compile_at_128", "pytorch compile"),
                       ("scan_over_torch_eager_at_128", "pytorch eager")):
        if scan128 and (other, 128) in rate:
            out[key] = scan128["examples_per_second"] / rate[(other, 128)]["examples_per_second"]
    if (IMPLEMENTATIONS[0], 1024) in rate:
        out["scan_fraction_of_matmul_rate_at_1024"] = rate[(IMPLEMENTATIONS[0], 1024)]["fraction_of_matmul_rate"]
    return {key: {"value": value, "target": TARGETS[key], "met": value >= TARGETS[key]} for key, value in out.items()}


def format_table(report: dict) -> str:
    machine = report["machine"]
    lines = [] if report.get("timings_valid", True) else [
        f"WARNING: TIMINGS NOT VALID: load average before the run "
        f"{report['machine']['load_average_1_5_15_min_before'][0]:.2f} (limit {report['config']['max_load']}), "
        f"other processes kept up to {report['max_other_processes_cores'] or 0:.2f} cores busy "
        f"(limit {report['config']['max_other_cores']}); do not report these numbers.", ""]
    capability = machine.get("cpu_capability", {"kind": "unknown", "flags": {}})
    lines += [f"{machine['cpu']} ({capability['kind']}: "
              + ", ".join(f"{flag} {'yes' if on else 'no'}" for flag, on in capability["flags"].items())
              + f"), {machine['cpu_cores']} cores, JAX on {machine['jax_devices'][0]}; "
              f"load average before {machine['load_average_1_5_15_min_before'][0]:.2f}, "
              f"after {machine.get('load_average_1_5_15_min_after', [float('nan')])[0]:.2f}; other processes "
              f"used at most {report.get('max_other_processes_cores') or 0:.2f} cores during a timed block",
             f"float32 matmul rate: {report['matmul_rate_gflops']:.1f} GFLOP/s (best of "
             f"{len(report['matmul'])} shape/library probes)", "",
             f"{'implementation':<31}{'model':>16}{'batch':>6}{'examples/s':>12}{'epoch s':>9}{'GFLOP/s':>9}"
             f"{'of matmul':>10}{'loss':>9}{'/ fastest torch':>16}"]
    for r in report["train"]:
        lines.append(f"{r['implementation']:<31}{r['model']:>16}{r['batch_size']:>6}{r['examples_per_second']:>12.0f}"
                     f"{r['median_seconds']:>9.2f}{r['gflops']:>9.1f}{r['fraction_of_matmul_rate']:>10.0%}"
                     f"{r['final_loss']:>9.1f}{r.get('ratio_to_fastest_pytorch', float('nan')):>16.2f}")
    lines.append("")
    for key, r in report["ratios"].items():
        lines.append(f"{key:<40}{r['value']:>7.2f}  target >= {r['target']}: {'met' if r['met'] else 'MISSED'}")
    s = report["sweep"]
    lines.append(f"sweep of 8 models, one epoch: stacked {s['stacked_seconds']:.1f} s, sequential "
                 f"{s['sequential_seconds']:.1f} s, sequential / stacked = {s['sequential_over_stacked']:.2f}")
    for m in report["log_marginal"]:
        lines.append(f"log p(x), {m['num_samples']} samples, {m['compiler']}: {m['seconds_per_1000_images']:.1f} s "
                     f"per 1000 images ({m['gflops']:.1f} GFLOP/s, {m['fraction_of_matmul_rate']:.0%} of matmul); "
                     f"mean {m['mean_log_px_nats']:.3f} nats ({m['difference_to_float32_nats']:+.3f} vs float32)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
