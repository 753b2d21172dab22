"""Disentanglement metrics on constructed codes whose answers are known."""

import itertools

import numpy as np
import pytest
import scipy.stats

from vae_jax import disentanglement
from vae_jax import dsprites

SIZES = (3, 6, 10)


def _grid(repeats=2):
    """Every factor combination ``repeats`` times: factors are exactly independent (empirical MI 0)."""
    grid = np.array(list(itertools.product(*(range(s) for s in SIZES))))
    return np.tile(grid, (repeats, 1))


def _sample(n, seed):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in SIZES], axis=1)


def _perfect(f):
    """The factors, permuted, rescaled, sign-flipped and (for DCI and the sampled scores) bent."""
    return np.stack([np.exp(f[:, 2] / 3.0), -2.0 * f[:, 0] + 1.0, f[:, 1] ** 3], axis=1)


def _rotated(f, angle=np.pi / 4):
    """Factors 1 and 2 (standardised) mixed by a rotation; factor 0 kept alone."""
    z = (f - f.mean(0)) / f.std(0)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([c * z[:, 1] - s * z[:, 2], s * z[:, 1] + c * z[:, 2], z[:, 0]], axis=1)


# ---------------------------------------------------------------- MIG


def _plugin_mi(a, b):
    """I(a; b) in nats from the contingency table, written out (independent of sklearn)."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz])))


def test_mig_matches_the_definition_on_continuous_codes():
    """20 equal-width bins (np.histogram edges without the last, np.digitize), plug-in MI, gap / H."""
    f = _sample(3000, 0)
    rng = np.random.default_rng(1)
    codes = np.concatenate([f + rng.normal(0, 1.5, f.shape), rng.normal(size=(3000, 2))], axis=1)
    out = disentanglement.mig(codes, f)
    edges = [np.linspace(c.min(), c.max(), 21)[:-1] for c in codes.T]
    binned = np.stack([np.digitize(c, e) for c, e in zip(codes.T, edges)], axis=1)
    assert binned.min() == 1 and binned.max() == 20
    mi = np.array([[_plugin_mi(binned[:, j], f[:, k]) for k in range(3)] for j in range(5)])
    np.testing.assert_allclose(out["mutual_information"], mi, atol=1e-10)
    h = np.array([_plugin_mi(f[:, k], f[:, k]) for k in range(3)])
    top = np.sort(mi, axis=0)
    np.testing.assert_allclose(out["mig"], np.mean((top[-1] - top[-2]) / h), atol=1e-10)
    assert 0.05 < out["mig"] < 0.9


def test_mig_is_one_for_the_factors_up_to_permutation_and_affine_maps():
    f = _grid()
    assert disentanglement.mig(f, f)["mig"] == pytest.approx(1.0, abs=1e-12)
    codes = np.stack([3.0 * f[:, 2] - 7.0, -0.01 * f[:, 0], 100.0 * f[:, 1], np.zeros(len(f))], axis=1)
    out = disentanglement.mig(codes, f)
    assert out["mig"] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(out["per_factor"], 1.0, atol=1e-12)


def test_mig_equal_width_bins_are_not_invariant_to_every_monotone_map():
    """exp squeezes the low values of the 10-valued factor into one bin: MIG must drop (a known
    property of the binned estimator, which DCI's trees and the sampled scores do not have)."""
    f = _grid()
    codes = np.stack([f[:, 0], f[:, 1], np.exp(f[:, 2])], axis=1)
    out = disentanglement.mig(codes, f)
    assert out["per_factor"][:2] == pytest.approx([1.0, 1.0])
    assert out["per_factor"][2] < 0.7


def test_two_latents_copying_one_factor_lose_its_gap():
    f = _grid()
    codes = np.stack([f[:, 0], 2.0 * f[:, 0], f[:, 1], f[:, 2]], axis=1)
    out = disentanglement.mig(codes, f)
    np.testing.assert_allclose(out["per_factor"], [0.0, 1.0, 1.0], atol=1e-12)
    assert out["mig"] == pytest.approx(2 / 3, abs=1e-12)


def test_mig_of_random_codes_is_near_zero():
    f = _sample(10000, 2)
    codes = np.random.default_rng(3).normal(size=(10000, 6))
    assert disentanglement.mig(codes, f)["mig"] < 0.01


def test_mig_bad_inputs():
    f = _grid()
    with pytest.raises(ValueError, match="constant"):
        disentanglement.mig(f, np.concatenate([f, np.zeros((len(f), 1), int)], axis=1))
    with pytest.raises(ValueError, match="same N"):
        disentanglement.mig(f[:-1], f)
    with pytest.raises(ValueError, match="integer"):
        disentanglement.mig(f, f + 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        disentanglement.mig(f[:, :1], f)
    with pytest.raises(ValueError, match="non-finite"):
        disentanglement.mig(np.where(f == 0, np.nan, f), f)


# ---------------------------------------------------------------- DCI


def test_dci_scores_match_the_entropy_definition():
    """1 - entropy with base L (rows) / K (columns), weighted by relative importance, +1e-11 as the reference."""
    rng = np.random.default_rng(0)
    r = rng.random((7, 4)) * (rng.random((7, 4)) > 0.4)
    d, c = disentanglement.dci_scores(r)
    per_code = 1 - scipy.stats.entropy(r.T + 1e-11, base=4)
    per_factor = 1 - scipy.stats.entropy(r + 1e-11, base=7)
    np.testing.assert_allclose(d, np.sum(per_code * r.sum(1) / r.sum()), atol=1e-12)
    np.testing.assert_allclose(c, np.sum(per_factor * r.sum(0) / r.sum()), atol=1e-12)
    eye = np.eye(4)
    assert disentanglement.dci_scores(eye) == pytest.approx((1.0, 1.0), abs=1e-9)
    assert disentanglement.dci_scores(np.ones((4, 4))) == pytest.approx((0.0, 0.0), abs=1e-9)
    # one code holding every factor: completeness 1 (each factor in one code), disentanglement 0
    assert disentanglement.dci_scores(np.vstack([np.ones(4), np.zeros((3, 4))])) == pytest.approx((0.0, 1.0), abs=1e-9)
    with pytest.raises(ValueError, match="non-negative"):
        disentanglement.dci_scores(-eye)


@pytest.fixture(scope="module")
def dci_runs():
    train, test = _sample(600, 4), _sample(300, 5)
    noise = np.random.default_rng(6)
    return {name: disentanglement.dci(fn(train), train, fn(test), test) for name, fn in
            {"perfect": _perfect, "rotated": _rotated,
             "random": lambda f: noise.normal(size=(len(f), 3))}.items()}


def test_dci_of_transformed_factors_is_maximal(dci_runs):
    out = dci_runs["perfect"]
    assert out["disentanglement"] > 0.999 and out["completeness"] > 0.999
    assert out["informativeness_test"] == 1.0
    np.testing.assert_array_equal(np.argmax(out["importance"], axis=1), [2, 0, 1])  # the permutation


def test_dci_rotation_lowers_disentanglement_and_keeps_informativeness(dci_runs):
    rot, perfect = dci_runs["rotated"], dci_runs["perfect"]
    assert rot["disentanglement"] < perfect["disentanglement"] - 0.3
    assert rot["completeness"] < perfect["completeness"] - 0.3
    # a rotation is invertible: the factors stay predictable (axis-aligned trees need more data
    # to cut a rotated lattice, hence a little below the unrotated 1.0 on 600 training points)
    assert rot["informativeness_test"] > 0.9 and rot["informativeness_train"] > 0.99
    # the unmixed factor 0 still lives in code 2 alone
    assert rot["importance"][2, 0] / rot["importance"][:, 0].sum() > 0.99


def test_dci_of_random_codes_is_near_chance(dci_runs):
    out = dci_runs["random"]
    chance = np.mean([1 / s for s in SIZES])  # uniform factors: the best guess is right 1 / size
    assert abs(out["informativeness_test"] - chance) < 0.06
    assert out["informativeness_train"] > out["informativeness_test"] + 0.2  # the trees overfit noise
    assert out["disentanglement"] < 0.05 and out["completeness"] < 0.05


# ---------------------------------------------------------------- SAP


def test_sap_perfect_duplicated_and_random_codes():
    train, test = _sample(1000, 7), _sample(500, 8)
    perfect = disentanglement.sap(_perfect(train), train, _perfect(test), test)
    random = disentanglement.sap(*(np.random.default_rng(9).normal(size=(len(f), 3)) for f in (train,)), train,
                   np.random.default_rng(10).normal(size=(500, 3)), test)
    assert perfect["sap"] > 0.4 and random["sap"] < 0.05
    # each factor is best predicted from the code that holds it (code 1: factor 0, code 0: factor 2)
    s = perfect["score_matrix"]
    assert s[1, 0] == np.max(s[:, 0]) and s[0, 2] == np.max(s[:, 2])
    dup = lambda f: np.concatenate([_perfect(f), _perfect(f)[:, 1:2]], axis=1)
    duplicated = disentanglement.sap(dup(train), train, dup(test), test)
    np.testing.assert_allclose(duplicated["score_matrix"][3], duplicated["score_matrix"][1])
    gaps = np.sort(perfect["score_matrix"], 0)[-1] - np.sort(perfect["score_matrix"], 0)[-2]
    np.testing.assert_allclose(duplicated["sap"], (gaps[1] + gaps[2]) / 3, atol=1e-12)  # factor 0's gap is gone


# ---------------------------------------------------------------- FactorVAE and beta-VAE scores


class ToyFactors:
    """FactorData whose 'images' are the factor values themselves, so codes can be any function of them."""

    factor_names = ("a", "b", "c", "d")
    factor_sizes = (3, 6, 10, 8)

    def sample_factors(self, num, rng):
        return dsprites.sample_factors(num, rng, self.factor_sizes)

    def images(self, factors):
        return np.asarray(factors, np.float64)


def _rep_perfect(x):
    return np.stack([np.exp(x[:, 2] / 3), -5 * x[:, 0], x[:, 3] ** 2 + 0.1, x[:, 1], np.full(len(x), 0.01)], axis=1)


def _rep_mixed(x):
    z = x / np.array([3.0, 6.0, 10.0, 8.0])
    return np.stack([z[:, 0] + z[:, 1], z[:, 0] - z[:, 1], z[:, 2], z[:, 3]], axis=1)


SMALL = dict(batch_size=32, num_train=300, num_eval=200)


def test_factor_vae_score_is_one_for_transformed_factors_and_prunes_constant_dims():
    out = disentanglement.factor_vae_score(ToyFactors(), _rep_perfect, num_variance_estimate=2000, **SMALL)
    assert out["train_accuracy"] == 1.0 and out["eval_accuracy"] == 1.0
    assert out["num_active_dims"] == 4  # the constant fifth code is pruned
    np.testing.assert_array_equal(np.argmax(out["votes"][:, :4], axis=0), [2, 0, 3, 1])
    assert out["votes"][:, 4].sum() == 0


def test_factor_vae_score_mixing_and_random_codes():
    mixed = disentanglement.factor_vae_score(ToyFactors(), _rep_mixed, num_variance_estimate=2000, **SMALL)
    assert 0.6 < mixed["eval_accuracy"] < 0.9  # factors a and b can no longer be told apart
    rng = np.random.default_rng(0)
    random = disentanglement.factor_vae_score(ToyFactors(), lambda x: rng.normal(size=(len(x), 4)), num_variance_estimate=2000,
                                **SMALL)
    assert random["eval_accuracy"] < 0.25 + 0.1
    dead = disentanglement.factor_vae_score(ToyFactors(), lambda x: np.zeros((len(x), 3)), num_variance_estimate=100, **SMALL)
    assert dead["eval_accuracy"] == 0.0 and dead["num_active_dims"] == 0


def test_beta_vae_score_perfect_and_random_codes():
    out = disentanglement.beta_vae_score(ToyFactors(), _rep_perfect, **SMALL)
    assert out["train_accuracy"] == 1.0 and out["eval_accuracy"] == 1.0
    rng = np.random.default_rng(1)
    random = disentanglement.beta_vae_score(ToyFactors(), lambda x: rng.normal(size=(len(x), 4)), **SMALL)
    assert abs(random["eval_accuracy"] - 0.25) < 0.1


def test_sampled_scores_are_reproducible_and_validate_inputs():
    a = disentanglement.beta_vae_score(ToyFactors(), _rep_mixed, seed=3, **SMALL)
    b = disentanglement.beta_vae_score(ToyFactors(), _rep_mixed, seed=3, **SMALL)
    assert a == b
    with pytest.raises(ValueError, match="batch_size"):
        disentanglement.factor_vae_score(ToyFactors(), _rep_perfect, batch_size=1)
    with pytest.raises(ValueError, match="represent must return"):
        disentanglement.beta_vae_score(ToyFactors(), lambda x: x[:1], **SMALL)
    with pytest.raises(ValueError, match="num_train"):
        disentanglement.beta_vae_score(ToyFactors(), _rep_perfect, num_train=0)
