"""benchmarks.density_cost: its FLOP counts against XLA's own cost analysis, and a tiny end-to-end run."""

import json

import jax
import jax.numpy as jnp
import pytest

from benchmarks import density_cost as dc
from vae_jax import models


def _xla_flops(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"])


@pytest.mark.parametrize("architecture", ["gated_mlp", "mlp"])
def test_matmul_flop_counts_agree_with_xla_cost_analysis(architecture):
    model = models.build_model(models.ModelConfig(latent_dim=dc.LATENT, hidden_sizes=dc.HIDDEN,
                                                  architecture=architecture), (28, 28, 1))
    params = model.init(jax.random.key(0), jnp.zeros((28, 28, 1)))
    counts = dc.flops(architecture)
    x = jnp.zeros((64, 28, 28, 1))
    z = jnp.zeros((64, dc.LATENT))
    encode = _xla_flops(jax.vmap(lambda v: model.encode(params, v)), x)
    decode = _xla_flops(jax.vmap(lambda v: model.decode(params, v)), z)
    # XLA also counts the element-wise work (gates, biases): matmuls are within 2% of its total
    assert 64 * counts["encode"] <= encode < 1.02 * 64 * counts["encode"]
    assert 64 * counts["decode"] <= decode < 1.02 * 64 * counts["decode"]
    assert counts["forward"] == counts["encode"] + counts["decode"]


def test_tiny_run_writes_rates_and_projections(tmp_path):
    out = tmp_path / "cost.json"
    result = dc.main(["--out", str(out), "--train-size", "200", "--test-size", "4", "--num-samples", "40",
                      "--eval-batch-size", "2", "--chunk-size", "20"])
    saved = json.loads(out.read_text())
    assert saved["epoch"]["train_images"] == 200 and saved["log_marginal"]["test_images"] == 4
    for part, scale in (("epoch", 50000 / 200), ("log_marginal", 10000 / 4)):
        assert saved[part]["seconds"] > 0 and saved[part]["gflops"] > 0
        projected = saved[part]["projected_seconds_50000" if part == "epoch" else "projected_seconds_10000"]
        assert projected == pytest.approx(saved[part]["seconds"] * scale)
        assert saved[part]["fraction_of_matmul_rate"] == pytest.approx(saved[part]["gflops"] / saved["matmul_gflops"])
    assert saved["log_marginal"]["flops"] == 4 * (dc.flops("gated_mlp")["encode"] + 40 * dc.flops("gated_mlp")["decode"])
    assert result["matmul_gflops"] == max(r["gflops"] for r in saved["matmul_rates"])


def test_bad_sizes_raise(tmp_path):
    with pytest.raises(ValueError, match="train-size"):
        dc.main(["--out", str(tmp_path / "x.json"), "--train-size", "50"])


def test_step_milliseconds_orders_the_rows_by_their_work():
    ms = dc.step_milliseconds(("vae", "iwae8"), images=300)
    assert set(ms) == {"vae", "iwae8"} and 0 < ms["vae"] < ms["iwae8"]  # 8 decodes per image against 1
