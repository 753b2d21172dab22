"""``vae-jax train --kind conditional | m2 | vq``: train, resume bitwise, evaluate, sample, one-line errors."""

import csv
import json

import jax
import matplotlib.image
import numpy as np
import pytest

from vae_jax import data, family_runs, runner
from vae_jax.checkpoints import RunCheckpoints
from vae_jax.cli import main
from vae_jax.runs import load_run_config

# digits: 1438 training images - 100 validation, the first 256 kept: 4 steps of 64 per epoch
SMALL = ["--dataset", "digits", "--validation-size", "100", "--train-size", "256", "--batch-size", "64",
         "--hidden-sizes", "16", "--no-progress", "--track", "none"]
KINDS = {"conditional": ["--kind", "conditional", "--latent-dim", "2", "--conditional-prior", "learned",
                         "--beta", "0.5"],
         "m2": ["--kind", "m2", "--latent-dim", "2", "--num-labelled", "30"],
         "vq": ["--kind", "vq", "--hidden-sizes", "8,16", "--num-codes", "8", "--embedding-dim", "3",
                "--codebook-update", "ema", "--ema-decay", "0.9", "--beta", "0.25"]}


def _train(out, kind, *extra):
    return main(["train", *SMALL, *KINDS[kind], "--out", str(out), *extra])


def _latest(run):
    config, shape = load_run_config(run)
    _, template, _, _, metric = runner.setup(config, shape)
    with RunCheckpoints(run / "checkpoints", metric=metric) as ckpts:
        return ckpts.latest_epoch, ckpts.restore(template)[0]


def _rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_trains_resumes_bitwise_evaluates_and_samples(kind, tmp_path, capsys):
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    assert _train(resumed, kind, "--epochs", "1") == 0
    assert main(["train", "--resume", "--epochs", "2", "--no-progress", "--out", str(resumed)]) == 0
    assert _train(straight, kind, "--epochs", "2") == 0
    (epoch_a, a), (epoch_b, b) = _latest(resumed), _latest(straight)
    assert epoch_a == epoch_b == 2
    a_tree, b_tree = ((s.step, s.params, s.opt_state, s.hparams, s.estimator_state) for s in (a, b))
    assert jax.tree.structure(a_tree) == jax.tree.structure(b_tree)
    for x, y in zip(jax.tree.leaves(a_tree), jax.tree.leaves(b_tree)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), strict=True)
    assert (resumed / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()
    rows = _rows(resumed)
    assert all(np.isfinite(float(v)) for r in rows for v in r.values())
    saved = json.loads((resumed / "config.json").read_text())
    assert saved["model"]["kind"] == kind
    capsys.readouterr()
    assert main(["evaluate", "--run", str(resumed), "--checkpoint", "latest", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_examples"] == 359 and all(np.isfinite(v) for v in result.values() if isinstance(v, float))
    if kind == "vq":
        _check_vq(resumed, a.params, result)
        assert main(["sample", "--run", str(resumed)]) == 2
        assert "holds no prior over its codes" in capsys.readouterr().err
        return
    assert main(["sample", "--run", str(resumed), "--n", "20"]) == 0
    image = matplotlib.image.imread(resumed / "samples.png")
    assert image.shape[0] > image.shape[1]  # 10 rows (one per class) of 2 draws
    if kind == "m2":
        # The paper's alpha = 0.1 N / N_l and share N_l / N from the 256 training examples, saved; 30 labels
        # kept, paired with the 226 others: 3 steps of 64 pairs per epoch.
        assert saved["train"]["alpha"] == pytest.approx(0.1 * 256 / 30)
        assert saved["train"]["labelled_share"] == pytest.approx(30 / 256)
        assert float(rows[0]["train_labelled_bound"]) < 0 and float(rows[0]["train_unlabelled_bound"]) < 0
        assert 0 <= result["test_error"] <= 1 and result["test_bound"] < 0
        assert {"validation_bound", "validation_error"} <= set(rows[0])
    else:
        assert result["test_elbo"] < 0 and result["test_kl"] > 0


def _check_vq(run, params, result):
    """Codebook use over the test set, recomputed with NumPy from the codes the model assigns."""
    config, shape = load_run_config(run)
    images, _ = runner.load_images(config)
    model = runner.setup(config, shape)[0]
    codes = np.asarray(jax.vmap(model.codes, in_axes=(None, 0))(params, images["test"]))
    counts = np.bincount(codes.ravel(), minlength=8)
    p = counts[counts > 0] / counts.sum()
    assert result["test_perplexity"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-5)
    assert result["test_dead_codes"] == int(np.sum(counts == 0))
    recon = np.asarray(jax.vmap(model.reconstruct, in_axes=(None, 0))(params, images["test"]))
    assert result["test_squared_error"] == pytest.approx(np.mean((recon - images["test"]) ** 2), rel=1e-5)
    assert result["test_reconstruction"] < 0
    assert config.train.binarization == "static"  # the default for a Bernoulli VQ-VAE


def test_m2_keeps_a_balanced_seeded_choice_of_labels():
    labels = np.repeat(np.arange(10), [30, 25, 40, 35, 30, 28, 33, 31, 29, 27])
    for n in (10, 35, 100):
        chosen = family_runs.choose_labelled(labels, n, seed=0)
        counts = np.bincount(labels[chosen], minlength=10)
        assert chosen.sum() == n and counts.max() - counts.min() <= 1
    assert np.array_equal(family_runs.choose_labelled(labels, 35, seed=0), family_runs.choose_labelled(labels, 35, 0))
    assert not np.array_equal(family_runs.choose_labelled(labels, 35, seed=0),
                              family_runs.choose_labelled(labels, 35, seed=1))


@pytest.mark.parametrize("argv, message", [
    (["--kind", "conditional", "--num-classes", "5"], "the 'digits' labels reach 9, outside [0, 5) of --num-classes 5"),
    (["--kind", "m2", "--num-labelled", "256"],
     "--num-labelled 256 leaves no unlabelled example of the 256 training examples"),
    (["--kind", "vq", "--num-codes", "1"], "the codebook needs at least 2 codes (num_codes >= 2); got 1"),
    (["--kind", "vq", "--latent-dim", "4"], "kind='vq' does not take latent_dim=4"),
    (["--num-codes", "8"], "kind='vae' does not take num_codes=8"),
    (["--kind", "conditional", "--num-labelled", "10"], "num_labelled applies to --kind m2 only"),
    (["--kind", "vq", "--ema-decay", "0.5"], "ema_decay applies to --kind vq --codebook-update ema only"),
    (["--kind", "vq", "--binarize", "dynamic"], "takes no dynamic binarisation; use --binarize static"),
    (["--kind", "m2", "--beta", "2"], "beta applies to the ELBO of a VAE or conditional VAE"),
    (["--kind", "conditional", "--devices", "all"], "trains in memory on one device"),
    (["--kind", "vq", "--hidden-sizes", "16,16,16,16"], "H, W divisible by 16"),
    (["--kind", "m2", "--alpha", "-1"], "alpha must be >= 0"),
    (["--kind", "m2", "--labelled-share", "1.5"], "labelled_share must be in [0, 1]"),
    (["--kind", "conditional", "--labelled-share", "0.5"], "labelled_share applies to --kind m2 only"),
])
def test_bad_family_configurations_are_one_line_errors(argv, message, tmp_path, capsys):
    assert main(["train", *SMALL, *argv, "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert message in err, err


def test_a_conditional_model_on_data_without_labels_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    digits = data.load_digits()
    monkeypatch.setattr(data, "load_digits", lambda: data.Split(digits.images, np.full_like(digits.labels, -1)))
    assert main(["train", *SMALL, "--kind", "conditional", "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--kind conditional needs labels; the train split of 'digits' has none" in err
