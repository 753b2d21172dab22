"""experiments.disentanglement: the --quick run (outputs, ranges, resume) and the full-size study (slow)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments import _common
from experiments import _disentanglement_report as report
from experiments import disentanglement as study
from experiments import disentanglement_dci as dci_rescore
from vae_jax import dsprites

SCORES = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "factor_vae_score",
          "beta_vae_score")


def _check_outputs(out, results, *, seeds, settings, figures=True):
    names = ("results.json", "config.json") + (("metrics_vs_beta.png", "traversals.png") if figures else ())
    for name in names:
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text())["summary"] == json.loads(json.dumps(results["summary"]))
    assert [(s["method"], s["weight"]) for s in results["summary"]] == settings
    assert len(results["rows"]) == len(seeds) * len(settings)
    for s in results["summary"]:
        assert sorted(s["seeds"]) == sorted(seeds)
        for name in SCORES:
            v = np.array(s[name]["per_seed"])
            assert np.all((v >= 0) & (v <= 1)), name
            assert s[name]["mean"] == pytest.approx(v.mean()) and s[name]["min"] <= s[name]["mean"] <= s[name]["max"]
        assert np.all(np.array(s["reconstruction_error"]["per_seed"]) > 0)
        assert np.all(np.array(s["kl"]["per_seed"]) >= 0)
    # the traversal labels come from the DCI importance matrix of a stored model
    arrays = np.load(out / "models" / "seed0.npz")
    assert arrays["beta_vae_1_importance"].shape == (10, len(dsprites.FACTOR_NAMES))


def test_quick_run_writes_everything_and_resumes(tmp_path, capsys, tensorboard_events):
    """Two methods first; the second call trains only the method the seed files lack (beta-TCVAE)."""
    first = study.main(["--quick", "--out", str(tmp_path), "--no-progress", "--no-figures",
                        "--methods", "beta_vae", "factor_vae", "--track", "tensorboard"])
    for row in first["rows"]:  # each model of each stacked sweep has its own event files: its column of the rows
        events = tensorboard_events(tmp_path / "tensorboard" / f"{row['method']}_{row['weight']:g}_seed{row['seed']}")
        final = {name: value for name, value in row["final_train"].items() if name != "epoch"}
        assert sorted(events["scalars"]) == sorted(final)
        for name, value in final.items():
            assert events["scalars"][name] == [(1, pytest.approx(value, rel=1e-6))], name
    _check_outputs(tmp_path, first, seeds=[0, 1], settings=[("beta_vae", 1.0), ("beta_vae", 4.0), ("factor_vae", 10.0)],
                   figures=False)
    assert not (tmp_path / "traversals.png").exists()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quick"] is True and config["train_size"] == 512 and config["image_size"] == 16
    assert config["dci_trees"] == 1 and config["sizes"]["eval_size"] == 200
    for row in first["rows"]:  # FactorVAE's discriminator trained beside the VAE, and its TC estimate is finite
        if row["method"] == "factor_vae":
            assert 0.0 <= row["final_train"]["train_discriminator_accuracy"] <= 1.0
            assert np.isfinite(row["final_train"]["train_total_correlation"])
    results = study.main(["--quick", "--out", str(tmp_path), "--no-progress"])
    _check_outputs(tmp_path, results, seeds=[0, 1],
                   settings=[("beta_vae", 1.0), ("beta_vae", 4.0), ("beta_tcvae", 4.0), ("factor_vae", 10.0)])
    old = json.loads(json.dumps(first["rows"]))
    # the stored models are reused, not retrained (a retrained row would differ in its timing)
    assert all(r in results["rows"] for r in old) and len(results["rows"]) == len(old) + 2
    comparison = results["comparison_with_beta_1"]
    assert set(comparison["best"]) == {"beta_tcvae", "factor_vae", "beta_vae"}
    assert comparison["correction"]["family_size"] == 6  # 3 weighted settings x (MIG, DCI D)
    assert json.loads((tmp_path / "models" / "seed0.json").read_text())["config"]["epochs"] == 1
    assert np.load(tmp_path / "models" / "seed0.npz")["beta_vae_1_codes"].shape == (200, 10)
    _check_dci_from_stored_codes(tmp_path, results)
    _check_stale_and_damaged_parts(tmp_path, tmp_path.parent / f"{tmp_path.name}_copy", capsys)


def _check_dci_from_stored_codes(out, results):
    """DCI recomputed from the stored codes at the run's own rounds (1) is the run's DCI, model for model
    (the codes, factors and split line up); at 3 rounds it differs and the paired differences add up."""
    same = dci_rescore.main(["--run", str(out), "--trees", "1"])
    assert len(same["rows"]) == len(results["rows"]) == 8 and same["run_dci_trees"] == 1
    for row in same["rows"]:
        for name in dci_rescore.NAMES:
            assert row[name] == row["run"][name], (row, name)
    assert json.loads((out / "dci_1_rounds.json").read_text()) == json.loads(json.dumps(same))
    other = dci_rescore.main(["--run", str(out), "--trees", "3"])
    assert any(r["dci_informativeness"] != r["run"]["dci_informativeness"] for r in other["rows"])
    for s in other["summary"]:
        group = [r for r in other["rows"] if (r["method"], r["weight"]) == (s["method"], s["weight"])]
        d = s["dci_disentanglement"]
        assert d["difference"]["mean"] == pytest.approx(d["mean"] - d["run_mean"], abs=1e-12)
        assert d["run_mean"] == pytest.approx(np.mean([r["run"]["dci_disentanglement"] for r in group]), abs=1e-12)


def _check_stale_and_damaged_parts(out, copy, capsys):
    """A seed file made with other options is refused, naming them (no stale row is reported under the
    new options); a truncated seed file is one line and exit status 1. No training: both fail first."""
    before = (out / "results.json").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--quick", "--out", str(out), "--no-progress", "--epochs", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "seed0.json was made with other options (epochs)" in err and len(err.strip().splitlines()) == 1
    assert (out / "results.json").read_bytes() == before  # nothing rewritten under the new options
    for name, argv in (("seed0.json", []), ("seed0.npz", ["--betas", "1", "2", "4"])):
        shutil.copytree(out, copy, dirs_exist_ok=True)
        path = copy / "models" / name
        path.write_bytes(path.read_bytes()[:40])
        with pytest.raises(SystemExit) as exit_info:
            study.main(["--quick", "--out", str(copy), "--no-progress", *argv])
        assert exit_info.value.code == 1, name
        err = capsys.readouterr().err
        assert f"{name} is damaged" in err and len(err.strip().splitlines()) == 1, err


def test_pool_and_bad_arguments(tmp_path):
    x = dsprites.render([[0, 5, 0, 16, 16]])
    pooled = study.pool(x, 32)
    assert pooled.shape == (1, 32, 32, 1) and pooled.sum() * 4 == pytest.approx(x.sum())
    with pytest.raises(SystemExit):
        study.main(["--quick", "--out", str(tmp_path), "--betas", "2", "4"])  # no beta = 1 to compare with


REPORTED = ["--betas", "1", "4", "16", "--tc-weights", "6", "10", "20", "--gammas", "10", "40", "--epochs", "8",
            "--no-progress"]
FIGURES = Path(__file__).parents[1] / "docs" / "figures"


@pytest.mark.slow
def test_reported_study(tmp_path):
    """The run docs/disentanglement.md reports (DCI at 100 rounds; 9,089 s of wall time on a shared machine)
    and the findings the page states."""
    results = study.main(["--out", str(tmp_path), *REPORTED])
    settings = [("beta_vae", 1.0), ("beta_vae", 4.0), ("beta_vae", 16.0), ("beta_tcvae", 6.0), ("beta_tcvae", 10.0),
                ("beta_tcvae", 20.0), ("factor_vae", 10.0), ("factor_vae", 40.0)]
    _check_outputs(tmp_path, results, seeds=[0, 1, 2, 3, 4], settings=settings)
    s = {(x["method"], x["weight"]): x for x in results["summary"]}
    # rate-distortion: more weight on the KL, less KL and more reconstruction error, on every seed
    for low, high in ((("beta_vae", 1.0), ("beta_vae", 4.0)), (("beta_vae", 4.0), ("beta_vae", 16.0))):
        assert s[high]["kl"]["max"] < s[low]["kl"]["min"]
        assert s[high]["reconstruction_error"]["min"] > s[low]["reconstruction_error"]["max"]
    # the plain VAE's MIG is low on every seed; every weighted setting raises the mean MIG and DCI D
    assert s[("beta_vae", 1.0)]["mig"]["max"] < 0.05
    for setting in settings[1:]:
        for name in ("mig", "dci_disentanglement"):
            assert s[setting][name]["mean"] > s[("beta_vae", 1.0)][name]["mean"], (setting, name)
    # FactorVAE keeps the reconstruction near the VAE's; beta-VAE at 16 does not
    assert s[("factor_vae", 10.0)]["reconstruction_error"]["mean"] < 1.2 * s[("beta_vae", 1.0)]["reconstruction_error"]["mean"]
    c = results["comparison_with_beta_1"]["best"]
    assert (c["beta_vae"]["best_weight"], c["beta_tcvae"]["best_weight"], c["factor_vae"]["best_weight"]) == (16, 10, 10)
    # beta = 16's DCI D: seed ranges and 95% intervals of the mean apart; the rest overlaps (but for
    # beta-TCVAE's MIG ranges, apart by 0.001: too close to assert either way)
    assert c["beta_vae"]["dci_disentanglement"]["ci95"]["non_overlapping"]
    assert c["beta_vae"]["dci_disentanglement"]["non_overlapping"]
    assert c["beta_vae"]["dci_disentanglement"]["welch_p"] < 0.05
    assert not c["beta_vae"]["mig"]["non_overlapping"] and not c["beta_vae"]["mig"]["ci95"]["non_overlapping"]
    # after Holm's correction over the 14 comparisons, none is significant at 0.05 (beta = 16's DCI D: 0.105)
    tests = results["comparison_with_beta_1"]["tests"]
    assert len(tests) == 14 and min(t["holm_p"] for t in tests) == pytest.approx(0.105, abs=0.01)
    assert not any(c[m][k]["ci95"]["non_overlapping"] for m in ("beta_tcvae", "factor_vae")
                   for k in ("mig", "dci_disentanglement"))


def test_comparison_with_the_vae_by_ranges_and_by_intervals_of_the_mean():
    def setting(method, weight, mig, dci):
        return {"method": method, "weight": weight, **{
            name: {"per_seed": v, "mean": float(np.mean(v)), "min": min(v), "max": max(v)}
            for name, v in (("mig", mig), ("dci_disentanglement", dci))}}
    vae = setting("beta_vae", 1.0, [0.010, 0.012, 0.011, 0.013, 0.030], [0.04, 0.05, 0.04, 0.05, 0.04])
    strong = setting("beta_vae", 16.0, [0.10, 0.12, 0.14, 0.11, 0.02], [0.10, 0.11, 0.12, 0.10, 0.11])
    weak = setting("beta_tcvae", 6.0, [0.011, 0.013, 0.012, 0.020, 0.010], [0.045, 0.04, 0.05, 0.04, 0.05])
    comparison = report.compare_to_vae([vae, strong, weak])
    out = comparison["best"]["beta_vae"]
    assert out["best_weight"] == 16.0
    # one bad seed makes the ranges overlap on MIG, but not the intervals of the mean
    assert not out["mig"]["non_overlapping"] and out["mig"]["ci95"]["non_overlapping"]
    assert out["dci_disentanglement"]["non_overlapping"] and out["mig"]["welch_p"] < 0.05
    from scipy import stats
    v = np.array(strong["mig"]["per_seed"])  # the interval by hand: mean +- t(0.975, 4) s / sqrt(5)
    half = stats.t.ppf(0.975, 4) * v.std(ddof=1) / np.sqrt(5)
    np.testing.assert_allclose(out["mig"]["ci95"]["best"], [v.mean() - half, v.mean() + half], rtol=1e-12)
    assert np.isnan(report.mean_ci95(np.array([0.5]))).all()
    # Holm over the 4 comparisons, by hand: sort the Welch p-values, multiply the i-th by 4 - i, running max
    tests = comparison["tests"]
    assert [(t["weight"], t["metric"]) for t in tests] == [(16.0, "mig"), (16.0, "dci_disentanglement"),
                                                           (6.0, "mig"), (6.0, "dci_disentanglement")]
    p = [stats.ttest_ind(s[m]["per_seed"], vae[m]["per_seed"], equal_var=False, alternative="greater").pvalue
         for s in (strong, weak) for m in ("mig", "dci_disentanglement")]
    order = np.argsort(p)
    expected, running = np.zeros(4), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * p[i]))
        expected[i] = running
    np.testing.assert_allclose([t["welch_p"] for t in tests], p, rtol=1e-12)
    np.testing.assert_allclose([t["holm_p"] for t in tests], expected, rtol=1e-12)
    assert comparison["correction"]["family_size"] == 4
    assert tests[1]["holm_p"] < 0.05 and tests[1]["conclusion"].startswith("higher than beta = 1")
    assert tests[2]["welch_p"] > 0.05 and tests[2]["conclusion"].startswith("not shown")
    assert out["dci_disentanglement"]["holm_p"] == tests[1]["holm_p"]


def test_holm_against_hand_computed_values():
    # p sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    np.testing.assert_allclose(report.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    np.testing.assert_allclose(report.holm([0.7, 0.8]), [1.0, 1.0])  # capped at 1
    got = report.holm([np.nan, 0.2, 0.6])  # a NaN (one seed) is left out of the family: n = 2
    assert np.isnan(got[0]) and got[1:].tolist() == pytest.approx([0.4, 0.6])
    assert report.conclusion(0.03, 0.3, 14).startswith("suggestive only")


@pytest.mark.parametrize("folder, trees", [("disentanglement", 100), ("disentanglement_dci20", 20)])
def test_committed_comparisons_follow_from_the_committed_summary(folder, trees):
    """docs/figures/{folder}/results.json: its Holm-corrected comparisons are what the code computes
    from its own per-seed values (``recompare``), and the page's conclusion follows from them."""
    results = json.loads((FIGURES / folder / "results.json").read_text())
    expected = json.loads(json.dumps(_common._jsonable(report.compare_to_vae(results["summary"]))))
    assert results["comparison_with_beta_1"] == expected
    assert results["dci_trees"] == trees == json.loads((FIGURES / folder / "config.json").read_text())["dci_trees"]
    tests = results["comparison_with_beta_1"]["tests"]
    assert len(tests) == 14 and not any(t["holm_p"] < 0.05 for t in tests)
    closest = min(tests, key=lambda t: t["holm_p"])
    assert (closest["method"], closest["weight"], closest["metric"]) == ("beta_vae", 16.0, "dci_disentanglement")
    expected_p = {100: (0.008, 0.105, 8), 20: (0.004, 0.057, 4)}[trees]
    assert (round(closest["welch_p"], 3), round(closest["holm_p"], 3),
            sum(t["welch_p"] < 0.05 for t in tests)) == expected_p


def test_page_results_table_is_the_committed_summary():
    """Every cell of docs/disentanglement.md's results table, recomputed from results.json's summary."""
    root = Path(__file__).parents[1]
    summary = json.loads((root / "docs/figures/disentanglement/results.json").read_text())["summary"]
    page = (root / "docs/disentanglement.md").read_text()
    names = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap", "factor_vae_score",
             "beta_vae_score", "reconstruction_error", "kl", "active_units")
    for s in summary:
        digits = lambda name: 1 if name in ("reconstruction_error", "kl", "active_units") else 3  # noqa: E731
        cells = [f"{s[n]['mean']:.{digits(n)}f} ± {s[n]['std']:.{digits(n)}f} "
                 f"[{s[n]['min']:.{digits(n)}f}, {s[n]['max']:.{digits(n)}f}]" for n in names]
        row = f"| {s['method']} | {s['weight']:g} | " + " | ".join(cells) + " |"
        assert row in page, row


def test_page_comparison_table_is_the_committed_comparison():
    """The page's "Against the target" tables, one row per comparison (the best settings with the seed
    readings, then the other eight): mean, Welch p, Holm p and conclusion as results.json has them (each
    number to the digits the page prints)."""
    results = json.loads((FIGURES / "disentanglement" / "results.json").read_text())
    comparison = results["comparison_with_beta_1"]
    tests = {(t["method"], t["weight"], t["metric"]): t for t in comparison["tests"]}
    page = (Path(__file__).parents[1] / "docs/disentanglement.md").read_text()
    page = page.split("## Against the target", 1)[1].split("\n## ", 1)[0]
    labels = {"beta-VAE, beta = ": "beta_vae", "beta-TCVAE, weight ": "beta_tcvae", "FactorVAE, gamma = ": "factor_vae"}
    rows = [r for r in page.splitlines() if r.startswith("| beta") or r.startswith("| Factor")]
    seen = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        setting, metric, mean, welch, holm, conclusion = cells[:3] + cells[-3:]
        prefix = next(p for p in labels if setting.startswith(p))
        key = (labels[prefix], float(setting[len(prefix):]), {"MIG": "mig", "DCI D": "dci_disentanglement"}[metric])
        got = tests[key]
        if len(cells) == 8:  # a best setting's row
            assert comparison["best"][key[0]]["best_weight"] == key[1]
        for text, value in ((mean, got["mean"]), (welch, got["welch_p"]), (holm, got["holm_p"])):
            decimals = len(text.split(".")[1])
            assert abs(float(text) - value) <= 0.5 * 10 ** -decimals, (row, text, value)
        assert got["conclusion"].startswith(conclusion), (row, got["conclusion"])
        seen.append(key)
    assert sorted(seen) == sorted(tests) and len(seen) == 14  # every comparison, once
