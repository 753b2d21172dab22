"""Discrete latent variables: factorised Bernoulli and categorical distributions, and models.

Two latent families, named by ``latent``:

- ``"bernoulli"``: ``d`` independent binary units; logits and samples ``[d]``.
- ``"categorical"``: ``G`` independent groups of ``K`` categories; logits ``[G, K]``,
  samples one-hot ``[G, K]``.

Log-probabilities accept fractional (relaxed) samples, which gives the relaxed
objectives of the Concrete / Gumbel-softmax estimators and of REBAR.
Every function works on ONE example (batch with ``jax.vmap``); random ones
take an explicit ``key`` first. Log-probabilities are scalars in nats.

The models are the single-stochastic-layer sigmoid belief net VAEs of the
DisARM paper (Dong, Mnih & Tucker 2020, after Tucker et al. 2017 and Yin & Zhou
2019): ``q(b|x)`` and ``p(b)`` factorised over the latents (the prior's logits
are learned), ``p(x|b)`` Bernoulli pixels; *linear* (affine maps) or
*nonlinear* (two deterministic hidden layers of 200 LeakyReLU(0.3) units).
They have the interface of :class:`vae_jax.models.VAE` (``init``, ``encode``,
``decode``, ``bind``, ``objective``, ``log_marginal``, ``reconstruct``, ``sample``,
``likelihood``, ``latent_dim``, per example), with ``encode`` returning the logits
of q instead of ``(mean, log_std)``. As for the Gaussian VAE, every training
objective and the k-sample bound come from the estimators by name:
``make_discrete_estimator("vimco", model, num_samples=k)`` has the k-sample bound
as its value. Imports ``jax`` only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from vae_jax import distributions

LATENTS = ("bernoulli", "categorical")
ACTIVATIONS: dict[str, Callable] = {"leaky_relu": lambda h: jax.nn.leaky_relu(h, 0.3), "tanh": jnp.tanh,
                                    "relu": jax.nn.relu}


def check_latent(latent: str) -> None:
    """Raises ``ValueError`` unless ``latent`` is one of :data:`LATENTS`."""
    if latent not in LATENTS:
        raise ValueError(f"Unknown latent {latent!r}; expected one of {LATENTS}.")


def check_logits(logits: jax.Array, latent: str) -> None:
    """Raises ``ValueError`` unless ``logits`` is ``[d]`` (Bernoulli) or ``[G, K]``, ``K >= 2`` (categorical)."""
    check_latent(latent)
    want = 1 if latent == "bernoulli" else 2
    if jnp.ndim(logits) != want or (latent == "categorical" and jnp.shape(logits)[-1] < 2):
        raise ValueError(f"latent={latent!r} needs logits of shape {'[d]' if want == 1 else '[G, K >= 2]'} "
                         f"for one example; got shape {jnp.shape(logits)}.")


def log_prob(logits: jax.Array, b: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """Log-probability of ``b`` under the factorised distribution with ``logits``.

    Args:
      logits: ``[d]`` (Bernoulli) or ``[G, K]`` (categorical, unnormalised).
      b: same shape; binary / one-hot, or relaxed values in ``[0, 1]`` (then the
        same formula, linear in ``b``, is evaluated).
      latent: ``"bernoulli"`` or ``"categorical"``.

    Returns:
      Scalar, nats: ``sum_j b_j a_j - softplus(a_j)`` or ``sum_g sum_k b_gk log softmax(a_g)_k``.
    """
    check_latent(latent)
    if latent == "bernoulli":
        return distributions.bernoulli_log_prob(logits, b)
    return jnp.sum(b * jax.nn.log_softmax(logits, axis=-1))


def score(logits: jax.Array, b: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """``d log q(b) / d logits``: ``b - sigmoid(a)`` or ``b - softmax(a)``, the shape of ``logits``."""
    check_latent(latent)
    return b - (jax.nn.sigmoid(logits) if latent == "bernoulli" else jax.nn.softmax(logits, axis=-1))


def entropy(logits: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """Entropy of the factorised distribution, scalar (nats)."""
    check_latent(latent)
    if latent == "bernoulli":
        p = jax.nn.sigmoid(logits)
        return jnp.sum(jax.nn.softplus(logits) - p * logits)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(log_p) * log_p)


def kl(q_logits: jax.Array, p_logits: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """``KL(q || p)`` between two factorised distributions of one family, scalar (nats)."""
    check_latent(latent)
    if latent == "bernoulli":
        q = jax.nn.sigmoid(q_logits)
        log_q1, log_q0 = jax.nn.log_sigmoid(q_logits), jax.nn.log_sigmoid(-q_logits)
        log_p1, log_p0 = jax.nn.log_sigmoid(p_logits), jax.nn.log_sigmoid(-p_logits)
        return jnp.sum(q * (log_q1 - log_p1) + (1 - q) * (log_q0 - log_p0))
    log_q, log_p = jax.nn.log_softmax(q_logits, axis=-1), jax.nn.log_softmax(p_logits, axis=-1)
    return jnp.sum(jnp.exp(log_q) * (log_q - log_p))


def noise(key: jax.Array, logits: jax.Array, *, latent: str = "bernoulli", num_samples: int | None = None
          ) -> jax.Array:
    """Standard logistic (Bernoulli) or Gumbel (categorical) noise ``[(k,), *logits.shape]``.

    ``z = logits + noise`` is the pre-threshold variable: ``b = H(z)`` (Bernoulli) or
    ``one_hot(argmax z)`` (categorical) is an exact draw of the distribution.
    """
    check_latent(latent)
    shape = jnp.shape(logits) if num_samples is None else (num_samples, *jnp.shape(logits))
    dtype = jnp.result_type(logits)
    if latent == "bernoulli":
        return jax.random.logistic(key, shape, dtype)
    return jax.random.gumbel(key, shape, dtype)


def hard(z: jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """The exact sample from the pre-threshold ``z``: ``1[z > 0]`` or ``one_hot(argmax_k z)``, float."""
    check_latent(latent)
    if latent == "bernoulli":
        return (z > 0).astype(z.dtype)
    return jax.nn.one_hot(jnp.argmax(z, axis=-1), z.shape[-1], dtype=z.dtype)


def relax(z: jax.Array, temperature: float | jax.Array, *, latent: str = "bernoulli") -> jax.Array:
    """Concrete relaxation of ``hard(z)``: ``sigmoid(z / t)`` or ``softmax(z / t)`` (same shape)."""
    check_latent(latent)
    if latent == "bernoulli":
        return jax.nn.sigmoid(z / temperature)
    return jax.nn.softmax(z / temperature, axis=-1)


def _broadcast(logits, num_samples):
    return logits if num_samples is None else logits[None]


def sample(key: jax.Array, logits: jax.Array, *, latent: str = "bernoulli", num_samples: int | None = None
           ) -> jax.Array:
    """Exact draws ``b ~ q``: ``[(k,), *logits.shape]``, float 0/1 (one-hot for categorical)."""
    return hard(_broadcast(logits, num_samples) + noise(key, logits, latent=latent, num_samples=num_samples),
                latent=latent)


def relaxed_sample(key: jax.Array, logits: jax.Array, *, temperature: float | jax.Array,
                   latent: str = "bernoulli", num_samples: int | None = None) -> tuple[jax.Array, jax.Array]:
    """A Concrete / Gumbel-softmax draw and the exact draw it relaxes, from the same noise.

    Returns:
      ``(soft, b)``, each ``[(k,), *logits.shape]``: ``soft`` is differentiable in
      ``logits`` and tends to ``b`` as ``temperature -> 0``.
    """
    z = _broadcast(logits, num_samples) + noise(key, logits, latent=latent, num_samples=num_samples)
    return relax(z, temperature, latent=latent), hard(z, latent=latent)


def log_joint(x: jax.Array, b: jax.Array, decode: Callable, prior_logits: jax.Array, *,
              latent: str = "bernoulli", likelihood: str = "bernoulli") -> jax.Array:
    """``log p(x, b) = log p(b) + log p(x | b)`` for one example, scalar (nats).

    Args:
      x: one observation (the shape ``decode`` returns).
      b: one latent sample (exact or relaxed), the shape of ``prior_logits``.
      decode: ``b -> `` parameters of p(x|b) (see :func:`vae_jax.distributions.log_likelihood`).
      prior_logits: logits of the factorised prior p(b).
    """
    return log_prob(prior_logits, b, latent=latent) + distributions.log_likelihood(likelihood, x, decode(b))


# --------------------------------------------------------------------------- models

class DiscreteBound(NamedTuple):
    """A discrete-latent model's pure functions with its parameters bound.

    Attributes:
      encode: ``x ->`` the logits of q(b|x), ``latent_shape``.
      decode: ``b ->`` the pixel logits of p(x|b).
      prior_logits: the logits of the factorised prior p(b), ``latent_shape``.
    """

    encode: Callable[[jax.Array], jax.Array]
    decode: Callable[[jax.Array], jax.Array]
    prior_logits: jax.Array


def _dense(key, fan_in, fan_out):
    return {"w": jax.random.normal(key, (fan_in, fan_out)) / math.sqrt(fan_in), "b": jnp.zeros((fan_out,))}


def mlp_init(key: jax.Array, sizes: Sequence[int]) -> list[dict[str, jax.Array]]:
    """Parameters of a dense network with layer widths ``sizes`` (input first), LeCun-normal weights."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [_dense(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def mlp_apply(layers: Sequence[dict[str, jax.Array]], h: jax.Array, activation: str = "leaky_relu") -> jax.Array:
    """``h [n_in] -> [n_out]``: affine layers with ``activation`` between them (none after the last)."""
    act = ACTIVATIONS[activation]
    for i, layer in enumerate(layers):
        h = h @ layer["w"] + layer["b"]
        if i < len(layers) - 1:
            h = act(h)
    return h


@dataclasses.dataclass(frozen=True)
class DiscreteVAE:
    """A VAE with factorised discrete latents, in pure JAX (no Flax).

    Attributes:
      input_shape: ``(H, W, C)`` (any shape) of one observation; pixels Bernoulli.
      latent_dim: number of binary units ``d`` (Bernoulli) or of groups ``G`` (categorical).
      hidden_sizes: widths of the deterministic hidden layers of the encoder (reversed
        for the decoder); ``()`` is the linear model.
      activation: a key of :data:`ACTIVATIONS`.
      num_categories: ``None`` for Bernoulli latents, else ``K >= 2`` categories per group.
      likelihood: always ``"bernoulli"`` (pixels).

    ``params`` is ``{"encoder": [layers], "decoder": {"layers": [...], "prior_logits": ...}}``.
    """

    input_shape: tuple[int, ...]
    latent_dim: int = 200
    hidden_sizes: tuple[int, ...] = ()
    activation: str = "leaky_relu"
    num_categories: int | None = None
    likelihood: str = "bernoulli"

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not isinstance(self.latent_dim, int) or self.latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int; got {self.latent_dim!r}.")
        if any(h < 1 for h in self.hidden_sizes) or any(s < 1 for s in self.input_shape):
            raise ValueError(f"sizes must be positive; got input_shape={self.input_shape}, "
                             f"hidden_sizes={self.hidden_sizes}.")
        if self.num_categories is not None and (not isinstance(self.num_categories, int) or self.num_categories < 2):
            raise ValueError(f"num_categories must be None (Bernoulli) or an int >= 2; got {self.num_categories!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; expected one of {tuple(ACTIVATIONS)}.")
        if self.likelihood != "bernoulli":
            raise ValueError(f"DiscreteVAE has Bernoulli pixels; got likelihood={self.likelihood!r}.")

    @property
    def latent(self) -> str:
        """``"bernoulli"`` or ``"categorical"``."""
        return "bernoulli" if self.num_categories is None else "categorical"

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(d,)`` or ``(G, K)``: the shape of logits and samples of one example."""
        return (self.latent_dim,) if self.num_categories is None else (self.latent_dim, self.num_categories)

    def init(self, key: jax.Array, x: jax.Array) -> dict[str, Any]:
        """Parameters for one example ``x`` (shapes only); prior logits start at 0 (uniform)."""
        if tuple(jnp.shape(x)) != self.input_shape:
            raise ValueError(f"x has shape {jnp.shape(x)}; this model expects {self.input_shape}.")
        return _init_params(self, key)

    def encode(self, params: dict[str, Any], x: jax.Array) -> jax.Array:
        """``x -> `` the logits of q(b|x), ``latent_shape``."""
        return mlp_apply(params["encoder"], jnp.ravel(x), self.activation).reshape(self.latent_shape)

    def decode(self, params: dict[str, Any], b: jax.Array) -> jax.Array:
        """``b`` (``latent_shape``, exact or relaxed) ``->`` pixel logits of p(x|b), ``input_shape``."""
        return mlp_apply(params["decoder"]["layers"], jnp.ravel(b), self.activation).reshape(self.input_shape)

    def prior_logits(self, params: dict[str, Any]) -> jax.Array:
        """The learned logits of the factorised prior p(b), ``latent_shape``."""
        return params["decoder"]["prior_logits"]

    def decode_mean(self, params: dict[str, Any], b: jax.Array) -> jax.Array:
        """Pixel probabilities of p(x|b), ``input_shape``."""
        return jax.nn.sigmoid(self.decode(params, b))

    def log_weights(self, params: dict[str, Any], x: jax.Array, b: jax.Array) -> jax.Array:
        """``log p(x, b) - log q(b|x)`` for ``b [k, *latent_shape]``: ``[k]`` (nats)."""
        logits, prior = self.encode(params, x), self.prior_logits(params)

        def one(bb):
            return (log_joint(x, bb, lambda v: self.decode(params, v), prior, latent=self.latent)
                    - log_prob(logits, bb, latent=self.latent))
        return jax.vmap(one)(b)

    def objective(self, params: dict[str, Any], key: jax.Array, x: jax.Array, *, num_samples: int = 1
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Monte-Carlo ELBO with ``num_samples`` exact draws (for evaluation: no useful gradient for q;
        train with an estimator of :func:`vae_jax.discrete_estimators.make_discrete_estimator`).

        Returns:
          ``(elbo, {"elbo", "kl"})``: the estimate and the analytic ``KL(q(b|x) || p(b))`` (nats).
        """
        b = sample(key, self.encode(params, x), latent=self.latent, num_samples=num_samples)
        value = jnp.mean(self.log_weights(params, x, b))
        return value, {"elbo": value, "kl": kl(self.encode(params, x), self.prior_logits(params),
                                               latent=self.latent)}

    def bind(self, params: dict[str, Any]) -> DiscreteBound:
        """The pure ``(encode, decode, prior_logits)`` of these parameters (see :class:`DiscreteBound`):
        what every estimator of :mod:`vae_jax.discrete_estimators` takes."""
        return DiscreteBound(functools.partial(self.encode, params), functools.partial(self.decode, params),
                             self.prior_logits(params))

    def code(self, params: dict[str, Any], x: jax.Array) -> jax.Array:
        """The most probable ``b`` under q(b|x) (factorised: each unit / group at its mode), ``latent_shape``."""
        return hard(self.encode(params, x), latent=self.latent)

    def reconstruct(self, params: dict[str, Any], x: jax.Array) -> jax.Array:
        """Pixel probabilities of p(x|b) at the most probable ``b`` of q(b|x), ``input_shape``."""
        return self.decode_mean(params, self.code(params, x))

    def log_marginal(self, params: dict[str, Any], key: jax.Array, x: jax.Array, *, num_samples: int = 5000,
                     chunk_size: int = 500) -> jax.Array:
        """Importance-sampled ``log p(x)`` (nats): the ``num_samples``-draw bound, ``chunk_size`` draws decoded
        at once (chunk ``c`` draws with ``fold_in(key, c)``)."""
        for n, name in ((num_samples, "num_samples"), (chunk_size, "chunk_size")):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(f"{name} must be a positive int; got {n!r}.")
        chunk_size = min(chunk_size, num_samples)
        num_chunks = -(-num_samples // chunk_size)
        logits = self.encode(params, x)

        def chunk(c):
            b = sample(jax.random.fold_in(key, c), logits, latent=self.latent, num_samples=chunk_size)
            return self.log_weights(params, x, b)

        log_w = jax.lax.map(chunk, jnp.arange(num_chunks)).reshape(-1)[:num_samples]
        return jax.nn.logsumexp(log_w) - math.log(num_samples)

    def sample(self, params: dict[str, Any], key: jax.Array, n: int) -> jax.Array:
        """Pixel probabilities for ``n`` draws ``b ~ p(b)``: ``[n, *input_shape]``."""
        b = sample(key, self.prior_logits(params), latent=self.latent, num_samples=n)
        return jax.vmap(self.decode_mean, in_axes=(None, 0))(params, b)


@functools.partial(jax.jit, static_argnums=0)
def _init_params(model: DiscreteVAE, key: jax.Array) -> dict[str, Any]:
    # One compiled call per model: eagerly, every layer shape was a compilation of its own.
    n_in, n_z = math.prod(model.input_shape), math.prod(model.latent_shape)
    k_enc, k_dec = jax.random.split(key)
    return {"encoder": mlp_init(k_enc, (n_in, *model.hidden_sizes, n_z)),
            "decoder": {"layers": mlp_init(k_dec, (n_z, *model.hidden_sizes[::-1], n_in)),
                        "prior_logits": jnp.zeros(model.latent_shape)}}


def linear_sbn(input_shape: Sequence[int], latent_dim: int = 200) -> DiscreteVAE:
    """The DisARM paper's linear model: ``x -> b`` and ``b -> x`` affine, 200 binary latents."""
    return DiscreteVAE(tuple(input_shape), latent_dim)


def nonlinear_sbn(input_shape: Sequence[int], latent_dim: int = 200) -> DiscreteVAE:
    """The DisARM paper's nonlinear model: two hidden layers of 200 LeakyReLU(0.3) units each way."""
    return DiscreteVAE(tuple(input_shape), latent_dim, hidden_sizes=(200, 200))
