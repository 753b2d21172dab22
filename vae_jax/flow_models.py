"""One-layer VAE with a flow posterior: q(z|x) a diagonal Gaussian pushed through K flow steps.

The net is the density table's gated MLP (encoder x -> gated 300 -> gated 300, decoder
:class:`vae_jax.networks.GatedMLPDecoder`), and the encoder also gives the flow's
x-dependent parameters:

- ``flow="iaf"``: inverse autoregressive flow (Kingma et al., 2016). The encoder gives a
  context ``h = Dense(context_dim)`` of its last hidden layer; each step is a MADE
  (``made_hidden_sizes``, ELU) of ``(z, h)`` with global weights; the coordinates are
  reversed between steps.
- ``flow="planar"``: planar steps (Rezende & Mohamed, 2015) whose ``u, w, b`` the encoder
  outputs (amortised, as in van den Berg et al., 2018), initialised near the identity.
- ``flow="householder"``: Householder reflections (Tomczak & Welling, 2016) whose vectors
  ``v`` the encoder outputs; volume preserving.

``encode(x)`` is a :class:`vae_jax.posteriors.FlowPosterior`, so the ELBO's KL is Monte
Carlo (``log q - log p``). The prior is any of :data:`vae_jax.priors.PRIORS`; the VampPrior
mixes the encoder's BASE Gaussians at its pseudo-inputs (a learned mixture prior; the exact
"posterior at the pseudo-inputs" would need the flow's density there).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax._checks import check_positive_int
from vae_jax._posterior_model import PosteriorModelMixin
from vae_jax.objectives import Bound
from vae_jax._posterior_heads import FLOWS, FlowHead, GaussianHead, flow_layer, flow_steps
from vae_jax.networks import GatedDense, GatedMLPDecoder
from vae_jax.posteriors import FlowPosterior

Params = Any
__all__ = ["FLOWS", "FlowEncoder", "FlowVAE"]  # FLOWS: the flow names a config may choose


class FlowEncoder(nn.Module):
    """``x -> (mean [d], log_std [d], per-step flow parameters)`` (gated MLP trunk)."""

    latent_dim: int
    hidden_sizes: Sequence[int] = (300, 300)
    flow: str = "iaf"
    num_steps: int = 2
    made_hidden_sizes: Sequence[int] = (320, 320)
    context_dim: int = 100

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, list]:
        h = x.reshape(-1)
        for width in self.hidden_sizes:
            h = GatedDense(width)(h)
        mean, log_std = GaussianHead(self.latent_dim, name="head")(h)
        steps = FlowHead(self.latent_dim, self.flow, self.num_steps, self.made_hidden_sizes, self.context_dim,
                         name="flow")(h)
        return mean, log_std, steps


@dataclasses.dataclass(frozen=True)
class FlowVAE(PosteriorModelMixin):
    """A VAE whose posterior is a flow, with :class:`vae_jax.models.VAE`'s surface;
    ``params = {"encoder", "decoder"[, "prior"]}``.

    Attributes:
      input_shape: ``(H, W, C)`` of one example.
      latent_dim: d (40 in the density table).
      hidden_sizes: gated layers of the encoder; the decoder mirrors them.
      flow: ``"iaf"`` | ``"planar"`` | ``"householder"``; flow_steps: K >= 1.
      made_hidden_sizes, context_dim: IAF's MADE layers and context size.
      likelihood, prior, num_components: as for :class:`vae_jax.models.VAE`.
    """

    input_shape: tuple[int, ...]
    latent_dim: int = 40
    hidden_sizes: tuple[int, ...] = (300, 300)
    flow: str = "iaf"
    flow_steps: int = 2
    made_hidden_sizes: tuple[int, ...] = (320, 320)
    context_dim: int = 100
    likelihood: str = "bernoulli"
    prior: str = "standard_normal"
    num_components: int = 500

    def __post_init__(self):
        for name in ("input_shape", "hidden_sizes", "made_hidden_sizes"):
            object.__setattr__(self, name, tuple(int(s) for s in getattr(self, name)))
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (H, W, C); got {self.input_shape}.")
        flow_steps(self.flow, self.flow_steps)  # validates flow and flow_steps
        for name in ("latent_dim", "context_dim", "num_components"):
            check_positive_int(getattr(self, name), name)
        distributions.check_likelihood(self.likelihood)

    @property
    def top_latent_dim(self) -> int:
        return self.latent_dim

    @property
    def encoder(self) -> FlowEncoder:
        return FlowEncoder(self.latent_dim, self.hidden_sizes, self.flow, self.flow_steps, self.made_hidden_sizes,
                           self.context_dim)

    @property
    def decoder(self) -> GatedMLPDecoder:
        return GatedMLPDecoder(self.input_shape, self.hidden_sizes[::-1],
                               2 if self.likelihood == "gaussian_learned" else 1)

    def init_params(self, key: jax.Array, x: jax.Array) -> Params:
        """Parameters for one example ``x [H, W, C]`` (IAF's MADE weights live in ``encoder``)."""
        k_enc, k_dec = jax.random.split(key)
        return {"encoder": self.encoder.init(k_enc, x)["params"],
                "decoder": self.decoder.init(k_dec, jnp.zeros((self.latent_dim,), x.dtype))["params"],
                **self.init_top_prior(jax.random.fold_in(key, 2), x)}

    def top_gaussian(self, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The base Gaussian ``(mean, log_std)`` of q(z | x) (before the flow)."""
        return self.encoder.apply({"params": params["encoder"]}, x)[:2]

    def encode(self, params: Params, x: jax.Array) -> FlowPosterior:
        """The flow posterior of one ``x``."""
        mean, log_std, step_params = self.encoder.apply({"params": params["encoder"]}, x)
        return FlowPosterior.create(mean, log_std, flow_layer(self.flow, self.flow_steps, step_params))

    def decode(self, params: Params, z: jax.Array) -> Any:
        """``z [d] ->`` the parameters of p(x | z)."""
        return self.decoder.apply({"params": params["decoder"]}, z)

    def bind(self, params: Params) -> Bound:
        """``(encode, decode, prior)``; ``prior`` is None for N(0, I), else the top prior's ``log_prob``."""
        prior = None if self.prior == "standard_normal" else self.top_prior(params).log_prob
        return Bound(functools.partial(self.encode, params), functools.partial(self.decode, params), prior)

    def sample(self, params: Params, key: jax.Array, n: int) -> jax.Array:
        """Means of p(x | z) for ``n`` draws ``z ~ p(z)``: ``[n, H, W, C]``."""
        z = self.top_prior(params).sample(key, n)
        return jax.vmap(self.decode_mean, in_axes=(None, 0))(params, z)
