"""Hierarchical VAE: L stochastic layers, the HVAE and ConvHVAE of the VampPrior paper for L = 2.

``net="gated_mlp"`` follows the authors' ``models/HVAE_2level.py`` (github.com/jmtomczak/vae_vampprior),
with gated dense layers (:class:`vae_jax.networks.GatedDense`, 300 units, He initialisation):

- ``q(z_L | x)``: x -> gated 300 -> gated 300 -> (mean, log-variance) of z_L;
- ``q(z_l | x, z_{l+1})``: gated 300 of x and gated 300 of z_{l+1}, concatenated, gated 300 -> heads;
- ``p(z_l | z_{l+1})``: z_{l+1} -> gated 300 -> gated 300 -> heads;
- ``p(x | z_1, z_2)``: gated 300 of z_1 and gated 300 of z_2, concatenated, gated 300 -> dense
  logits (the published model decodes from BOTH lowest layers);
- every log-variance head is a Hardtanh to ``[-6, 2]``, i.e. ``log_std = logvar / 2`` in ``[-3, 1]``;
- optionally (``flow=``, not in the published model) every factor pushed through its own flow
  (IAF, planar or Householder) whose parameters come from the hidden layer of that factor;
- any prior on the top layer: standard normal, learned mixture, or the VampPrior (the top
  encoder ``q(z_L | x)`` at K pseudo-inputs, as in the authors' ``log_p_z2``).

``inference="ladder"`` (not in the published model) is the ladder VAE's top-down inference
(Sonderby et al. 2016): each lower factor is the precision-weighted product
(:func:`vae_jax.posteriors.precision_weighted`) of a bottom-up Gaussian of x alone (x-branch and
joint layer, no z-branch) and the generative model's own ``p(z_l | z_{l+1})``, so q shares the
decoder's top-down networks (held as :class:`vae_jax.posteriors.Shared` in the posterior object, so
that STL and DReG leave them live); the top factor and any flow are as above.

``net="conv"`` is the authors' ``models/convHVAE_2level.py``: the same model with gated convolutions
where x enters and leaves (:mod:`vae_jax._hierarchical_nets`): ``q(z_L | x)`` and the x-branch of
``q(z_l | x, z_{l+1})`` are stacks of five gated convolutions (two of stride 2) flattened to
6 x H/4 x W/4 features, and ``p(x | z_1, z_2)`` is a gated dense layer to an image, four gated 3 x 3
convolutions and a 1 x 1 convolution. The VampPrior's pseudo-inputs are images that the
convolutional top encoder reads.

``z`` is ONE vector, the concatenation ``[z_1, ..., z_L]`` (bottom first;
:func:`vae_jax.posteriors.split_layers`). ``model.bind(params)`` gives the usual
``(encode, decode, prior)``: ``encode(x)`` is a :class:`vae_jax.posteriors.HierarchicalPosterior`,
``prior(z) = log p(z_L) + sum_l log p(z_l | z_{l+1})``, ``decode(z)`` the logits of p(x | z_1, z_2),
so :mod:`vae_jax.objectives`, ``evaluate``, ``log_marginal``, ``make_train_step``/``fit`` and
checkpoints take the model as they take :class:`vae_jax.models.VAE`. All layers' KL terms are
Monte Carlo (``log q - log p`` at the draws), as in the authors' code.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax._checks import check_positive_int
from vae_jax._hierarchical_nets import NETS, HierarchicalDecoder, HierarchicalEncoder, conv_feature_size
from vae_jax._posterior_model import PosteriorModelMixin
from vae_jax.objectives import Bound
from vae_jax._posterior_heads import FLOWS, flow_layer, flow_steps
from vae_jax.posteriors import HierarchicalPosterior, Shared, precision_weighted, split_layers

Params = Any
INFERENCES = ("separate", "ladder")


@dataclasses.dataclass(frozen=True)
class HierarchicalVAE(PosteriorModelMixin):
    """An L-layer VAE with :class:`vae_jax.models.VAE`'s surface (``init``, ``bind``, ``objective``,
    ``log_marginal``, ``sample``, ``reconstruct``); ``params = {"encoder", "decoder"[, "prior"]}``.

    Attributes:
      input_shape: ``(H, W, C)`` of one example.
      latent_sizes: ``(d_1, ..., d_L)``, bottom first, ``L >= 2`` (``(40, 40)``: the published HVAE).
      hidden_size: width of every gated layer (300).
      likelihood: ``"bernoulli"`` | ``"gaussian"`` | ``"gaussian_learned"``.
      prior: prior of the top layer: ``"standard_normal"`` | ``"mixture"`` | ``"vamp"``.
      num_components: K of the mixture / VampPrior.
      flow: ``"none"`` (Gaussian factors) or a flow of :data:`vae_jax.flow_models.FLOWS` on every
        layer's factor (its parameters from that factor's hidden layer); flow_steps, made_hidden_sizes,
        context_dim: as for :class:`vae_jax.flow_models.FlowVAE`.
      net: ``"gated_mlp"`` (the HVAE) or ``"conv"`` (the ConvHVAE: gated convolutions where x enters
        and leaves; images of any ``H, W``).
      conv_channels: ``(small, large)`` channels of the ConvHVAE's convolutions (the authors': ``(32, 64)``).
      inference: ``"separate"`` (the published HVAE: ``q(z_l | x, z_{l+1})`` has its own networks) or
        ``"ladder"`` (``q(z_l | x, z_{l+1})`` proportional to a bottom-up Gaussian of x times
        ``p(z_l | z_{l+1})``, precision-weighted; shares the decoder's top-down networks).
    """

    input_shape: tuple[int, ...]
    latent_sizes: tuple[int, ...] = (40, 40)
    hidden_size: int = 300
    likelihood: str = "bernoulli"
    prior: str = "standard_normal"
    num_components: int = 500
    flow: str = "none"
    flow_steps: int = 2
    made_hidden_sizes: tuple[int, ...] = (320, 320)
    context_dim: int = 100
    net: str = "gated_mlp"
    conv_channels: tuple[int, int] = (32, 64)
    inference: str = "separate"

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "latent_sizes", tuple(self.latent_sizes))
        object.__setattr__(self, "made_hidden_sizes", tuple(int(s) for s in self.made_hidden_sizes))
        object.__setattr__(self, "conv_channels", tuple(self.conv_channels))
        if self.flow != "none":
            flow_steps(self.flow, self.flow_steps)  # validates flow and flow_steps
        if len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (H, W, C); got {self.input_shape}.")
        if len(self.latent_sizes) < 2:
            raise ValueError(f"a hierarchical VAE needs latent_sizes of >= 2 layers (bottom first); got "
                             f"{self.latent_sizes}. One layer is vae_jax.models.VAE.")
        if self.flow not in ("none", *FLOWS):
            raise ValueError(f"Unknown flow {self.flow!r}; expected 'none' or one of {FLOWS}.")
        if self.net not in NETS:
            raise ValueError(f"Unknown net {self.net!r}; expected one of {NETS}.")
        if self.inference not in INFERENCES:
            raise ValueError(f"Unknown inference {self.inference!r}; expected one of {INFERENCES}.")
        if len(self.conv_channels) != 2:
            raise ValueError(f"conv_channels must be (small, large); got {self.conv_channels}.")
        for size in (*self.latent_sizes, self.hidden_size, self.num_components, self.context_dim, *self.conv_channels):
            check_positive_int(size, "latent sizes, hidden_size, num_components, context_dim and conv_channels")
        distributions.check_likelihood(self.likelihood)

    @property
    def latent_dim(self) -> int:
        """Length of ``z``: ``d_1 + ... + d_L``."""
        return sum(self.latent_sizes)

    @property
    def top_latent_dim(self) -> int:
        return self.latent_sizes[-1]

    @property
    def encoder(self) -> HierarchicalEncoder:
        return HierarchicalEncoder(self.latent_sizes, self.hidden_size, self.flow, self.flow_steps,
                                   self.made_hidden_sizes, self.context_dim, self.net, self.conv_channels,
                                   conv_feature_size(self.input_shape) if self.net == "conv" else None,
                                   ladder=self.inference == "ladder")

    @property
    def decoder(self) -> HierarchicalDecoder:
        num_outputs = 2 if self.likelihood == "gaussian_learned" else 1
        return HierarchicalDecoder(self.input_shape, self.latent_sizes, self.hidden_size, num_outputs, self.net,
                                   self.conv_channels)

    def init_params(self, key: jax.Array, x: jax.Array) -> Params:
        """Parameters for one example ``x [H, W, C]``."""
        k_enc, k_dec = jax.random.split(key)
        return {"encoder": self.encoder.init(k_enc, x)["params"],
                "decoder": self.decoder.init(k_dec, jnp.zeros((self.latent_dim,), x.dtype))["params"],
                **self.init_top_prior(jax.random.fold_in(key, 2), x)}

    def top_gaussian(self, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mean, log_std)`` of ``q(z_L | x)`` (its base Gaussian when the layers have flows)."""
        return self.encoder.apply({"params": params["encoder"]}, x, method=HierarchicalEncoder.top)[:2]

    def _posterior_layer(self, layer: tuple) -> tuple:
        return layer if len(layer) == 2 else (*layer[:2], flow_layer(self.flow, self.flow_steps, layer[2]))

    def _conditional(self, level: int, encoder_params: Params, h_x: jax.Array, z_above: jax.Array) -> tuple:
        return self._posterior_layer(self.encoder.apply({"params": encoder_params}, level, h_x, z_above,
                                                        method=HierarchicalEncoder.conditional))

    def _ladder_conditional(self, level: int, decoder: Shared, bottom_up: tuple, z_above: jax.Array) -> tuple:
        top_down = self.conditional_prior({"decoder": decoder.value}, level, z_above)
        return self._posterior_layer((*precision_weighted(bottom_up[:2], top_down), *bottom_up[2:]))

    def encode(self, params: Params, x: jax.Array) -> HierarchicalPosterior:
        """The posterior ``q(z_L | x) prod_l q(z_l | x, z_{l+1})`` of one ``x``."""
        variables = {"params": params["encoder"]}
        h_x = self.encoder.apply(variables, x, method=HierarchicalEncoder.x_features)
        if self.inference == "ladder":
            conditionals = [jax.tree_util.Partial(
                functools.partial(self._ladder_conditional, level), Shared(params["decoder"]),
                self.encoder.apply(variables, level, h, method=HierarchicalEncoder.bottom_up))
                for level, h in enumerate(h_x)]
        else:
            conditionals = [jax.tree_util.Partial(functools.partial(self._conditional, level), params["encoder"], h)
                            for level, h in enumerate(h_x)]
        top = self.encoder.apply(variables, x, method=HierarchicalEncoder.top)
        return HierarchicalPosterior.create(self._posterior_layer(top), conditionals)

    def decode(self, params: Params, z: jax.Array) -> Any:
        """``z [d_1 + ... + d_L] ->`` the parameters of p(x | z_1, z_2)."""
        return self.decoder.apply({"params": params["decoder"]}, z, method=HierarchicalDecoder.likelihood_params)

    def conditional_prior(self, params: Params, level: int, z_above: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mean, log_std)`` of ``p(z_{level+1} | z_{level+2})``."""
        return self.decoder.apply({"params": params["decoder"]}, level, z_above,
                                  method=HierarchicalDecoder.conditional_prior)

    def _log_prior(self, params: Params, top_log_prob, z: jax.Array) -> jax.Array:
        layers = split_layers(z, self.latent_sizes)
        total = top_log_prob(layers[-1])
        for level in range(len(layers) - 1):
            total = total + distributions.gaussian_log_prob(
                layers[level], *self.conditional_prior(params, level, layers[level + 1]))
        return total

    def bind(self, params: Params) -> Bound:
        """``(encode, decode, prior)``; ``prior(z) = log p(z_L) + sum_l log p(z_l | z_{l+1})`` (never None)."""
        prior = functools.partial(self._log_prior, params, self.top_prior(params).log_prob)
        return Bound(functools.partial(self.encode, params), functools.partial(self.decode, params), prior)

    def sample(self, params: Params, key: jax.Array, n: int) -> jax.Array:
        """Means of p(x | z) for ``n`` ancestral draws from the prior: ``[n, H, W, C]``."""
        keys = jax.random.split(key, len(self.latent_sizes))
        layers = [self.top_prior(params).sample(keys[0], n)]
        for level, layer_key in zip(reversed(range(len(self.latent_sizes) - 1)), keys[1:]):
            mean, log_std = jax.vmap(functools.partial(self.conditional_prior, params, level))(layers[0])
            layers.insert(0, mean + jnp.exp(log_std) * jax.random.normal(layer_key, mean.shape, mean.dtype))
        return jax.vmap(self.decode_mean, in_axes=(None, 0))(params, jnp.concatenate(layers, axis=-1))
