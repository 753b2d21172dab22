"""Normalizing flows as pure bijections ``(params, z [d]) -> (z' [d], log_det)`` (jax only).

Every step maps ONE vector (batch with ``jax.vmap``) and returns ``log |det dz'/dz|``
(nats), so a flow posterior has ``log q(z_K | x) = log N(z_0; m, s) - sum_k log_det_k``
(:class:`vae_jax.posteriors.FlowPosterior`). Parameters are plain dicts of arrays; the
parts that depend on ``x`` (IAF's context ``h``, amortised planar parameters) are put
into them by the encoder, so one step function serves both global and amortised flows.

- :func:`iaf`: inverse autoregressive flow (Kingma et al., 2016), the numerically stable
  gated update ``z' = sigma * z + (1 - sigma) * m`` with ``(m, s) = MADE(z, h)`` and
  ``sigma = sigmoid(s)``; triangular Jacobian, ``log_det = sum log sigma``. Its inverse
  (:func:`iaf_inverse`) takes ``d`` sequential MADE passes.
- :func:`made`: the masked autoencoder (Germain et al., 2015) behind it; masks are built
  from degrees with ``jax.numpy`` (:func:`made_masks`), an optional context enters the
  first hidden layer unmasked.
- :func:`planar`: ``z' = z + u_hat tanh(w.z + b)`` (Rezende & Mohamed, 2015) with
  ``u_hat`` constrained so that ``w.u_hat >= -1`` (invertible); no closed-form inverse.
- :func:`householder`: ``z' = (I - 2 v v^T / |v|^2) z`` (Tomczak & Welling, 2016), volume
  preserving (``log_det = 0``), its own inverse.
- :func:`reverse`: reverses the coordinates (between IAF steps, as in the paper).
- :func:`compose`: several steps as one bijection; :func:`compose_inverse` its inverse.

Why not distrax or flowjax: distrax imports TensorFlow Probability and has no MADE/IAF,
flowjax builds on Equinox modules (parameters inside module objects); both would break
"the core imports JAX alone", and each step here is a few lines.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from vae_jax._checks import check_positive_int

Params = Any
Bijection = Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]


def made_masks(dim: int, hidden_sizes: Sequence[int]) -> tuple[list[jax.Array], jax.Array]:
    """MADE masks from degrees: input ``i`` has degree ``i + 1``, hidden units cycle through
    ``1 .. dim - 1``, so output ``i`` depends on inputs ``< i`` only.

    Returns:
      ``(hidden, output)``: ``hidden[l]`` is ``[fan_in, hidden_sizes[l]]`` (1.0 where a weight
      is allowed), ``output`` is ``[hidden_sizes[-1], dim]``.
    """
    previous = jnp.arange(1, dim + 1)
    hidden = []
    for width in hidden_sizes:
        degrees = jnp.arange(width) % max(dim - 1, 1) + 1
        hidden.append((degrees[None, :] >= previous[:, None]).astype(jnp.float32))
        previous = degrees
    output = (jnp.arange(1, dim + 1)[None, :] > previous[:, None]).astype(jnp.float32)
    return hidden, output


def init_made(key: jax.Array, *, dim: int, hidden_sizes: Sequence[int], context_dim: int = 0,
              output_scale: float = 1.0, s_bias: float = 0.0) -> dict:
    """Random MADE parameters: weights ``N(0, 1 / fan_in)`` (output weights times ``output_scale``).

    Returns:
      ``{"hidden": [{"w", "b"}, ...], "m": {"w", "b"}, "s": {"w", "b"}}`` and, when
      ``context_dim > 0``, ``"context": [context_dim, hidden_sizes[0]]``. The ``s`` bias is
      ``s_bias`` (IAF starts near the identity with a large one).
    """
    check_positive_int(dim, "dim")
    if not hidden_sizes:
        raise ValueError("a MADE needs at least one hidden layer; got hidden_sizes=().")
    keys = iter(jax.random.split(key, len(hidden_sizes) + 3))
    normal = lambda k, fan_in, fan_out, scale=1.0: (  # noqa: E731
        scale * jax.random.normal(k, (fan_in, fan_out)) / math.sqrt(fan_in))
    params, fan_in = {"hidden": []}, dim
    for width in hidden_sizes:
        params["hidden"].append({"w": normal(next(keys), fan_in, width), "b": jnp.zeros(width)})
        fan_in = width
    params["m"] = {"w": normal(next(keys), fan_in, dim, output_scale), "b": jnp.zeros(dim)}
    params["s"] = {"w": normal(next(keys), fan_in, dim, output_scale), "b": jnp.full(dim, float(s_bias))}
    if context_dim:
        params["context"] = normal(next(keys), context_dim, hidden_sizes[0])
    return params


def made(params: dict, z: jax.Array, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``(m [d], s [d])`` of one ``z [d]``; ``m_i, s_i`` depend on ``z_{<i}`` (and ``context``) only."""
    hidden_masks, output_mask = made_masks(z.shape[-1], [layer["b"].shape[0] for layer in params["hidden"]])
    h = z
    for index, (layer, mask) in enumerate(zip(params["hidden"], hidden_masks)):
        h = h @ (layer["w"] * mask) + layer["b"]
        if index == 0 and context is not None:
            h = h + context @ params["context"]
        h = jax.nn.elu(h)
    m = h @ (params["m"]["w"] * output_mask) + params["m"]["b"]
    s = h @ (params["s"]["w"] * output_mask) + params["s"]["b"]
    return m, s


def init_iaf(key: jax.Array, *, dim: int, hidden_sizes: Sequence[int], context_dim: int = 0,
             output_scale: float = 0.01, forget_bias: float = 2.0) -> dict:
    """IAF parameters ``{"made": ...}`` near the identity: small output weights and
    ``sigma = sigmoid(forget_bias)`` (Kingma et al. start ``s`` at +1 or +2)."""
    return {"made": init_made(key, dim=dim, hidden_sizes=hidden_sizes, context_dim=context_dim,
                              output_scale=output_scale, s_bias=forget_bias)}


def iaf(params: dict, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One IAF step: ``params = {"made": ..., "context": h [C] (optional)}``; returns ``(z', log_det)``."""
    m, s = made(params["made"], z, params.get("context"))
    sigma = jax.nn.sigmoid(s)
    return sigma * z + (1.0 - sigma) * m, jnp.sum(jax.nn.log_sigmoid(s))


def iaf_inverse(params: dict, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The ``z`` with ``iaf(params, z)[0] == y`` and the inverse's ``log_det`` (``d`` MADE passes:
    pass ``i`` fixes coordinate ``i``, whose ``m_i, s_i`` depend on coordinates ``< i`` only)."""
    def body(_, z):
        m, s = made(params["made"], z, params.get("context"))
        sigma = jax.nn.sigmoid(s)
        return (y - (1.0 - sigma) * m) / sigma

    z = jax.lax.fori_loop(0, y.shape[-1], body, jnp.zeros_like(y))
    return z, -iaf(params, z)[1]


def planar(params: dict, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One planar step ``z' = z + u_hat tanh(w.z + b)``; ``params = {"u" [d], "w" [d], "b" []}``.

    ``u_hat = u + (softplus(w.u) - 1 - w.u) w / |w|^2`` makes ``w.u_hat >= -1``, so the map is
    invertible and ``log_det = log |1 + u_hat . (1 - tanh^2) w|``.
    """
    u, w, b = params["u"], params["w"], params["b"]
    wu = w @ u
    u_hat = u + (jax.nn.softplus(wu) - 1.0 - wu) * w / (w @ w + 1e-12)
    a = jnp.tanh(w @ z + b)
    log_det = jnp.log(jnp.abs(1.0 + (1.0 - jnp.square(a)) * (w @ u_hat)))
    return z + u_hat * a, log_det


def householder(params: dict, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One Householder reflection ``z' = z - 2 v (v.z) / |v|^2``; ``params = {"v" [d]}``; ``log_det = 0``."""
    v = params["v"]
    return z - 2.0 * v * (v @ z) / (v @ v), jnp.zeros((), z.dtype)


def reverse(params: Any, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reverses the coordinates (``params`` unused); ``log_det = 0``. Its own inverse."""
    del params
    return z[::-1], jnp.zeros((), z.dtype)


INVERSES: dict[Bijection, Bijection] = {iaf: iaf_inverse, householder: householder, reverse: reverse}
"""The steps with an inverse: ``inverse(params, z') -> (z, log_det of the inverse)``."""


def compose(steps: Sequence[Bijection]) -> Bijection:
    """The bijection ``steps[-1] o ... o steps[0]``: ``flow(params, z) -> (z', sum of log_dets)``,
    with ``params`` a sequence holding one entry per step."""
    steps = tuple(steps)

    def flow(params: Sequence[Params], z: jax.Array) -> tuple[jax.Array, jax.Array]:
        _check_params(steps, params)
        total = jnp.zeros((), z.dtype)
        for step, step_params in zip(steps, params):
            z, log_det = step(step_params, z)
            total = total + log_det
        return z, total

    return flow


def compose_inverse(steps: Sequence[Bijection]) -> Bijection:
    """The inverse of :func:`compose` ``(steps)`` (every step needs an entry in :data:`INVERSES`)."""
    steps = tuple(steps)
    missing = [getattr(s, "__name__", repr(s)) for s in steps if s not in INVERSES]
    if missing:
        raise ValueError(f"these steps have no inverse: {missing}; invertible steps: "
                         f"{[s.__name__ for s in INVERSES]}.")

    def inverse(params: Sequence[Params], y: jax.Array) -> tuple[jax.Array, jax.Array]:
        _check_params(steps, params)
        total = jnp.zeros((), y.dtype)
        for step, step_params in reversed(tuple(zip(steps, params))):
            y, log_det = INVERSES[step](step_params, y)
            total = total + log_det
        return y, total

    return inverse


def _check_params(steps: tuple, params: Sequence[Params]) -> None:
    if len(params) != len(steps):
        raise ValueError(f"a flow of {len(steps)} steps needs {len(steps)} parameter entries; got {len(params)}.")
