"""The train steps of beta-TCVAE and FactorVAE (the training layer of :mod:`vae_jax.tc`).

Each has the ``(state, batch, key) -> (state, metrics)`` contract of
:func:`vae_jax.training.make_train_step`, so it runs in ``train_epoch``,
``train_epoch_stacked`` and ``fit``. beta-TCVAE's objective needs the whole batch
(:func:`vae_jax.tc.tc_vae_objective`); FactorVAE's discriminator takes its own Optax
step after the VAE's (:func:`with_discriminator`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from vae_jax import objectives, tc
from vae_jax.training import make_loss_step, make_train_step


def make_tc_train_step(model: Any, *, dataset_size: int, weighting: str = "mws",
                       dynamic_binarization: bool = False, grad_norm: bool = False) -> Callable:
    """``train_step(state, batch, key) -> (state, metrics)`` of beta-TCVAE, jitted, state donated.

    Same contract as :func:`vae_jax.training.make_train_step`, so it runs in
    ``vae_jax.training.train_epoch``, ``train_epoch_stacked`` and ``fit``.

    Args:
      model: a VAE (``encode(params, x)``, ``decode(params, z)``, ``likelihood``).
      dataset_size: ``N`` of the training data.
      weighting: see :func:`vae_jax.tc.tc_vae_objective`.
      dynamic_binarization: replace the batch by a Bernoulli draw of its pixels each step.
      grad_norm: also report the gradient's global norm.

    Returns:
      The compiled step (:func:`vae_jax.training.make_loss_step`); the TC weight is
      ``state.hparams["beta"]`` (a constant or a schedule, see :mod:`vae_jax.schedules`).
      ``metrics`` are batch means of ``loss`` (= -objective)
      and every aux entry (and ``grad_norm``).
    """
    tc.check_sizes(2, dataset_size, weighting)

    def batch_loss(params, state, batch, key):
        hparams = state.hparams_at_step()
        if "beta" not in hparams:
            raise ValueError("beta-TCVAE needs the TC weight in the state: create_train_state(..., beta=...).")
        values, aux = tc.tc_vae_objective(
            key, batch, lambda v: model.encode(params, v), lambda z: model.decode(params, z),
            likelihood=model.likelihood, beta=hparams["beta"], dataset_size=dataset_size,
            weighting=weighting)
        return -jnp.mean(values), jax.tree.map(jnp.mean, aux)

    return make_loss_step(batch_loss, dynamic_binarization=dynamic_binarization, grad_norm=grad_norm)


def discriminator_step(discriminator: tc.Discriminator, optimizer: Any, key: jax.Array, z: jax.Array
                       ) -> tuple[tc.Discriminator, dict[str, jax.Array]]:
    """One Optax step of ``D`` on ``z [M, L]`` (draws of q(z)) against :func:`vae_jax.tc.permute_dims` of them.

    Returns:
      ``(discriminator, metrics)``: ``discriminator_loss``, ``discriminator_accuracy`` and
      ``discriminator_tc`` (before the step).
    """
    z = jax.lax.stop_gradient(z)
    (loss, aux), grads = jax.value_and_grad(tc.discriminator_loss, has_aux=True)(
        discriminator.params, z, tc.permute_dims(key, z))
    updates, opt_state = optimizer.update(grads, discriminator.opt_state, discriminator.params)
    params = optax.apply_updates(discriminator.params, updates)
    return tc.Discriminator(params, opt_state), {"discriminator_loss": loss, "discriminator_accuracy": aux["accuracy"],
                                                 "discriminator_tc": aux["total_correlation"]}


def with_discriminator(train_step: Callable, model: Any, optimizer: Any) -> Callable:
    """Adds FactorVAE's discriminator step to a VAE train step (same contract, jitted, state donated).

    The VAE step (e.g. ``make_train_step(tc.make_factor_vae_objective(model))``) runs first with
    ``split(key)[0]``; then ``D`` takes one ``optimizer`` step on fresh draws ``z ~ q(z|x)`` of the same
    batch under the updated encoder, against their :func:`vae_jax.tc.permute_dims`. ``D`` lives in
    ``state.estimator_state["discriminator"]`` (see :func:`vae_jax.tc.add_discriminator`); its metrics join the step's.
    """
    def step(state, batch, key):
        if "discriminator" not in state.estimator_state or "gamma" not in state.hparams:
            raise ValueError("FactorVAE needs create_train_state(..., gamma=...) and add_discriminator(state, ...).")
        key_vae, key_draw, key_perm = jax.random.split(key, 3)
        state, metrics = train_step(state, batch, key_vae)
        encode = lambda x: model.encode(state.params, x)  # noqa: E731
        keys = jax.random.split(key_draw, batch.shape[0])
        z = jax.vmap(lambda k, x: objectives.reparameterize(k, *encode(x)))(keys, batch)
        disc, d_metrics = discriminator_step(state.estimator_state["discriminator"], optimizer, key_perm, z)
        return state.replace(estimator_state={**state.estimator_state, "discriminator": disc}), {**metrics, **d_metrics}

    return jax.jit(step, donate_argnums=0)


def make_factor_vae_train_step(model: Any, optimizer: Any, *, dynamic_binarization: bool = False) -> Callable:
    """FactorVAE's ``train_step(state, batch, key) -> (state, metrics)``: :func:`with_discriminator` of
    ``training.make_train_step(tc.make_factor_vae_objective(model))``; ``gamma`` is ``state.hparams["gamma"]``,
    ``optimizer`` the discriminator's (the VAE's is the state's own ``tx``)."""
    vae_step = make_train_step(tc.make_factor_vae_objective(model), dynamic_binarization=dynamic_binarization)
    return with_discriminator(vae_step, model, optimizer)
