"""experiments._common: argument types, the one-line error handling every study shares, stored parts.

Every study's ``main`` refuses a bad option with one line on stderr and exit
status 2 before anything is computed or written (no training is needed to
check that), so the corrected command is never blocked by a half-written run.
"""

import argparse
import json

import numpy as np
import pytest

from experiments import (_common, beta_vae, discrete_estimators, disentanglement, gradient_estimators, latent_2d,
                         likelihoods, prior_samples, reconstructions)

STUDIES = {module.__name__.split(".")[-1]: module for module in (
    beta_vae, discrete_estimators, disentanglement, gradient_estimators, latent_2d, likelihoods, prior_samples,
    reconstructions)}
COMMON_BAD = [["--seed", "-1"], ["--out", ""]]
BAD = {  # each option a study reads, with a value it must refuse where it reads it
    "beta_vae": [["--epochs", "0"], ["--batch-size", "0"], ["--train-size", "0"], ["--latent-dim", "0"],
                 ["--learning-rate", "nan"], ["--betas", "1", "nan"], ["--betas", "1", "-1"], ["--betas", "1"]],
    "discrete_estimators": [["--epochs", "0"], ["--batch-size", "0"], ["--train-size", "0"], ["--latents", "0"],
                            ["--learning-rate", "nan"], ["--enum-learning-rate", "inf"], ["--seeds", "0"],
                            ["--draws", "0"], ["--fm-draws", "1"], ["--enum-checkpoints", "0"]],
    "disentanglement": [["--epochs", "0"], ["--batch-size", "0"], ["--train-size", "0"], ["--latent-dim", "0"],
                        ["--learning-rate", "nan"], ["--betas", "1", "nan"], ["--tc-weights", "inf"],
                        ["--gammas", "0"], ["--discriminator-lr", "-1e-3"], ["--dci-trees", "0"],
                        ["--seeds", "-1"], ["--betas", "2", "4"], ["--quick", "--batch-size", "513"]],
    "gradient_estimators": [["--epochs", "0"], ["--batch-size", "0"], ["--train-size", "0"], ["--latent-dim", "0"],
                            ["--learning-rate", "nan"], ["--samples", "1"], ["--ks", "4", "1"], ["--draws", "1"],
                            ["--baseline-decay", "1"], ["--quick", "--snr-batch", "9"]],
    "latent_2d": [["--epochs", "0"], ["--batch-size", "0"], ["--learning-rate", "nan"], ["--grid-size", "0"],
                  ["--grid-extent", "nan"], ["--hidden-sizes", "0"]],
    "likelihoods": [["--epochs", "0"], ["--batch-size", "0"], ["--train-size", "0"], ["--latent-dim", "0"],
                    ["--learning-rate", "nan"], ["--eval-size", "0"], ["--num-importance", "0"],
                    ["--min-log-std", "nan"]],
    "prior_samples": [["--epochs", "0"], ["--num-samples", "-1"], ["--latent-dim", "0"], ["--batch-size", "0"]],
    "reconstructions": [["--epochs", "0"], ["--latent-dim", "0"], ["--learning-rate", "inf"]],
}
CASES = [(name, bad) for name, bads in BAD.items() for bad in bads + COMMON_BAD]


@pytest.mark.parametrize("name, bad", CASES, ids=[f"{n}:{' '.join(b)}" for n, b in CASES])
def test_bad_option_is_one_line_exit_2_and_writes_nothing(name, bad, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--out", str(out), *bad] if bad[0] != "--out" else bad
    with pytest.raises(SystemExit) as exit_info:
        STUDIES[name].main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"python -m experiments.{name}: error: "), err
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_out_pointing_to_a_file_is_refused(name, tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("someone's file")
    with pytest.raises(SystemExit) as exit_info:
        STUDIES[name].main(["--out", str(path)])
    assert exit_info.value.code == 2 and "is a file" in capsys.readouterr().err
    assert path.read_text() == "someone's file"


@pytest.mark.parametrize("text, kind, ok", [
    ("3", _common.positive_int, 3), ("0", _common.nonnegative_int, 0), ("1e-3", _common.positive_float, 1e-3),
    ("0", _common.nonnegative_float, 0.0), ("-2.5", _common.finite_float, -2.5)])
def test_argument_types_accept(text, kind, ok):
    assert kind(text) == ok


@pytest.mark.parametrize("text, kind", [
    ("0", _common.positive_int), ("1.5", _common.positive_int), ("-1", _common.nonnegative_int),
    ("0", _common.positive_float), ("nan", _common.positive_float), ("inf", _common.positive_float),
    ("-1e-9", _common.nonnegative_float), ("nan", _common.finite_float), ("-inf", _common.finite_float),
    ("x", _common.finite_float)])
def test_argument_types_refuse(text, kind):
    with pytest.raises(argparse.ArgumentTypeError, match="must be"):
        kind(text)


def test_study_main_maps_errors_to_one_line_and_exit_codes(capsys):
    def failing(error):
        @_common.study_main("experiments.fake")
        def main(argv=None):
            raise error
        return main

    for error, code in ((ValueError("bad\n option"), 2), (_common.StudyError("damaged"), 1), (OSError("disk"), 1),
                        (KeyboardInterrupt(), 130)):
        with pytest.raises(SystemExit) as exit_info:
            failing(error)()
        assert exit_info.value.code == code
        err = capsys.readouterr().err
        assert err.startswith("python -m experiments.fake: error: ") and err.count("\n") == 1
    assert _common.study_main("x")(lambda argv=None: {"ok": 1})() == {"ok": 1}


def test_parts_bind_options_and_refuse_damage(tmp_path):
    parts = _common.Parts(tmp_path / "parts", resume=False)
    assert parts.load("a", {"epochs": 1}) is None
    parts.save("a", {"epochs": 1, "sizes": (1, 2)}, {"value": np.float32(0.5)})
    assert parts.load("a", {"epochs": 1, "sizes": (1, 2)}) == {"value": 0.5}
    with pytest.raises(ValueError, match=r"other options \(epochs\)"):
        parts.load("a", {"epochs": 2, "sizes": (1, 2)})
    with pytest.raises(ValueError, match="pass --resume"):
        _common.Parts(tmp_path / "parts", resume=False)
    parts.write_file("a.npz", _common.npz_bytes({"x": np.arange(3)}))
    np.testing.assert_array_equal(parts.read_file("a.npz", _common.read_npz)["x"], np.arange(3))
    for name, data in (("a.json", b'{"config": {"epo'), ("a.npz", b"PK\x03\x04"), ("b.json", b"[]")):
        (tmp_path / "parts" / name).write_bytes(data)
        with pytest.raises(_common.StudyError, match=f"{name} is damaged"):
            (parts.load(name[:-5], {}) if name.endswith(".json") else parts.read_file(name, _common.read_npz))
    assert not list((tmp_path / "parts").glob(".*.partial"))  # atomic writes leave no partial file
    with pytest.raises(ValueError, match="there is no folder"):
        _common.check_resume(tmp_path / "missing", resume=True)
    _common.check_resume(tmp_path / "missing", resume=False)
    assert json.loads((tmp_path / "parts" / "b.json").read_text()) == []


def test_resolve_defaults_keeps_explicit_zero():
    args = argparse.Namespace(quick=False, a=0, b=None, c=None)
    assert _common.resolve_defaults(args, {"a": (1, 2), "b": (3, 4), "c": ([5], [6, 7])}) == {"a": 0, "b": 4,
                                                                                             "c": (6, 7)}
