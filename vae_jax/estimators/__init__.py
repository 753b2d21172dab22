"""Gradient estimators as surrogate objectives, Gaussian and discrete, and their statistics.

An estimator is a per-example function whose value is a bound (the ELBO or the
k-sample bound, nats) and whose gradient is the estimator, so it drops into
``jax.grad`` and :func:`vae_jax.training.make_train_step` unchanged. The package:

- :mod:`~vae_jax.estimators.registry`: THE list of estimators, one record each
  (:data:`ESTIMATORS`), and :func:`make_estimator`, the objective of a model by name.
- :mod:`~vae_jax.estimators.gaussian`: pathwise, score function, STL, IWAE, DReG.
- :mod:`~vae_jax.estimators.discrete`: REINFORCE, NVIL, VIMCO, ARM, DisARM, DisARM-IW.
- :mod:`~vae_jax.estimators.relaxed`: Gumbel-softmax, straight-through, REBAR, RELAX.
- :mod:`~vae_jax.estimators.learned`: NVIL's baseline, REBAR/RELAX's control, the running-mean baseline.
- :mod:`~vae_jax.estimators.statistics`: :func:`gradient_statistics` over independent draws.

Imports ``jax`` only.
"""

from vae_jax.estimators import discrete, gaussian, learned, registry, relaxed, statistics
from vae_jax.estimators.learned import baseline_apply, baseline_init, init_control, with_running_baseline
from vae_jax.estimators.registry import (
    BOUNDS,
    ESTIMATORS,
    Estimator,
    WithEstimatorParams,
    init_estimator_params,
    make_estimator,
    with_estimator_params,
)
from vae_jax.estimators.statistics import GradientStatistics, gradient_statistics

__all__ = ["BOUNDS", "ESTIMATORS", "Estimator", "GradientStatistics", "WithEstimatorParams", "baseline_apply",
           "baseline_init", "discrete", "gaussian", "gradient_statistics", "init_control", "init_estimator_params",
           "learned", "make_estimator", "registry", "relaxed", "statistics", "with_estimator_params",
           "with_running_baseline"]
