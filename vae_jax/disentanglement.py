"""Disentanglement metrics on codes of data with known factors (numpy + scikit-learn).

Each metric follows the paper that introduced it and the evaluation
configuration of disentanglement_lib (Locatello et al., 2019), written anew:

* :func:`mig` (Chen et al., 2018): every code dimension discretised into 20
  equal-width bins; per factor, the gap between the two largest discrete mutual
  informations I(z_j; v_k) over H(v_k), averaged over factors.
* :func:`dci` (Eastwood & Williams, 2018): one gradient-boosted tree classifier
  per factor (scikit-learn defaults, as disentanglement_lib); importance
  matrix R [L, K] from the trees' feature importances; disentanglement and
  completeness are 1 - entropy of its normalised rows / columns, weighted by
  the relative importance; informativeness is the classifiers' accuracy.
* :func:`sap` (Kumar et al., 2018): per (latent, factor) the test accuracy of a
  one-feature linear SVM (``C=0.01``, balanced classes; the discrete-factor
  variant that disentanglement_lib evaluates); per factor the gap between the
  two best latents, averaged.
* :func:`factor_vae_score` (Kim & Mnih, 2018) and :func:`beta_vae_score`
  (Higgins et al., 2017) generate their own data: they fix one factor over a
  batch and need ``data`` (a :class:`vae_jax.dsprites.FactorData`) plus
  ``represent(images [n, H, W, C]) -> codes [n, L]``.

Codes are ``[N, L]`` floats (usually posterior means), factors ``[N, K]``
integer indices; mutual informations are in nats.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sklearn import ensemble, linear_model, metrics, svm

MIG_BINS = 20
Represent = Callable[[np.ndarray], np.ndarray]


def _check_pair(codes, factors) -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(codes, np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) < 2:
        raise ValueError(f"codes must be [N, L] and factors [N, K] with the same N >= 2; got {codes.shape} "
                         f"and {factors.shape}.")
    if not np.all(np.isfinite(codes)):
        raise ValueError("codes hold non-finite values.")
    if not np.issubdtype(factors.dtype, np.integer):
        if not np.all(np.equal(np.mod(factors, 1), 0)):
            raise ValueError("factors must be integer (discrete) indices; discretise continuous factors first.")
        factors = factors.astype(np.int64)
    return codes, factors


def histogram_discretize(codes, *, bins: int = MIG_BINS) -> np.ndarray:
    """Each column of ``codes [N, L]`` mapped to ``bins`` equal-width bins over its range.

    As disentanglement_lib's histogram discretiser: ``np.digitize`` against the
    first ``bins`` of the ``bins + 1`` edges of ``np.histogram``, so values are in
    ``1..bins`` (the maximum falls in bin ``bins``).

    Returns:
      ``[N, L]`` int64 bin indices.
    """
    codes = np.asarray(codes, np.float64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [N, L]; got shape {codes.shape}.")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive int; got {bins!r}.")
    return np.stack([np.digitize(c, np.histogram(c, bins)[1][:-1]) for c in codes.T], axis=1).astype(np.int64)


def mutual_information_matrix(discrete_codes, factors) -> np.ndarray:
    """``[L, K]`` discrete mutual information I(z_j; v_k) in nats (plug-in, sklearn)."""
    return np.array([[metrics.mutual_info_score(f, c) for f in np.asarray(factors).T]
                     for c in np.asarray(discrete_codes).T])


def factor_entropies(factors) -> np.ndarray:
    """``[K]`` plug-in entropies H(v_k) in nats of the empirical factor distribution."""
    return np.array([metrics.mutual_info_score(f, f) for f in np.asarray(factors).T])


def mig(codes, factors, *, bins: int = MIG_BINS) -> dict[str, object]:
    """Mutual information gap.

    Args:
      codes: ``[N, L]`` representation, ``L >= 2``.
      factors: ``[N, K]`` integer factor indices; every factor must vary.
      bins: equal-width bins per code dimension (20 in disentanglement_lib).

    Returns:
      ``mig`` (mean over factors, in [0, 1]), ``per_factor [K]`` normalised gaps and
      ``mutual_information [L, K]`` (nats).

    Raises:
      ValueError: bad shapes, non-integer factors, ``L < 2`` or a constant factor.
    """
    codes, factors = _check_pair(codes, factors)
    if codes.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 code dimensions; got {codes.shape[1]}.")
    entropy = factor_entropies(factors)
    if np.any(entropy == 0):
        raise ValueError(f"factors {np.flatnonzero(entropy == 0).tolist()} are constant: H(v) = 0 leaves MIG "
                         "undefined; drop them.")
    mi = mutual_information_matrix(histogram_discretize(codes, bins=bins), factors)
    top = np.sort(mi, axis=0)[::-1]
    gaps = (top[0] - top[1]) / entropy
    return {"mig": float(np.mean(gaps)), "per_factor": gaps, "mutual_information": mi}


def _one_minus_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """``1 - H_base(p normalised along axis)`` with base = its length (1e-11 as disentanglement_lib)."""
    p = p + 1e-11
    p = p / p.sum(axis=axis, keepdims=True)
    return 1.0 + np.sum(p * np.log(p), axis=axis) / np.log(p.shape[axis])


def dci_scores(importance) -> tuple[float, float]:
    """``(disentanglement, completeness)`` of an importance matrix ``[L, K]`` (non-negative)."""
    r = np.asarray(importance, np.float64)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2 or np.any(r < 0):
        raise ValueError(f"importance must be a non-negative [L >= 2, K >= 2] matrix; got shape {r.shape}.")
    weights = r if r.sum() > 0 else np.ones_like(r)
    disentanglement = np.sum(_one_minus_entropy(r, axis=1) * weights.sum(axis=1) / weights.sum())
    completeness = np.sum(_one_minus_entropy(r, axis=0) * weights.sum(axis=0) / weights.sum())
    return float(disentanglement), float(completeness)


def importance_gbt(codes_train, factors_train, codes_test, factors_test, *, seed: int = 0, n_estimators: int = 100
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per factor, a gradient-boosted tree classifier (sklearn defaults) from all codes.

    ``n_estimators`` (boosting rounds) is sklearn's and disentanglement_lib's 100 unless reduced.

    Returns:
      ``(importance [L, K], train_accuracy [K], test_accuracy [K])``.
    """
    codes_train, factors_train = _check_pair(codes_train, factors_train)
    codes_test, factors_test = _check_pair(codes_test, factors_test)
    importance = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    train_acc, test_acc = [], []
    for k in range(factors_train.shape[1]):
        model = ensemble.GradientBoostingClassifier(random_state=seed, n_estimators=n_estimators)
        model.fit(codes_train, factors_train[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(codes_train) == factors_train[:, k]))
        test_acc.append(np.mean(model.predict(codes_test) == factors_test[:, k]))
    return importance, np.array(train_acc), np.array(test_acc)


def dci(codes_train, factors_train, codes_test, factors_test, *, seed: int = 0, n_estimators: int = 100
        ) -> dict[str, object]:
    """DCI disentanglement, completeness and informativeness with gradient-boosted trees.

    Args:
      codes_train, factors_train: ``[N, L]`` codes and ``[N, K]`` factor indices to fit on.
      codes_test, factors_test: held-out ``[M, L]`` and ``[M, K]``.
      seed: ``random_state`` of the trees (sklearn's default trees use no subsampling,
        so it only breaks ties between equally good splits).
      n_estimators: boosting rounds per factor (100: sklearn's default, as disentanglement_lib;
        fewer is faster: a 40-class factor fits 40 trees per round).

    Returns:
      ``disentanglement``, ``completeness`` (in [0, 1]), ``informativeness_train`` and
      ``informativeness_test`` (mean classification accuracy over factors, as
      disentanglement_lib reports it; Eastwood & Williams report the error, 1 - this),
      ``importance [L, K]``, ``test_accuracy [K]``.
    """
    importance, train_acc, test_acc = importance_gbt(codes_train, factors_train, codes_test, factors_test,
                                                     seed=seed, n_estimators=n_estimators)
    disentanglement, completeness = dci_scores(importance)
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness_train": float(train_acc.mean()), "informativeness_test": float(test_acc.mean()),
            "importance": importance, "test_accuracy": test_acc}


def sap(codes_train, factors_train, codes_test, factors_test) -> dict[str, object]:
    """Separated attribute predictability for discrete factors.

    Returns:
      ``sap`` (mean over factors of the gap between the two best latents' test
      accuracies) and ``score_matrix [L, K]`` (test accuracy of a linear SVM on one latent).
    """
    codes_train, factors_train = _check_pair(codes_train, factors_train)
    codes_test, factors_test = _check_pair(codes_test, factors_test)
    if codes_train.shape[1] < 2:
        raise ValueError(f"SAP needs at least 2 code dimensions; got {codes_train.shape[1]}.")
    scores = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    for j in range(codes_train.shape[1]):
        for k in range(factors_train.shape[1]):
            clf = svm.LinearSVC(C=0.01, class_weight="balanced")
            clf.fit(codes_train[:, j:j + 1], factors_train[:, k])
            scores[j, k] = np.mean(clf.predict(codes_test[:, j:j + 1]) == factors_test[:, k])
    top = np.sort(scores, axis=0)
    return {"sap": float(np.mean(top[-1] - top[-2])), "score_matrix": scores}


def _check_generation(data, represent, batch_size: int, num_train: int, num_eval: int) -> None:
    for name, value in (("batch_size", batch_size), ("num_train", num_train), ("num_eval", num_eval)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}.")
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 (a variance over the batch is taken).")
    if not callable(represent) or not all(hasattr(data, a) for a in ("factor_sizes", "sample_factors", "images")):
        raise ValueError("data needs factor_sizes, sample_factors(num, rng) and images(factors); "
                         "represent must be callable (images -> codes [n, L]).")


def _represent(represent: Represent, images: np.ndarray, n: int) -> np.ndarray:
    codes = np.asarray(represent(images), np.float64)
    if codes.ndim != 2 or codes.shape[0] != n:
        raise ValueError(f"represent must return codes [n={n}, L]; got shape {codes.shape}.")
    return codes


def factor_vae_votes(data, represent: Represent, rng: np.random.Generator, *, num_points: int, batch_size: int,
                     scale: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``[K, L]`` votes: for each point, (fixed factor k, argmin_j of Var_batch(z_j) / scale_j^2).

    Each point fixes a uniformly drawn factor to one random value over ``batch_size``
    images, encodes them, and picks the active dimension with the smallest normalised
    variance (unbiased, ``ddof=1``). The vote goes to that dimension's own index
    (disentanglement_lib indexes the votes by the position among the active dimensions,
    which differs only when some dimensions are pruned).
    """
    k_size = len(data.factor_sizes)
    votes = np.zeros((k_size, len(scale)), np.int64)
    index = np.flatnonzero(active)
    for _ in range(num_points):
        k = int(rng.integers(k_size))
        factors = data.sample_factors(batch_size, rng)
        factors[:, k] = factors[0, k]
        codes = _represent(represent, data.images(factors), batch_size)
        variances = np.var(codes, axis=0, ddof=1)[index] / scale[index] ** 2
        votes[k, index[np.argmin(variances)]] += 1
    return votes


def factor_vae_score(data, represent: Represent, *, seed: int = 0, batch_size: int = 64, num_train: int = 10000,
                     num_eval: int = 5000, num_variance_estimate: int = 10000, prune_threshold: float = 0.05
                     ) -> dict[str, object]:
    """FactorVAE score: accuracy of the majority-vote classifier (argmin dim -> fixed factor).

    Codes are divided by their standard deviation over ``num_variance_estimate`` random
    images; dimensions with that standard deviation below ``prune_threshold`` are left out
    (collapsed). The defaults are disentanglement_lib's.

    Args:
      data: a :class:`vae_jax.dsprites.FactorData` (e.g. :class:`vae_jax.dsprites.Sprites`).
      represent: ``images [n, H, W, C] -> codes [n, L]`` (e.g. posterior means).
      seed: numpy seed of every draw.

    Returns:
      ``train_accuracy``, ``eval_accuracy`` (in [0, 1], chance ``1 / K`` or better),
      ``num_active_dims``, ``votes [K, L]`` (training votes).
    """
    _check_generation(data, represent, batch_size, num_train, num_eval)
    rng = np.random.default_rng(seed)
    pool = _represent(represent, data.images(data.sample_factors(num_variance_estimate, rng)),
                      num_variance_estimate)
    scale = np.std(pool, axis=0, ddof=1)
    active = scale >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0,
                "votes": np.zeros((len(data.factor_sizes), len(scale)), np.int64)}
    kwargs = dict(batch_size=batch_size, scale=scale, active=active)
    train = factor_vae_votes(data, represent, rng, num_points=num_train, **kwargs)
    classifier = np.argmax(train, axis=0)  # each dimension votes for its most frequent factor
    columns = np.arange(train.shape[1])
    evaluation = factor_vae_votes(data, represent, rng, num_points=num_eval, **kwargs)
    return {"train_accuracy": float(train[classifier, columns].sum() / train.sum()),
            "eval_accuracy": float(evaluation[classifier, columns].sum() / evaluation.sum()),
            "num_active_dims": int(active.sum()), "votes": train}


def beta_vae_points(data, represent: Represent, rng: np.random.Generator, *, num_points: int, batch_size: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``(features [num_points, L], labels [num_points])``: mean |z(x1) - z(x2)| over pairs sharing factor k."""
    k_size = len(data.factor_sizes)
    features, labels = [], np.zeros(num_points, np.int64)
    for i in range(num_points):
        k = int(rng.integers(k_size))
        first = data.sample_factors(batch_size, rng)
        second = data.sample_factors(batch_size, rng)
        second[:, k] = first[:, k]
        codes = _represent(represent, data.images(np.concatenate([first, second])), 2 * batch_size)
        features.append(np.mean(np.abs(codes[:batch_size] - codes[batch_size:]), axis=0))
        labels[i] = k
    return np.array(features), labels


def beta_vae_score(data, represent: Represent, *, seed: int = 0, batch_size: int = 64, num_train: int = 10000,
                   num_eval: int = 5000) -> dict[str, float]:
    """beta-VAE score: accuracy of a logistic regression predicting the fixed factor.

    The defaults are disentanglement_lib's (sklearn ``LogisticRegression`` with its
    default settings; Higgins et al. used a linear classifier trained by Adagrad).

    Returns:
      ``train_accuracy`` and ``eval_accuracy`` in [0, 1] (chance ``1 / K``).
    """
    _check_generation(data, represent, batch_size, num_train, num_eval)
    rng = np.random.default_rng(seed)
    x_train, y_train = beta_vae_points(data, represent, rng, num_points=num_train, batch_size=batch_size)
    model = linear_model.LogisticRegression(random_state=seed)
    model.fit(x_train, y_train)
    x_eval, y_eval = beta_vae_points(data, represent, rng, num_points=num_eval, batch_size=batch_size)
    return {"train_accuracy": float(np.mean(model.predict(x_train) == y_train)),
            "eval_accuracy": float(np.mean(model.predict(x_eval) == y_eval))}
