"""Priors p(z) as pure functions: standard normal, a learned Gaussian mixture, the VampPrior.

A prior is a small ``NamedTuple`` of arrays with two methods, ``log_prob(z [d])
-> scalar`` (nats) and ``sample(key, n) -> [n, d]``; its learned parameters live
in the model's params (``params["prior"]``) and the prior object is rebuilt from
them inside the objective (:meth:`vae_jax.models.VAE.bind`), so gradients flow.

- :class:`StandardNormal`: N(0, I_d), the classic VAE prior (no parameters).
- :class:`GaussianMixture`: ``sum_k pi_k N(z; m_k, diag(s_k^2))``. :func:`mixture`
  builds it from learned ``{"logits" [K], "means" [K, d], "log_stds" [K, d]}``
  (:func:`init_mixture`).
- :func:`vamp`: the VampPrior (Tomczak & Welling, 2018),
  ``p(z) = (1/K) sum_k q(z | u_k)``, the encoder's posterior at ``K`` learned
  pseudo-inputs ``u_k``: a :class:`GaussianMixture` with equal weights whose
  components are the encoder's outputs. As in the authors' code
  (``jmtomczak/vae_vampprior``: ``NonLinear(K, D, bias=False,
  activation=Hardtanh(0, 1))`` initialised ``N(0.05, 0.01)``), the stored
  pseudo-inputs are clipped to ``[0, 1]`` (:func:`pseudo_inputs`; the gradient of a
  clipped value is zero, like Hardtanh's) and initialised from ``N(0.05, 0.01^2)``
  (:func:`init_vamp`).

The mixture's log-density is evaluated as ``log-sum-exp`` over components of
quadratic forms written as matrix products (``z^2 @ P - 2 z @ (M P) + c``), so a
batch of z (under ``jax.vmap``) costs two ``[B, d] x [d, K]`` matmuls instead of a
``[B, K, d]`` element-wise tensor (about 10x faster inside log p(x) with K = 500). In
float32 that expansion loses about ``eps32 * sum_j p_kj (z_j^2 + m_kj^2)`` to cancellation
(``p = 1 / s^2``): up to ~1e-3 nats for a component with std 0.05 at ``|z| ~ 4``, far below
any Monte-Carlo error it enters. Imports ``jax`` only.
"""

from __future__ import annotations

import numbers
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from vae_jax._checks import LOG_2PI, check_finite_number, check_positive_int

PRIORS = ("standard_normal", "mixture", "vamp")
# The authors' defaults (vae_vampprior's load_data: pseudoinputs_mean = 0.05, pseudoinputs_std = 0.01).
PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = 0.05, 0.01


class _StandardNormalFields(NamedTuple):
    latent_dim: int


class StandardNormal(_StandardNormalFields):
    """N(0, I_d). ``latent_dim``: d (a Python int ``>= 1``)."""

    __slots__ = ()

    def __new__(cls, latent_dim: int) -> "StandardNormal":
        if isinstance(latent_dim, (numbers.Number, str)):  # not a pytree placeholder of jax.tree utilities
            check_positive_int(latent_dim, "latent_dim")
        return super().__new__(cls, latent_dim)

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``log N(z; 0, I)`` of one ``z [d]``, nats."""
        return -0.5 * jnp.sum(jnp.square(z)) - 0.5 * z.shape[-1] * LOG_2PI

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws, ``[n, d]``."""
        return jax.random.normal(key, (check_positive_int(n, "n"), self.latent_dim))


class GaussianMixture(NamedTuple):
    """``p(z) = sum_k softmax(logits)_k N(z; means_k, diag(exp(log_stds_k))^2)``.

    Attributes:
      logits: ``[K]`` unnormalised log mixture weights.
      means: ``[K, d]`` component means.
      log_stds: ``[K, d]`` component log standard deviations.
    """

    logits: jax.Array
    means: jax.Array
    log_stds: jax.Array

    def component_log_probs(self, z: jax.Array) -> jax.Array:
        """``log pi_k + log N(z; m_k, s_k)`` for each component, ``[K]``, of one ``z [d]``."""
        precision = jnp.exp(-2.0 * self.log_stds)                                   # [K, d]
        # sum_j p_kj (z_j - m_kj)^2 = (z^2) . p_k - 2 z . (m_k p_k) + sum_j p_kj m_kj^2: two matvecs of z
        # per z, which vmap turns into matmuls.
        constant = jnp.sum(precision * jnp.square(self.means), axis=-1)            # [K]
        quadratic = precision @ jnp.square(z) - 2.0 * (self.means * precision) @ z + constant
        log_norm = -jnp.sum(self.log_stds, axis=-1) - 0.5 * self.means.shape[-1] * LOG_2PI
        return jax.nn.log_softmax(self.logits) + log_norm - 0.5 * jnp.maximum(quadratic, 0.0)

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``log p(z)`` of one ``z [d]``, nats."""
        return jax.nn.logsumexp(self.component_log_probs(z))

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws, ``[n, d]``: a component from the weights, then its Gaussian."""
        n = check_positive_int(n, "n")
        k_component, k_noise = jax.random.split(key)
        component = jax.random.categorical(k_component, self.logits, shape=(n,))
        eps = jax.random.normal(k_noise, (n, self.means.shape[-1]), self.means.dtype)
        return self.means[component] + jnp.exp(self.log_stds[component]) * eps


def init_mixture(key: jax.Array, *, num_components: int, latent_dim: int, scale: float = 1.0) -> dict:
    """Initial learned mixture: equal weights, means ``N(0, scale^2)``, unit standard deviations.

    Returns:
      ``{"logits": [K], "means": [K, d], "log_stds": [K, d]}`` (float32).

    Raises:
      ValueError: ``num_components`` or ``latent_dim`` not a positive int, or ``scale`` not a
        finite number ``>= 0``.
    """
    check_positive_int(num_components, "num_components")
    check_positive_int(latent_dim, "latent_dim")
    _check_nonnegative(scale, "scale")
    return {"logits": jnp.zeros((num_components,)),
            "means": scale * jax.random.normal(key, (num_components, latent_dim)),
            "log_stds": jnp.zeros((num_components, latent_dim))}


def mixture(params: dict) -> GaussianMixture:
    """The :class:`GaussianMixture` of learned ``params`` (see :func:`init_mixture`).

    Raises:
      ValueError: missing keys, or shapes other than ``logits [K]``, ``means [K, d]``, ``log_stds [K, d]``.
    """
    _check_keys(params, ("logits", "means", "log_stds"), "mixture")
    shapes = [jnp.shape(params[k]) for k in ("logits", "means", "log_stds")]
    if len(shapes[0]) != 1 or len(shapes[1]) != 2 or shapes[1] != shapes[2] or shapes[1][0] != shapes[0][0]:
        raise ValueError(f"the mixture prior needs logits [K], means [K, d] and log_stds [K, d]; got shapes "
                         f"{shapes[0]}, {shapes[1]} and {shapes[2]}.")
    return GaussianMixture(params["logits"], params["means"], params["log_stds"])


def init_vamp(key: jax.Array, *, num_components: int, input_shape: Sequence[int],
              mean: float = PSEUDO_INPUT_MEAN, std: float = PSEUDO_INPUT_STD) -> dict:
    """Initial VampPrior pseudo-inputs, ``N(mean, std^2)`` as in the authors' code.

    Returns:
      ``{"pseudo_inputs": [K, *input_shape]}`` (float32, unclipped).

    Raises:
      ValueError: ``num_components`` or a side of ``input_shape`` not a positive int, ``mean``
        not finite, or ``std`` not a finite number ``>= 0``.
    """
    check_positive_int(num_components, "num_components")
    shape = (num_components, *(check_positive_int(s, "input_shape's sides") for s in input_shape))
    check_finite_number(mean, "mean")
    _check_nonnegative(std, "std")
    return {"pseudo_inputs": mean + std * jax.random.normal(key, shape)}


def pseudo_inputs(params: dict) -> jax.Array:
    """The pseudo-inputs the encoder sees, clipped to ``[0, 1]``: ``[K, *input_shape]``."""
    _check_keys(params, ("pseudo_inputs",), "vamp")
    return jnp.clip(params["pseudo_inputs"], 0.0, 1.0)


def vamp(params: dict, encode: Callable[[jax.Array], tuple[jax.Array, jax.Array]]) -> GaussianMixture:
    """The VampPrior ``(1/K) sum_k q(z | u_k)`` as a :class:`GaussianMixture`.

    Args:
      params: ``{"pseudo_inputs": [K, *input_shape]}`` (see :func:`init_vamp`).
      encode: ``x -> (mean [d], log_std [d])`` of ONE input (the model's encoder).

    Returns:
      The equal-weight mixture of the ``K`` posteriors (encoded once, in one vmapped call).
    """
    means, log_stds = jax.vmap(encode)(pseudo_inputs(params))
    return GaussianMixture(jnp.zeros(means.shape[:1], means.dtype), means, log_stds)


def by_name(name: str, params: dict | None, encode: Callable, latent_dim: int) -> StandardNormal | GaussianMixture:
    """The prior ``name`` (one of :data:`PRIORS`) of its parameters ``params``: ``"vamp"`` mixes
    ``encode``'s Gaussians at the pseudo-inputs; ``"standard_normal"`` is N(0, I) in ``latent_dim``."""
    if name == "mixture":
        return mixture(params)
    if name == "vamp":
        return vamp(params, encode)
    return StandardNormal(latent_dim)


def _check_nonnegative(value: float, name: str) -> None:
    if check_finite_number(value, name) < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")


def _check_keys(params: dict, keys: tuple[str, ...], name: str) -> None:
    if not isinstance(params, dict) or any(k not in params for k in keys):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"the {name} prior needs params with keys {list(keys)}; got {got}.")

