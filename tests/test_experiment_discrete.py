"""The discrete-estimator study at its --quick size: outputs and the properties it must show."""

import json
import math

import pytest

from experiments import discrete_estimators


def _refused(argv, capsys, code=2):
    """The study's one-line error: the exit status and the message."""
    with pytest.raises(SystemExit) as exit_info:
        discrete_estimators.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == code and len(err.strip().splitlines()) == 1, err
    return err


def test_discrete_estimator_study_quick(tmp_path, fast_compilation, capsys, tensorboard_events):
    # Study B trains DisARM alone: every estimator trained is a compilation of its own (seconds each).
    results = discrete_estimators.main(["--out", str(tmp_path), "--quick", "--no-progress",
                                        "--estimators", "arm", "disarm", "vimco", "straight_through",
                                        "--fm-estimators", "disarm", "--track", "tensorboard"])
    # Both studies' trainings are tracked; study B's bounds join the rows it logs.
    assert [s for s, _ in tensorboard_events(tmp_path / "tensorboard" / "exact-gradient_training")["scalars"][
        "train_loss"]] == [1]
    events = tensorboard_events(tmp_path / "tensorboard" / "disarm_seed_0")
    curve = results["fashion_mnist"]["runs"]["disarm"][0]
    for name in ("train_elbo", "test_bound_100"):
        assert events["scalars"][name] == [(1, pytest.approx(curve[name][1], rel=1e-6))], name
    assert {"reconstructions", "prior_samples"} <= set(events["images"])
    for name in ("enumerable.png", "fashion_mnist_training.png", "fashion_mnist_variance.png", "config.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "results.json").read_text())["seconds"] == results["seconds"]
    assert json.loads((tmp_path / "config.json").read_text())["quick"] is True
    enum = results["enumerable"]
    assert enum["epoch"] == [0, 1] and enum["truth"]["vimco"] == "exact 2-sample bound"
    rows = enum["estimators"]
    for label in ("arm", "disarm", "vimco"):  # unbiased for their objectives: within the z-test's reach
        assert all(r["encoder"]["max_z"] < 6 for r in rows[label]), label
    assert any(r["encoder"]["max_z"] > 6 for r in rows["straight_through"])  # biased, visibly
    # DisARM is ARM Rao-Blackwellised: lower variance on the same draws (common random numbers).
    assert all(d["encoder"]["total_variance"] < a["encoder"]["total_variance"]
               for d, a in zip(rows["disarm"], rows["arm"]))
    fm = results["fashion_mnist"]
    assert list(fm["runs"]) == ["disarm"]
    for label, curves in fm["runs"].items():
        (curve,) = curves
        assert curve["epoch"] == [0, 1] and all(math.isfinite(v) for v in curve["train_elbo"])
        assert curve["train_elbo"][1] > curve["train_elbo"][0]  # one epoch of 10 steps already helps
        assert curve["test_bound_100"][1] >= curve["train_elbo"][1] - 30  # a tighter bound, different data
    assert set(fm["variance"]) == {"initial", "disarm_trained"}
    assert fm["summary"]["disarm"]["seconds"] > 0

    # Resumable: the finished pieces are kept; the same command with --resume recomputes none of them and
    # gives the same curves and study A; without --resume, or with other options, it refuses.
    argv = ["--out", str(tmp_path), "--quick", "--no-progress", "--estimators", "arm", "disarm", "vimco",
            "straight_through", "--fm-estimators", "disarm"]
    assert "pass --resume" in _refused(argv, capsys)
    assert "made with other options (epochs)" in _refused(argv + ["--resume", "--epochs", "2"], capsys)
    # vimco_k4 (DisARM-IW's match at equal evaluations) is trained in study B only: study A, whose 4-sample
    # bound cannot be enumerated, leaves it out, so its saved piece still matches and is loaded.
    again = discrete_estimators.main(argv[:-2] + ["vimco_k4", "--fm-estimators", "disarm", "vimco_k4", "--resume"])
    assert again["enumerable"]["estimators"] == rows
    assert again["fashion_mnist"]["runs"]["disarm"][0]["train_elbo"] == fm["runs"]["disarm"][0]["train_elbo"]
    assert list(again["fashion_mnist"]["runs"]) == ["disarm", "vimco_k4"]
    assert all(math.isfinite(v) for v in again["fashion_mnist"]["runs"]["vimco_k4"][0]["test_bound_100"])
    assert again["evaluations_per_example"]["vimco_k4"] == 4
    # the trained parameters came back from their file: the variance at them is the same computation
    assert again["fashion_mnist"]["variance"]["disarm_trained"]["disarm"]["encoder"]["total_variance"] == \
        pytest.approx(fm["variance"]["disarm_trained"]["disarm"]["encoder"]["total_variance"], rel=1e-5)

    # a truncated piece is one line and exit status 1, naming the file (the DisARM parameters are read when
    # their run is loaded)
    for name in ("enumerable.json", "disarm_seed0_params.msgpack"):
        path = tmp_path / "parts" / name
        original = path.read_bytes()
        path.write_bytes(original[:20])
        assert f"{name} is damaged" in _refused(argv + ["--resume"], capsys, code=1)
        path.write_bytes(original)


def test_resume_needs_an_existing_run_and_bad_options_write_nothing(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert "there is no folder" in _refused(["--out", str(missing), "--quick", "--resume"], capsys)
    for bad in (["--seeds", "0"], ["--draws", "0"], ["--draws", "1"], ["--learning-rate", "nan"],
                ["--batch-size", "0"], ["--batch-size", "600"], ["--enum-latents", "30"], ["--epochs", "0"]):
        _refused(["--out", str(missing), "--quick", *bad], capsys)
    assert not missing.exists()  # so the corrected command is not refused as "holds pieces of an earlier run"
