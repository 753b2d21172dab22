"""The density table's records: its rows, its sizes and its frozen study configuration.

A :class:`Row` names what a row trains: the model (fields of
:class:`vae_jax.config.ModelConfig` over the study's net), the objective and
its samples, and whether KL warm-up runs. A new model family (a hierarchical
VAE with a VampPrior, a flow posterior) is a new :class:`Row` whose ``model``
names that family's config fields and whose ``objective`` names its bound.

:class:`StudyConfig` is everything a row's numbers depend on; it is saved as
``OUT/models/config.json`` (a resume with other options is refused) and bound
to every checkpoint of every row.
"""

from __future__ import annotations

import argparse
import dataclasses
from types import MappingProxyType
from typing import Any, Mapping

from vae_jax import models

OBJECTIVES = ("elbo", "iwae")  # the bounds a row may train and validate on


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table.

    Attributes:
      label: its label; ``{K}`` is replaced by the study's ``num_components``.
      model: :class:`vae_jax.config.ModelConfig` fields over the study's net (e.g. ``{"prior": "vamp"}``).
      objective: the bound trained and validated on: ``"elbo"`` (beta = 1) or ``"iwae"``.
      num_samples: the bound's samples k (``"iwae"``).
      warmup: KL warm-up (beta rising linearly from 0 to 1 over the study's ``warmup_epochs``).
    """

    label: str
    model: Mapping[str, Any] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    objective: str = "elbo"
    num_samples: int = 1
    warmup: bool = False

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective {self.objective!r}; expected one of {OBJECTIVES}.")
        if self.warmup and self.objective != "elbo":
            raise ValueError("KL warm-up weights the KL term of the ELBO; objective must be 'elbo'.")
        object.__setattr__(self, "model", MappingProxyType(dict(self.model)))

    @property
    def iwae_k(self) -> int | None:
        """The IWAE bound's k, or None for the ELBO (as ``result.json`` records it)."""
        return self.num_samples if self.objective == "iwae" else None

    @property
    def prior(self) -> str:
        return self.model.get("prior", "standard_normal")

    def title(self, num_components: int) -> str:
        return self.label.format(K=num_components)


ROWS = {
    "vae": Row("VAE"),
    "vae_warmup": Row("VAE + warm-up", warmup=True),
    "vamp_warmup": Row("VampPrior (K={K}) + warm-up", model={"prior": "vamp"}, warmup=True),
    "iwae5": Row("IWAE k=5", objective="iwae", num_samples=5),
    "iwae50": Row("IWAE k=50", objective="iwae", num_samples=50),
    "hvae_vamp_warmup": Row("HVAE + VampPrior (K={K}) + warm-up", model={"num_layers": 2, "prior": "vamp"},
                            warmup=True),
    "hvae_warmup": Row("HVAE + warm-up", model={"num_layers": 2}, warmup=True),
    "iaf_warmup": Row("VAE + IAF (2 steps) + warm-up", model={"flow": "iaf", "flow_steps": 2}, warmup=True),
    # the stretch candidate (>= -226.0): both levers of the finished rows together
    "hvae_vamp_iaf_warmup": Row("HVAE + VampPrior (K={K}) + IAF (2 steps) + warm-up",
                                model={"num_layers": 2, "prior": "vamp", "flow": "iaf", "flow_steps": 2}, warmup=True),
    "convhvae_vamp_warmup": Row("ConvHVAE + VampPrior (K={K}) + warm-up", model={"num_layers": 2, "architecture": "conv", "prior": "vamp"}, warmup=True),  # noqa: E501
    "convhvae_warmup": Row("ConvHVAE + warm-up", model={"num_layers": 2, "architecture": "conv"}, warmup=True),
}
DEFAULT_MODELS = ["vae", "vae_warmup", "vamp_warmup", "iwae5"]


@dataclasses.dataclass(frozen=True)
class Net:
    """The networks of every row: latents, hidden widths (encoder; reversed for the decoder), layer kind."""

    latent_dim: int
    hidden_sizes: tuple[int, ...]
    architecture: str = "gated_mlp"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much is trained and evaluated (``None``: no limit); every value can be overridden by its flag."""

    train_size: int | None
    test_size: int | None
    epochs: int
    patience: int
    max_minutes: float | None
    num_samples: int
    warmup_epochs: int
    num_components: int


NETS = {"fashion_mnist": Net(40, (300, 300)), "mnist": Net(40, (300, 300))}
QUICK_NET = Net(8, (64,))
SIZES = {"full": Sizes(None, None, 2000, 50, None, 5000, 100, 500),
         "quick": Sizes(500, 50, 2, 50, None, 50, 1, 10)}
PROTOCOL = Sizes(None, None, 2000, 50, None, 5000, 100, 500)  # num_samples: at least
# How the rows train (vae_jax.scale): saved and bound to the checkpoints only when not these defaults,
# so that the runs made before the options existed keep their configuration (and resume).
SCALE_DEFAULTS = {"devices": "one", "data_source": "memory"}


@dataclasses.dataclass(frozen=True)
class StudyConfig(Sizes):
    """Everything a row's numbers depend on (saved as ``OUT/models/config.json``).

    The :class:`Sizes` fields, then the data, net and optimiser; ``*_images`` are
    the numbers of images found (None before the data is loaded); ``devices`` and
    ``data_source`` are ``vae-jax train``'s options (one device or all; in memory or
    streamed from disk: the same numbers to float32 rounding), saved only when not
    :data:`SCALE_DEFAULTS`.
    """

    size: str = "full"
    dataset: str = "fashion_mnist"
    net: Net = NETS["fashion_mnist"]
    learning_rate: float = 5e-4
    batch_size: int = 100
    chunk_size: int = 500
    eval_batch_size: int = 50
    seed: int = 0
    validation_size: int = 10000
    split_seed: int = 0
    validation_binarization_seed: int = 1
    test_binarization_seed: int = 2
    binarization: str = "dynamic (train), static (validation, test)"
    full_protocol: bool = False
    train_images: int | None = None
    validation_images: int | None = None
    test_images: int | None = None
    devices: str = SCALE_DEFAULTS["devices"]
    data_source: str = SCALE_DEFAULTS["data_source"]

    def to_dict(self) -> dict[str, Any]:
        """As saved in ``config.json`` and ``result.json`` (the image counts only once known, the scale
        options only when not the defaults)."""
        d = dataclasses.asdict(self)
        d["net"]["hidden_sizes"] = list(self.net.hidden_sizes)
        return {k: v for k, v in d.items()
                if not (k.endswith("_images") and v is None) and not (k in SCALE_DEFAULTS and SCALE_DEFAULTS[k] == v)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StudyConfig":
        net = dict(d["net"], hidden_sizes=tuple(d["net"]["hidden_sizes"]))
        return cls(**{**d, "net": Net(**net)})


def make_config(args: argparse.Namespace) -> StudyConfig:
    """The study's configuration from the size preset (``--quick``) and the flags that override it.

    Raises:
      ValueError: a size below 1 (``--warmup-epochs``: below 0).
    """
    size = "quick" if args.quick else "full"
    sizes = {name: getattr(args, name, None) for name in (f.name for f in dataclasses.fields(Sizes))}
    sizes = dataclasses.replace(SIZES[size], **{k: v for k, v in sizes.items() if v is not None})
    for name in ("epochs", "patience", "num_samples", "num_components"):
        if getattr(sizes, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(sizes, name)}.")
    if sizes.warmup_epochs < 0:
        raise ValueError(f"--warmup-epochs must be >= 0; got {sizes.warmup_epochs}.")
    net = dataclasses.replace(QUICK_NET if args.quick else NETS[args.dataset], architecture=args.architecture)
    cfg = StudyConfig(**dataclasses.asdict(sizes), size=size, dataset=args.dataset, net=net,
                      learning_rate=args.learning_rate, batch_size=args.batch_size, chunk_size=args.chunk_size,
                      eval_batch_size=args.eval_batch_size, seed=args.seed,
                      validation_size=10000 if size != "quick" else 200,
                      **{k: getattr(args, k, None) or default for k, default in SCALE_DEFAULTS.items()})
    protocol = (size == "full" and dataclasses.replace(sizes, num_samples=PROTOCOL.num_samples) == PROTOCOL
                and sizes.num_samples >= PROTOCOL.num_samples and net.architecture == "gated_mlp"
                and (cfg.learning_rate, cfg.batch_size) == (5e-4, 100))
    return dataclasses.replace(cfg, full_protocol=protocol)


def with_images(cfg: StudyConfig, train: int, validation: int, test: int) -> StudyConfig:
    """``cfg`` with the numbers of images found; the protocol needs 50000 training and 10000 test images."""
    return dataclasses.replace(cfg, train_images=train, validation_images=validation, test_images=test,
                               full_protocol=cfg.full_protocol and (train, test) == (50000, 10000))


def model_config(cfg: StudyConfig, name: str) -> models.ModelConfig:
    """The :class:`vae_jax.config.ModelConfig` of row ``name``: the study's net and the row's fields."""
    fields = dict(latent_dim=cfg.net.latent_dim, hidden_sizes=cfg.net.hidden_sizes,
                  architecture=cfg.net.architecture, num_components=cfg.num_components)
    return models.ModelConfig(**{**fields, **ROWS[name].model})
