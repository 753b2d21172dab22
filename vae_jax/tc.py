"""Total-correlation penalties (jax only): beta-TCVAE (Chen et al., 2018), the KL split into
index-code MI, total correlation and dimension-wise KL estimated over a minibatch, and FactorVAE
(Kim & Mnih, 2018), the TC estimated by a discriminator (the density-ratio trick). Their train
steps are in the training layer, :mod:`vae_jax.tc_training`.

For a batch ``x_1..x_M`` from a dataset of ``N`` examples with one draw
``z_i ~ q(z | x_i)`` each, the aggregate posterior ``q(z) = (1/N) sum_n q(z | x_n)``
is estimated at ``z_i`` from the batch:

    log q(z_i)        ~ logsumexp_j [log w_ij + log q(z_i | x_j)]
    log prod_l q(z_il) ~ sum_l logsumexp_j [log w_ij + log q(z_il | x_j)]

and the per-example Monte-Carlo KL ``log q(z_i|x_i) - log p(z_i)`` telescopes into

    MI_i  = log q(z_i | x_i) - log q(z_i)           (index-code mutual information)
    TC_i  = log q(z_i) - sum_l log q(z_il)           (total correlation)
    DKL_i = sum_l log q(z_il) - sum_l log p(z_il)    (dimension-wise KL)

Weightings ``w`` (:data:`WEIGHTINGS`; they weight the batch, they are not gradient estimators):

* ``"mws"``: minibatch-weighted sampling as in the paper and its code,
  ``w_ij = 1 / (N M)``. Its log q estimates sit ``log N`` below the batch's own
  aggregate posterior, so its TC is that of ``"batch"`` plus ``(L - 1) log N``
  exactly: a constant, irrelevant to gradients, but not a value to report as nats.
* ``"mss"``: minibatch stratified sampling (the paper's appendix): ``w_ii = 1/N``,
  ``w_i,i+1 = (N - M + 1) / (N (M - 1))`` (cyclic), the others ``1 / (M - 1)``;
  rows sum to 1, the self term nearly drops out: a consistent estimate for ``M, N`` large.
* ``"batch"``: ``w_ij = 1 / M``: the batch's own aggregate posterior, exact when
  the batch IS the dataset.

Why a batch-level objective: ``q(z)`` mixes every example's posterior, so no
per-example function can compute it; :func:`tc_vae_objective` takes the whole
batch and still returns per-example values and aux ``[M]`` (averaged by the
step, like :func:`vae_jax.training.make_train_step`).
:func:`vae_jax.tc_training.make_tc_train_step` returns the same ``(state, batch, key) ->
(state, metrics)`` contract, so it
plugs into ``train_epoch``, ``train_epoch_stacked`` and ``fit``; the TC weight is
``state.hparams["beta"]``, so a sweep over it is one vmapped computation.

FactorVAE: a classifier ``D`` that tells draws of ``q(z)`` (label 1) from draws of
``prod_l q(z_l)`` (label 0, :func:`permute_dims` of a batch of ``q`` draws) is at its
optimum ``D = q(z) / (q(z) + prod_l q(z_l))``, so its logit is ``log q(z) / prod_l q(z_l)``
and ``TC ~ E_q[logit D(z)]``. The VAE maximises ``ELBO - gamma * logit D(z)`` per example
(:func:`make_factor_vae_objective`: pure in ``(params, key, x)``, the discriminator comes in
as a keyword like any hyper-parameter); the discriminator, with its own parameters and
Optax state (:class:`Discriminator`, kept in ``TrainState.estimator_state["discriminator"]``),
takes its own step after the VAE's (:func:`vae_jax.tc_training.with_discriminator`), as the
running baseline of
:func:`vae_jax.estimators.with_running_baseline` does.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from vae_jax import distributions, mlp, objectives
from vae_jax._checks import check_finite_nonnegative, check_positive_int

WEIGHTINGS = ("mws", "mss", "batch")  # how the batch stands in for the dataset in q(z)
_LOG_2PI = math.log(2 * math.pi)


def log_density_matrix(z: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """``[M, M, L]`` with entry ``[i, j, l] = log N(z_il; mean_jl, exp(log_std_jl)^2)``.

    Args:
      z: ``[M, L]`` one draw per example.
      mean, log_std: ``[M, L]`` posterior parameters of the same examples.
    """
    if z.ndim != 2 or mean.shape != z.shape or log_std.shape != z.shape:
        raise ValueError(f"z, mean and log_std must all be [M, L]; got {z.shape}, {mean.shape}, {log_std.shape}.")
    standardized = (z[:, None, :] - mean[None, :, :]) * jnp.exp(-log_std)[None, :, :]
    return -0.5 * (standardized ** 2 + _LOG_2PI) - log_std[None, :, :]


def log_weight_matrix(batch_size: int, dataset_size: int, weighting: str = "mws") -> jax.Array:
    """``[M, M]`` log importance weights ``log w_ij`` of the batch weightings (see module doc)."""
    check_sizes(batch_size, dataset_size, weighting)
    m, n = batch_size, float(dataset_size)
    if weighting == "mws":
        return jnp.full((m, m), -math.log(n * m))
    if weighting == "batch":
        return jnp.full((m, m), -math.log(m))
    eye = jnp.eye(m, dtype=bool)
    nxt = jnp.roll(eye, 1, axis=1)  # (i, i + 1 mod M): the example stratum of the paper's appendix
    w = jnp.where(eye, 1.0 / n, jnp.where(nxt, (n - m + 1) / (n * (m - 1)), 1.0 / (m - 1)))
    return jnp.log(w)


def kl_decomposition(z: jax.Array, mean: jax.Array, log_std: jax.Array, *, dataset_size: int,
                     weighting: str = "mws") -> dict[str, jax.Array]:
    """Per-example MI, TC and dimension-wise KL of the batch (nats; they sum to ``kl``).

    Args:
      z: ``[M, L]`` draws, ``z_i ~ q(z | x_i)``.
      mean, log_std: ``[M, L]`` posterior parameters.
      dataset_size: ``N``, the number of training examples (``>= M``).
      weighting: ``"mws"``, ``"mss"`` or ``"batch"``.

    Returns:
      Dict of ``[M]`` arrays: ``mutual_information``, ``total_correlation``,
      ``dimensionwise_kl`` and ``kl`` (= ``log q(z_i|x_i) - log N(z_i; 0, I)``, their sum).
    """
    log_q = log_density_matrix(z, mean, log_std)
    log_w = log_weight_matrix(z.shape[0], dataset_size, weighting)
    log_qz_given_x = jnp.sum(jnp.diagonal(log_q, axis1=0, axis2=1), axis=0)
    log_qz = jax.nn.logsumexp(log_w + jnp.sum(log_q, axis=2), axis=1)
    log_prod_qz = jnp.sum(jax.nn.logsumexp(log_w[:, :, None] + log_q, axis=1), axis=1)
    log_pz = jnp.sum(-0.5 * (z ** 2 + _LOG_2PI), axis=1)
    return {"mutual_information": log_qz_given_x - log_qz, "total_correlation": log_qz - log_prod_qz,
            "dimensionwise_kl": log_prod_qz - log_pz, "kl": log_qz_given_x - log_pz}


def total_correlation(z: jax.Array, mean: jax.Array, log_std: jax.Array, *, dataset_size: int,
                      weighting: str = "mws") -> jax.Array:
    """Batch estimate of ``TC = KL(q(z) || prod_l q(z_l))``, scalar nats (see :func:`kl_decomposition`)."""
    return jnp.mean(kl_decomposition(z, mean, log_std, dataset_size=dataset_size,
                                     weighting=weighting)["total_correlation"])


def tc_vae_objective(key: jax.Array, x: jax.Array, encode: Callable, decode: Callable, *, likelihood: str,
                     beta: float | jax.Array, dataset_size: int, weighting: str = "mws"
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """beta-TCVAE objective of a batch: ``log p(x_i|z_i) - MI_i - beta TC_i - DKL_i`` per example.

    With ``beta = 1`` it is the single-sample Monte-Carlo ELBO (``objectives.elbo`` with
    ``kl="monte_carlo"``), draw for draw: example ``i`` uses ``jax.random.split(key, M)[i]``.

    Args:
      key: PRNG key of the batch's draws.
      x: ``[M, ...]`` a batch of examples, ``M >= 2``.
      encode: ONE example ``-> (mean [L], log_std [L])``; decode: ``z [L] ->`` likelihood parameters.
      likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"gaussian_learned"``.
      beta: weight of the total correlation (1: plain VAE).
      dataset_size: ``N``, training examples the batches are drawn from (``>= M``).
      weighting: ``"mws"`` (the paper's), ``"mss"`` or ``"batch"``.

    Returns:
      ``(values [M], aux)`` to maximise; aux entries ``[M]``: ``reconstruction``, ``kl``
      (Monte-Carlo), ``elbo``, ``mutual_information``, ``total_correlation``, ``dimensionwise_kl``.
    """
    distributions.check_likelihood(likelihood)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"x must be a batch [M >= 2, ...]; got shape {x.shape}.")
    keys = jax.random.split(key, x.shape[0])
    mean, log_std = jax.vmap(encode)(x)
    eps = jax.vmap(lambda k, m: jax.random.normal(k, m.shape, m.dtype))(keys, mean)
    z = mean + jnp.exp(log_std) * eps
    reconstruction = jax.vmap(lambda xi, zi: distributions.log_likelihood(likelihood, xi, decode(zi)))(x, z)
    terms = kl_decomposition(z, mean, log_std, dataset_size=dataset_size, weighting=weighting)
    value = (reconstruction - terms["mutual_information"] - beta * terms["total_correlation"]
             - terms["dimensionwise_kl"])
    return value, {"reconstruction": reconstruction, "elbo": reconstruction - terms["kl"], **terms}


def check_sizes(batch_size: int, dataset_size: int, weighting: str) -> None:
    """``ValueError`` unless ``weighting`` is one of :data:`WEIGHTINGS` and ``2 <= batch_size <= dataset_size``."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"Unknown weighting {weighting!r}; expected one of {WEIGHTINGS}.")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(dataset_size, "dataset_size")
    if batch_size < 2 or dataset_size < batch_size:
        raise ValueError(f"need 2 <= batch_size <= dataset_size; got batch_size={batch_size}, "
                         f"dataset_size={dataset_size}.")


# ---------------------------------------------------------------- FactorVAE

class Discriminator(NamedTuple):
    """FactorVAE's discriminator: its MLP parameters and its own Optax state (a pytree, so it
    stacks, vmaps and lives in ``TrainState.estimator_state["discriminator"]``)."""

    params: list
    opt_state: Any


def permute_dims(key: jax.Array, z: jax.Array) -> jax.Array:
    """Each column of ``z [M, L]`` permuted across the batch independently: draws of the product
    of the batch's marginals (each column keeps its values exactly; the rows' dependence is broken)."""
    if z.ndim != 2:
        raise ValueError(f"z must be [M, L]; got shape {z.shape}.")
    keys = jax.random.split(key, z.shape[1])
    return jax.vmap(lambda k, column: jax.random.permutation(k, column), in_axes=(0, 1), out_axes=1)(keys, z)


def init_discriminator(key: jax.Array, latent_dim: int, optimizer: Any, *,
                       hidden_sizes: Sequence[int] = (1000,) * 6) -> Discriminator:
    """A discriminator ``z [L] -> logit`` (leaky-ReLU MLP; the paper's 6 x 1000 by default) and its
    optimizer state (``optimizer``: an Optax transformation, e.g. ``optax.adam(1e-4, b1=0.5, b2=0.9)``)."""
    check_positive_int(latent_dim, "latent_dim")
    params = mlp.init(key, (latent_dim, *hidden_sizes, 1))
    return Discriminator(params, optimizer.init(params))


def discriminator_logit(params: list, z: jax.Array) -> jax.Array:
    """``logit D(z)`` for one ``z [L]``: the estimate of ``log q(z) - log prod_l q(z_l)``, nats."""
    return mlp.apply(params, z, "leaky_relu")[0]


def discriminator_loss(params: list, z: jax.Array, z_permuted: jax.Array) -> tuple[jax.Array, dict]:
    """Mean cross-entropy of ``D`` on ``z [M, L]`` (label 1) and ``z_permuted [M', L]`` (label 0).

    Returns:
      ``(loss, aux)``: aux ``accuracy`` (both classes weighted equally) and ``total_correlation``
      (``mean logit D(z)``, the density-ratio TC estimate on ``z``).
    """
    real = jax.vmap(discriminator_logit, in_axes=(None, 0))(params, z)
    fake = jax.vmap(discriminator_logit, in_axes=(None, 0))(params, z_permuted)
    loss = 0.5 * (jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake)))
    accuracy = 0.5 * (jnp.mean(real > 0) + jnp.mean(fake < 0))
    return loss, {"accuracy": accuracy, "total_correlation": jnp.mean(real)}


def make_factor_vae_objective(model: Any) -> Callable:
    """FactorVAE's per-example objective ``(params, key, x, *, gamma, discriminator, beta=1) -> (value, aux)``.

    ``value = elbo - gamma * logit D(z)`` at the ELBO's own draw ``z ~ q(z|x)``: at ``gamma = 0`` it is
    ``model.objective`` exactly. The gradient reaches the encoder through ``z``, never ``D``
    (``discriminator``, a :class:`Discriminator`, is an argument, not a parameter).

    Args:
      model: a VAE with the standard normal prior (``bind``, ``likelihood``).

    Returns:
      The objective; aux: ``reconstruction``, ``kl``, ``elbo`` and ``total_correlation`` (``logit D(z)``).
    """
    def objective(params, key, x, *, gamma, discriminator, beta=1.0):
        check_finite_nonnegative(gamma, "gamma")
        encode, decode, prior = model.bind(params)
        if prior is not None:
            raise ValueError("FactorVAE needs the standard normal prior.")
        mean, log_std = encode(x)
        value, aux = objectives.elbo(key, x, lambda _: (mean, log_std), decode, likelihood=model.likelihood,
                                     beta=beta, num_samples=1)
        z = objectives.reparameterize(key, mean, log_std, 1)[0]  # the ELBO's draw: same key, same eps
        tc_value = discriminator_logit(discriminator.params, z)
        return value - gamma * tc_value, {**aux, "total_correlation": tc_value}

    return objective


def add_discriminator(state: Any, key: jax.Array, optimizer: Any, *, latent_dim: int,
                      hidden_sizes: Sequence[int] = (1000,) * 6) -> Any:
    """``state`` with a fresh :func:`init_discriminator` in ``estimator_state["discriminator"]``
    (what :func:`vae_jax.tc_training.with_discriminator` trains)."""
    disc = init_discriminator(key, latent_dim, optimizer, hidden_sizes=hidden_sizes)
    return state.replace(estimator_state={**state.estimator_state, "discriminator": disc})
