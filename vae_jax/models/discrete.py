"""VAEs with factorised discrete latents, in pure JAX (no Flax).

The single-stochastic-layer sigmoid belief net VAEs of the DisARM paper (Dong,
Mnih & Tucker 2020, after Tucker et al. 2017 and Yin & Zhou 2019): ``q(b|x)`` and
``p(b)`` factorised over the latents (the prior's logits are learned), ``p(x|b)``
Bernoulli pixels; *linear* (affine maps) or *nonlinear* (two deterministic hidden
layers of 200 LeakyReLU(0.3) units). They have the interface of
:class:`vae_jax.models.VAE` (``init``, ``encode``, ``decode``, ``bind``,
``objective``, ``log_marginal``, ``reconstruct``, ``sample``, ``likelihood``,
``latent_dim``, per example), with ``encode`` returning the logits of q instead of
``(mean, log_std)``. As for the Gaussian VAE, every training objective and the
k-sample bound come from the estimators by name:
``vae_jax.estimators.make_estimator("vimco", model, num_samples=k)`` has the
k-sample bound as its value. The distributions are :mod:`vae_jax.discrete`.
Imports ``jax`` only.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from vae_jax import mlp
from vae_jax._checks import check_example
from vae_jax.discrete import hard, kl, log_joint, log_prob, sample


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


@dataclasses.dataclass(frozen=True)
class DiscreteVAE:
    """A VAE with factorised discrete latents, in pure JAX (no Flax).

    Attributes:
      input_shape: ``(H, W, C)`` (any shape) of one observation; pixels Bernoulli.
      latent_dim: number of binary units ``d`` (Bernoulli) or of groups ``G`` (categorical).
      hidden_sizes: widths of the deterministic hidden layers of the encoder (reversed
        for the decoder); ``()`` is the linear model.
      activation: a key of :data:`vae_jax.mlp.ACTIVATIONS`.
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
        mlp.check_activation(self.activation)
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
        check_example(x, self.input_shape)
        return mlp.apply(params["encoder"], jnp.ravel(x), self.activation).reshape(self.latent_shape)

    def decode(self, params: dict[str, Any], b: jax.Array) -> jax.Array:
        """``b`` (``latent_shape``, exact or relaxed) ``->`` pixel logits of p(x|b), ``input_shape``."""
        return mlp.apply(params["decoder"]["layers"], jnp.ravel(b), self.activation).reshape(self.input_shape)

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
        train with an estimator of :func:`vae_jax.estimators.make_estimator`).

        Returns:
          ``(elbo, {"elbo", "kl"})``: the estimate and the analytic ``KL(q(b|x) || p(b))`` (nats).
        """
        b = sample(key, self.encode(params, x), latent=self.latent, num_samples=num_samples)
        value = jnp.mean(self.log_weights(params, x, b))
        return value, {"elbo": value, "kl": kl(self.encode(params, x), self.prior_logits(params),
                                               latent=self.latent)}

    def bind(self, params: dict[str, Any]) -> DiscreteBound:
        """The pure ``(encode, decode, prior_logits)`` of these parameters (see :class:`DiscreteBound`):
        what every discrete estimator of :mod:`vae_jax.estimators` takes."""
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
    return {"encoder": mlp.init(k_enc, (n_in, *model.hidden_sizes, n_z)),
            "decoder": {"layers": mlp.init(k_dec, (n_z, *model.hidden_sizes[::-1], n_in)),
                        "prior_logits": jnp.zeros(model.latent_shape)}}


def linear_sbn(input_shape: Sequence[int], latent_dim: int = 200) -> DiscreteVAE:
    """The DisARM paper's linear model: ``x -> b`` and ``b -> x`` affine, 200 binary latents."""
    return DiscreteVAE(tuple(input_shape), latent_dim)


def nonlinear_sbn(input_shape: Sequence[int], latent_dim: int = 200) -> DiscreteVAE:
    """The DisARM paper's nonlinear model: two hidden layers of 200 LeakyReLU(0.3) units each way."""
    return DiscreteVAE(tuple(input_shape), latent_dim, hidden_sizes=(200, 200))
