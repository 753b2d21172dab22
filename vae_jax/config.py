"""Every config of the library, and a run's config as JSON.

A run is described by two frozen dataclasses: :class:`ModelConfig` (the
network; also ``vae_jax.ModelConfig``) and :class:`TrainConfig` (data,
optimiser, objective), checked together as :class:`RunConfig`. The
command line is built from their fields and defaults; ``config.json`` in the
run folder holds both, so ``evaluate``, ``sample`` and ``--resume`` rebuild the
exact model.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np

from vae_jax._checks import check_finite_number, check_positive_int
from vae_jax.data import BINARIZATION_MODES
from vae_jax import discrete, discrete_estimators, distributions, estimators, networks, priors

ARCHITECTURES = ("mlp", "conv", "gated_mlp")
KINDS = ("vae", "ae")
OBJECTIVES = ("elbo", "iwae")
LATENTS = ("gaussian", *discrete.LATENTS)
ESTIMATOR_FAMILIES = {"gaussian": estimators.ESTIMATORS, "bernoulli": discrete_estimators.ESTIMATORS,
                      "categorical": {k: v for k, v in discrete_estimators.ESTIMATORS.items()
                                      if k not in discrete_estimators.BERNOULLI_ONLY}}
ESTIMATOR_NAMES = (*estimators.ESTIMATORS, *discrete_estimators.ESTIMATORS)
BOUND_ESTIMATORS = ("iwae", "dreg", *discrete_estimators.MULTI_SAMPLE)  # gradients of the k-sample bound
LEARNED_ESTIMATOR_PARAMS = ("nvil", "rebar", "relax")  # estimator parameter groups in the train state
RESUMABLE_CHANGES = ("epochs", "data_dir")  # fields --resume may change


def _field(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (saved beside checkpoints).

    Attributes:
      kind: ``"vae"`` or ``"ae"`` (the deterministic autoencoder baseline).
      latent_dim: size ``d`` of z, ``>= 1``.
      likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"gaussian_learned"``.
      architecture: ``"mlp"``, ``"conv"`` (needs H, W divisible by 4) or ``"gated_mlp"``
        (gated dense layers ``(W1 x + b1) * sigmoid(W2 x + b2)``, He-initialised, log_std
        clipped to [-3, 1]: the VampPrior authors' MLP; ``activation`` is unused).
      hidden_sizes: encoder widths (MLP; reversed for the decoder).
      activation: hidden activation name (see :data:`vae_jax.networks.ACTIVATIONS`).
      prior: ``"standard_normal"``, ``"mixture"`` (K learned diagonal Gaussians) or
        ``"vamp"`` (VampPrior with K learned pseudo-inputs); see :mod:`vae_jax.priors`.
      num_components: K of the mixture / VampPrior, ``>= 1`` (500 in the VampPrior paper).
      compute_dtype: ``"float32"`` or ``"bfloat16"``: the type in which the networks'
        matmuls and convolutions multiply (float32 accumulation either way; see
        :func:`vae_jax.networks.precision`). Parameters, optimiser state, network outputs,
        log-likelihoods, KL, log-sum-exp and reductions are float32 in both.
    """

    kind: str = _field("vae", "'vae' or 'ae' (the deterministic autoencoder baseline)")
    latent_dim: int = _field(32, "size of the latent code z (2 also draws the latent space)")
    likelihood: str = _field("bernoulli", "p(x|z): 'bernoulli', 'gaussian' (sigma = 1) or 'gaussian_learned'")
    architecture: str = _field("mlp", "'mlp', 'conv' (image sides divisible by 4) or 'gated_mlp' "
                               "(gated dense layers)")
    hidden_sizes: tuple[int, ...] = _field((512, 256), "comma-separated MLP encoder widths, reversed for "
                                           "the decoder")
    activation: str = _field("relu", "hidden activation")
    prior: str = _field("standard_normal", "p(z): 'standard_normal', 'mixture' (K learned Gaussians) or "
                        "'vamp' (VampPrior, K pseudo-inputs)")
    num_components: int = _field(500, "K of the mixture or VampPrior prior")
    compute_dtype: str = _field("float32", "type of the networks' matmuls: 'float32' or 'bfloat16' "
                                "(float32 accumulation, parameters and losses)")
    latent: str = _field("gaussian", "latent variables: 'gaussian' (z in R^d), 'bernoulli' (d binary units) "
                         "or 'categorical' (d one-hot groups of --num-categories); discrete ones need --estimator")
    num_categories: int = _field(10, "categories K of each one-hot group (--latent categorical)")

    def __post_init__(self):
        if self.latent not in LATENTS:
            raise ValueError(f"Unknown latent {self.latent!r}; expected one of {LATENTS}.")
        if isinstance(self.num_categories, bool) or not isinstance(self.num_categories, int) \
                or self.num_categories < 2:
            raise ValueError(f"num_categories must be an int >= 2; got {self.num_categories!r}.")
        if self.latent != "gaussian":
            self._check_discrete()
            return
        if self.kind not in KINDS:
            raise ValueError(f"Unknown model kind {self.kind!r}; expected one of {KINDS}.")
        if not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
            raise ValueError(f"latent_dim must be a positive int; got {self.latent_dim!r}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"Unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}.")
        if not self.hidden_sizes or any(int(h) <= 0 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive ints; got {self.hidden_sizes!r}.")
        distributions.check_likelihood(self.likelihood)
        if self.prior not in priors.PRIORS:
            raise ValueError(f"Unknown prior {self.prior!r}; expected one of {priors.PRIORS}.")
        if isinstance(self.num_components, bool) or not isinstance(self.num_components, int) \
                or self.num_components <= 0:
            raise ValueError(f"num_components must be a positive int; got {self.num_components!r}.")
        if self.kind == "ae" and self.prior != "standard_normal":
            raise ValueError(f"an autoencoder (kind='ae') has no prior; got prior={self.prior!r}.")
        networks.get_activation(self.activation)
        if self.compute_dtype not in networks.COMPUTE_DTYPES:
            raise ValueError(f"Unknown compute_dtype {self.compute_dtype!r}; expected one of "
                             f"{networks.COMPUTE_DTYPES}.")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))

    def _check_discrete(self):
        """A discrete-latent model is a :class:`vae_jax.discrete.DiscreteVAE`: a pure-JAX MLP VAE with
        Bernoulli pixels and a learned factorised prior; the options it has no use for must stay at
        their defaults. ``hidden_sizes`` may be empty (the DisARM paper's linear model)."""
        fixed = {"kind": "vae", "likelihood": "bernoulli", "architecture": "mlp", "prior": "standard_normal",
                 "compute_dtype": "float32"}
        wrong = [f"{k}={getattr(self, k)!r}" for k, v in fixed.items() if getattr(self, k) != v]
        if wrong:
            raise ValueError(f"latent={self.latent!r} is a VAE with an MLP, Bernoulli pixels, a learned "
                             f"factorised prior and float32 matmuls; it does not take {', '.join(wrong)}.")
        if not isinstance(self.latent_dim, int) or isinstance(self.latent_dim, bool) or self.latent_dim <= 0:
            raise ValueError(f"latent_dim must be a positive int; got {self.latent_dim!r}.")
        if any(int(h) <= 0 for h in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive ints (or none: the linear model); got "
                             f"{self.hidden_sizes!r}.")
        if self.activation not in discrete.ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r} for discrete latents; expected one of "
                             f"{tuple(discrete.ACTIVATIONS)}.")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))


def parse_options(text: str) -> dict[str, int | float | str]:
    """``"a=1,b=0.5,c=name"`` -> ``{"a": 1, "b": 0.5, "c": "name"}`` (int, else float, else string).

    Raises:
      ValueError: an item without ``=`` or a repeated name.
    """
    options: dict[str, int | float | str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, sep, value = (t.strip() for t in item.partition("="))
        if not sep or not name or not value:
            raise ValueError(f"estimator_options must be comma-separated NAME=VALUE items; got {item!r}.")
        if name in options:
            raise ValueError(f"estimator option {name!r} is given twice.")
        for cast in (int, float, str):
            try:
                options[name] = cast(value)
                break
            except ValueError:
                continue
    return options


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is trained (the command-line help is each field's ``help``).

    Attributes:
      dataset: ``"fashion_mnist"``, ``"digits"`` or a tensorflow-datasets name.
      epochs: total number of passes over the training set.
      batch_size: examples per Adam step.
      learning_rate: Adam step size.
      beta: weight of the KL term of the ELBO (VAE with ``objective="elbo"`` only).
      objective: ``"elbo"`` or ``"iwae"`` (importance-weighted bound, VAE only).
      num_samples: draws of z per example (ELBO) or importance samples (IWAE).
      binarization: ``"auto"``, ``"dynamic"``, ``"static"``, ``"threshold"`` or ``"none"``.
      validation_size: training examples held out to pick the best checkpoint.
      train_size: use only the first N training examples (0: all).
      seed: seed of the initialisation, shuffles, draws and validation split.
      data_dir: folder of the Fashion-MNIST IDX files or TFDS data ("": default).
      estimator: a gradient estimator by name (``""``: the objective's pathwise gradient);
        see :data:`ESTIMATOR_FAMILIES` for the names each latent kind takes.
      estimator_options: ``"NAME=VALUE,..."`` options of the estimator (:func:`parse_options`);
        ``hidden`` sets the units of NVIL's baseline / RELAX's network.
    """

    dataset: str = _field("fashion_mnist", "'fashion_mnist' (offline IDX files), 'digits' "
                          "(scikit-learn 8x8) or a tensorflow-datasets name")
    epochs: int = _field(50, "total number of epochs (with --resume: continue up to this many)")
    batch_size: int = _field(128, "examples per Adam step")
    learning_rate: float = _field(1e-3, "Adam learning rate")
    beta: float = _field(1.0, "weight of the KL term in the ELBO (>= 0; VAE with --objective elbo)")
    objective: str = _field("elbo", "training objective: 'elbo' or 'iwae' (importance-weighted, VAE only)")
    num_samples: int = _field(1, "draws of z per example: Monte Carlo samples of the ELBO, or K of the IWAE bound")
    binarization: str = _field("auto", "pixel binarisation: 'dynamic' (fresh Bernoulli draw every step), "
                               "'static' (one seeded draw), 'threshold' (x > 0.5), 'none'; 'auto' is "
                               "dynamic for the Bernoulli likelihood and none for Gaussian ones")
    validation_size: int = _field(5000, "training examples held out for validation (picks the best checkpoint)")
    train_size: int = _field(0, "use only the first N training examples after the validation split (0: all)")
    seed: int = _field(0, "seed of the initialisation, shuffles, draws and validation split")
    data_dir: str = _field("", "folder of the Fashion-MNIST IDX files or of TFDS data "
                           "('': $VAE_JAX_DATA_DIR, else /usr/share/datasets/fashion-mnist)")
    estimator: str = _field("", "gradient estimator of the objective, by name ('': pathwise for Gaussian "
                            "latents); Gaussian: " + ", ".join(estimators.ESTIMATORS) + "; discrete: "
                            + ", ".join(discrete_estimators.ESTIMATORS) + " (arm, disarm, disarm_iw, rebar, "
                            "relax: Bernoulli only; iwae, dreg, vimco, disarm_iw: with --objective iwae)")
    estimator_options: str = _field("", "options of --estimator as NAME=VALUE,...: e.g. baseline=leave_one_out "
                                    "(or running_mean), num_pairs=2, temperature=0.5, hidden=50 (units of NVIL's "
                                    "baseline / RELAX's network); the draws are --num-samples")

    def __post_init__(self):
        for name in ("epochs", "batch_size", "num_samples", "validation_size"):
            object.__setattr__(self, name, check_positive_int(getattr(self, name), name))
        if self.train_size != 0:
            object.__setattr__(self, "train_size", check_positive_int(self.train_size, "train_size (0: all)"))
        object.__setattr__(self, "learning_rate", check_finite_number(self.learning_rate, "learning_rate",
                                                                      positive=True))
        beta = check_finite_number(self.beta, "beta")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0; got {self.beta!r}.")
        object.__setattr__(self, "beta", beta)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0; got {self.seed!r}.")
        object.__setattr__(self, "seed", int(self.seed))
        if self.objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective {self.objective!r}; expected one of {OBJECTIVES}.")
        if self.binarization not in ("auto", *BINARIZATION_MODES):
            raise ValueError(f"Unknown binarization {self.binarization!r}; expected one of "
                             f"{('auto', *BINARIZATION_MODES)}.")
        if self.estimator and self.estimator not in ESTIMATOR_NAMES:
            raise ValueError(f"Unknown estimator {self.estimator!r}; expected one of {ESTIMATOR_NAMES}.")
        options = parse_options(self.estimator_options)
        if options and not self.estimator:
            raise ValueError("estimator_options need an --estimator.")
        if "num_samples" in options:
            raise ValueError("the estimator's draws are --num-samples, not an estimator option.")

    def estimator_kwargs(self) -> tuple[dict[str, Any], int | None]:
        """``(options, hidden)``: the estimator's keyword options (with ``num_samples`` where it takes
        one) and the units of its learned network (``None``: the default); ``({}, None)`` without one."""
        if not self.estimator:
            return {}, None
        options = parse_options(self.estimator_options)
        hidden = options.pop("hidden", None)
        registry = {**estimators.ESTIMATORS, **discrete_estimators.ESTIMATORS}
        if _takes(registry[self.estimator], "num_samples"):
            options["num_samples"] = self.num_samples
        return options, hidden


def _takes(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A model and its training, checked together; ``binarization`` is resolved from ``"auto"``."""

    model: ModelConfig
    train: TrainConfig

    def __post_init__(self):
        model, train = self.model, self.train
        if train.objective == "iwae" and model.kind != "vae":
            raise ValueError("objective 'iwae' needs a VAE (--model vae).")
        if train.beta != 1.0 and (model.kind != "vae" or train.objective != "elbo"):
            raise ValueError("beta applies to the ELBO of a VAE only; leave it at 1 for an AE or IWAE.")
        if train.num_samples != 1 and model.kind != "vae":
            raise ValueError("num_samples applies to a VAE only; an AE has no draws of z.")
        if train.estimator or model.latent != "gaussian":
            self._check_estimator()
        if train.binarization == "auto":
            mode = "dynamic" if model.likelihood == "bernoulli" else "none"
            object.__setattr__(self, "train", dataclasses.replace(train, binarization=mode))

    def _check_estimator(self):
        """The estimator fits the latent kind, the objective and its options (see ``TrainConfig.estimator``)."""
        model, train, name = self.model, self.train, self.train.estimator
        family = ESTIMATOR_FAMILIES[model.latent]
        if model.kind != "vae":
            raise ValueError("--estimator needs a VAE (--model vae); an AE has no latent draws.")
        if not name:
            raise ValueError(f"latent={model.latent!r} has no reparameterisation gradient; choose --estimator "
                             f"from {', '.join(family)}.")
        if name not in family:
            which = "Bernoulli latents only" if name in discrete_estimators.BERNOULLI_ONLY else (
                "Gaussian latents" if name in estimators.ESTIMATORS else "discrete latents")
            raise ValueError(f"estimator {name!r} is for {which}, not latent={model.latent!r}; choose from "
                             f"{', '.join(family)}.")
        wanted = "iwae" if name in BOUND_ESTIMATORS else "elbo"
        if train.objective != wanted:
            raise ValueError(f"estimator {name!r} estimates the gradient of the {wanted!r} bound; give "
                             f"--objective {wanted}.")
        if train.beta != 1.0 and name != "pathwise":
            raise ValueError(f"beta applies to the pathwise ELBO only; estimator {name!r} takes none.")
        options, hidden = train.estimator_kwargs()
        if "num_samples" not in options and train.num_samples != 1:
            raise ValueError(f"estimator {name!r} takes no num_samples (leave --num-samples at 1)"
                             + ("; it averages --estimator-options num_pairs=N antithetic pairs."
                                if _takes(family[name], "num_pairs") else "."))
        if (name == "vimco" or options.get("baseline") == "leave_one_out") and train.num_samples < 2:
            raise ValueError(f"estimator {name!r}{' with a leave-one-out baseline' if name != 'vimco' else ''} "
                             f"needs --num-samples 2 or more; got {train.num_samples}.")
        if hidden is not None:
            if name not in ("nvil", "relax"):
                raise ValueError(f"the option hidden (units of a learned network) is for nvil and relax, "
                                 f"not {name!r}.")
            check_positive_int(hidden, "hidden")
        injected = ("likelihood", "prior") if model.latent == "gaussian" else discrete_estimators.INJECTED
        estimators.bind_options(family, name, options, injected=(*injected, "baseline_value"))

    def to_dict(self) -> dict[str, Any]:
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        model = dict(d["model"], hidden_sizes=tuple(d["model"]["hidden_sizes"]))
        return cls(ModelConfig(**model), TrainConfig(**d["train"]))

    def resume_conflicts(self, saved: "RunConfig") -> list[str]:
        """The settings in which ``self`` differs from ``saved``, except those ``--resume`` may change."""
        new, old = self.to_dict(), saved.to_dict()
        return [f"{name}={old[part][name]!r} (now {new[part][name]!r})"
                for part in ("model", "train") for name in new[part]
                if new[part][name] != old[part][name] and name not in RESUMABLE_CHANGES]
