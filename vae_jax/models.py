"""VAE and AE: Flax networks bundled into pure functions of ``(params, ...)``.

All methods work on ONE example (``x [H, W, C]``, ``z [d]``) except
:meth:`VAE.sample`; batch with ``jax.vmap(fn, in_axes=(None, 0))``.
``params`` is ``{"encoder": ..., "decoder": ...}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as D
from vae_jax import networks
from vae_jax import objectives as O

Params = Any
ARCHITECTURES = ("mlp", "conv")
KINDS = ("vae", "ae")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (saved beside checkpoints).

    Attributes:
      kind: ``"vae"`` or ``"ae"`` (the deterministic autoencoder baseline).
      latent_dim: size ``d`` of z, ``>= 1``.
      likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"gaussian_learned"``.
      architecture: ``"mlp"`` or ``"conv"`` (conv needs H, W divisible by 4).
      hidden_sizes: encoder widths (MLP; reversed for the decoder).
      activation: hidden activation name (see :data:`vae_jax.networks.ACTIVATIONS`).
    """

    kind: str = "vae"
    latent_dim: int = 32
    likelihood: str = "bernoulli"
    architecture: str = "mlp"
    hidden_sizes: tuple[int, ...] = (512, 256)
    activation: str = "relu"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Unknown model kind {self.kind!r}; expected one of {KINDS}.")
        if not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
            raise ValueError(f"latent_dim must be a positive int; got {self.latent_dim!r}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"Unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}.")
        if not self.hidden_sizes or any(int(h) <= 0 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive ints; got {self.hidden_sizes!r}.")
        D.check_likelihood(self.likelihood)
        networks.get_activation(self.activation)
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))


def build_model(config: ModelConfig, input_shape: Sequence[int]) -> "VAE | AE":
    """The :class:`VAE` or :class:`AE` that ``config`` describes, for images ``[H, W, C]``."""
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C); got {input_shape}.")
    stochastic = config.kind == "vae"
    num_outputs = 2 if config.likelihood == "gaussian_learned" else 1
    if config.architecture == "mlp":
        encoder = networks.MLPEncoder(config.latent_dim, config.hidden_sizes, config.activation, stochastic)
        decoder = networks.MLPDecoder(input_shape, config.hidden_sizes[::-1], config.activation, num_outputs)
    else:
        encoder = networks.ConvEncoder(config.latent_dim, activation=config.activation, stochastic=stochastic)
        decoder = networks.ConvDecoder(input_shape, activation=config.activation, num_outputs=num_outputs)
    cls = VAE if stochastic else AE
    return cls(encoder, decoder, config.likelihood, config.latent_dim)


@dataclasses.dataclass(frozen=True)
class _Model:
    encoder: nn.Module
    decoder: nn.Module
    likelihood: str = "bernoulli"
    latent_dim: int = 32

    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Parameters for one example ``x [H, W, C]``."""
        k_enc, k_dec = jax.random.split(key)
        return {
            "encoder": self.encoder.init(k_enc, x)["params"],
            "decoder": self.decoder.init(k_dec, jnp.zeros((self.latent_dim,), x.dtype))["params"],
        }

    def encode(self, params: Params, x: jax.Array) -> Any:
        return self.encoder.apply({"params": params["encoder"]}, x)

    def decode(self, params: Params, z: jax.Array) -> Any:
        """``z [d] ->`` the parameters of p(x | z) (logits, mean, or (mean, log_std))."""
        return self.decoder.apply({"params": params["decoder"]}, z)

    def decode_mean(self, params: Params, z: jax.Array) -> jax.Array:
        """``z [d] ->`` the mean of p(x | z), an image ``[H, W, C]``."""
        return D.likelihood_mean(self.likelihood, self.decode(params, z))

    def code(self, params: Params, x: jax.Array) -> jax.Array:
        """The point code of ``x``, ``[d]`` (the posterior mean for a VAE)."""
        raise NotImplementedError

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array:
        """Mean of p(x | z) at the point code of ``x``: ``[H, W, C]``."""
        return self.decode_mean(params, self.code(params, x))

    def sample(self, params: Params, key: jax.Array, n: int) -> jax.Array:
        """Means of p(x | z) for ``n`` draws ``z ~ N(0, I)``: ``[n, H, W, C]``."""
        z = jax.random.normal(key, (n, self.latent_dim))
        return jax.vmap(self.decode_mean, in_axes=(None, 0))(params, z)


class VAE(_Model):
    """Variational autoencoder: ``encode(params, x) -> (mean [d], log_std [d])``."""

    def code(self, params: Params, x: jax.Array) -> jax.Array:
        return self.encode(params, x)[0]

    def objective(self, params: Params, key: jax.Array, x: jax.Array, **kwargs) -> tuple[jax.Array, dict]:
        """:func:`vae_jax.objectives.elbo` of this model; ``kwargs``: beta, num_samples, kl."""
        return O.elbo(key, x, lambda v: self.encode(params, v), lambda z: self.decode(params, z),
                      likelihood=self.likelihood, **kwargs)

    def iwae_objective(self, params: Params, key: jax.Array, x: jax.Array, *, num_samples: int
                       ) -> tuple[jax.Array, dict]:
        """:func:`vae_jax.objectives.iwae_bound` with ``num_samples`` draws (IWAE training)."""
        value = O.iwae_bound(key, x, lambda v: self.encode(params, v), lambda z: self.decode(params, z),
                             likelihood=self.likelihood, num_samples=num_samples)
        return value, {"iwae": value}

    def log_marginal(self, params: Params, key: jax.Array, x: jax.Array, *, num_samples: int = 5000,
                     chunk_size: int = 500) -> jax.Array:
        """Importance-sampled ``log p(x)`` (:func:`vae_jax.objectives.log_marginal`), nats."""
        return O.log_marginal(key, x, lambda v: self.encode(params, v), lambda z: self.decode(params, z),
                              likelihood=self.likelihood, num_samples=num_samples, chunk_size=chunk_size)


class AE(_Model):
    """Deterministic autoencoder baseline: ``encode(params, x) -> code [d]``."""

    def code(self, params: Params, x: jax.Array) -> jax.Array:
        return self.encode(params, x)

    def objective(self, params: Params, key: jax.Array, x: jax.Array) -> tuple[jax.Array, dict]:
        """Minus :func:`vae_jax.objectives.autoencoder_loss` (``key`` is unused)."""
        del key
        value = -O.autoencoder_loss(x, lambda v: self.encode(params, v), lambda z: self.decode(params, z),
                                    likelihood=self.likelihood)
        return value, {"reconstruction": value}
