"""The benchmark suite runs and measures the right thing; timings are never asserted.

Truths: XLA's own FLOP count of the compiled train step, and vae_jax's
per-example ELBO for the PyTorch baseline given the same weights and draws.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vae_jax as vj
from benchmarks import flops, jax_vae, profile_step, run, torch_vae
from vae_jax import distributions


def test_train_step_flops_match_xla_cost_analysis():
    """The benchmark's model at batch 256. XLA also counts element-wise work and Adam's
    per-step update (together about 1.7% at this batch size)."""
    model = vj.build_model(vj.ModelConfig(latent_dim=32, hidden_sizes=(512, 512)), (28, 28, 1))
    batch = np.zeros((256, 28, 28, 1), np.float32)
    state = vj.create_train_state(model, jax.random.key(0), batch[0], optax.adam(1e-3))
    compiled = vj.make_train_step(model.objective).lower(state, batch, jax.random.key(1)).compile()
    cost = compiled.cost_analysis()
    xla_flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
    counted = 256 * flops.train_step_flops(784, (512, 512), 32)
    assert counted <= xla_flops <= 1.03 * counted


def test_decoder_and_log_marginal_flops_add_up():
    forward = flops.forward_flops(784, (512, 512), 32)
    decoder = flops.decoder_flops(784, (512, 512), 32)
    encoder = forward - decoder
    assert flops.log_marginal_flops(784, (512, 512), 32, num_samples=10) == encoder + 10 * decoder
    assert encoder == 2 * (784 * 512 + 512 * 512 + 512 * 64)


def _dense_names(flax_params: dict) -> list[str]:
    """The Flax network's dense layers in order: Dense_0, Dense_1, ..., then the head if any."""
    names = sorted((k for k in flax_params if k.startswith("Dense")), key=lambda k: int(k.split("_")[1]))
    return names + (["head"] if "head" in flax_params else [])


def _copy_dense(flax_params: dict, linears: list) -> None:
    import torch

    names = _dense_names(flax_params)
    assert len(names) == len(linears)
    with torch.no_grad():
        for name, linear in zip(names, linears):
            linear.weight.copy_(torch.from_numpy(np.asarray(flax_params[name]["kernel"]).T.copy()))
            linear.bias.copy_(torch.from_numpy(np.asarray(flax_params[name]["bias"]).copy()))


def test_torch_baseline_computes_the_vae_jax_elbo():
    """Same weights, same draws eps: PyTorch's per-example ELBO equals vae_jax's to float32 rounding."""
    import torch

    hidden, latent = (16, 12), 3
    model = vj.build_model(vj.ModelConfig(latent_dim=latent, hidden_sizes=hidden), (8, 8, 1))
    rng = np.random.default_rng(0)
    x = rng.random((5, 8, 8, 1), dtype=np.float32)
    eps = rng.standard_normal((5, latent), dtype=np.float32)
    params = model.init(jax.random.key(0), x[0])
    baseline = torch_vae.TorchVAE(64, hidden, latent)
    linears = [m for m in baseline.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == sum(flops.dense_widths(64, hidden, latent), [])
    _copy_dense(params["encoder"], linears[:3])
    _copy_dense(params["decoder"], linears[3:])

    def jax_elbo(image, e):
        mean, log_std = model.encode(params, image)
        logits = model.decode(params, mean + jnp.exp(log_std) * e)
        return distributions.bernoulli_log_prob(logits, image) - distributions.kl_to_standard_normal(mean, log_std)

    truth = np.asarray(jax.vmap(jax_elbo)(x, eps))
    got = baseline.per_example_elbo(torch.from_numpy(x.reshape(5, -1)), torch.from_numpy(eps)).detach().numpy()
    np.testing.assert_allclose(got, truth, rtol=1e-5)
    assert np.all(truth < 0)


def test_handwritten_baseline_computes_the_vae_jax_elbo():
    """The zero-cost baseline is the library's model: same weights and draws, same per-example ELBO."""
    hidden, latent = (16, 12), 3
    model = vj.build_model(vj.ModelConfig(latent_dim=latent, hidden_sizes=hidden), (8, 8, 1))
    rng = np.random.default_rng(0)
    x = rng.random((5, 8, 8, 1), dtype=np.float32).round()
    eps = rng.standard_normal((5, latent), dtype=np.float32)
    params = model.init(jax.random.key(0), x[0])

    def layers(flax_params):
        return [(flax_params[n]["kernel"], flax_params[n]["bias"]) for n in _dense_names(flax_params)]

    def jax_elbo(image, e):
        mean, log_std = model.encode(params, image)
        logits = model.decode(params, mean + jnp.exp(log_std) * e)
        return distributions.bernoulli_log_prob(logits, image) - distributions.kl_to_standard_normal(mean, log_std)

    truth = np.asarray(jax.vmap(jax_elbo)(x, eps))
    plain = {"encoder": layers(params["encoder"]), "decoder": layers(params["decoder"])}
    got = np.asarray(jax_vae.handwritten_elbo(plain, x.reshape(5, -1), eps))
    np.testing.assert_allclose(got, truth, rtol=1e-5)


def test_quick_run_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    run.main(["--quick", "--out", str(out), "--no-progress"])
    report = json.loads(out.read_text())
    assert report["command"] == f"python -m benchmarks.run --quick --out {out} --no-progress"
    assert report["machine"]["cpu_cores"] >= 1 and report["machine"]["versions"]["torch"]
    # The CPU's bf16 capability, as /proc/cpuinfo of this machine states it.
    assert report["machine"]["cpu_capability"] == run.cpu_capability(open("/proc/cpuinfo").read())
    assert report["machine"]["versions"]["torch_threads"] == 1  # --quick: one PyTorch thread...
    assert report["config"]["torch_threads"] == 1 and report["config"]["torch_batches"] == 4
    # Inductor's C++ compilation (tens of seconds on a fresh machine) is left to the slow test below
    assert report["config"]["torch_compile_backend"] == "aot_eager"
    assert report["matmul_rate_gflops"] == max(row["gflops"] for row in report["matmul"]) > 0
    # One model block (--quick leaves the density model's, the same code at other widths, out), every
    # implementation in it.
    assert [r["implementation"] for r in report["train"]] == list(run.IMPLEMENTATIONS)
    assert [r["model"] for r in report["train"]] == ["784-64-64-8"] * len(run.IMPLEMENTATIONS)
    for row in report["train"]:
        # ...and 4 batches an epoch (every vae_jax and hand-written epoch: all 16)
        examples = (4 if row["implementation"].startswith("pytorch") else 512 // 32) * 32
        assert row["examples"] == examples
        assert len(row["seconds"]) == 1 and row["median_seconds"] > 0
        assert math.isclose(row["examples_per_second"], examples / row["median_seconds"])
        assert math.isclose(row["fraction_of_matmul_rate"], row["gflops"] / report["matmul_rate_gflops"])
        assert 0 < row["final_loss"] < 2 * 784 * math.log(2)  # a negative ELBO of 784 binary pixels, nats
    sweep = report["sweep"]
    assert math.isclose(sweep["sequential_over_stacked"], sweep["sequential_seconds"] / sweep["stacked_seconds"])
    compilers = {row["compiler"]: row for row in report["log_marginal"]}
    assert set(compilers) == {"default XLA", "Eigen matmuls", "bf16"}
    for row in compilers.values():
        assert row["mean_log_px_nats"] < 0  # binary images: p(x) <= 1
    # The compiler option changes the matmul library, not the estimate (same draws).
    assert math.isclose(compilers["default XLA"]["mean_log_px_nats"], compilers["Eigen matmuls"]["mean_log_px_nats"],
                        rel_tol=1e-5)
    # bf16 matmuls, same parameters and draws: close to float32, and the difference is what is reported.
    bias = compilers["bf16"]["difference_to_float32_nats"]
    assert bias == compilers["bf16"]["mean_log_px_nats"] - compilers["default XLA"]["mean_log_px_nats"]
    assert 0 < abs(bias) < 0.01 * abs(compilers["default XLA"]["mean_log_px_nats"])
    assert report["ratios"] == {}  # the targets are defined at batch 128 and 1024 only
    for block in ("784-64-64-8",):
        rows = [r for r in report["train"] if r["model"] == block]
        fastest = max((r for r in rows if r["implementation"].startswith("pytorch")),
                      key=lambda r: r["examples_per_second"])
        for row in rows:
            assert row["fastest_pytorch"] == fastest["implementation"]
            assert math.isclose(row["ratio_to_fastest_pytorch"],
                                row["examples_per_second"] / fastest["examples_per_second"])
    loads = [s["load_average_1_5_15_min"][0] for s in report["load"]]
    assert len(loads) == 5 and report["max_load_average_1_min"] == max(loads)  # 1 block of 1 batch size
    others = [r["other_processes_cores"] for r in report["train"] + report["log_marginal"] + [report["sweep"]]]
    assert all(0 <= c <= report["machine"]["cpu_cores"] + 0.5 for c in others)
    assert report["max_other_processes_cores"] == max(others)
    assert report["timings_valid"] == (report["machine"]["load_average_1_5_15_min_before"][0] <= 1.5
                                       and max(others) <= 0.2)
    printed = capsys.readouterr().out
    assert all(name in printed for name in run.IMPLEMENTATIONS) and str(out) in printed
    assert report["machine"]["cpu_capability"]["kind"] in printed
    assert ("TIMINGS NOT VALID" in printed) == (not report["timings_valid"])


_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 fma {extra}
bugs\t\t: sysret_ss_attrs

processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 fma {extra}
"""


@pytest.mark.parametrize("extra, kind", [("", "AVX2 without bf16"), ("avx512f avx512bw", "AVX-512 without bf16"),
                                         ("avx512f avx512_bf16", "AVX512-BF16"),
                                         ("avx512f avx512_bf16 amx_bf16 amx_tile", "AMX-BF16")])
def test_cpu_capability_reads_the_bf16_flags(extra, kind):
    capability = run.cpu_capability(_CPUINFO.format(extra=extra))
    assert capability["model_name"] == "AMD EPYC 9R14" and capability["kind"] == kind
    assert capability["flags"] == {flag: flag in extra or flag == "avx2" for flag in run.CPU_FLAGS}


def test_cpu_capability_of_a_machine_without_x86_flags():
    capability = run.cpu_capability("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert capability["kind"] == "unknown" and not any(capability["flags"].values())


def _copies_and_params() -> None:
    """Prints the copies of parameters in the compiled epoch with XLA's default copy insertion and with
    vae_jax's (training.EPOCH_COMPILER_OPTIONS), and whether one epoch gives bitwise the same parameters."""
    import re

    model = jax_vae.build((8, 8, 1), hidden_sizes=(32, 16), latent_dim=4)
    data = jnp.asarray(np.random.default_rng(0).random((64, 8, 8, 1)) < 0.3, jnp.float32)
    step = vj.make_train_step(model.objective)
    params, copies = [], []
    for options in (jax_vae.PER_STEP_COPIES, None):
        state = vj.create_train_state(model, jax.random.key(0), data[0], optax.adam(1e-3))
        compiled = vj.train_epoch.lower(step, state, data, jax.random.key(1), batch_size=16).compile(
            compiler_options=options)
        copies.append(len(re.findall(r"= f32\[[\d,]+\]\{[\d,]*\} copy\(%get-tuple-element", compiled.as_text())))
        params.append(jax.tree.leaves(compiled(state, data, jax.random.key(1))[0].params))
    print(json.dumps({"copies": copies, "same": all(np.array_equal(a, b) for a, b in zip(*params))}))


def test_train_epoch_compiles_without_per_step_parameter_copies_and_the_same_numbers(xla_defaults_subprocess):
    """vae_jax.train_epoch (training.EPOCH_COMPILER_OPTIONS): no copy of a parameter in XLA:CPU's
    compiled epoch, where XLA's default (jax_vae.PER_STEP_COPIES) copies several every step; after one
    epoch, bitwise the same parameters. A claim about the compiler users get: checked in a process
    with XLA's default code generation, not the suite's cheaper one (tests/conftest.py)."""
    if jax.default_backend() != "cpu":
        pytest.skip("an XLA:CPU option")
    out = xla_defaults_subprocess("from tests.test_benchmarks import _copies_and_params; _copies_and_params()")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["copies"][0] > 0 and result["copies"][1] == 0, result
    assert result["same"], result


def test_kernel_count_finds_the_seventeen_matmuls_of_both_steps(capsys):
    """Encoder and decoder of three dense layers each: 6 forward products, 6 weight gradients and 5 input
    gradients (the image needs none), in the library's compiled epoch and in the hand-written one."""
    from benchmarks import kernel_count

    assert kernel_count.main(["--quick"]) == 0
    model = json.loads(capsys.readouterr().out)["models"][0]
    for name in ("vae_jax epoch scan", "hand-written jax step"):
        assert model[name]["dots"] == 17, (name, model[name])
        assert model[name]["loop_fusions"] > 0 and model[name]["xors"] > 0


def test_ratios_against_the_fastest_peer():
    rows = [{"implementation": name, "model": "784-512-512-32", "batch_size": 128, "examples_per_second": eps,
             "fraction_of_matmul_rate": 0.5}
            for name, eps in (("vae_jax epoch scan", 150.0), ("vae_jax epoch scan bf16", 180.0),
                              ("hand-written jax step", 160.0), ("pytorch eager", 100.0), ("pytorch compile", 120.0),
                              ("pytorch compile bf16 autocast", 200.0))]
    result = run.ratios(rows)
    assert result["best_vae_jax_over_fastest_pytorch_at_128"] == {"value": 0.9, "target": 1.0, "met": False}
    assert result["scan_over_torch_eager_at_128"]["value"] == 1.5
    assert math.isclose(result["scan_over_torch_compile_at_128"]["value"], 1.25)
    assert result["scan_over_handwritten_at_128"] == {"value": 150.0 / 160.0, "target": 0.97, "met": False}
    assert all(r["fastest_pytorch"] == "pytorch compile bf16 autocast" for r in rows)
    assert rows[0]["ratio_to_fastest_pytorch"] == 0.75


def test_torch_autocast_step_multiplies_in_bf16_and_keeps_float32_parameters():
    import torch

    model = torch_vae.TorchVAE(64, (16, 12), 3)
    seen = []
    model.decoder[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    step = torch_vae.make_train_step(model, compile=False, autocast=True)
    loss = step(torch.rand(8, 64).round())
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_other_processes_cores_counts_another_process_and_not_this_one():
    """A child process's CPU time counts as another process's; this process's own work does not."""
    import subprocess
    import sys
    import time

    from benchmarks.timing import cpu_snapshot, other_processes_cores

    start = cpu_snapshot()
    cpu_start = time.process_time()
    while time.process_time() - cpu_start < 0.5:  # 0.5 s of this process's CPU time
        pass
    end = cpu_snapshot()
    assert end["own_seconds"] - start["own_seconds"] >= 0.45
    busy_child = "import time\nwhile time.process_time() < 0.6: pass\nprint(time.process_time())"
    start = cpu_snapshot()
    child_seconds = float(subprocess.run([sys.executable, "-c", busy_child], capture_output=True, text=True,
                                         check=True).stdout)
    end = cpu_snapshot()
    others = other_processes_cores(start, end) * (end["wall"] - start["wall"])
    assert others >= child_seconds - 0.1  # the child's CPU seconds (and whatever else ran) are counted


def test_help_and_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(["--help"])
    assert exit_info.value.code == 0 and "--batch-sizes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run.parse_args(["--examples", "10", "--batch-sizes", "128"])


@pytest.mark.parametrize("compute_dtype", ("float32", "bfloat16"))
def test_profile_step_runs(compute_dtype):
    result = profile_step.profile(8, steps=2, repeats=1, hidden_sizes=(32, 16), latent_dim=4,
                                  compute_dtype=compute_dtype)
    assert result["compute_dtype"] == compute_dtype
    seconds = result["seconds_per_step"]
    assert set(seconds) == {"matmuls", "adam", "train step", "rest"}
    assert all(np.isfinite(v) for v in seconds.values())
    assert min(seconds["matmuls"], seconds["adam"], seconds["train step"]) > 0


def test_gpu_check_fails_in_one_line_without_a_gpu(tmp_path):
    """benchmarks/gpu_check.sh on a CPU-only JAX: exit status 2, one line saying what it needs, nothing written."""
    import os
    import pathlib
    import subprocess
    import sys

    from benchmarks import gpu_check

    assert gpu_check.gpu_problem("gpu", ["NVIDIA H200"]) is None
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable, "PYTHONPATH": str(root)}
    done = subprocess.run(["bash", str(root / "benchmarks/gpu_check.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == gpu_check.gpu_problem("cpu", ["cpu"]), done.stderr
    assert "CUDA jaxlib" in lines[0] and not (tmp_path / "out").exists()


def test_gpu_check_parts_run_on_the_cpu(tmp_path):
    """The check's pure-python parts: the step comparison (CPU against CPU: identical), the commands
    it runs (existing test files, arguments the benchmark accepts) and the part runner's statuses."""
    import pathlib
    import sys

    from benchmarks import gpu_check

    cpu = jax.devices("cpu")[0]
    steps = gpu_check.compare_step(cpu, cpu)
    for dtype, r in steps.items():
        assert r["ok"] and r["loss"] == r["loss_reference"] > 0 and math.isclose(r["gradient_cosine"], 1.0), dtype
    assert steps["float32"]["loss"] != steps["bfloat16"]["loss"]  # the two precisions really differ
    parts = gpu_check.commands(tmp_path, python="python")
    root = pathlib.Path(__file__).resolve().parents[1]
    assert all((root / path).is_file() for path in gpu_check.TESTS)
    assert parts["tests"][-1] == f"--junitxml={tmp_path / 'tests.xml'}"
    bench = run.parse_args(parts["benchmark"][3:])
    assert bench.examples == 12800 and bench.out == tmp_path / "gpu.json" and not bench.quick
    assert sum(gpu_check.TIME_LIMITS.values()) < 600
    fail = gpu_check.run_part([sys.executable, "-c", "print('x'); raise SystemExit(3)"], limit=60,
                              log=tmp_path / "fail.log")
    assert fail["status"] == "failed (exit 3)" and (tmp_path / "fail.log").read_text() == "x\n"
    slow = gpu_check.run_part([sys.executable, "-c", "import time; time.sleep(30)"], limit=0.5,
                              log=tmp_path / "slow.log")
    assert slow["status"] == "timed out after 0 s" and slow["seconds"] < 20


@pytest.mark.slow
def test_quick_run_with_inductor_compiles_the_pytorch_rows(tmp_path):
    # The backend the full benchmark times: its rows train (finite, plausible losses) like the others.
    out = tmp_path / "bench.json"
    run.main(["--quick", "--torch-compile-backend", "inductor", "--precisions", "float32", "--out", str(out),
              "--no-progress"])
    report = json.loads(out.read_text())
    assert report["config"]["torch_compile_backend"] == "inductor"
    (row,) = [r for r in report["train"] if r["implementation"] == "pytorch compile"]
    assert 0 < row["final_loss"] < 2 * 784 * math.log(2)


def test_streaming_quick_run_writes_valid_json(tmp_path, capsys):
    from benchmarks import streaming as bench_streaming

    out = tmp_path / "streaming.json"
    assert bench_streaming.main(["--quick", "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    t, g = report["throughput"], report["grid_memory"]
    rate = t["examples_per_second"]
    assert math.isclose(t["ratio_streaming_to_in_memory"], rate["streaming"] / rate["in_memory"])
    for name, timing in t["timings"].items():  # 512 images, batch 128: 4 steps an epoch
        assert math.isclose(rate[name], 512 / timing["median_seconds"])
    # both epochs trained the same batches from the same state: the same loss to float32 rounding
    assert t["timings"]["streaming"]["last_value"] == pytest.approx(t["timings"]["in_memory"]["last_value"], rel=1e-5)
    assert g["images"] == 1024 and g["float32_bytes_of_the_data"] == 1024 * 64 * 64 * 4
    assert 0 < g["peak_rss_bytes"] < 4 * 2**30 and np.isfinite(g["loss"])
    others = max(timing["other_processes_cores"] for timing in t["timings"].values())
    assert report["valid"] == (report["load_average_1min"]["before"] < 1.5 and others <= 0.2)
    assert ("INVALID" in capsys.readouterr().out) == (not report["valid"])
