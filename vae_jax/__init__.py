"""vae_jax: pure, composable JAX functions for variational autoencoders.

The core (``distributions``, ``objectives``, ``priors``, ``estimators``,
``linear_gaussian``) imports JAX alone. Names that need Flax, Optax, Orbax or tqdm (models, training,
evaluation, ...) are loaded on first use (PEP 562), so ``from vae_jax import elbo``
never pays for them.
"""

from __future__ import annotations

import importlib
from typing import Any

from vae_jax import distributions, estimators, linear_gaussian, objectives, priors
from vae_jax.distributions import (
    LIKELIHOODS,
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_to_standard_normal,
    likelihood_mean,
    log_likelihood,
    standard_normal_log_prob,
)
from vae_jax.estimators import gradient_statistics, make_estimator
from vae_jax.linear_gaussian import AffineLinearGaussian, LinearGaussian
from vae_jax.objectives import (
    autoencoder_loss,
    elbo,
    iwae_bound,
    log_importance_weights,
    log_marginal,
    reparameterize,
)

__version__ = "0.1.0"

# name -> module that defines it, imported on first access
_LAZY = {
    "AE": "models", "VAE": "models", "Bound": "models", "DiscreteVAE": "models", "ModelConfig": "config",
    "build_model": "models",
    "ConvDecoder": "networks", "ConvEncoder": "networks", "MLPDecoder": "networks", "MLPEncoder": "networks",
    "TrainState": "training", "FitResult": "training", "create_train_state": "training", "fit": "training",
    "make_train_step": "training", "train_epoch": "training",
    "evaluate": "evaluation",
    "checked": "_checks",
}
_LAZY_MODULES = ("build", "checkpoints", "cli", "config", "data", "discrete", "disentanglement", "dsprites",
                 "enumeration", "evaluation", "hooks", "mlp", "models", "networks", "parallel", "plotting", "runner",
                 "runs", "schedules", "streaming", "tc", "tc_training", "tracking", "training")

__all__ = sorted([
    "LIKELIHOODS", "bernoulli_log_prob", "gaussian_log_prob", "kl_to_standard_normal", "likelihood_mean",
    "log_likelihood", "standard_normal_log_prob",
    "autoencoder_loss", "elbo", "iwae_bound", "log_importance_weights", "log_marginal", "reparameterize",
    "gradient_statistics", "make_estimator", "AffineLinearGaussian", "LinearGaussian",
    "distributions", "estimators", "linear_gaussian", "objectives", "priors",
    *_LAZY, *_LAZY_MODULES,
])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"vae_jax.{_LAZY[name]}"), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"vae_jax.{name}")
    raise AttributeError(f"module 'vae_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
