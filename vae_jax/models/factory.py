"""A model from its :class:`vae_jax.config.ModelConfig`: the names a config may use, checked here once.

The config is a plain record (:mod:`vae_jax.config` imports no other module of
the library); the choices it names live with the modules that own them
(likelihoods in :mod:`vae_jax.distributions`, priors in :mod:`vae_jax.priors`,
activations and compute types in :mod:`vae_jax.networks` and :mod:`vae_jax.mlp`),
and :func:`check_config` asks each of them.
"""

from __future__ import annotations

from typing import Any, Sequence

from vae_jax import distributions, mlp, networks, priors
from vae_jax import discrete as discrete_latents
from vae_jax.flow_models import FLOWS, FlowVAE
from vae_jax.hierarchical import INFERENCES, HierarchicalVAE
from vae_jax._checks import check_positive_int
from vae_jax._hierarchical_nets import NETS as HIERARCHICAL_NETS
from vae_jax.config import ModelConfig
from vae_jax.models import families
from vae_jax.models.discrete import DiscreteVAE
from vae_jax.models.gaussian import AE, VAE

ARCHITECTURES = ("mlp", "conv", "gated_mlp")
KINDS = ("vae", "ae", *families.KINDS)
LATENTS = ("gaussian", *discrete_latents.LATENTS)
# A discrete-latent model is a DiscreteVAE: an MLP with Bernoulli pixels, a learned factorised prior and
# float32 matmuls; the options it has no use for must stay at these (their defaults).
_DISCRETE_FIXED = {"kind": "vae", "likelihood": "bernoulli", "architecture": "mlp", "prior": "standard_normal",
                   "compute_dtype": "float32", "num_layers": 1, "flow": "none", "inference": "separate"}


def _check_choice(value: Any, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; expected one of {tuple(choices)}.")


def _check_sizes(config: ModelConfig, *, allow_empty: bool) -> None:
    check_positive_int(config.latent_dim, "latent_dim")
    try:
        sizes = [check_positive_int(h, "hidden_sizes") for h in config.hidden_sizes]
    except (TypeError, ValueError):
        sizes = []
    if len(sizes) != len(config.hidden_sizes) or not (sizes or allow_empty):
        raise ValueError(f"hidden_sizes must be positive ints{' (or none: the linear model)' if allow_empty else ''}; "
                         f"got {config.hidden_sizes!r}.")


def check_config(config: ModelConfig) -> None:
    """``ValueError`` naming the first field of ``config`` that no model takes."""
    _check_choice(config.kind, KINDS, "model kind")
    if config.kind in families.KINDS:
        families.check_config(config)
        return
    families.check_defaults(config)
    _check_choice(config.latent, LATENTS, "latent")
    if isinstance(config.num_categories, bool) or not isinstance(config.num_categories, int) \
            or config.num_categories < 2:
        raise ValueError(f"num_categories must be an int >= 2; got {config.num_categories!r}.")
    if config.latent != "gaussian":
        wrong = [f"{k}={getattr(config, k)!r}" for k, v in _DISCRETE_FIXED.items() if getattr(config, k) != v]
        if wrong:
            raise ValueError(f"latent={config.latent!r} is a one-layer VAE with an MLP, Bernoulli pixels, a learned "
                             f"factorised prior and float32 matmuls; it does not take {', '.join(wrong)}.")
        _check_sizes(config, allow_empty=True)
        mlp.check_activation(config.activation)
        return
    _check_sizes(config, allow_empty=False)
    _check_choice(config.architecture, ARCHITECTURES, "architecture")
    distributions.check_likelihood(config.likelihood)
    _check_choice(config.prior, priors.PRIORS, "prior")
    check_positive_int(config.num_components, "num_components")
    if config.kind == "ae" and config.prior != "standard_normal":
        raise ValueError(f"an autoencoder (kind='ae') has no prior; got prior={config.prior!r}.")
    networks.get_activation(config.activation)
    _check_choice(config.compute_dtype, networks.COMPUTE_DTYPES, "compute_dtype")
    _check_posterior(config)


def _check_posterior(config: ModelConfig) -> None:
    """Hierarchical latents and flow posteriors: the gated net of the density table, a VAE, float32."""
    check_positive_int(config.num_layers, "num_layers")
    _check_choice(config.flow, ("none", *FLOWS), "flow")
    check_positive_int(config.flow_steps, "flow_steps")
    _check_choice(config.inference, INFERENCES, "inference")
    if config.inference != "separate" and config.num_layers < 2:
        raise ValueError(f"inference={config.inference!r} infers the lower layers of a hierarchical VAE; it needs "
                         f"num_layers >= 2 (got {config.num_layers}).")
    if config.num_layers == 1 and config.flow == "none":
        return
    nets = HIERARCHICAL_NETS if config.num_layers >= 2 else ("gated_mlp",)
    wanted = {"kind": ("vae",), "architecture": nets, "compute_dtype": ("float32",)}
    wrong = [f"{k}={getattr(config, k)!r}" for k, v in wanted.items() if getattr(config, k) not in v]
    if wrong:
        raise ValueError(f"num_layers={config.num_layers}, flow={config.flow!r} is built on a gated net of a VAE "
                         f"in float32 (--architecture {' or '.join(nets)}); it does not take {', '.join(wrong)}.")


def build_model(config: ModelConfig, input_shape: Sequence[int]) -> Any:
    """The model that ``config`` describes, for images ``[H, W, C]``: a :class:`VAE` or :class:`AE`;
    a :class:`DiscreteVAE` (``latent`` ``"bernoulli"`` / ``"categorical"``); a
    :class:`~vae_jax.hierarchical.HierarchicalVAE` (``num_layers >= 2``; ``architecture="conv"``: the
    ConvHVAE's gated convolutions); a :class:`~vae_jax.flow_models.FlowVAE` (one layer, ``flow`` other
    than ``"none"``); for ``kind`` ``"conditional"``, ``"m2"``, ``"vq"`` a
    :class:`~vae_jax.conditional.ConditionalVAE`, :class:`~vae_jax.semi_supervised.M2` or
    :class:`~vae_jax.vq.VQVAE` (:mod:`vae_jax.models.families`).

    Raises:
      ValueError: a field no model takes (:func:`check_config`) or an ``input_shape`` other than ``(H, W, C)``.
    """
    check_config(config)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C); got {input_shape}.")
    if config.kind in families.KINDS:
        return families.build(config, input_shape)
    hidden = tuple(int(h) for h in config.hidden_sizes)
    if config.latent != "gaussian":
        return DiscreteVAE(input_shape, config.latent_dim, hidden_sizes=hidden, activation=config.activation,
                           num_categories=config.num_categories if config.latent == "categorical" else None)
    if config.num_layers >= 2:
        return HierarchicalVAE(input_shape, latent_sizes=(config.latent_dim,) * config.num_layers,
                               hidden_size=hidden[0], likelihood=config.likelihood, prior=config.prior,
                               num_components=config.num_components, flow=config.flow, flow_steps=config.flow_steps,
                               net=config.architecture, inference=config.inference)
    if config.flow != "none":
        return FlowVAE(input_shape, latent_dim=config.latent_dim, hidden_sizes=hidden, flow=config.flow,
                       flow_steps=config.flow_steps, likelihood=config.likelihood, prior=config.prior,
                       num_components=config.num_components)
    stochastic = config.kind == "vae"
    num_outputs = 2 if config.likelihood == "gaussian_learned" else 1
    dtype = None if config.compute_dtype == "float32" else config.compute_dtype
    if config.architecture == "mlp":
        encoder = networks.MLPEncoder(config.latent_dim, hidden, config.activation, stochastic, dtype=dtype)
        decoder = networks.MLPDecoder(input_shape, hidden[::-1], config.activation, num_outputs, dtype=dtype)
    elif config.architecture == "gated_mlp":
        encoder = networks.GatedMLPEncoder(config.latent_dim, hidden, stochastic, dtype=dtype)
        decoder = networks.GatedMLPDecoder(input_shape, hidden[::-1], num_outputs, dtype=dtype)
    else:
        encoder = networks.ConvEncoder(config.latent_dim, activation=config.activation, stochastic=stochastic,
                                       dtype=dtype)
        decoder = networks.ConvDecoder(input_shape, activation=config.activation, num_outputs=num_outputs,
                                       dtype=dtype)
    cls = VAE if stochastic else AE
    return cls(encoder, decoder, config.likelihood, config.latent_dim, input_shape, config.prior,
               config.num_components)
