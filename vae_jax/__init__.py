"""vae_jax: pure, composable JAX functions for variational autoencoders."""

from vae_jax import data, estimators, evaluation, parallel
from vae_jax.distributions import (
    LIKELIHOODS,
    bernoulli_log_prob,
    gaussian_log_prob,
    kl_to_standard_normal,
    likelihood_mean,
    log_likelihood,
    standard_normal_log_prob,
)
from vae_jax.linear_gaussian import LinearGaussian
from vae_jax.models import AE, VAE, ModelConfig, build_model
from vae_jax.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vae_jax.objectives import (
    autoencoder_loss,
    elbo,
    iwae_bound,
    log_importance_weights,
    log_marginal,
    reparameterize,
)
from vae_jax.training import (
    TrainState,
    create_train_state,
    evaluate,
    fit,
    make_train_step,
    train_epoch,
)

__version__ = "0.1.0"

__all__ = [
    "AE",
    "LIKELIHOODS",
    "VAE",
    "ConvDecoder",
    "ConvEncoder",
    "LinearGaussian",
    "MLPDecoder",
    "MLPEncoder",
    "ModelConfig",
    "TrainState",
    "autoencoder_loss",
    "bernoulli_log_prob",
    "build_model",
    "create_train_state",
    "elbo",
    "evaluate",
    "fit",
    "gaussian_log_prob",
    "iwae_bound",
    "kl_to_standard_normal",
    "likelihood_mean",
    "log_importance_weights",
    "log_likelihood",
    "log_marginal",
    "make_train_step",
    "reparameterize",
    "standard_normal_log_prob",
    "train_epoch",
    # submodules (plotting, checkpoints and cli are imported on demand: matplotlib, Orbax)
    "data",
    "estimators",
    "evaluation",
    "parallel",
]
