"""The conditional VAE, M2 and the VQ-VAE from a :class:`vae_jax.config.ModelConfig` (``kind``).

Each kind takes only the fields it uses (:data:`USES`); the others must stay at
their defaults, so a field that would be ignored is a one-line error rather than
a silent no-op. The models are those of :mod:`vae_jax.conditional`,
:mod:`vae_jax.semi_supervised` and :mod:`vae_jax.vq`, with MLP networks (the
conditional VAE and M2) or stride-2 convolutions (the VQ-VAE, whose
``hidden_sizes`` are their channels).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from vae_jax import distributions, networks, vq
from vae_jax._checks import check_positive_int
from vae_jax.conditional import ConditionalVAE, conditional_vae
from vae_jax.config import ModelConfig
from vae_jax.semi_supervised import M2, m2

KINDS = ("conditional", "m2", "vq")
CONDITIONAL_PRIORS = ("standard_normal", "learned")
_NETWORK = ("likelihood", "hidden_sizes", "activation")
USES = {"conditional": ("latent_dim", *_NETWORK, "num_classes", "conditional_prior"),
        "m2": ("latent_dim", *_NETWORK, "num_classes"),
        "vq": (*_NETWORK, "num_codes", "embedding_dim", "codebook_update")}
FIELDS = ("num_classes", "conditional_prior", "num_codes", "embedding_dim", "codebook_update")  # theirs alone


def check_defaults(config: ModelConfig) -> None:
    """``ValueError`` naming every field the config's kind does not use that differs from its default:
    for ``conditional``, ``m2`` and ``vq`` the fields outside :data:`USES`, for the other kinds
    the fields of these three (:data:`FIELDS`)."""
    uses = USES.get(config.kind)
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    unused = [name for name in defaults if name != "kind" and (name not in uses if uses else name in FIELDS)]
    wrong = [f"{name}={getattr(config, name)!r}" for name in unused if getattr(config, name) != defaults[name]]
    if wrong:
        uses_text = f"it uses {', '.join(uses)}" if uses else f"{', '.join(FIELDS)} are for --kind {', '.join(KINDS)}"
        raise ValueError(f"kind={config.kind!r} does not take {', '.join(wrong)} ({uses_text}; leave the others "
                         "at their defaults).")


def check_config(config: ModelConfig) -> None:
    """``ValueError`` naming the first field of a ``conditional``, ``m2`` or ``vq`` config that is wrong."""
    check_defaults(config)
    sizes = config.hidden_sizes
    if not sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes):
        raise ValueError(f"hidden_sizes must be positive ints; got {sizes!r}.")
    distributions.check_likelihood(config.likelihood)
    networks.get_activation(config.activation)
    if config.kind == "vq":
        vq.check_num_codes(config.num_codes)
        check_positive_int(config.embedding_dim, "embedding_dim")
        if config.codebook_update not in vq.CODEBOOK_UPDATES:
            raise ValueError(f"Unknown codebook_update {config.codebook_update!r}; expected one of "
                             f"{vq.CODEBOOK_UPDATES}.")
        return
    check_positive_int(config.latent_dim, "latent_dim")
    if isinstance(config.num_classes, bool) or not isinstance(config.num_classes, int) or config.num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; got {config.num_classes!r}.")
    if config.conditional_prior not in CONDITIONAL_PRIORS:
        raise ValueError(f"Unknown conditional_prior {config.conditional_prior!r}; expected one of "
                         f"{CONDITIONAL_PRIORS}.")


def build(config: ModelConfig, input_shape: tuple[int, ...]) -> ConditionalVAE | M2 | vq.VQVAE:
    """The model of a checked ``conditional``, ``m2`` or ``vq`` config for images ``input_shape (H, W, C)``.

    Raises:
      ValueError: a VQ-VAE whose image sides do not divide by ``2 ** len(hidden_sizes)``.
    """
    hidden = tuple(config.hidden_sizes)
    if config.kind == "conditional":
        return conditional_vae(input_shape, latent_dim=config.latent_dim, num_classes=config.num_classes,
                               hidden_sizes=hidden, likelihood=config.likelihood, activation=config.activation,
                               learned_prior=config.conditional_prior == "learned")
    if config.kind == "m2":
        return m2(input_shape, num_classes=config.num_classes, latent_dim=config.latent_dim, hidden_sizes=hidden,
                  classifier_sizes=hidden, likelihood=config.likelihood, activation=config.activation)
    return vq.vq_vae(input_shape, num_codes=config.num_codes, embedding_dim=config.embedding_dim, features=hidden,
                     likelihood=config.likelihood, activation=config.activation,
                     codebook_update=config.codebook_update)
