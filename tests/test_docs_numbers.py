"""Every number the docs pages and the README quote from a committed results file, recomputed from it.

Each page has a function that reads the page's results files and returns the texts the page must contain,
formatted from the data (table rows, and the numbers of the sentences around them). A page that drifts
from its data, or data rerun without the page, fails here and names the missing text. JSON reads only.
docs/disentanglement.md's two big tables are checked cell by cell in tests/test_experiment_disentanglement.py;
its other numbers are here. Not covered: docs/cli.md (its main job's run folder was not committed).
"""

import json
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
DENSITY = ROOT / "docs" / "results" / "density_table"
DENSITY_ROWS = ("vae", "vae_warmup", "vamp_warmup", "iwae5")
FINISHED_NEW_ROWS = ("hvae_warmup", "iaf_warmup", "hvae_vamp_warmup")  # finished in the new run folder


def _json(path):
    return json.loads((ROOT / path).read_text())


def _page(path):
    """The page's text with every run of whitespace made one space (so that wrapped lines match)."""
    return " ".join((ROOT / path).read_text().split())


def _sci(x, digits=2):
    """``4.9e3``-style: ``digits`` significant digits, no ``+`` or leading zeros in the exponent."""
    mantissa, exponent = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _lr(x):
    """A learning rate as the pages write it: ``1e-3``."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _g3(x):
    return f"{x:.3g}"


def _pct(x):
    return f"{100 * x:.0f}%"


# ----------------------------------------------------------------------------------------- beta-VAE


def beta_vae():
    r = _json("docs/figures/beta_vae/results.json")
    run = _json("docs/figures/beta_vae/run.json")
    models = r["models"]
    rows = [f"| {m['beta']:g} | {m['rate']:.2f} | {m['distortion']:.2f} | {m['elbo']:.2f} | {m['active_units']} | "
            f"{m['mig']:.3f} | {m['top_mi_fraction']:.3f} |" for m in models]
    by_beta = {m["beta"]: m for m in models}
    fractions = [m["top_mi_fraction"] for m in models]
    bias = (20 - 1) * (10 - 1) / (2 * r["test_size"])
    cfg = _json("docs/figures/beta_vae/config.json")
    betas = [f"{b:g}" for b in cfg["betas"]]
    mig_claim = "Here MIG stays below 0.1 at every beta" if max(m["mig"] for m in models) < 0.1 else "MIG >= 0.1"
    return rows + [
        mig_claim,
        f"Five VAEs are trained, with beta = {', '.join(betas[:-1])} and {betas[-1]}",
        f"MLP 784-{'-'.join(map(str, cfg['model']['hidden_sizes']))}-{cfg['latent_dim']} with a Bernoulli decoder",
        f"trained on {cfg['train_size']} training images for {cfg['epochs']} epochs with Adam "
        f"{_lr(cfg['learning_rate'])} and batches of {cfg['batch_size']}",
        f"At beta = 1 the tenth unit has variance {by_beta[1.0]['posterior_mean_variance'][0]:.4f}",
        f"at beta = 8 the fifth has {sorted(by_beta[8.0]['posterior_mean_variance'], reverse=True)[4]:.4f}",
        f"holds {_pct(min(fractions))} to {_pct(max(fractions))} of H(y) = {models[0]['label_entropy']:.2f} nats",
        f"(bins - 1)(classes - 1) / 2N = {bias:.3f} nats",
        f"took {r['train_seconds']:.0f} s of wall-clock time",
        f"The whole command took {run['wall_seconds'] / 60:.0f} minutes ({run['wall_seconds']:.0f} s",
        f"from {run['load_average_1_5_15_min_at_start'][0]:.1f} to {run['load_average_1_5_15_min_at_end'][0]:.1f}",
    ]


# -------------------------------------------------------------------------------------- likelihoods


def likelihoods():
    r = _json("docs/figures/likelihoods/results.json")
    run = _json("docs/figures/likelihoods/run.json")
    m = r["models"]
    g, gl, b = m["gaussian"], m["gaussian_learned"], m["bernoulli"]

    def row(label, data, x, bpd):
        return (f"| {label} | {data} | {x['log_likelihood']:.1f} +- {x['log_likelihood_stderr']:.1f} | {bpd} | "
                f"{x['elbo']:.1f} | {x['kl']:.1f} |")
    q = gl["log_sigma_quantiles"]
    return [
        row("Gaussian, sigma = 1", "8-bit", g, f"{g['bits_per_dim']:.3f}"),
        row("Gaussian, learned sigma", "8-bit", gl, f"**{gl['bits_per_dim']:.3f}**"),
        row("Bernoulli", "binarised", b, f"{b['bits_per_dim']:.3f}"),
        f"| uniform over 256 levels | 8-bit | {-r['dims'] * math.log(256):.1f} | "
        f"{r['uniform_bits_per_dim']['8-bit']:g} |",
        f"no decoder can beat {r['gaussian_sigma1_bound_bits_per_dim']:.2f} bits/dim",
        f"sits {g['bits_per_dim'] - r['gaussian_sigma1_bound_bits_per_dim']:.2f} bits/dim above that bound",
        f"carries only {g['kl']:.1f} nats",
        f"Learning sigma gains {g['bits_per_dim'] - gl['bits_per_dim']:.1f} bits/dim and makes the code carry "
        f"{gl['kl']:.0f} nats",
        f"log sigma ranged over [{q['min']:.2f}, {q['max']:.2f}] on the test images (median {q['median']:.2f})",
        f"{100 * gl['fraction_at_floor']:.3f}% of the pixels",
        f"Training took {b['train_seconds']:.0f} s (Bernoulli), {g['train_seconds']:.0f} s (sigma = 1) and "
        f"{gl['train_seconds']:.0f} s (learned sigma)",
        f"took {run['wall_seconds'] / 60:.1f} minutes ({run['wall_seconds']:.0f} s",
        f"from {run['load_average_1_5_15_min_at_start'][0]:.1f} (start) to "
        f"{run['load_average_1_5_15_min_at_end'][0]:.1f} (end)",
        f"{r['num_importance']} samples on {r['eval_size']} test images",
        f"{r['train_size']} training images, {_json('docs/figures/likelihoods/config.json')['epochs']} epochs each",
        f"m = -log(256 sqrt(2 pi)) = {-math.log(256 * math.sqrt(2 * math.pi)):.2f}",
    ]


# ------------------------------------------------------------------------------ gradient estimators

GRAD_ROWS = [("pathwise", "pathwise"), ("score", "score function, no baseline"),
             ("score_running_mean", "score function, running mean"),
             ("score_leave_one_out", "score function, leave-one-out"), ("stl", "STL"), ("iwae", "IWAE"),
             ("dreg", "DReG")]


def _variance_cell(x):
    """The variance table's cells: 3 significant digits below 2000 (``83.9``, ``480``, ``1150``), else ``4.9e3``."""
    if x < 100:
        return f"{x:.3g}"
    return f"{round(x, 2 - int(math.floor(math.log10(x)))):.0f}" if x < 2000 else _sci(x)


def gradient_estimators():
    r = _json("docs/figures/gradient_estimators/results.json")
    var, train = r["variance_through_training"], r["training"]
    texts = []
    for key, label in GRAD_ROWS:
        v = var[key]
        texts.append(f"| {label} | {_variance_cell(v['encoder'][0])} | {_variance_cell(v['encoder'][-1])} | "
                     f"{_variance_cell(v['decoder'][0])} | {_variance_cell(v['decoder'][-1])} |")
        t = train[key]
        texts.append(f"| {label} | {t['test_elbo'][-1]:.1f} | {t['test_log_px'][-1]:.1f} | {t['seconds']:.0f} |")
    enc = {k: np.asarray(var[k]["encoder"]) for k, _ in GRAD_ROWS}
    orders = np.log10(enc["score"] / enc["pathwise"])
    loo = enc["score_leave_one_out"] / enc["pathwise"]
    dreg = enc["dreg"] / enc["iwae"]
    elbo = {k: train[k]["test_elbo"][-1] for k, _ in GRAD_ROWS}
    log_px = {k: train[k]["test_log_px"][-1] for k, _ in GRAD_ROWS}
    texts += [
        f"{orders.min():.1f} to {orders.max():.1f} orders of magnitude",
        f"divides it by {round(enc['score'][0] / enc['score_running_mean'][0], -1):.0f} at initialisation",
        f"only by {enc['score'][-1] / enc['score_running_mean'][-1]:.0f} at epoch 20",
        f"brings it to {loo.min():.0f}-{loo.max():.0f} times the pathwise variance",
        f"ends {_pct(1 - enc['stl'][-1] / enc['pathwise'][-1])} below it",
        f"DReG's encoder variance is {dreg.min():.2f}-{dreg.max():.2f} times IWAE's",
        f"ends {log_px['pathwise'] - log_px['score']:.0f} nats behind pathwise in log p(x) "
        f"({elbo['pathwise'] - elbo['score']:.0f} in ELBO)",
        f"closes all but {log_px['pathwise'] - log_px['score_leave_one_out']:.1f}-"
        f"{elbo['pathwise'] - elbo['score_leave_one_out']:.0f} nats",
        f"{elbo['pathwise'] - elbo['iwae']:.1f} and {elbo['pathwise'] - elbo['dreg']:.1f} nats lower ELBO",
        f"test ELBO {min(train['score']['test_elbo']):.0f} at epoch {int(np.argmin(train['score']['test_elbo'])) + 1}",
        f"({r['seconds']:.0f} s in `results.json`'s `seconds`",
        f"STL starts above pathwise ({enc['stl'][0]:.0f} vs {enc['pathwise'][0]:.0f}) and ends "
        f"{_pct(1 - enc['stl'][-1] / enc['pathwise'][-1])} below it ({enc['stl'][-1]:.0f} vs "
        f"{enc['pathwise'][-1]:.0f})",
        "at epochs " + ", ".join(map(str, var["epoch"][:-1])) + f", {var['epoch'][-1]} each estimator's",
    ]
    return texts + _snr_texts(r) + _gradient_setup()


def _gradient_setup():
    cfg = _json("docs/figures/gradient_estimators/config.json")
    return [f"MLP VAE 784-{'-'.join(map(str, cfg['model']['hidden_sizes']))}-{cfg['latent_dim']}, Bernoulli decoder, "
            f"{cfg['train_size']} Fashion-MNIST training images (dynamically binarised), {cfg['test_size']} statically "
            f"binarised test images, Adam {_lr(cfg['learning_rate'])}, batch {cfg['batch_size']}, {cfg['epochs']} "
            f"epochs, k = {cfg['samples']} draws per example",
            f"fixed batch of {cfg['stat_batch']} images is drawn {cfg['draws']} times",
            f"on {cfg['snr_batch']} fixed images, {cfg['snr_draws']} draws per k",
            f"one observation, {cfg['reference_draws']} draws)",
            f"importance sampling with {cfg['marginal_samples']} draws"]


def _snr(x):
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _snr_texts(r):
    vae, lg = r["snr_against_k"], r["snr_against_k_linear_gaussian"]
    texts = []
    for est in ("iwae", "dreg"):
        e = vae[est]["encoder"]
        texts.append(f"{_snr(e['norm_snr'][0])} -> {_snr(e['norm_snr'][-1])}, slope {e['norm_snr_slope']:+.2f} "
                     f"({e['norm_snr_tail_slope']:+.2f})")
    d = vae["iwae"]["decoder"]
    texts.append(f"{_snr(d['norm_snr'][0])} -> {_snr(d['norm_snr'][-1])}, slope {d['norm_snr_slope']:+.2f} "
                 f"({d['norm_snr_tail_slope']:+.2f})")
    wide, narrow = lg["wide_q"], lg["narrow_q"]
    w = wide["iwae"]["encoder"]["norm_snr"]
    texts.append(f"{w[0]:.2f} -> {w[2]:.3f} (k = 16) -> {w[3]:.3f} (k = 64)")
    texts.append(f"({w[4]:.3f}, {w[5]:.0f}, {w[6]:.3f}); slope {wide['iwae']['encoder']['norm_snr_slope']:.2f}")
    for q, groups in ((wide, ("dreg",)), (narrow, ("iwae", "dreg"))):
        for est in groups:
            e = q[est]["encoder"]
            texts.append(f"{_snr(e['norm_snr'][0])} -> {_snr(e['norm_snr'][-1])}, slope {e['norm_snr_slope']:+.2f} "
                         f"({e['norm_snr_tail_slope']:+.2f})")
    for q in (wide, narrow):
        d = q["iwae"]["decoder"]
        texts.append(f"{_snr(d['norm_snr'][0])} -> {_snr(d['norm_snr'][-1])}, slope {d['norm_snr_slope']:+.2f} "
                     f"({d['norm_snr_tail_slope']:+.2f})")
    ratio = np.asarray(vae["dreg"]["encoder"]["norm_snr"]) / np.asarray(vae["iwae"]["encoder"]["norm_snr"])
    texts.append(f"DReG's staying {ratio.min():.1f} to {ratio.max():.2f} times IWAE's")
    texts.append(f"(1/sqrt(k) predicts {w[0] / math.sqrt(64):.3f})")
    texts.append(f"falls from {w[0]:.2f} to {w[3]:.3f} at k = 64")
    texts.append(f"sqrt(k) rise ({wide['dreg']['encoder']['norm_snr_tail_slope']:+.2f} over k = 256 .. 4096)")
    texts.append(f"grows only like k^{vae['iwae']['decoder']['norm_snr_slope']:.2f}")
    return texts


# ------------------------------------------------------------------------------ discrete estimators


def _study_a_rows(r, *, any_epoch):
    """Rows ``| name | f-evals | var per checkpoint ... | rel. bias (last) | max z (last) [| max z (any)] |``."""
    rows = []
    for name, checkpoints in r["enumerable"]["estimators"].items():
        enc = [c["encoder"] for c in checkpoints]
        cells = [str(r["evaluations_per_example"][name])] + [_g3(e["total_variance"]) for e in enc]
        cells += [f"{enc[-1]['relative_bias']:.3f}", f"{enc[-1]['max_z']:.1f}"]
        if any_epoch:
            cells.append(f"{max(e['max_z'] for e in enc):.1f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _seed_finals(r, name, column):
    """Final values over seeds of ``column`` in the Fashion-MNIST runs of estimator ``name``."""
    runs = r["fashion_mnist"]["runs"][name]
    return [run[column][-1] for run in (runs if isinstance(runs, list) else [runs])]


def _mean_sd(values):
    """``mean ± sd`` with the sample standard deviation (ddof = 1), the page's stated convention."""
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _encoder_variance(r, when, name):
    return r["fashion_mnist"]["variance"][when][name]["encoder"]["total_variance"]


def _study_b_rows(r, *, seeds, seconds_format):
    s, rows = r["fashion_mnist"]["summary"], []
    for name in r["fashion_mnist"]["runs"]:
        if seeds:
            cells = [str(r["evaluations_per_example"][name]), _mean_sd(_seed_finals(r, name, "train_elbo")),
                     _mean_sd(_seed_finals(r, name, "test_bound_100"))]
        else:
            cells = [f"{s[name]['train_elbo']:.2f}", f"{s[name]['test_bound_100']:.2f}"]
        cells += [f"{s[name]['train_elbo_at_equal_wall_clock']:.2f}", format(s[name]["seconds"], seconds_format),
                  _g3(_encoder_variance(r, "initial", name)), _g3(_encoder_variance(r, "disarm_trained", name))]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def discrete_estimators():
    quick = _json("docs/figures/discrete_estimators/results.json")
    medium = _json("docs/figures/discrete_estimators/medium/results.json")
    full = _json("docs/figures/discrete_estimators/full/results.json")
    texts = (_study_a_rows(quick, any_epoch=False) + _study_a_rows(medium, any_epoch=False)
             + _study_a_rows(full, any_epoch=True) + _study_b_rows(quick, seeds=False, seconds_format=".1f")
             + _study_b_rows(medium, seeds=False, seconds_format=".1f")
             + _study_b_rows(full, seeds=True, seconds_format=".0f"))
    equal_seconds = full["fashion_mnist"]["summary"]["equal_wall_clock_seconds"]
    texts.append(f"train ELBO at equal wall-clock ({equal_seconds:.0f} s)")
    for r in (quick, medium, full):
        e = r["enumerable"]
        texts.append(f"exact ELBO: {[round(x, 2) for x in e['exact_elbo']]}")
    return texts + _discrete_readings(quick, medium, full) + _medium_reading(medium) + _full_reading(full)


def _gap(r, when, a, b):
    return 1 - _encoder_variance(r, when, a) / _encoder_variance(r, when, b)


def _discrete_readings(quick, medium, full):
    v = lambda r, when, name: _sci(_encoder_variance(r, when, name))  # noqa: E731
    est = full["enumerable"]["estimators"]
    unbiased = ("reinforce", "reinforce_loo", "nvil", "vimco", "arm", "disarm", "disarm_iw", "rebar", "relax")
    max_z = lambda name: max(c["encoder"]["max_z"] for c in est[name])  # noqa: E731
    init_m, init_l = _encoder_variance(medium, "initial", "disarm"), _encoder_variance(medium, "initial",
                                                                                       "reinforce_loo")
    return [
        f"not at initialisation ({v(quick, 'initial', 'disarm')} vs {v(quick, 'initial', 'reinforce_loo')})",
        f"({v(quick, 'initial', 'disarm')} vs {v(quick, 'initial', 'arm')}, "
        f"{v(quick, 'disarm_trained', 'disarm')} vs {v(quick, 'disarm_trained', 'arm')})",
        f"{100 * _gap(medium, 'initial', 'disarm', 'arm'):.1f}% and "
        f"{100 * _gap(medium, 'disarm_trained', 'disarm', 'arm'):.1f}% lower",
        f"({_sci(_encoder_variance(medium, 'disarm_trained', 'disarm'), 3)} vs "
        f"{_sci(_encoder_variance(medium, 'disarm_trained', 'reinforce_loo'), 3)}: "
        f"{100 * _gap(medium, 'disarm_trained', 'disarm', 'reinforce_loo'):.1f}% lower)",
        f"{100 * (init_m / init_l - 1):.2f}% above it ({init_m:.0f} vs {init_l:.0f})",
        f"by {100 * _gap(full, 'initial', 'disarm', 'reinforce_loo'):.1f}% against LOO",
        f"(DisARM lowest, by {_pct(_gap(full, 'disarm_trained', 'disarm', 'reinforce_loo'))} against LOO)",
        f"stays within z = {max(max_z(n) for n in unbiased):.1f} of the exact gradient",
        f"Gumbel-softmax (z up to {max_z('gumbel_softmax'):.1f}, relative bias "
        f"{est['gumbel_softmax'][-1]['encoder']['relative_bias']:.2f} at epoch 20)",
        f"straight-through (z up to {max_z('straight_through'):.1f}, relative bias "
        f"{est['straight_through'][-1]['encoder']['relative_bias']:.2f})",
        f"({est['disarm'][-1]['encoder']['total_variance']:.3f} vs {est['arm'][-1]['encoder']['total_variance']:.3f} "
        f"at epoch 20)",
        f"encoder-gradient variance {_sci(_encoder_variance(full, 'initial', 'disarm_iw'), 3)} vs "
        f"{_sci(_encoder_variance(full, 'initial', 'vimco_k4'), 3)} at "
        f"initialisation and {_sci(_encoder_variance(full, 'disarm_trained', 'disarm_iw'), 3)} vs "
        f"{_sci(_encoder_variance(full, 'disarm_trained', 'vimco_k4'), 3)} after training",
    ]


def _last_encoder(r, name, key):
    return r["enumerable"]["estimators"][name][-1]["encoder"][key]


def _medium_reading(medium):
    unbiased = ("reinforce", "reinforce_loo", "nvil", "vimco", "arm", "disarm", "rebar", "relax")
    z = [_last_encoder(medium, n, "max_z") for n in unbiased]
    var = lambda name: _last_encoder(medium, name, "total_variance")  # noqa: E731
    v = lambda when, name: _sci(_encoder_variance(medium, when, name), 3)  # noqa: E731
    elbo = {n: medium["fashion_mnist"]["summary"][n]["train_elbo"] for n in medium["fashion_mnist"]["runs"]}
    return [
        f"largest z-score stays at {min(z):.1f}-{max(z):.1f} over the 650 encoder parameters",
        f"Gumbel-softmax ({_last_encoder(medium, 'gumbel_softmax', 'max_z'):.1f}, relative bias "
        f"{_last_encoder(medium, 'gumbel_softmax', 'relative_bias'):.2f}) and straight-through "
        f"({_last_encoder(medium, 'straight_through', 'max_z'):.1f}, relative bias "
        f"{_last_encoder(medium, 'straight_through', 'relative_bias'):.2f})",
        f"DisARM {var('disarm'):.3f} < ARM {var('arm'):.3f} < REINFORCE-LOO {var('reinforce_loo'):.3f}; REBAR/RELAX "
        f"(3 evaluations) {var('rebar'):.2f}/{var('relax'):.2f}",
        f"({v('initial', 'disarm')} vs {v('initial', 'arm')} initial, {v('disarm_trained', 'disarm')} vs "
        f"{v('disarm_trained', 'arm')} trained",
        f"DisARM's train ELBO ({elbo['disarm']:.1f}) is above ARM's ({elbo['arm']:.1f}) and LOO's "
        f"({elbo['reinforce_loo']:.1f}), REBAR/RELAX {elbo['rebar']:.1f}/{elbo['relax']:.1f}",
        f"ahead this early ({elbo['gumbel_softmax']:.1f}, {elbo['straight_through']:.1f})",
    ]


def _full_reading(full):
    e, summary = full["enumerable"], full["fashion_mnist"]["summary"]
    var = lambda name: [c["encoder"]["total_variance"] for c in e["estimators"][name]]  # noqa: E731
    below_all = all(d < a and d < l for d, a, l in zip(var("disarm"), var("arm"), var("reinforce_loo")))
    v = lambda when, name: _sci(_encoder_variance(full, when, name), 3)  # noqa: E731
    pm = lambda name, col: _mean_sd(_seed_finals(full, name, col))  # noqa: E731
    ranges = {n: (min(_seed_finals(full, n, "train_elbo")), max(_seed_finals(full, n, "train_elbo")))
              for n in ("disarm", "arm")}
    behind = [summary["disarm"]["train_elbo"] - summary[n]["train_elbo"] for n in ("reinforce", "nvil")]
    calls = {k: round(full["fashion_mnist"]["variance"][k]["seconds_with_compilation"], 1)
             for k in ("initial", "disarm_trained")}
    measure = e["measure_seconds"]
    return [
        "`measure seconds` (one compiled call, all estimators, 2000 draws): ["
        + ", ".join(f"{x:.1f}" for x in measure) + "]",
        f"(`measure seconds`: {min(measure):.0f}-{max(measure):.0f} s for eleven estimators",
        f"REBAR and RELAX reach {_last_encoder(full, 'rebar', 'max_z'):.1f} and "
        f"{_last_encoder(full, 'relax', 'max_z'):.1f} at epoch 20",
        ("below REINFORCE-LOO at every one" if below_all else "not below ARM and LOO at every checkpoint")
        + f" ({var('disarm')[-1]:.3f} vs {var('reinforce_loo')[-1]:.3f})",
        f"DisARM {v('initial', 'disarm')} vs ARM {v('initial', 'arm')} vs REINFORCE-LOO "
        f"{v('initial', 'reinforce_loo')}",
        f"{v('disarm_trained', 'disarm')} vs {v('disarm_trained', 'arm')} vs {v('disarm_trained', 'reinforce_loo')} "
        f"after DisARM's training",
        f"best train ELBO ({pm('disarm', 'train_elbo')}) and test bound ({pm('disarm', 'test_bound_100')}), then "
        f"REINFORCE-LOO ({pm('reinforce_loo', 'train_elbo')}), ARM ({pm('arm', 'train_elbo')}) and VIMCO "
        f"({pm('vimco', 'train_elbo')})",
        "the seed spreads do not overlap" if ranges["disarm"][0] > ranges["arm"][1] else "seed spreads overlap",
        f"are higher still ({summary['rebar']['train_elbo']:.1f}, {summary['relax']['train_elbo']:.1f})",
        f"highest after 3,600 steps ({summary['gumbel_softmax']['train_elbo']:.2f})",
        f"are {math.floor(min(behind) / 10) * 10}-{math.ceil(max(behind) / 10) * 10} nats behind",
        f"test 100-sample bound {pm('disarm_iw', 'test_bound_100')} vs {pm('vimco_k4', 'test_bound_100')}",
        f"train ELBO {summary['disarm_iw']['train_elbo']:.2f} vs {summary['vimco_k4']['train_elbo']:.2f}",
        f"The two variance calls took {calls}",
    ]


# --------------------------------------------------------------------------------------- AE vs VAE


def ae_vs_vae():
    rec = _json("docs/figures/ae_vs_vae/reconstructions/results.json")
    l2d = _json("docs/figures/ae_vs_vae/latent_2d/results.json")
    prior = _json("docs/figures/ae_vs_vae/prior_samples/results.json")
    runs = {n: _json(f"docs/figures/ae_vs_vae/{n}/run.json") for n in ("reconstructions", "latent_2d", "prior_samples")}
    err, floor = rec["per_image_errors"], rec["cross_entropy_floor"]

    def rec_row(label, e):
        return f"| {label} | {e['squared_error']:.2f} | {e['cross_entropy']:.1f} | {e['cross_entropy'] - floor:.1f} |"

    def pair(v, digits=2):
        return "(" + ", ".join(f"{x:.{digits}f}" for x in v) + ")"
    ae, vae = l2d["ae"], l2d["vae"]
    vae_sd = sorted(prior["vae"]["code_sd"])
    inactive = [sd for sd in vae_sd if sd ** 2 <= 0.01]
    loads = [x for n in ("reconstructions", "latent_2d") for x in (runs[n]["load_average_1_5_15_min_at_start"][0],
                                                                   runs[n]["load_average_1_5_15_min_at_end"][0])]
    train_seconds = [rec["train_seconds"]["ae"], rec["train_seconds"]["vae"], ae["train_seconds"], vae["train_seconds"]]
    ps = runs["prior_samples"]
    return [
        rec_row("AE", err["ae"]), rec_row("VAE (decoded posterior mean)", err["vae"]),
        rec_row("constant: mean training image", err["mean_image"]),
        f"sum_j H(x_j) = {floor:.1f} nats",
        f"test ELBO is {rec['vae_test']['elbo']:.1f} nats (`vae_test`: expected reconstruction term "
        f"{rec['vae_test']['reconstruction_log_likelihood']:.1f} with z ~ q, KL {rec['vae_test']['kl']:.1f})",
        f"| AE codes | {pair(ae['mean'])} | {pair(ae['sd'])} | {ae['fitted_gaussian_kl']:.3f} | "
        f"{ae['knn5_test_accuracy']:.3f} |",
        f"| VAE posterior means | {pair(vae['mean'])} | {pair(vae['sd'])} | {vae['fitted_gaussian_kl']:.3f} (one z ~ "
        f"q(z\\|x) per image: {vae['fitted_gaussian_kl_q_samples']:.3f}) | {vae['knn5_test_accuracy']:.3f} |",
        f"z1 in [{ae['percentile_1'][0]:.2f}, {ae['percentile_99'][0]:.2f}], z2 in [{ae['percentile_1'][1]:.2f}, "
        f"{ae['percentile_99'][1]:.2f}]",
        f"| AE codes | {prior['ae']['fitted_gaussian_kl_codes']:.1f} |",
        f"per image (aggregate posterior) | **{prior['vae']['fitted_gaussian_kl_q_samples']:.3f}** |",
        f"| VAE posterior means | {prior['vae']['fitted_gaussian_kl_codes']:.1f} |",
        f"Only {prior['vae']['active_units']} of the 32 means have variance above 0.01",
        f"the other {len(inactive)} have sds of {min(inactive):.3f} to {max(inactive):.3f}",
        f"code sds range from {min(prior['ae']['code_sd']):.2f} to {max(prior['ae']['code_sd']):.2f}",
        f"took {runs['reconstructions']['wall_seconds']:.0f} s (reconstructions) and "
        f"{runs['latent_2d']['wall_seconds']:.0f} s (latent_2d)",
        f"with {min(train_seconds):.0f} to {max(train_seconds):.0f} s of training per model",
        f"between {min(loads):.0f} and {max(loads):.0f}",
        f"(5-NN accuracy {ae['knn5_test_accuracy']:.3f} vs {vae['knn5_test_accuracy']:.3f})",
        f"took {ps['wall_seconds']:.0f} s ({prior['ae']['train_seconds']:.0f} s of training for the AE, "
        f"{prior['vae']['train_seconds']:.0f} s for the VAE) as the load fell from "
        f"{ps['load_average_1_5_15_min_at_start'][0]:.1f} to {ps['load_average_1_5_15_min_at_end'][0]:.1f}",
    ]


# ---------------------------------------------------------------------------------- density table


def _density_rows(more=()):
    return {name: _json(f"docs/results/density_table/{name}.json") for name in DENSITY_ROWS + more}


def _pairs():
    return {(p["a"], p["b"]): p for p in _json("docs/results/density_table/paired_differences.json")["pairs"]}


def _pm(mean, se):
    return f"{mean:.2f} ± {se:.2f}"


def density_tables():
    """The state table, the pairs table and the table of rows (what ``--snapshot --page`` and hand wrote)."""
    rows, texts = _density_rows(FINISHED_NEW_ROWS), []
    for name, r in rows.items():
        texts.append(f"| {r['label']} | **finished** (early stopping) | {r['epochs']} | "
                     f"{r['best_validation_objective']:.2f} ({r['best_epoch']})")
        texts.append(f"| {r['history'][-1]['seconds']:.0f} | final: "
                     f"{_pm(r['test_log_px_mean'], r['test_log_px_stderr'])}, test ELBO {r['test_elbo']:.2f}, "
                     f"{r['active_units']}/{r['latent_dim']} active units (epoch {r['best_epoch']}) | "
                     "none (finished) |")
        texts.append(f"**{_pm(r['test_log_px_mean'], r['test_log_px_stderr'])}** (test ELBO {r['test_elbo']:.2f}, "
                     f"{r['active_units']}/{r['latent_dim']} active units; early-stopped at epoch {r['epochs']}, "
                     f"best {r['best_epoch']};")
        texts.append(f"log p(x) {r['log_px_seconds'] / 60:.0f} min")
        if name != "vae_warmup":
            texts.append(f"{r['train_seconds_total'] / 60:.0f} min of training")
    for (a, b), p in _pairs().items():
        texts.append(f"| {rows[a]['label']} − {rows[b]['label']} | {p['mean_difference']:+.2f} | "
                     f"{p['paired_stderr']:.2f} | {p['unpaired_stderr']:.2f} | final ({p['a_best_epoch']}), "
                     f"final ({p['b_best_epoch']}) |")
    return texts


def density_text():
    rows, pairs = _density_rows(), _pairs()
    lp = {n: r["test_log_px_mean"] for n, r in rows.items()}
    gain = lambda a, b: f"{-pairs[(a, b)]['mean_difference']:.2f} ± {pairs[(a, b)]['paired_stderr']:.2f}"  # noqa: E731
    seconds = [rows[n]["log_px_seconds"] for n in DENSITY_ROWS]
    texts = [
        f"misses its target by {-229.2 - lp['vae']:.2f} nats** ({lp['vae']:.2f} against >= -229.2; "
        f"{-228.70 - lp['vae']:.2f} below the published -228.70)",
        f"{gain('vae', 'vae_warmup')} nats (paired) above the VAE without warm-up",
        f"The margin, {lp['vamp_warmup'] + 227.35:.2f} nats",
        f"+{gain('vae_warmup', 'vamp_warmup')} nats (paired) over VAE + warm-up",
        f"is {-226.75 - lp['vamp_warmup']:.2f} nats away",
        f"spread is about {rows['vae']['test_log_px_stderr'] * math.sqrt(rows['vae']['test_images']):.0f} nats",
        f"The VampPrior's gain over the VAE, {-pairs[('vae', 'vamp_warmup')]['mean_difference']:.2f} nats",
        f"warm-up's, {-pairs[('vae', 'vae_warmup')]['mean_difference']:.2f} nats",
        f"normal prior is {gain('vae_warmup', 'vamp_warmup')} nats (final rows)",
        f"is {gain('vae', 'iwae5')} nats above the VAE without warm-up and {gain('vae_warmup', 'iwae5')} above the "
        f"VAE with it, with {rows['iwae5']['active_units']} active units against {rows['vae']['active_units']} and "
        f"{rows['vae_warmup']['active_units']}",
        f"({rows['vae_warmup']['best_validation_objective']:.2f} at its best epoch, "
        f"{rows['vae_warmup']['best_epoch']}, "
        f"against the VAE without warm-up's best, {rows['vae']['best_validation_objective']:.2f})",
        f"the final ones took {min(seconds) / 60:.0f}-{max(seconds) / 60:.0f} minutes ({min(seconds):.0f} to "
        f"{max(seconds):.0f} s",
    ]
    h = _density_rows(FINISHED_NEW_ROWS)["hvae_warmup"]
    unpaired = math.hypot(h["test_log_px_stderr"], rows["vae_warmup"]["test_log_px_stderr"])
    texts.append(f"{_pm(h['test_log_px_mean'], h['test_log_px_stderr'])}** (published -227.37), "
                 f"{h['test_log_px_mean'] - lp['vae_warmup']:.2f} nats above our VAE + warm-up and "
                 f"{lp['vamp_warmup'] - h['test_log_px_mean']:.2f} below our one-layer VampPrior")
    texts.append(f"the standard error of each difference is about {unpaired:.2f} nats")
    f = _density_rows(FINISHED_NEW_ROWS)["iaf_warmup"]
    flow_gap = pairs[("hvae_warmup", "iaf_warmup")]
    assert f["protocol"] and f["test_images"] == 10000 and f["num_samples"] == 5000
    texts += [f"**VAE + IAF (2 steps): {_pm(f['test_log_px_mean'], f['test_log_px_stderr'])}** (no published row; "
              f"{flow_gap['mean_difference']:.2f} ±\n{flow_gap['paired_stderr']:.2f} nats below the HVAE, paired)",
              f"| VAE + IAF (2 steps) + warm-up, ours (protocol) | **{_pm(f['test_log_px_mean'], f['test_log_px_stderr'])}"
              f"** (test ELBO {f['test_elbo']:.2f}, {f['active_units']}/{f['latent_dim']} active units; early-stopped "
              f"at epoch {f['epochs']}, best {f['best_epoch']}; {f['train_seconds_total'] / 60:.0f} min of training at "
              f"the lowest priority on a shared core, log p(x) {f['log_px_seconds'] / 60:.0f} min) — no published row; "
              f"{flow_gap['mean_difference']:.2f} ± {flow_gap['paired_stderr']:.2f} nats below our HVAE (paired)",
              f"**{_pm(f['test_log_px_mean'], f['test_log_px_stderr'])}**, {flow_gap['mean_difference']:.2f} ± "
              f"{flow_gap['paired_stderr']:.2f} nats below the HVAE on the same test",
              f"its {f['test_log_px_mean'] - lp['vae_warmup']:.2f} nats over our VAE + warm-up is\nunpaired again "
              f"(standard error about {math.hypot(f['test_log_px_stderr'], rows['vae_warmup']['test_log_px_stderr']):.2f})"]
    pm = {n: _pm(r["test_log_px_mean"], r["test_log_px_stderr"]) for n, r in rows.items()}
    vw, vp = rows["vae_warmup"], rows["vamp_warmup"]
    texts += [f"(with warm-up {pm['vae_warmup']}, meeting the target; without {pm['vae']})",
              f"(K = 500) + warm-up ({pm['vamp_warmup']}, meeting its target", f"IWAE k = 5 ({pm['iwae5']})",
              f"It early-stopped at epoch {vw['epochs']} (best {vw['best_epoch']}), and its final row is "
              f"**{pm['vae_warmup']}**",
              f"with {vp['active_units']} of {vp['latent_dim']} units active, early-stopped at epoch {vp['epochs']} "
              f"(best {vp['best_epoch']})",
              f"only {rows['vae']['active_units']} of its {rows['vae']['latent_dim']} latent units are active (with "
              f"warm-up: {vw['active_units']} of {vw['latent_dim']}; the VampPrior + warm-up row: "
              f"{vp['active_units']})"]
    for name, label in (("vae", "the VAE"), ("vae_warmup", "VAE + warm-up"), ("vamp_warmup", "the VampPrior"),
                        ("iwae5", "IWAE k = 5")):
        s = [h["seconds"] for h in rows[name]["history"]]
        texts.append(f"{statistics.median(s):.0f} s for {label} ({min(s):.0f} to {max(s):.0f} s)")
    iwae = {h["epoch"]: h["seconds"] for h in rows["iwae5"]["history"]}
    texts.append(f"median epoch was {statistics.median(iwae[e] for e in range(475, 622)):.0f} s on one thread "
                 f"(epochs 475-621, core 0 alone) and {statistics.median(iwae[e] for e in range(625, 924)):.0f} s")
    return texts + density_cost()


def density_cost():
    load = _json("benchmarks/results/density_cost.json")
    idle = _json("benchmarks/results/density_cost_idle.json")
    second = _json("benchmarks/results/density_cost_2.json")
    ratios = {n: _json(f"benchmarks/results/density_step_ratios{s}.json")
              for n, s in (("load", ""), ("idle", "_idle"), ("1", "_1thread"), ("2", "_2threads"))}
    texts = [f"{ratios['2']['ms_per_step']['iwae5']:.1f} against {ratios['1']['ms_per_step']['iwae5']:.1f} ms a step",
             f"same-run matmul rate ({load['matmul_gflops']:.2f} GFLOP/s)",
             f"{load['matmul_gflops']:.2f} GFLOP/s, is {idle['matmul_gflops'] / load['matmul_gflops']:.0f}x below",
             f"load average was {load['load_average_1_5_15_before'][0]:.0f} before and "
             f"{load['load_average_1_5_15_after'][0]:.0f} after",
             f"same-run matmul rate {second['matmul_gflops']:.1f} GFLOP/s; epoch {second['epoch']['seconds']:.2f} s",
             f"{second['epoch']['gflops']:.1f} GFLOP/s ({_pct(second['epoch']['fraction_of_matmul_rate'])}); log p(x) "
             f"{second['log_marginal']['seconds']:.1f} s",
             f"{second['log_marginal']['gflops']:.1f} GFLOP/s "
             f"(**{_pct(second['log_marginal']['fraction_of_matmul_rate'])}**)",
             f"| {load['epoch']['seconds']:.1f} | {load['epoch']['gflops']:.2f} | "
             f"{_pct(load['epoch']['fraction_of_matmul_rate'])} |",
             f"| {load['log_marginal']['seconds']:.0f} | {load['log_marginal']['gflops']:.2f} | "
             f"**{_pct(load['log_marginal']['fraction_of_matmul_rate'])}** |",
             f"| {idle['epoch']['seconds']:.2f} | {idle['epoch']['projected_seconds_50000']:.1f} s per 50000-image "
             f"epoch | "
             f"{idle['epoch']['gflops']:.1f} | {_pct(idle['epoch']['fraction_of_matmul_rate'])} |",
             f"| {idle['log_marginal']['seconds']:.1f} | **{idle['log_marginal']['projected_seconds_10000']:.0f} s** "
             f"for 10000 images | {idle['log_marginal']['gflops']:.1f} | "
             f"**{_pct(idle['log_marginal']['fraction_of_matmul_rate'])}** |",
             f"was {idle['matmul_rates'][0]['gflops']:.1f} GFLOP/s in the same run",
             f"({idle['flops_per_example']['decode'] / 1e5:.1f}e5 per decoded z",
             f"fell to {idle['load_average_1_5_15_before'][0]:.2f}; {idle['load_average_1_5_15_after'][0]:.2f} after"]
    ms = {k: r["ms_per_step"] for k, r in ratios.items()}
    for row in ("vae", "vamp", "iwae5", "iwae50"):
        relative = [format(ms[k][row] / ms[k]["vae"], ".1f") if row != "vae" else "1" for k in ("load", "idle")]
        epoch = 500 * ms["idle"][row] / 1000  # seconds for 500 steps
        epoch_text = f"{epoch:.1f}" if epoch < 100 else f"{epoch:.0f}"
        texts.append(f"| {ms['load'][row]:.0f} | {relative[0]} | {ms['idle'][row]:.1f} | {relative[1]} | "
                     f"{epoch_text} s |")
    texts.append(f"the load average fell to {ratios['idle']['load_average_1min'][0]:.2f}; "
                 f"{ratios['idle']['load_average_1min'][1]:.2f} after")
    return texts


# -------------------------------------------------------------------------------------- benchmarks

BENCH_LABELS = {"vae_jax epoch scan": "vae_jax epoch scan", "vae_jax per-step loop": "vae_jax per-step loop",
                "hand-written jax step": "hand-written JAX step", "pytorch eager": "PyTorch eager",
                "pytorch compile": "PyTorch `torch.compile`", "vae_jax epoch scan bf16": "vae_jax epoch scan, bf16",
                "pytorch eager bf16 autocast": "PyTorch eager, bf16 autocast",
                "pytorch compile bf16 autocast": "PyTorch compile, bf16 autocast"}


def _bench():
    cpu = _json("benchmarks/results/cpu.json")
    return cpu, {(t["implementation"], t["batch_size"]): t for t in cpu["train"]}


def current_code_run():
    """The numbers of docs/benchmarks.md's first section: the valid run of the current code."""
    cpu = _json("benchmarks/results/cpu_2026-12-05b.json")
    assert cpu["timings_valid"]
    speed = {(t["implementation"], t["batch_size"]): t["examples_per_second"] for t in cpu["train"]}
    r = {k: v["value"] for k, v in cpu["ratios"].items()}
    eps = lambda impl, b: f"{speed[(impl, b)]:,.0f}"  # noqa: E731
    return [f"load average {cpu['machine']['load_average_1_5_15_min_before'][0]:.2f} before it started, and other "
            f"processes used at most {cpu['max_other_processes_cores']:.2f} cores",
            f"vae_jax's epoch scan {eps('vae_jax epoch scan', 128)}; the hand-written step "
            f"{eps('hand-written jax step', 128)}; PyTorch eager {eps('pytorch eager', 128)}; `torch.compile` "
            f"{eps('pytorch compile', 128)}.",
            f"scan is {r['scan_over_handwritten_at_128']:.2f}x the hand-written step (target 0.97), "
            f"{r['scan_over_torch_eager_at_128']:.2f}x eager (target 1.5;",
            f"{r['scan_over_torch_compile_at_128']:.2f}x `torch.compile` (target 1.2)",
            f"row is {r['best_vae_jax_over_fastest_pytorch_at_1024']:.2f}x the fastest PyTorch and the scan reaches "
            f"{r['scan_fraction_of_matmul_rate_at_1024'] * 100:.0f}% of the matmul",
            f"the scan is {speed[('vae_jax epoch scan', 100)] / speed[('hand-written jax step', 100)]:.2f}x the "
            f"hand-written step ({eps('vae_jax epoch scan', 100)} against {eps('hand-written jax step', 100)})",
            f"The bf16 scan is {speed[('vae_jax epoch scan bf16', 128)] / speed[('vae_jax epoch scan', 128)]:.2f}x its "
            f"float32 speed at batch 128 ({eps('vae_jax epoch scan bf16', 128)})"] + kernel_count()


def kernel_count():
    density = _json("benchmarks/results/kernel_count.json")["models"][0]
    lib, hand = density["vae_jax epoch scan"], density["hand-written jax step"]
    assert density["model"] == "784-300-300-40" and lib["dots"] == hand["dots"]
    return [f"finds the same {lib['dots']} dots in both compiled epochs but {lib['loop_fusions']} element-wise loop",
            f"fusions in the library's against {hand['loop_fusions']} in the hand-written one, and {lib['xors']} `xor`",
            f"instructions against {hand['xors']}"]


def benchmarks():
    cpu, t = _bench()
    texts = []
    for (impl, batch), row in t.items():
        if (impl, batch) in {("pytorch eager bf16 autocast", 1024), ("pytorch compile bf16 autocast", 1024),
                             ("pytorch eager bf16 autocast", 100), ("pytorch compile bf16 autocast", 100)}:
            continue  # these share a row: checked below
        bold = "**" if impl == "vae_jax epoch scan" else ""
        texts.append(f"| {BENCH_LABELS[impl]} | {row['model']} | {batch} | "
                     f"{bold}{row['examples_per_second']:,.0f}{bold} | {_pct(row['fraction_of_matmul_rate'])} | "
                     f"{bold}{row['ratio_to_fastest_pytorch']:.2f}{bold} |")
    for batch, model in ((1024, "784-512-512-32"), (100, "784-300-300-40")):
        e, c = t[("pytorch eager bf16 autocast", batch)], t[("pytorch compile bf16 autocast", batch)]
        texts.append(f"| PyTorch eager / compile, bf16 autocast | {model} | {batch} | "
                     f"{e['examples_per_second']:,.0f} / {c['examples_per_second']:,.0f} | "
                     f"{_pct(c['fraction_of_matmul_rate'])} | {c['ratio_to_fastest_pytorch']:.2f} |")
    r = cpu["ratios"]
    lm = {x["compiler"]: x for x in cpu["log_marginal"]}
    speed = lambda impl, batch: t[(impl, batch)]["examples_per_second"]  # noqa: E731
    bf16 = [speed("vae_jax epoch scan bf16", b) / speed("vae_jax epoch scan", b) for b in (128, 1024, 100)]
    autocast = [speed(f"pytorch {m}", b) / speed(f"pytorch {m} bf16 autocast", b)
                for m in ("eager", "compile") for b in (128, 1024, 100)]
    by_hand = [speed("vae_jax epoch scan", b) / speed("hand-written jax step", b) for b in (1024, 100)]
    sweep = cpu["sweep"]
    return texts + current_code_run() + [
        f"the matmul rate is the best of 15 float32 probes ({cpu['matmul_rate_gflops']:.0f} GFLOP/s)",
        f"load average {cpu['machine']['load_average_1_5_15_min_before'][0]:.2f} before it started, and other "
        f"processes used at most {cpu['max_other_processes_cores']:.2f} cores",
        f"| {r['scan_over_handwritten_at_128']['value']:.2f} ({r['scan_over_handwritten_at_128']['value']:.3f}); "
        f"{by_hand[0]:.2f} at 1024; {by_hand[1]:.2f} on the density model |",
        f"| {r['scan_over_torch_compile_at_128']['value']:.2f}x | met |",
        f"| {r['scan_over_torch_eager_at_128']['value']:.2f}x | **missed by "
        f"{_pct(1 - r['scan_over_torch_eager_at_128']['value'] / 1.5)}** |",
        f"| {r['best_vae_jax_over_fastest_pytorch_at_128']['value']:.2f}x / "
        f"{r['best_vae_jax_over_fastest_pytorch_at_1024']['value']:.2f}x |",
        f"| {_pct(r['scan_fraction_of_matmul_rate_at_1024']['value'])} | met |",
        f"took {sweep['stacked_seconds']:.1f} s, one after the other {sweep['sequential_seconds']:.1f} s "
        f"({sweep['sequential_over_stacked']:.2f}x)",
        f"{lm['default XLA']['seconds_per_1000_images']:.0f} s per 1000 test images "
        f"({_pct(lm['default XLA']['fraction_of_matmul_rate'])} of the matmul rate)",
        f"**{lm['Eigen matmuls']['seconds_per_1000_images']:.1f} s** "
        f"({_pct(lm['Eigen matmuls']['fraction_of_matmul_rate'])})",
        f"In bf16: {lm['bf16']['seconds_per_1000_images']:.0f} s per 1000 images, mean log p(x) "
        f"{-lm['bf16']['difference_to_float32_nats']:.3f} nats below float32",
        f"runs at {min(bf16):.2f}-{max(bf16):.2f}x its float32 speed",
        f"({min(autocast):.0f}-{max(autocast):.0f}x slower than its float32)",
        f"(best vae_jax {r['best_vae_jax_over_fastest_pytorch_at_128']['value']:.2f}x the fastest PyTorch at batch "
        f"128, "
        f"{r['best_vae_jax_over_fastest_pytorch_at_1024']['value']:.2f}x at 1024)",
    ] + _profile() + _bench_setup(cpu)


def _bench_setup(cpu):
    c, v, sweep = cpu["config"], cpu["machine"]["versions"], cpu["sweep"]
    betas = ", ".join(f"{b:g}" for b in sweep["betas"])
    return [f"That run ({cpu['started'][:10]})", f"epochs of {c['examples']:,} Fashion-MNIST images",
            f"(MLP 784-{'-'.join(map(str, c['hidden_sizes']))}, {c['latent_dim']} latents) at batch "
            f"{c['batch_sizes'][0]} and {c['batch_sizes'][1]}",
            f"(784-{'-'.join(map(str, c['density_hidden_sizes']))}, {c['density_latent_dim']} latents, plain ReLU "
            f"layers) at batch {c['density_batch_size']}",
            f"Each time is the median of {c['repeats']} epochs",
            f"jax {v['jax']}, flax {v['flax']}, optax {v['optax']}, torch {v['torch']}",
            f"{sweep['models']} models (beta in {{{betas}}} x {len(sweep['seeds'])} seeds, batch "
            f"{sweep['batch_size']})",
            f"log p(x) with {c['log_marginal_samples']} importance samples"]


def _profile():
    profile = {p["batch_size"]: p for p in _json("benchmarks/results/cpu_profile.json")["results"]}[128]
    earlier = _json("benchmarks/results/cpu_earlier_run.json")
    f = profile["fraction_of_step"]
    return [f"matmuls at {profile['matmul_gflops']:.0f} GFLOP/s (that machine's best matmul probe: "
            f"{earlier['matmul_rate_gflops']:.0f} GFLOP/s", f"taking {_pct(f['matmuls'])} of the time, Adam "
            f"({_pct(f['adam'])}) and element-wise work and XLA:CPU's per-operation overhead ({_pct(f['rest'])})"]


def marginal_likelihood():
    lm = {x["compiler"]: x for x in _json("benchmarks/results/cpu.json")["log_marginal"]}
    speedup = lm["default XLA"]["seconds_per_1000_images"] / lm["Eigen matmuls"]["seconds_per_1000_images"]
    return [f"how to make it {speedup:.1f}x faster there"]


# --------------------------------------------------------------------------------- disentanglement

DIS = "docs/figures/disentanglement"
DIS20 = "docs/figures/disentanglement_dci20"
DIS_LABELS = {"beta_vae": "beta-VAE, beta = ", "beta_tcvae": "beta-TCVAE, weight ", "factor_vae": "FactorVAE, gamma = "}
WORDS = {4: "four", 8: "eight"}


def _dis_rows(path):
    return {(r["method"], r["weight"], r["seed"]): r for r in _json(f"{path}/results.json")["rows"]}


def _dis_summary(path):
    return {(s["method"], s["weight"]): s for s in _json(f"{path}/results.json")["summary"]}


def _dis_identical(new, old):
    """The models the two runs share bit for bit (every stored value that does not depend on the DCI rounds)."""
    names = ("mig", "sap", "factor_vae_score", "beta_vae_score", "reconstruction_error", "kl", "final_train_loss")
    return [k for k in new if all(new[k][n] == old[k][n] for n in names)]


def disentanglement():
    cfg, results = _json(f"{DIS}/config.json"), _json(f"{DIS}/results.json")
    seconds = results["seconds_per_seed"].values()
    assert cfg["dci_trees"] == results["dci_trees"] == 100 and _json(f"{DIS20}/config.json")["dci_trees"] == 20
    args = (f"--betas {' '.join(f'{b:g}' for b in cfg['betas'])} --tc-weights "
            f"{' '.join(f'{w:g}' for w in cfg['tc_weights'])} --gammas {' '.join(f'{g:g}' for g in cfg['gammas'])} "
            f"--epochs {cfg['epochs']}")
    texts = [f"--out {cfg['out']}", f"{args} --no-progress", f"{args} --dci-trees 20 --no-progress",
             f"{results['wall_seconds_this_call']:,.0f} s of wall time",
             f"{min(seconds):,.0f}-{max(seconds):,.0f} s per seed",
             f"load average of {min(results['load_average_before']):.1f}-{max(results['load_average_before']):.1f}"]
    texts += _dis_target(results["comparison_with_beta_1"], _dis_summary(DIS))
    return texts + _dis_rounds() + _dis_findings(_dis_summary(DIS))


def _dis_target(comparison, s):
    tests, best = comparison["tests"], comparison["best"]
    vae = s[("beta_vae", 1.0)]
    texts = [f"(VAE: MIG {vae['mig']['mean']:.3f}, DCI D {vae['dci_disentanglement']['mean']:.3f})"]
    for method, b in best.items():
        for m, label in (("mig", "MIG"), ("dci_disentanglement", "DCI D")):
            ci, mean = b[m]["ci95"], s[(method, b["best_weight"])][m]["mean"]
            texts += [f"| {DIS_LABELS[method]}{b['best_weight']:g} | {label} | {mean:.3f} | "
                      f"{'yes' if b[m]['non_overlapping'] else 'no'} (min {b[m]['best_min']:.3f}",
                      f") | {'yes' if ci['non_overlapping'] else 'no'} ([{ci['best'][0]:.3f}, {ci['best'][1]:.3f}]"]
            if method == "beta_vae":  # the first rows also give the VAE's side
                side = ">" if b[m]["non_overlapping"] else "<"
                texts += [f"{b[m]['best_min']:.3f} {side} VAE max {b[m]['vae_max']:.3f})",
                          f"{ci['best'][1]:.3f}] vs [{ci['vae'][0]:.3f}, {ci['vae'][1]:.3f}])"]
    closest = min(tests, key=lambda t: t["holm_p"])
    tc_mig = best["beta_tcvae"]["mig"]
    b16 = s[("beta_vae", 16.0)]["mig"]["per_seed"]
    return texts + [
        f"the smallest Holm-adjusted p is {closest['holm_p']:.2f}, beta = {closest['weight']:g}'s DCI "
        f"disentanglement (p = {closest['welch_p']:.3f} alone)",
        f"{WORDS[sum(t['welch_p'] < 0.05 for t in tests)].capitalize()} of the {len(tests)} comparisons have p < 0.05",
        f"clears the VAE's MIG range by {tc_mig['best_min'] - tc_mig['vae_max']:.3f}, which no test supports "
        f"(p = {tc_mig['welch_p']:.3f} alone)",
        f"seeds at MIG {', '.join(f'{v:.3f}' for v in b16[:-1])} and {b16[-1]:.3f}"]


def _dis_rounds():
    new, old = _dis_rows(DIS), _dis_rows(DIS20)
    rescored = _json(f"{DIS}/dci_20_rounds.json")
    names = ("dci_disentanglement", "dci_completeness", "dci_informativeness")
    same = _dis_identical(new, old)
    differ = [k for k in new if k not in same]
    assert {(k[0], k[1]) for k in differ} == {("beta_tcvae", 6.0)}
    at20 = {(r["method"], r["weight"], r["seed"]): r for r in rescored["rows"]}
    assert all(at20[k][n] == old[k][n] for k in same for n in names)  # the rescoring reproduces the 20-round run
    assert all(r[n] > r["run"][n] for r in rescored["rows"] for n in names[:2])
    assert all(r[names[2]] < r["run"][names[2]] for r in rescored["rows"])
    gap = lambda n: max(abs(new[k][n] - old[k][n]) for k in differ)  # noqa: E731
    tc6 = lambda rows, n: statistics.mean(rows[k][n] for k in differ)  # noqa: E731
    texts = [f"{len(same)} of its {len(new)} models equal the 20-round run's to the last bit",
             f"(MIG by up to {gap('mig'):.3f}, reconstruction error by up to {gap('reconstruction_error'):.2f} nats, "
             f"mean MIG {tc6(old, 'mig'):.3f} there, {tc6(new, 'mig'):.3f} here)",
             f"For the {len(same)} identical models the rescored DCI equals the 20-round run's stored DCI exactly",
             f"had a mean DCI D of {tc6(old, 'dci_disentanglement'):.3f})",
             f"On every one of the {len(rescored['rows'])} models, 20 rounds give a higher DCI disentanglement"]
    for x in rescored["summary"]:
        d, c, i = (x[n] for n in names)
        f = lambda v: (f"{v['difference']['mean']:+.3f} [{v['difference']['min']:+.3f}, "  # noqa: E731
                       f"{v['difference']['max']:+.3f}]")
        texts.append(f"| {DIS_LABELS[x['method']]}{x['weight']:g} | {d['mean']:.3f} | {d['run_mean']:.3f} | {f(d)} | "
                     f"{c['mean']:.3f} / {c['run_mean']:.3f} | {i['mean']:.3f} / {i['run_mean']:.3f} |")
    by = {(x["method"], x["weight"]): x["dci_disentanglement"] for x in rescored["summary"]}
    tests20 = _json(f"{DIS20}/results.json")["comparison_with_beta_1"]["tests"]
    closest20 = min(tests20, key=lambda t: t["holm_p"])
    return texts + [
        "the VAE's mean DCI D falls from {mean:.3f} to {run_mean:.3f}".format(**by[("beta_vae", 1.0)]),
        "beta = 16's from {mean:.3f} to {run_mean:.3f}".format(**by[("beta_vae", 16.0)]),
        f"(at 20 rounds: p = {closest20['welch_p']:.3f} and {closest20['holm_p']:.3f})",
        f"(at 20 rounds: {WORDS[sum(t['welch_p'] < 0.05 for t in tests20)]})"]


def _dis_findings(s):
    mean = lambda setting, n, fmt=".1f": format(s[setting][n]["mean"], fmt)  # noqa: E731
    betas = [("beta_vae", b) for b in (1.0, 4.0, 16.0)]
    tcs = [("beta_tcvae", w) for w in (6.0, 10.0, 20.0)]
    info = [x["dci_informativeness"]["mean"] for x in s.values()]
    old = _dis_summary(DIS20)[("beta_vae", 16.0)]
    return [f"KL {' -> '.join(mean(b, 'kl') for b in betas)} nats and reconstruction error "
            f"{' -> '.join(mean(b, 'reconstruction_error') for b in betas)} nats",
            f"({' / '.join(mean(t, 'reconstruction_error') for t in tcs)} nats at TC weight 6 / 10 / 20)",
            f"({mean(('factor_vae', 10.0), 'reconstruction_error')} nats at both gammas)",
            f"second-highest mean DCI D ({mean(('factor_vae', 10.0), 'dci_disentanglement', '.3f')} at gamma = 10, "
            f"after beta = 16's {mean(('beta_vae', 16.0), 'dci_disentanglement', '.3f')} at "
            f"{mean(('beta_vae', 16.0), 'reconstruction_error')} nats)",
            f"FactorVAE score ({mean(('factor_vae', 40.0), 'factor_vae_score', '.3f')} at gamma = 40)",
            f"mean DCI accuracy {min(info):.3f}-{max(info):.3f}",
            f"Every MIG here (at most {max(x['mig']['max'] for x in s.values()):.2f})",
            f"MIG 0.061 -> {old['mig']['mean']:.3f}, DCI D 0.066 -> {old['dci_disentanglement']['mean']:.3f}",
            f"Our best mean MIG ({mean(('beta_vae', 16.0), 'mig', '.3f')}, beta = 16)"]


def _readme_disentanglement():
    s, comparison = _dis_summary(DIS), _json(f"{DIS}/results.json")["comparison_with_beta_1"]
    settings = [("beta_vae", 1.0), ("beta_vae", 16.0), ("beta_tcvae", 10.0), ("factor_vae", 10.0)]
    cell = lambda k, n: f"{s[k][n]['mean']:.3f} ± {s[k][n]['std']:.3f}"  # noqa: E731
    tests = comparison["tests"]
    closest = min(tests, key=lambda t: t["holm_p"])
    return [f"| MIG | {' | '.join(cell(k, 'mig') for k in settings)} |",
            f"| DCI disentanglement | {' | '.join(cell(k, 'dci_disentanglement') for k in settings)} |",
            f"the {len(tests)} comparisons with beta = 1",
            f"has p = {closest['welch_p']:.3f} alone and {closest['holm_p']:.2f} corrected; "
            f"{WORDS[sum(t['welch_p'] < 0.05 for t in tests)]} have p < 0.05 only before the correction"]


# ------------------------------------------------------------------------------------------ README


def readme():
    texts = []
    beta = _json("docs/figures/beta_vae/results.json")["models"]
    for label, key, fmt in (("rate: KL", "rate", ".2f"), ("distortion", "distortion", ".2f"),
                            ("active units / 10", "active_units", "d")):
        texts.append(f"| {label} | " + " | ".join(format(m[key], fmt) for m in beta) + " |")
    best = max(m["elbo"] for m in beta)
    texts.append("| ELBO | " + " | ".join(f"**{m['elbo']:.2f}**" if m["elbo"] == best else f"{m['elbo']:.2f}"
                                         for m in beta) + " |")
    lik = _json("docs/figures/likelihoods/results.json")["models"]
    texts += [f"| Gaussian, sigma = 1 | {lik['gaussian']['bits_per_dim']:.3f} |",
              f"| Gaussian, learned sigma | **{lik['gaussian_learned']['bits_per_dim']:.3f}** |",
              f"| Bernoulli (binarised images, not comparable) | {lik['bernoulli']['bits_per_dim']:.3f} |"]
    grad = _json("docs/figures/gradient_estimators/results.json")
    for key, label in GRAD_ROWS:
        if key in ("score_running_mean", "iwae"):
            continue
        texts.append(f"| {label} | {_variance_cell(grad['variance_through_training'][key]['encoder'][-1])} | "
                     f"{grad['training'][key]['test_log_px'][-1]:.1f} |")
    rec = _json("docs/figures/ae_vs_vae/reconstructions/results.json")["per_image_errors"]
    l2d = _json("docs/figures/ae_vs_vae/latent_2d/results.json")
    prior = _json("docs/figures/ae_vs_vae/prior_samples/results.json")
    texts += [f"| squared error per image, d = 32 | {rec['ae']['squared_error']:.2f} | "
              f"{rec['vae']['squared_error']:.2f} |",
              f"| {prior['ae']['fitted_gaussian_kl_codes']:.1f} | "
              f"**{prior['vae']['fitted_gaussian_kl_q_samples']:.3f}** (one",
              f"| 5-NN class accuracy of the 2-D codes | {l2d['ae']['knn5_test_accuracy']:.3f} | "
              f"{l2d['vae']['knn5_test_accuracy']:.3f} |"]
    return (texts + _readme_discrete() + _readme_density() + hvae_vamp_texts()["README.md"] + _readme_speed()
            + _readme_disentanglement())


def _readme_discrete():
    full = _json("docs/figures/discrete_estimators/full/results.json")
    est = full["enumerable"]["estimators"]
    max_z = lambda name: max(c["encoder"]["max_z"] for c in est[name])  # noqa: E731
    unbiased = ("reinforce", "nvil", "vimco", "arm", "disarm", "disarm_iw", "rebar", "relax", "reinforce_loo")
    v = lambda name: _sci(_encoder_variance(full, "disarm_trained", name))  # noqa: E731
    finals = lambda name: _seed_finals(full, name, "train_elbo")  # noqa: E731
    mean_sd = lambda name: f"{statistics.mean(finals(name)):.1f} ± {statistics.stdev(finals(name)):.1f}"  # noqa: E731
    return [f"stay within {max(max_z(n) for n in unbiased):.1f} standard errors of the exact gradient",
            f"Gumbel-softmax and straight-through reach {max_z('gumbel_softmax'):.1f} and "
            f"{max_z('straight_through'):.1f}",
            f"({v('disarm')} vs {v('arm')} and {v('reinforce_loo')} after training)",
            f"train ELBO ({mean_sd('disarm')})", f"(ARM {mean_sd('arm')};"]


def hierarchical_flows_rows():
    """docs/hierarchical_flows.md's lines on the finished new density rows."""
    rows, pairs = _density_rows(FINISHED_NEW_ROWS), _pairs()
    h, f, gap = rows["hvae_warmup"], rows["iaf_warmup"], pairs[("hvae_warmup", "iaf_warmup")]
    return [f"`hvae_warmup` (published -227.37): **finished, {_pm(h['test_log_px_mean'], h['test_log_px_stderr'])}** "
            f"(test ELBO {h['test_elbo']:.2f}, early-stopped at epoch {h['epochs']}, best {h['best_epoch']});",
            f"`iaf_warmup`: **finished, {_pm(f['test_log_px_mean'], f['test_log_px_stderr'])}** (test ELBO "
            f"{f['test_elbo']:.2f}, early-stopped at epoch {f['epochs']}, best {f['best_epoch']}), "
            f"{gap['mean_difference']:.2f} ± {gap['paired_stderr']:.2f} nats below the HVAE"]


def ladder_compare():
    """docs/hierarchical_flows.md's ladder-against-separate table and the sentence after it."""
    r = _json("docs/results/hierarchical_flows/ladder_compare.json")
    rows = {(row["seed"], row["inference"]): row for row in r["rows"]}
    texts = [f"{r['epochs']} epochs, {len(r['seeds'])} seeds. Log p(x) uses {r['num_samples']} importance samples "
             f"on the first {r['test_images']} test images"]
    for seed in r["seeds"]:
        diff = r["ladder_minus_separate"][str(seed)]
        for inference in ("separate", "ladder"):
            row = rows[seed, inference]
            paired = f"{diff['mean']:+.2f} ± {diff['stderr']:.2f}" if inference == "ladder" else ""
            texts.append(f"| {seed} | {inference} | {row['test_elbo']:.2f} | "
                         f"{_pm(row['test_log_px'], row['test_log_px_stderr'])} | {paired} |")
    sep = [rows[s, "separate"] for s in r["seeds"]]
    gains = [rows[s, "ladder"]["test_elbo"] - rows[s, "separate"]["test_elbo"] for s in r["seeds"]]
    texts += [f"({abs(sep[0]['test_log_px'] - sep[1]['test_log_px']):.2f} nats between the separate runs)",
              f"(by {gains[0]:.2f} and {gains[1]:.2f})"]
    return texts


ESTIMATOR_BOUNDS = {"pathwise": "ELBO", "stl": "ELBO", "score_function": "ELBO (k = 8)", "iwae": "IWAE (k = 8)",
                    "dreg": "IWAE (k = 8)"}


def _var(x):
    """A total variance as the page writes it: 3 significant digits, whole numbers from 1000."""
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def estimator_variance():
    """docs/hierarchical_flows.md's estimator-variance table, and the plain-stop numbers beside it."""
    r = _json("docs/results/hierarchical_flows/estimator_variance.json")
    old = _json("docs/results/hierarchical_flows/estimator_variance_plain_stop.json")["results"]["ladder"]["estimators"]
    texts = [f"the first {r['batch']} binarised test images, {r['draws']} independent draws"]
    for inference, result in r["results"].items():
        for name, row in result["estimators"].items():
            texts.append(f"| {inference} | {name} | {ESTIMATOR_BOUNDS[name]} | {_var(row['encoder']['total_variance'])} | "
                         f"{row['encoder']['norm_snr']:.2f} | {_var(row['decoder']['total_variance'])} |")
    new = r["results"]["ladder"]["estimators"]
    cut = lambda inference, a, b: r["results"][inference]["estimators"][a]["encoder"]["total_variance"] / \
        r["results"][inference]["estimators"][b]["encoder"]["total_variance"]  # noqa: E731
    sep = r["results"]["separate"]["estimators"]
    texts += [f"by {cut('separate', 'pathwise', 'stl'):.1f}x and {cut('separate', 'iwae', 'dreg'):.1f}x (separate), "
              f"{cut('ladder', 'pathwise', 'stl'):.1f}x and {cut('ladder', 'iwae', 'dreg'):.1f}x (ladder)",
              f"({_var(sep['score_function']['encoder']['total_variance'])} against "
              f"{_var(sep['pathwise']['encoder']['total_variance'])})",
              f"grows {new['score_function']['decoder']['total_variance'] / new['pathwise']['decoder']['total_variance']:.0f}-fold"]
    texts += [f"STL's decoder variance on the ladder HVAE was {_var(old['stl']['decoder']['total_variance'])} and "
              f"DReG's {_var(old['dreg']['decoder']['total_variance'])}, against {_var(new['stl']['decoder']['total_variance'])} "
              f"and {_var(new['dreg']['decoder']['total_variance'])} now"]
    return texts


def _paired(a, b):
    """``(mean of a - b, paired standard error)`` from paired_differences.json, whichever order it holds."""
    pairs = _pairs()
    if (a, b) in pairs:
        return pairs[(a, b)]["mean_difference"], pairs[(a, b)]["paired_stderr"]
    return -pairs[(b, a)]["mean_difference"], pairs[(b, a)]["paired_stderr"]


def hvae_vamp_texts():
    """The finished HVAE + VampPrior row, as docs/density_table.md, README and hierarchical_flows.md quote it."""
    r = _density_rows(FINISHED_NEW_ROWS)["hvae_vamp_warmup"]
    assert r["protocol"] and r["test_images"] == 10000 and r["num_samples"] == 5000
    v = _pm(r["test_log_px_mean"], r["test_log_px_stderr"])
    gh, gi, gv = (_paired("hvae_vamp_warmup", "hvae_warmup"), _paired("hvae_vamp_warmup", "iaf_warmup"),
                  _paired("vamp_warmup", "vae_warmup"))
    return {
        "docs/density_table.md": [
            f"**HVAE + VampPrior (K = 500): {v}, meeting its target (the published -226.72)**, {gh[0]:.2f} ± "
            f"{gh[1]:.2f} nats above our HVAE (paired)",
            f"| HVAE + VampPrior (K = 500) + warm-up, ours (protocol) | **{v}** (test ELBO {r['test_elbo']:.2f}, "
            f"{r['active_units']}/{r['latent_dim']} active units; early-stopped at epoch {r['epochs']}, best "
            f"{r['best_epoch']}; {r['train_seconds_total'] / 60:.0f} min of training at the lowest priority on a shared "
            f"core, log p(x) {r['log_px_seconds'] / 60:.0f} min)",
            f"it early-stopped at epoch {r['epochs']} (best {r['best_epoch']}) at 21:00 UTC, and its log p(x) is "
            f"**{v}**, {r['test_log_px_mean'] + 226.72:+.2f} nats from the published -226.72",
            f"{gh[0]:.2f} ± {gh[1]:.2f} nats above the HVAE and {gi[0]:.2f} ± {gi[1]:.2f} above VAE + IAF",
            f"The VampPrior adds {gh[0]:.2f} nats to the HVAE, against {gv[0]:.2f} ± {gv[1]:.2f} to the one-layer VAE "
            f"with warm-up"],
        "README.md": [f"VampPrior: finished, **{v}**, level with the published -226.72",
                      f"and the HVAE + VampPrior **{v}** (published -226.72; epoch {r['epochs']}), {gh[0]:.2f} ± "
                      f"{gh[1]:.2f} above the HVAE."],
        "docs/hierarchical_flows.md": [
            f"`hvae_vamp_warmup` (published -226.72): **finished, {v}** (test ELBO {r['test_elbo']:.2f}, early-stopped "
            f"at epoch {r['epochs']}, best {r['best_epoch']}), {gh[0]:.2f} ± {gh[1]:.2f} nats above the HVAE (paired)"],
    }


def _readme_density():
    rows, pairs = _density_rows(FINISHED_NEW_ROWS), _pairs()
    pm = lambda n: _pm(rows[n]["test_log_px_mean"], rows[n]["test_log_px_stderr"])  # noqa: E731
    gain = lambda a, b: f"{-pairs[(a, b)]['mean_difference']:.2f} ± {pairs[(a, b)]['paired_stderr']:.2f}"  # noqa: E731
    return [f"VampPrior (K = 500) + warm-up **{pm('vamp_warmup')}**",
            f"early-stopped at epoch {rows['vamp_warmup']['epochs']})",
            f"VAE + warm-up **{pm('vae_warmup')}**", f"epoch {rows['vae_warmup']['epochs']}), IWAE k = 5 {pm('iwae5')} "
            f"(epoch {rows['iwae5']['epochs']}), VAE without warm-up {pm('vae')}, and the two-level HVAE "
            f"{pm('hvae_warmup')} (published -227.37; epoch {rows['hvae_warmup']['epochs']}), "
            f"{pairs[('hvae_warmup', 'iaf_warmup')]['mean_difference']:.2f} ± "
            f"{pairs[('hvae_warmup', 'iaf_warmup')]['paired_stderr']:.2f} above the VAE with a 2-step IAF posterior, "
            f"{pm('iaf_warmup')} (epoch {rows['iaf_warmup']['epochs']}), and the HVAE +",
            f"warm-up adds {gain('vae', 'vae_warmup')} nats to the VAE, the VampPrior "
            f"{gain('vae_warmup', 'vamp_warmup')} to the VAE with warm-up, and the 5-sample bound "
            f"{gain('vae', 'iwae5')} to the VAE without it"]


def _readme_speed():
    cpu, t = _bench()
    now = {k: v["value"] for k, v in _json("benchmarks/results/cpu_2026-12-05b.json")["ratios"].items()}
    texts = [f"gave {now['scan_over_handwritten_at_128']:.2f}x the hand-written step, "
             f"{now['scan_over_torch_compile_at_128']:.2f}x `torch.compile` and "
             f"{now['scan_over_torch_eager_at_128']:.2f}x eager at batch 128"]
    for batch, model in ((128, "784-512-512-32"), (1024, "784-512-512-32"), (100, "784-300-300-40")):
        eps = lambda impl: f"{t[(impl, batch)]['examples_per_second']:,.0f}"  # noqa: E731
        torch_bf16 = max(t[(f"pytorch {m} bf16 autocast", batch)]["examples_per_second"] for m in ("eager", "compile"))
        texts.append(f"| {model}, {batch} | **{eps('vae_jax epoch scan')}** | {eps('hand-written jax step')} | "
                     f"{eps('pytorch eager')} | {eps('pytorch compile')} | {eps('vae_jax epoch scan bf16')} / "
                     f"{torch_bf16:,.0f} |")
    r = cpu["ratios"]
    eager = r["scan_over_torch_eager_at_128"]["value"]
    return texts + [f"as fast as the same model written by hand ({r['scan_over_handwritten_at_128']['value']:.2f}x), "
                    f"{r['scan_over_torch_compile_at_128']['value']:.2f}x `torch.compile` and {eager:.2f}x eager at "
                    f"batch 128 (target 1.5x: missed by {_pct(1 - eager / 1.5)})"]


def scale():
    r = _json("benchmarks/results/scale_cost.json")
    assert r["valid"]
    labels = {"one": "one device, in memory (default)", "all_2": "`--devices all`, 2 forced host devices, 1 process",
              "disk": "`--data-source disk`, one device",
              "processes_2": "`--devices all`, 2 processes x 1 device (localhost)"}
    rows = [f"| {labels[k]} | {v['seconds_per_epoch']:.2f} | {v['seconds_per_epoch'] / r['settings']['one']['seconds_per_epoch']:.2f}x | "
            f"{v['first_epoch_seconds']:.1f} |" for k, v in r["settings"].items()]
    return rows + [f"trains {r['examples']} Fashion-MNIST images", f"median of {r['timed_epochs']} epochs",
                   f"load average of {r['load_average_1_5_15_before'][0]:.1f} before the run",
                   f"other processes using {r['other_processes_cores']:.3f} cores",
                   f"{r['load_average_1_5_15_after'][0]:.1f} after is the benchmark's own",
                   f"--examples {r['examples']} --epochs {r['timed_epochs']} --out benchmarks/results/scale_cost.json"
                   ] + long_studies_on_two_devices() + streaming_cost()


def streaming_cost():
    r = _json("benchmarks/results/streaming.json")
    g, t = r["grid_memory"], r["throughput"]
    assert r["valid"] and not r["quick"]
    rate = t["examples_per_second"]
    others = max(v["other_processes_cores"] for v in t["timings"].values())
    return [f"**Throughput: met, {t['ratio_streaming_to_in_memory']:.2f}x.**",
            f"{rate['streaming'] / 1e3:.1f}k examples/s streamed against {rate['in_memory'] / 1e3:.1f}k",
            f"median of {len(t['timings']['streaming']['seconds'])} interleaved epochs of {t['examples']:,} images",
            f"load average {r['load_average_1min']['before']:.1f} before the run",
            f"more than {max(others, 0.01):.2f} cores",
            f"One streamed epoch over all {g['images']:,} grid images ({g['float32_bytes_of_the_data'] / 2**30:.1f} GiB",
            f"peaked at {g['peak_rss_bytes'] / 2**30:.2f} GiB resident", f"took {g['seconds']:.0f} s"]


def long_studies_on_two_devices():
    studies = _json("docs/results/scale_long_studies/quick_two_devices.json")["studies"]
    gradient, discrete = studies["gradient_estimators"], studies["discrete_estimators"]
    return [f"the gradient study's {gradient['numbers_compared']} numbers to {gradient['largest'][0]['relative']:.1e}",
            f"the discrete study's {discrete['numbers_compared']} to {discrete['largest'][0]['relative']:.1e}",
            f"relative biases to {discrete['largest_enumerable']['relative']:.1e}"] + families_on_two_devices()


def families_on_two_devices():
    studies = _json("docs/results/scale_long_studies/family_quick_two_devices.json")["studies"]
    c, s, v = (studies[name] for name in ("conditional", "semi_supervised", "vq_vae"))
    assert s["exactly_equal"] == s["numbers_compared"]  # the page says "exactly"
    return [f"the conditional study's {c['numbers_compared']} numbers to {c['largest'][0]['relative']:.1e} relative",
            f"semi-supervised study's {s['numbers_compared']} numbers exactly",
            f"the VQ study's {v['numbers_compared']} to {v['largest'][0]['relative']:.1e}"]


# ------------------------------------------------------------------------------------- model families


def _pm2(mean, se):
    return f"{mean:.2f} +- {se:.2f}"


def conditional_study():
    r = _json("docs/results/conditional/results.json")
    cfg = _json("docs/results/conditional/config.json")
    cvae, learned, vae = (r["models"][k] for k in ("conditional", "conditional_learned_prior", "vae"))
    bernoulli = _json("docs/figures/likelihoods/results.json")["models"]["bernoulli"]
    d = r["paired_differences"]
    rows = [f"| conditional VAE, {name} | {_pm2(m['log_px_given_y'], m['log_px_given_y_stderr'])} | "
            f"{_pm2(m['log_px_summed'], m['log_px_summed_stderr'])} | {m['elbo']:.2f} | {m['kl']:.2f} | "
            f"{100 * m['implied_classifier_error']:.1f}% |"
            for name, m in (("p(z) = N(0, I)", cvae), ("learned p(z \\| y)", learned))]
    rows.append(f"| VAE (no label) | | {_pm2(vae['log_px'], vae['log_px_stderr'])} | {vae['elbo']:.2f} | "
                f"{vae['kl']:.2f} | |")
    for key, name in (("conditional", "p(z) = N(0, I)"), ("conditional_learned_prior", "learned p(z \\| y)")):
        given, summed = (d[f"{key}: {q} - vae log_px"] for q in ("log_px_given_y", "log_px_summed"))
        rows.append(f"| {name} | {_pm2(given['mean'], given['paired_stderr'])} | "
                    f"{_pm2(summed['mean'], summed['paired_stderr'])} |")
    return rows + [
        f"MLP 784-{'-'.join(map(str, cfg['hidden_sizes']))}-{cfg['latent_dim']}",
        f"the first {cfg['train_size']} training images for {cfg['epochs']} epochs (Adam {_lr(cfg['learning_rate'])}, "
        f"batches of {cfg['batch_size']}",
        f"the first {r['eval_size']} test images",
        f"{cfg['num_importance']} importance samples per image",
        f"{cfg['class_importance']} per class",
        f"log 10 = {r['log_num_classes']:.2f} nats",
        f"{cvae['train_seconds']:.0f} s, {learned['train_seconds']:.0f} s and {vae['train_seconds']:.0f} s of training",
        f"{bernoulli['log_likelihood']:.1f} +- {bernoulli['log_likelihood_stderr']:.1f} there",
    ]


def _error_cells(summary):
    per_seed = ", ".join(f"{100 * e:.1f}" for e in summary["per_seed"])
    return f"{100 * summary['mean']:.1f}% +- {100 * summary['std_ddof1']:.1f} | {per_seed}"


def _semi_rows(folder, kinds=("m2", "classifier")):
    r = _json(f"docs/results/{folder}/results.json")
    return [f"| {n} | " + " | ".join(_error_cells(s[k]) for k in kinds) + " |" for n, s in r["summary"].items()]


def semi_supervised_study():
    r = _json("docs/results/semi_supervised/results.json")
    cfg = _json("docs/results/semi_supervised/config.json")
    runs, summary, labels = r["runs"], r["summary"], cfg["labels"]
    old = _json("docs/results/semi_supervised_mixed/results.json")
    old_cfg = _json("docs/results/semi_supervised_mixed/config.json")
    same = lambda c: {k: v for k, v in c.items() if k not in ("out", "progress", "weightings")}  # noqa: E731
    assert same(cfg) == same(old_cfg), "the paired run differs from the mixed-batch one in more than the loop"
    for n in labels:  # the labels-only baselines do not depend on the loop: the same seeds give the same errors
        assert summary[str(n)]["classifier"] == old["summary"][str(n)]["classifier"]
    first = {n: runs[str(n)]["m2_paper"]["0"] for n in labels}
    m2_seconds = [m["train_seconds"] for n in runs for k in runs[n] if k.startswith("m2_") for m in runs[n][k].values()]
    gap = lambda k, n: 100 * (summary[str(n)][k]["mean"] - summary[str(n)]["classifier"]["mean"])  # noqa: E731
    old_gap = lambda n: 100 * (old["summary"][str(n)]["m2"]["mean"]  # noqa: E731
                               - old["summary"][str(n)]["classifier"]["mean"])
    new_rows = _semi_rows("semi_supervised", ("m2_paper", "m2_balanced", "classifier"))
    return new_rows + _semi_rows("semi_supervised_mixed") + [
        *(f"alpha = {first[n]['alpha']:g} for {n} labels" for n in labels),
        *(f"s = {first[n]['labelled_share']:g} for {n} labels" for n in labels),
        *(f"{first[n]['pairs_per_epoch']} pairs ({first[n]['pairs_per_epoch'] // cfg['batch_size']} steps) per epoch "
          f"with {n} labels" for n in labels),
        *(f"{abs(gap(k, n)):.1f} points" for k in ("m2_paper", "m2_balanced") for n in labels),
        *(f"{abs(old_gap(n)):.1f} points" for n in labels),
        f"a pool of the first {r['train_size']} training images",
        f"takes {cfg['batch_size']} unlabelled images and {cfg['batch_size']} labelled pairs",
        f"M2 trains for {cfg['epochs']} epochs",
        f"Adam {_lr(cfg['learning_rate'])}), MLP widths {'-'.join(map(str, cfg['hidden_sizes']))}",
        f"z of {cfg['latent_dim']}",
        f"seeds {', '.join(map(str, cfg['seeds']))}",
        f"all {r['eval_size']} test images",
        f"{cfg['classifier_steps']} Adam steps",
        f"{min(m2_seconds) / 60:.1f} to {max(m2_seconds) / 60:.1f} minutes",
    ] + _semi_longer()


def _semi_longer():
    r = _json("docs/results/semi_supervised_mixed_epochs40/results.json")
    cfg = _json("docs/results/semi_supervised_mixed_epochs40/config.json")
    short = _json("docs/results/semi_supervised_mixed/config.json")
    other = lambda c: {k: v for k, v in c.items() if k not in ("out", "epochs", "progress")}  # noqa: E731
    assert other(cfg) == other(short), "the longer run differs from the default-size one in more than --epochs"
    curves = {n: np.mean([[h["test_error"] for h in m["history"]] for m in r["runs"][n]["m2"].values()], axis=0)
              for n in r["runs"]}
    return _semi_rows("semi_supervised_mixed_epochs40") + [
        f"`--epochs {cfg['epochs']}`",
        f"M2's mean error after epoch 20 is {100 * curves['100'][19]:.1f}% (100 labels) and "
        f"{100 * curves['1000'][19]:.1f}% (1000 labels)",
    ]


def vq_vae_study():
    r = _json("docs/results/vq_vae/results.json")
    cfg = _json("docs/results/vq_vae/config.json")
    m = r["models"]
    ema, loss, g = m["ema"], m["loss"], m["gaussian"]
    rows = [f"| VQ-VAE, {name} | {v['bits_per_dim']:.3f} +- {v['bits_per_dim_stderr']:.3f} | "
            f"{v['reconstruction_bits_per_dim']:.3f} | {v['code_bits_per_dim']:.3f} | "
            f"{v['squared_error_per_pixel']:.4f} | "
            f"{v['test_perplexity']:.1f} | {v['test_dead_codes']} |"
            for name, v in (("EMA codebook", ema), ("codebook loss", loss))]
    rows.append(f"| Gaussian VAE, learned sigma | {g['bits_per_dim']:.3f} +- {g['bits_per_dim_stderr']:.3f} | "
                f"{g['reconstruction_bits_per_dim']:.3f} | {g['kl_bits_per_dim']:.3f} | "
                f"{g['squared_error_per_pixel']:.4f} | | |")
    reference = _json("docs/figures/likelihoods/results.json")["models"]["gaussian_learned"]["bits_per_dim"]
    grid = "x".join(map(str, ema["grid"]))
    return rows + [
        f"{r['train_size']} training images for {cfg['epochs']} epochs",
        f"channels {'-'.join(map(str, cfg['features']))}",
        f"a {grid} grid of {cfg['num_codes']} codes of dimension {cfg['embedding_dim']}",
        f"beta = {cfg['beta']:g}", f"decay {cfg['ema_decay']:g}",
        f"{cfg['prior_layers']} masked layers of {cfg['prior_features']} channels, "
        f"trained {cfg['prior_epochs']} epochs "
        f"(Adam {_lr(cfg['prior_learning_rate'])})",
        f"the first {r['eval_size']} test images", f"{cfg['num_importance']} importance samples",
        f"the first {cfg['probe_size']} training images",
        f"its ELBO is {g['elbo_bits_per_dim']:.3f} bits/dim",
        f"{ema['code_bits_per_image']:.1f} and {loss['code_bits_per_image']:.1f} bits per image",
        f"{ema['uniform_code_bits_per_image']:.0f} bits",
        f"{g['bits_per_dim'] - ema['bits_per_dim']:.2f} bits/dim below",
        f"{g['squared_error_per_pixel'] / ema['squared_error_per_pixel']:.2f} times smaller",
        f"at most about {ema['bits_per_dim']:.2f}",
        f"small ({g['elbo_bits_per_dim'] - g['bits_per_dim']:.2f} bits/dim)",
        f"as low as {ema['bits_per_dim']:.2f}", f"on the {math.prod(ema['grid'])} codes",
        f"-log2 p(c*) / {r['dims']}",
        f"{ema['test_dead_codes']} dead code at the end, against {loss['test_dead_codes']} with the codebook loss",
        f"bound is {loss['bits_per_dim'] - ema['bits_per_dim']:.2f} bits/dim lower",
        f"{ema['initial_probe']['probe_perplexity']:.1f} at the start",
        f"{ema['history'][0]['probe_perplexity']:.1f} (EMA) and {loss['history'][0]['probe_perplexity']:.1f} (loss) "
        f"after the first epoch",
        f"{reference:.3f} bits/dim",
        f"{ema['train_seconds']:.0f} s (EMA), {loss['train_seconds']:.0f} s (loss) and {g['train_seconds']:.0f} s",
    ]


PAGES = {
    "README.md": readme,
    "docs/scale.md": scale,
    "docs/beta_vae.md": beta_vae,
    "docs/likelihoods.md": likelihoods,
    "docs/gradient_estimators.md": gradient_estimators,
    "docs/discrete_estimators.md": discrete_estimators,
    "docs/ae_vs_vae.md": ae_vs_vae,
    "docs/density_table.md": lambda: density_tables() + density_text() + hvae_vamp_texts()["docs/density_table.md"],
    "docs/hierarchical_flows.md": lambda: (hierarchical_flows_rows() + ladder_compare() + estimator_variance()
                                           + hvae_vamp_texts()["docs/hierarchical_flows.md"]),
    "docs/benchmarks.md": benchmarks,
    "docs/marginal_likelihood.md": marginal_likelihood,
    "docs/disentanglement.md": disentanglement,
    "docs/conditional.md": conditional_study,
    "docs/semi_supervised.md": semi_supervised_study,
    "docs/vq_vae.md": vq_vae_study,
}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_quoted_number_is_recomputed_from_its_results_file(page):
    text = _page(page)
    expected = [" ".join(t.split()) for t in PAGES[page]()]
    missing = [t for t in expected if t not in text]
    assert not missing, f"{page} does not say what its results files give:\n" + "\n".join(missing)


def test_the_checks_have_power():
    # A drifted number is caught: the beta-VAE page with one rate changed by 0.01 fails its check.
    text = _page("docs/beta_vae.md")
    first = beta_vae()[0]
    rate = re.search(r"\| (\d+\.\d\d) \|", first).group(1)
    drifted = first.replace(rate, f"{float(rate) + 0.01:.2f}", 1)
    assert first in text and drifted not in text
