"""Flax heads that turn a hidden layer into a posterior layer: a Gaussian, and a flow's parameters.

Shared by :mod:`vae_jax.flow_models` (one layer) and :mod:`vae_jax.hierarchical` (a flow on
every layer). :func:`flow_layer` binds a head's step parameters into the ``flow`` entry of a
posterior layer ``(mean, log_std, flow)`` (:mod:`vae_jax.posteriors`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import flows
from vae_jax._checks import check_positive_int

HE_NORMAL = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # the VampPrior authors' he_init
LOGVAR_BOUNDS = (-6.0, 2.0)  # the authors' Hardtanh on every log-variance head
FLOWS = ("iaf", "planar", "householder")
_SMALL = nn.initializers.normal(0.01)  # amortised planar/Householder heads start near the identity


class GaussianHead(nn.Module):
    """``h -> (mean [features], log_std [features])``, ``log_std = clip(logvar, -6, 2) / 2``."""

    features: int

    @nn.compact
    def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = nn.Dense(self.features, kernel_init=HE_NORMAL, name="mean")(h)
        logvar = nn.Dense(self.features, kernel_init=HE_NORMAL, name="logvar")(h)
        return mean, 0.5 * jnp.clip(logvar, *LOGVAR_BOUNDS)


@functools.lru_cache(maxsize=None)
def flow_steps(flow: str, num_steps: int) -> tuple[flows.Bijection, ...]:
    """The step functions of ``num_steps`` steps of ``flow`` (IAF steps with :func:`vae_jax.flows.reverse`
    between them)."""
    if flow not in FLOWS:
        raise ValueError(f"Unknown flow {flow!r}; expected one of {FLOWS}.")
    check_positive_int(num_steps, "flow_steps")
    step = {"iaf": flows.iaf, "planar": flows.planar, "householder": flows.householder}[flow]
    if flow != "iaf":
        return (step,) * num_steps
    return (flows.iaf,) + (flows.reverse, flows.iaf) * (num_steps - 1)


@functools.lru_cache(maxsize=None)
def _composed(steps: tuple) -> flows.Bijection:
    return flows.compose(steps)  # one function object per flow, so posteriors' tree structures match


def flow_layer(flow: str, num_steps: int, step_params: list) -> jax.tree_util.Partial:
    """``z -> (z', log_det)`` of ``num_steps`` steps of ``flow`` with ``step_params`` bound."""
    return jax.tree_util.Partial(_composed(flow_steps(flow, num_steps)), step_params)


class FlowHead(nn.Module):
    """``h -> per-step parameters`` of a flow on ``latent_dim`` coordinates.

    IAF: a context ``Dense(context_dim)(h)`` and global MADE weights per step (``None`` for the
    reversals between steps). Planar: amortised ``u, w, b`` per step. Householder: amortised ``v``.
    """

    latent_dim: int
    flow: str = "iaf"
    num_steps: int = 2
    made_hidden_sizes: Sequence[int] = (320, 320)
    context_dim: int = 100

    @nn.compact
    def __call__(self, h: jax.Array) -> list:
        d, k = self.latent_dim, self.num_steps
        if self.flow == "iaf":
            context = nn.Dense(self.context_dim, name="context")(h)
            params = []
            for i in range(k):
                made = self.param(f"iaf_{i}", lambda key: flows.init_iaf(
                    key, dim=d, hidden_sizes=tuple(self.made_hidden_sizes), context_dim=self.context_dim))
                params += ([None] if i else []) + [{**made, "context": context}]
            return params
        if self.flow == "planar":
            raw = nn.Dense(k * (2 * d + 1), kernel_init=_SMALL, name="planar")(h).reshape(k, 2 * d + 1)
            return [{"u": r[:d], "w": r[d:2 * d], "b": r[2 * d]} for r in raw]
        raw = nn.Dense(k * d, kernel_init=_SMALL, bias_init=nn.initializers.normal(1.0), name="householder")(h)
        return [{"v": v} for v in raw.reshape(k, d)]
