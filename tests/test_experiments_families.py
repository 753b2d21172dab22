"""The model-family studies (experiments.vq_vae, conditional, semi_supervised) at their --quick sizes, and the
shared helpers they added to experiments._common (the Python-loop epoch, the pieces with arrays).

Each quick run is checked for its files and for what must hold at any size: identities between the numbers it
reports, recomputed from the arrays it kept (bits/dim as the sum of its two terms, the label-summed log p(x),
the test errors from the stored predictions), inequalities that are theorems (a perplexity is at most the number
of codes in use), and that the same command reuses its pieces while other options are refused.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp

from experiments import _common, conditional, semi_supervised, vq_vae
from vae_jax import data as vdata
from vae_jax import models, training

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _refused(main, argv, capsys, code=2):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == code and len(err.strip().splitlines()) == 1, err
    return err


def _pngs(out, names):
    for name in names:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


def _tracked(events, folder, history, *, images=False):
    """The event files in ``folder`` (TensorBoard's own reader) hold every epoch's row of ``history``, and the
    reconstructions and prior samples when ``images`` (a model of images alone), else none."""
    found = events(folder)
    names = sorted(k for k in history[-1] if k != "epoch")
    assert sorted(found["scalars"]) == names, folder
    for name in names:
        assert found["scalars"][name] == [(row["epoch"], pytest.approx(row[name], rel=1e-6)) for row in history]
    assert bool(found["images"]) == images, folder


def _arrays(out, name):
    with np.load(out / "parts" / f"{name}.npz") as arrays:
        return dict(arrays)


# ------------------------------------------------------------------------------------------ the helpers
def test_loop_epoch_is_train_epoch_written_as_a_python_loop(fast_compilation):
    x = jax.random.uniform(jax.random.key(0), (70, 4, 4, 1))
    model = models.build_model(models.ModelConfig(latent_dim=2, hidden_sizes=(8,)), x.shape[1:])
    step = training.make_train_step(model.objective)
    fresh = lambda: training.create_train_state(model, jax.random.key(1), x[0], optax.adam(1e-2))  # noqa: E731
    scanned, scan_metrics = training.train_epoch(step, fresh(), x, jax.random.key(2), batch_size=16)
    looped, loop_metrics = _common.loop_epoch(step, fresh(), x, jax.random.key(2), batch_size=16)
    assert int(looped.step) == int(scanned.step) == 4  # 70 // 16 steps, the rest left out
    for a, b in zip(jax.tree.leaves(looped.params), jax.tree.leaves(scanned.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for k in scan_metrics:
        np.testing.assert_allclose(loop_metrics[k], scan_metrics[k], rtol=1e-5)
    # pairs: indexed leaf by leaf
    y = jnp.arange(70) % 3
    seen = []
    pair_step = lambda s, batch, key: (seen.append(batch) or s, {"loss": jnp.mean(batch[1])})  # noqa: E731
    _common.loop_epoch(pair_step, None, (x, y), jax.random.key(3), batch_size=10)
    assert len(seen) == 7 and all(b[0].shape == (10, 4, 4, 1) and b[1].shape == (10,) for b in seen)
    assert sorted(np.concatenate([np.asarray(b[1]) for b in seen]).tolist()) == sorted(np.asarray(y).tolist())


def test_computed_piece_computes_once_and_refuses_other_options(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"value": np.float32(1.5)}, {"a": np.arange(3)}

    parts = _common.Parts(tmp_path, resume=True)
    first = _common.computed_piece(parts, "p", {"size": 2}, compute)
    again = _common.computed_piece(_common.Parts(tmp_path, resume=True), "p", {"size": 2}, compute)
    assert len(calls) == 1 and first[0] == again[0] == {"value": 1.5}
    np.testing.assert_array_equal(again[1]["a"], np.arange(3))
    with pytest.raises(ValueError, match=r"other options \(size\)"):
        _common.computed_piece(parts, "p", {"size": 3}, compute)
    (tmp_path / "p.npz").unlink()  # the arrays lost: computed again
    _common.computed_piece(parts, "p", {"size": 2}, compute)
    assert len(calls) == 2


def test_pieces_stored_before_the_families_honoured_devices_and_track_still_load(tmp_path):
    """The committed runs (docs/results/*/README.md) stored ``devices: "one"`` and ``track`` in every piece; the
    pieces now hold neither (``devices`` only when ``"all"``), and neither counts on loading."""
    out = ["--out", str(tmp_path)]
    parts = _common.Parts(tmp_path / "parts", resume=True)
    one, untracked, every = (conditional.parse_args([*out, *argv]).piece_options()
                             for argv in ([], ["--track", "none"], ["--devices", "all"]))
    assert one == untracked and "devices" not in one and every == {**one, "devices": "all"}
    parts.save("legacy", {**one, "devices": "one", "track": "tensorboard"}, {"made": "before"})
    assert parts.load("legacy", one) == parts.load("legacy", untracked) == {"made": "before"}
    with pytest.raises(ValueError, match=r"other options \(devices\)"):
        parts.load("legacy", every)
    parts.save("parallel", every, {"made": "on every device"})
    with pytest.raises(ValueError, match=r"other options \(devices\)"):
        parts.load("parallel", one)
    assert parts.load("parallel", {**every, "track": "none"}) == {"made": "on every device"}


# ------------------------------------------------------------------------------------------- VQ-VAE
def test_vq_vae_study_quick(tmp_path, fast_compilation, capsys, tensorboard_events):
    argv = ["--out", str(tmp_path), "--quick", "--no-progress"]
    results = vq_vae.main(argv + ["--track", "tensorboard"])  # the pieces do not depend on it: loaded below
    _pngs(tmp_path, ("reconstructions.png", "samples.png", "perplexity.png"))
    assert json.loads((tmp_path / "config.json").read_text())["updates"] == ["ema"]
    ema, gauss = results["models"]["ema"], results["models"]["gaussian"]
    # the bound is its two terms; the code term is -log2 p(c*) per image spread over the pixels
    assert ema["bits_per_dim"] == pytest.approx(ema["reconstruction_bits_per_dim"] + ema["code_bits_per_dim"],
                                                abs=1e-4)
    assert ema["code_bits_per_dim"] == pytest.approx(ema["code_bits_per_image"] / results["dims"], rel=1e-5)
    assert ema["uniform_code_bits_per_image"] == 7 * 7 * math.log2(64) and ema["grid"] == [7, 7]
    assert ema["bits_per_dim"] == pytest.approx(-ema["log_joint"] / (784 * math.log(2)), rel=1e-5)
    # exp(entropy) <= the number of codes in use
    for usage in [ema["initial_probe"]] + ema["history"]:
        assert 1 <= usage["probe_perplexity"] <= 64 - usage["probe_dead_codes"] + 1e-3
    assert 1 <= ema["test_perplexity"] <= 64 - ema["test_dead_codes"] + 1e-3
    assert gauss["elbo_bits_per_dim"] == pytest.approx(gauss["reconstruction_bits_per_dim"] + gauss["kl_bits_per_dim"],
                                                       rel=1e-4)
    assert gauss["bits_per_dim"] < gauss["elbo_bits_per_dim"] + 0.01  # importance sampling, at least the ELBO
    for folder, history, images in (("vq_ema", ema["history"], False), ("vq_ema_prior", ema["prior_history"], False),
                                    ("gaussian_vae", gauss["history"], True)):
        _tracked(tensorboard_events, tmp_path / "tensorboard" / folder, history, images=images)
    x = vdata.load_fashion_mnist("test")[0][:results["eval_size"]]
    for name, piece in (("vq_ema", ema), ("gaussian_vae", gauss)):
        recon = _arrays(tmp_path, name)["reconstructions"]
        assert recon.shape == (10, 28, 28, 1) and 0 < piece["squared_error_per_pixel"] < 1
        # the stored first reconstructions are those the squared error averages over
        assert np.mean((recon - x[:10]) ** 2) < 5 * piece["squared_error_per_pixel"] + 1e-3
    # the same command reuses its pieces; other options are refused; a bad option is one line
    again = vq_vae.main(argv)
    assert again["models"]["ema"] == ema and "loaded from" in capsys.readouterr().out
    assert "other options (beta)" in _refused(vq_vae.main, argv + ["--beta", "0.5"], capsys)
    assert "--updates takes" in _refused(vq_vae.main, argv + ["--updates", "ema", "ema"], capsys)
    assert "below 1" in _refused(vq_vae.main, argv + ["--ema-decay", "1"], capsys)


def test_floored_decoder_never_goes_below_its_floor():
    model = vq_vae.build_vq(vq_vae.parse_args(["--out", "unused", "--quick"]), "loss", (28, 28, 1))
    params = model.init(jax.random.key(0), jnp.zeros((28, 28, 1)))
    params["decoder"] = jax.tree.map(lambda p: -50.0 * jnp.ones_like(p), params["decoder"])
    _, log_std = model.decode_codes(params, jnp.zeros((7, 7), jnp.int32))
    assert float(log_std.min()) >= np.float32(vq_vae.likelihoods.MIN_LOG_STD)  # reached, never passed


# -------------------------------------------------------------------------------------- conditional
def test_conditional_study_quick(tmp_path, fast_compilation, capsys, tensorboard_events):
    argv = ["--out", str(tmp_path), "--quick", "--no-progress"]
    results = conditional.main(argv + ["--track", "tensorboard"])  # the pieces do not depend on it: loaded below
    _pngs(tmp_path, ("samples.png", "vae_samples.png"))
    assert sorted(results["models"]) == ["conditional", "vae"]  # quick: the N(0, I) prior only
    cvae, vae = results["models"]["conditional"], results["models"]["vae"]
    _tracked(tensorboard_events, tmp_path / "tensorboard" / "conditional", cvae["history"])  # pairs: scalars only
    _tracked(tensorboard_events, tmp_path / "tensorboard" / "vae", vae["history"], images=True)
    arrays, vae_arrays = _arrays(tmp_path, "cvae"), _arrays(tmp_path, "vae")
    n = results["eval_size"]
    labels = vdata.load_fashion_mnist("test")[1][:n]
    per_class = arrays["log_px_given_class"]
    assert per_class.shape == (n, 10) and arrays["samples"].shape == (10 * 3, 28, 28, 1)  # quick: 3 per class
    # log p(x) = log sum_c p(c) p(x | c) with p(c) = 1/10, and the classifier argmax_c p(x | c)
    np.testing.assert_allclose(arrays["log_px_summed"], logsumexp(per_class, axis=1) - math.log(10), rtol=1e-5)
    assert cvae["implied_classifier_error"] == pytest.approx(np.mean(per_class.argmax(1) != labels))
    assert cvae["log_px_given_y"] == pytest.approx(np.mean(arrays["log_px_given_y"]), rel=1e-5)
    gain = arrays["log_px_given_y"] - vae_arrays["log_px"]
    pair = results["paired_differences"]["conditional: log_px_given_y - vae log_px"]
    assert pair["mean"] == pytest.approx(gain.mean(), rel=1e-4)
    assert pair["paired_stderr"] == pytest.approx(gain.std(ddof=1) / math.sqrt(n), rel=1e-4)
    for model in (cvae, vae):  # importance sampling at least the ELBO (8 samples, 20 images: a wide margin)
        assert model.get("log_px_given_y", model.get("log_px")) > model["elbo"] - 1
    again = conditional.main(argv)
    assert again["models"] == results["models"] and "loaded from" in capsys.readouterr().out
    assert "other options (latent_dim)" in _refused(conditional.main, argv + ["--latent-dim", "3"], capsys)
    assert "--priors takes" in _refused(conditional.main, argv + ["--priors", "learned", "flat"], capsys)


# ---------------------------------------------------------------------------------- semi-supervised
def test_semi_supervised_study_quick(tmp_path, fast_compilation, capsys, tensorboard_events):
    argv = ["--out", str(tmp_path), "--quick", "--no-progress"]
    semi_supervised.main(argv + ["--track", "tensorboard"])  # the pieces do not depend on it: loaded below
    results = json.loads((tmp_path / "results.json").read_text())  # as written: str keys
    _pngs(tmp_path, ("test_error.png",))
    labels = vdata.load_fashion_mnist("test")[1][:results["eval_size"]]
    for n, counts in results["runs"].items():
        for weighting, share in (("paper", int(n) / 300), ("balanced", 0.5)):
            m2 = counts[f"m2_{weighting}"]["0"]
            assert m2["alpha"] == pytest.approx(0.1 * 300 / int(n))  # the paper's 0.1 N per labelled example
            assert m2["labelled_share"] == pytest.approx(share) and m2["pairs_per_epoch"] == 300 - int(n)
            assert len(m2["history"]) == 1 and m2["history"][-1]["test_error"] == m2["test_error"]
            _tracked(tensorboard_events, tmp_path / "tensorboard" / f"m2_{weighting}_labels{n}_seed0",
                     m2["history"])  # test_error too
        assert tensorboard_events(tmp_path / "tensorboard" / f"classifier_labels{n}_seed0")["scalars"]["train_correct"]
        for kind in ("m2_paper", "m2_balanced", "classifier"):
            predicted = _arrays(tmp_path, f"{kind}_labels{n}_seed0")["predicted"]
            assert counts[kind]["0"]["test_error"] == pytest.approx(np.mean(predicted != labels))
        summary = results["summary"][n]["classifier"]
        assert summary["per_seed"] == [counts["classifier"]["0"]["test_error"]] and summary["std_ddof1"] == 0
        # the labels-only classifier fits its few labels
        assert counts["classifier"]["0"]["final_train_accuracy"] > 0.5
    two = semi_supervised.summarise([0.1, 0.3])
    assert two["mean"] == pytest.approx(0.2) and two["std_ddof1"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    again = semi_supervised.main(argv + ["--weightings", "paper"])  # a subset of the pieces: all loaded
    assert "m2_balanced" not in again["runs"][20] and "loaded from" in capsys.readouterr().out
    assert json.loads(json.dumps(again["runs"][20]["m2_paper"], default=float)) == results["runs"]["20"]["m2_paper"]
    assert "leaves no unlabelled image" in _refused(semi_supervised.main, argv + ["--labels", "300"], capsys)
    assert "--weightings takes" in _refused(semi_supervised.main, argv + ["--weightings", "paper", "paper"], capsys)


def test_labels_only_objective_is_the_log_softmax_of_the_true_class():
    net = semi_supervised.semi_supervised.m2((4,), hidden_sizes=(3,), classifier_sizes=(5,)).classifier
    model = semi_supervised.LabelsOnly(net)
    x = jnp.linspace(-1, 1, 4)
    params = model.init(jax.random.key(0), x)
    logits = np.asarray(net.apply({"params": params}, x), np.float64)
    for y in range(10):
        value, aux = model.objective(params, None, (x, jnp.int32(y)))
        assert float(value) == pytest.approx(logits[y] - logsumexp(logits), abs=1e-5)
        assert float(aux["correct"]) == float(np.argmax(logits) == y)
