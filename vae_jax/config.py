"""Every config of the library, and a run's config as JSON: plain frozen records.

A run is described by two frozen dataclasses: :class:`ModelConfig` (the
network; also ``vae_jax.ModelConfig``) and :class:`TrainConfig` (data,
optimiser, objective), together :class:`RunConfig`. The command line is built
from their fields and defaults; ``config.json`` in the run folder holds both, so
``evaluate``, ``sample`` and ``--resume`` rebuild the exact model.

This module imports no other module of the library: the names a config holds
(architectures, likelihoods, priors, estimators, ...) belong to the modules that
define them, and are checked there, once, at the boundary:
:func:`vae_jax.models.build_model` checks a :class:`ModelConfig`,
:func:`vae_jax.build.validate` a whole :class:`RunConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

RESUMABLE_CHANGES = ("epochs", "data_dir", "track", "mlflow_uri")  # fields --resume may change


def _field(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


def _plain(value: Any) -> Any:
    """NumPy scalars as the Python ``int`` / ``float`` they hold (so the config is JSON), else ``value``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
        return float(value)
    return value


def _normalise(config: Any) -> None:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        value = tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else _plain(value)
        object.__setattr__(config, f.name, value)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (saved beside checkpoints); checked by
    :func:`vae_jax.models.build_model`.

    Attributes:
      kind: ``"vae"``, ``"ae"`` (the deterministic autoencoder baseline), ``"conditional"`` (a
        :class:`vae_jax.conditional.ConditionalVAE` on the dataset's labels), ``"m2"`` (the
        semi-supervised :class:`vae_jax.semi_supervised.M2`) or ``"vq"`` (a convolutional
        :class:`vae_jax.vq.VQVAE` whose ``hidden_sizes`` are the channels of its stride-2
        convolutions). A kind takes only the fields it uses; the others stay at their defaults.
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
      latent: ``"gaussian"``, ``"bernoulli"`` or ``"categorical"`` (a
        :class:`vae_jax.models.DiscreteVAE`, trained with an estimator).
      num_categories: K of each one-hot group of categorical latents.
      num_layers: stochastic layers L; ``>= 2`` is a :class:`vae_jax.hierarchical.HierarchicalVAE`
        (L = 2: the VampPrior paper's HVAE; ``latent_dim`` latents and ``hidden_sizes[0]`` units per
        layer; ``architecture="gated_mlp"``, or ``"conv"``: the ConvHVAE's gated convolutions).
      flow: the posterior's normalizing flow: ``"none"`` (diagonal Gaussian) or one of
        :data:`vae_jax.flow_models.FLOWS` (``"iaf"``, ``"planar"``, ``"householder"``); with
        ``num_layers >= 2`` on every layer's factor.
      flow_steps: steps of the flow.
      inference: how ``num_layers >= 2`` infers the lower layers: ``"separate"`` (``q(z_l | x, z_{l+1})``
        has its own networks: the published HVAE) or ``"ladder"`` (a bottom-up Gaussian of x times
        the decoder's ``p(z_l | z_{l+1})``, precision-weighted: the ladder VAE's top-down inference).
      num_classes: K, labels in ``[0, K)`` (``conditional``, ``m2``).
      conditional_prior: p(z | y) of ``conditional``: ``"standard_normal"`` or ``"learned"``.
      num_codes: codebook size K >= 2 (``vq``).
      embedding_dim: D of each code (``vq``).
      codebook_update: ``"loss"`` (the codebook loss trains the codes) or ``"ema"`` (exponential
        moving averages of the assigned encoder outputs) (``vq``).
    """

    kind: str = _field("vae", "'vae', 'ae' (the deterministic autoencoder baseline), 'conditional' (on the "
                       "dataset's labels), 'm2' (semi-supervised, --num-labelled labels) or 'vq' (VQ-VAE; "
                       "--hidden-sizes are its conv channels)")
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
    num_layers: int = _field(1, "stochastic layers; 2 is the hierarchical VAE of the VampPrior paper (HVAE), with "
                             "--architecture gated_mlp (or conv: the ConvHVAE's gated convolutions), --latent-dim "
                             "latents and hidden_sizes[0] units per layer")
    flow: str = _field("none", "normalizing flow of the posterior: 'none' (diagonal Gaussian), 'iaf' (inverse "
                       "autoregressive, MADE), 'planar' or 'householder' (gated_mlp; every layer's with --num-layers)")
    flow_steps: int = _field(2, "steps of the --flow")
    inference: str = _field("separate", "inference of the lower layers with --num-layers 2 or more: 'separate' "
                            "(own networks: the published HVAE) or 'ladder' (a bottom-up Gaussian of x times the "
                            "decoder's p(z_l|z_{l+1}), precision-weighted: the ladder VAE)")
    num_classes: int = _field(10, "classes K of the labels, in [0, K) (--kind conditional, m2)")
    conditional_prior: str = _field("standard_normal", "p(z|y) of --kind conditional: 'standard_normal' or "
                                    "'learned' (a Gaussian per class)")
    num_codes: int = _field(64, "codebook size K >= 2 (--kind vq)")
    embedding_dim: int = _field(16, "dimension of each code (--kind vq)")
    codebook_update: str = _field("loss", "how the codes learn (--kind vq): 'loss' (the codebook loss) or 'ema' "
                                  "(moving averages of the encoder outputs assigned to them)")

    def __post_init__(self):
        _normalise(self)


def parse_options(text: str) -> dict[str, int | float | str]:
    """``"a=1,b=0.5,c=name"`` -> ``{"a": 1, "b": 0.5, "c": "name"}`` (int, else float, else string).

    Raises:
      ValueError: an item without ``=``, a repeated name, or a number that is not finite
        (``nan``, ``inf``).
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
        if isinstance(options[name], float) and not math.isfinite(options[name]):
            raise ValueError(f"estimator option {name} must be a finite number; got {value!r}.")
    return options


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is trained (the command-line help is each field's ``help``); checked with
    its model by :func:`vae_jax.build.validate`.

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
        see :data:`vae_jax.estimators.ESTIMATORS` for the names each latent kind takes.
      estimator_options: ``"NAME=VALUE,..."`` options of the estimator (:func:`parse_options`);
        ``hidden`` sets the units of NVIL's baseline / RELAX's network.
      devices: ``"one"`` (the default device) or ``"all"``: data-parallel over every device (of
        every host of a job: :func:`vae_jax.parallel.initialize_from_env`) with :mod:`vae_jax.parallel`.
      data_source: ``"memory"`` (one ``lax.scan`` over device-resident data) or ``"disk"``: the
        training images written once to ``RUN/train_images.npy`` and streamed
        (:mod:`vae_jax.streaming`); the same batches and draws.
      track: ``"tensorboard"`` (event files in ``RUN/tensorboard``) or ``"none"``.
      mlflow_uri: an MLflow tracking server (``""``: none); needs ``vae_jax[mlflow]``.
      num_labelled: training examples that keep their label for ``kind="m2"`` (chosen by ``seed``,
        balanced over the classes); the others are unlabelled.
      alpha: M2's weight of ``log q(y | x)`` per labelled example (``0``: the paper's
        ``0.1 N / N_l``, :func:`vae_jax.semi_supervised.paper_alpha`, resolved and saved when the
        run starts).
      labelled_share: M2's weight ``s`` of the labelled batch mean, ``1 - s`` of the unlabelled
        one (``0``: the paper's ``N_l / N``, :func:`vae_jax.semi_supervised.paper_share`, resolved
        and saved when the run starts; ``0.5``: the two batches weighted equally).
      ema_decay: decay of the EMA codebook update (``kind="vq"``, ``codebook_update="ema"``).
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
                            "latents; discrete latents need one)")
    estimator_options: str = _field("", "options of --estimator as NAME=VALUE,...: e.g. baseline=leave_one_out "
                                    "(or running_mean), num_pairs=2, temperature=0.5, hidden=50 (units of NVIL's "
                                    "baseline / RELAX's network); the draws are --num-samples")
    devices: str = _field("one", "'one' device, or 'all': data-parallel over every device (and every host of the "
                          "job that JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID name: "
                          "docs/scale.md); the batch size must divide over them")
    data_source: str = _field("memory", "'memory' (the data on the device, one compiled scan per epoch) or 'disk' "
                              "(training images written once to RUN/train_images.npy and streamed through Grain)")
    track: str = _field("tensorboard", "'tensorboard' (scalars, reconstructions and samples in RUN/tensorboard) or "
                        "'none'; may change on --resume")
    mlflow_uri: str = _field("", "MLflow tracking server, e.g. http://127.0.0.1:5000 ('': none; needs "
                             "vae_jax[mlflow]); a server that fails costs a warning; may change on --resume")
    num_labelled: int = _field(100, "training examples that keep their label for --kind m2 (chosen by --seed, "
                               "balanced over the classes); the rest are unlabelled")
    alpha: float = _field(0.0, "weight of log q(y|x) per labelled example for --kind m2 (0: the paper's "
                          "0.1 N / num_labelled, resolved when the run starts)")
    labelled_share: float = _field(0.0, "weight s of the labelled batch mean for --kind m2, 1 - s for the "
                                   "unlabelled one (0: the paper's num_labelled / N, resolved when the run "
                                   "starts; 0.5: both batches weighted equally)")
    ema_decay: float = _field(0.99, "decay of the EMA codebook update (--kind vq --codebook-update ema)")

    def __post_init__(self):
        _normalise(self)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A model and its training; ``binarization`` is resolved from ``"auto"`` (dynamic for a
    Bernoulli likelihood, static for a Bernoulli VQ-VAE, none otherwise). Checked by :func:`vae_jax.build.validate`."""

    model: ModelConfig
    train: TrainConfig

    def __post_init__(self):
        if self.train.binarization == "auto":  # a VQ step's EMA must see its inputs: no draws inside the step
            mode = ("static" if self.model.kind == "vq" else "dynamic") if self.model.likelihood == "bernoulli" \
                else "none"
            object.__setattr__(self, "train", dataclasses.replace(self.train, binarization=mode))

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
