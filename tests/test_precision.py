"""The bfloat16 precision policy (``ModelConfig(compute_dtype="bfloat16")``).

What it promises: the networks' matmuls and convolutions multiply in bf16 and
accumulate in float32; parameters, optimizer state, network outputs,
log-likelihoods, KL and reductions are float32. So the bf16 objective is the
float32 one up to bf16 rounding of the layers' inputs and weights, its
gradients point the same way, and training reaches the same ELBO.
"""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import vae_jax as vj
from vae_jax import runner
from vae_jax.cli import main
from vae_jax.data import binarize, load_dataset

ARCHITECTURES = ("mlp", "gated_mlp", "conv")


def _models(shape=(28, 28, 1), **kwargs):
    return {dtype: vj.build_model(vj.ModelConfig(compute_dtype=dtype, **kwargs), shape)
            for dtype in ("float32", "bfloat16")}


def _batch_objective(model, params, key, x):
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda k, xi: model.objective(params, k, xi)[0])(keys, x)


@pytest.fixture(scope="module")
def fashion():
    images = load_dataset("fashion_mnist").test.images[:256]
    return binarize(images, "static", seed=0)


def test_compute_dtype_is_validated_and_recorded():
    with pytest.raises(ValueError, match="compute_dtype"):
        vj.build_model(vj.ModelConfig(compute_dtype="float16"), (4, 4, 1))
    config = vj.config.RunConfig(vj.ModelConfig(compute_dtype="bfloat16"), vj.config.TrainConfig())
    assert config.to_dict()["model"]["compute_dtype"] == "bfloat16"
    assert vj.config.RunConfig.from_dict(config.to_dict()) == config
    old = config.to_dict()
    del old["model"]["compute_dtype"]  # a config.json written before the option existed
    assert vj.config.RunConfig.from_dict(old).model.compute_dtype == "float32"


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_bf16_objective_within_tolerance_of_float32(architecture, fashion):
    """Same parameters, same keys. Stated tolerance: the per-example ELBO differs by
    less than 0.5% of its magnitude (observed at most 0.046% MLP, 0.16% gated MLP,
    0.006% conv), the batch mean by less than 0.1% (observed at most 0.008%); both
    are float32 arrays."""
    models = _models(latent_dim=16, hidden_sizes=(256, 128), architecture=architecture)
    params = models["float32"].init(jax.random.key(0), fashion[0])
    x = fashion[:64]
    f32, bf16 = (_batch_objective(m, params, jax.random.key(1), x) for m in models.values())
    assert f32.dtype == bf16.dtype == jnp.float32
    np.testing.assert_array_less(np.abs(bf16 - f32), 5e-3 * np.abs(f32))
    assert abs(float(bf16.mean() - f32.mean())) < 1e-3 * abs(float(f32.mean()))
    assert not np.array_equal(f32, bf16)  # the policy is really in effect


def _train_digits(model, epochs=30, seed=0):
    x = binarize(load_dataset("digits").train.images, "static", seed=0)
    state = vj.create_train_state(model, jax.random.key(seed), x[0], optax.adam(1e-3))
    step = vj.make_train_step(model.objective)
    for epoch in range(epochs):
        state, _ = vj.train_epoch(step, state, jnp.asarray(x), jax.random.fold_in(jax.random.key(1), epoch),
                                  batch_size=64)
    return state, x


@pytest.mark.parametrize("architecture", ("mlp", "gated_mlp"))
def test_bf16_gradient_direction_matches_float32_on_a_trained_model(architecture):
    models = {dtype: vj.build_model(vj.ModelConfig(latent_dim=8, hidden_sizes=(128, 64), architecture=architecture,
                                                   compute_dtype=dtype), (8, 8, 1))
              for dtype in ("float32", "bfloat16")}
    state, x = _train_digits(models["float32"])

    def grad(model):
        loss = lambda p: -jnp.mean(_batch_objective(model, p, jax.random.key(3), x[:256]))
        return jnp.concatenate([g.ravel() for g in jax.tree.leaves(jax.grad(loss)(state.params))])

    g32, g16 = grad(models["float32"]), grad(models["bfloat16"])
    cosine = float(g32 @ g16 / (jnp.linalg.norm(g32) * jnp.linalg.norm(g16)))
    assert cosine > 0.99, cosine
    assert 0.9 < float(jnp.linalg.norm(g16) / jnp.linalg.norm(g32)) < 1.1


@pytest.mark.parametrize("logit", (1000.0, -1000.0))
def test_no_nan_with_huge_bernoulli_logits_in_bf16(logit):
    model = _models(latent_dim=4, hidden_sizes=(32, 16), shape=(8, 8, 1))["bfloat16"]
    x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (8, 8, 1)), jnp.float32)
    params = model.init(jax.random.key(0), x)
    last = sorted(k for k in params["decoder"] if k.startswith("Dense"))[-1]
    params["decoder"][last]["bias"] = jnp.full_like(params["decoder"][last]["bias"], logit)
    logits = model.decode(params, jnp.zeros(4))
    assert logits.dtype == jnp.float32 and float(jnp.min(jnp.abs(logits))) > 900
    (value, aux), grads = jax.value_and_grad(lambda p: model.objective(p, jax.random.key(1), x), has_aux=True)(params)
    wrong = float(jnp.sum(x != (logit > 0)))  # pixels the saturated decoder gets wrong cost ~|logit| nats each
    assert np.isfinite(float(value)) and value <= 0
    assert abs(float(aux["reconstruction"]) + wrong * abs(logit)) < 0.01 * wrong * abs(logit) + 1
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_params_and_optimizer_state_stay_float32_and_hlo_has_bf16_dots():
    models = _models(latent_dim=4, hidden_sizes=(32, 16), shape=(8, 8, 1))
    x = binarize(load_dataset("digits").train.images[:64], "static", seed=0)
    texts = {}
    for dtype, model in models.items():
        state = vj.create_train_state(model, jax.random.key(0), x[0], optax.adam(1e-3))
        step = vj.make_train_step(model.objective)
        texts[dtype] = step.lower(state, x, jax.random.key(1)).as_text()
        state, metrics = step(state, x, jax.random.key(1))
        floats = [leaf for leaf in jax.tree.leaves((state.params, state.opt_state))
                  if jnp.issubdtype(leaf.dtype, jnp.floating)]
        assert floats and all(leaf.dtype == jnp.float32 for leaf in floats)
        assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
    dots = {dtype: [line for line in text.splitlines() if "stablehlo.dot_general" in line]
            for dtype, text in texts.items()}
    assert dots["float32"] and not any("bf16" in line for line in dots["float32"])
    # every product, forward (6) and backward (6 weight and 5 input gradients; the data needs none):
    # bf16 operands, float32 result (the accumulation type), on any backend
    bf16_dots = [line for line in dots["bfloat16"]
                 if re.search(r": \(tensor<[\dx]+bf16>, tensor<[\dx]+bf16>\) -> tensor<[\dx]+f32>", line)]
    assert len(bf16_dots) == len(dots["bfloat16"]) == 17, dots["bfloat16"]  # 3 encoder + 3 decoder layers


def test_conv_hlo_has_bf16_convolutions():
    model = _models(latent_dim=4, architecture="conv", shape=(8, 8, 1))["bfloat16"]
    x = jnp.zeros((8, 8, 1))
    params = model.init(jax.random.key(0), x)
    text = jax.jit(lambda p: model.objective(p, jax.random.key(1), x)[0]).lower(params).as_text()
    convs = [line for line in text.splitlines() if "stablehlo.convolution" in line]
    assert convs and all("bf16>" in line for line in convs)


def _train_cli(tmp_path, dtype, dataset, epochs, extra=()):
    out = tmp_path / f"{dataset}_{dtype}"
    argv = ["train", "--dataset", dataset, "--epochs", str(epochs), "--no-progress", "--out", str(out),
            "--compute-dtype", dtype, *extra]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["model"]["compute_dtype"] == dtype
    return runner.evaluate_run(out, progress=False)["test_elbo"]


def test_bf16_training_reaches_the_float32_elbo_on_digits(tmp_path):
    """The main job's check at CI size: digits, 30 epochs, both precisions, same seed."""
    extra = ("--latent-dim", "8", "--hidden-sizes", "128,64", "--validation-size", "200")
    elbo = {dtype: _train_cli(tmp_path, dtype, "digits", 30, extra) for dtype in ("float32", "bfloat16")}
    assert abs(elbo["bfloat16"] - elbo["float32"]) < 0.5, elbo


@pytest.mark.slow
def test_bf16_main_job_reaches_the_float32_test_elbo(tmp_path):
    """The README's main job (Fashion-MNIST, 10 epochs, all defaults) in both precisions:
    test ELBOs within 0.5 nats. Prints both (run with -s to see them)."""
    elbo = {dtype: _train_cli(tmp_path, dtype, "fashion_mnist", 10) for dtype in ("float32", "bfloat16")}
    print("main job test ELBO:", json.dumps(elbo))
    assert abs(elbo["bfloat16"] - elbo["float32"]) < 0.5, elbo
