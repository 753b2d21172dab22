"""A run's objects from its :class:`vae_jax.config.RunConfig`: the one check of the config, and
what it trains with.

:func:`validate` is THE check of a run config, made where the run is assembled:
the model's fields by :func:`vae_jax.models.check_config`, the estimator's by its
record in :mod:`vae_jax.estimators.registry`, hyper-parameters such as ``beta`` by
:func:`vae_jax._checks.check_hparams`. :data:`CHOICES` gives the command line the
names each option takes, read from the modules that own them.
"""

from __future__ import annotations

import functools
from typing import Any

from vae_jax import mlp, networks, vq
from vae_jax._checks import check_finite_number, check_hparams, check_positive_int
from vae_jax.config import RunConfig, TrainConfig, parse_options
from vae_jax.data import BINARIZATION_MODES
from vae_jax.distributions import LIKELIHOODS
from vae_jax.estimators import registry
from vae_jax.flow_models import FLOWS
from vae_jax.hierarchical import INFERENCES
from vae_jax.models import ARCHITECTURES, KINDS, LATENTS, check_config
from vae_jax.models import families
from vae_jax.priors import PRIORS

CHOICES = {"kind": KINDS, "likelihood": LIKELIHOODS, "architecture": ARCHITECTURES,
           "activation": tuple(dict.fromkeys([*networks.ACTIVATIONS, *mlp.ACTIVATIONS])),
           "objective": registry.BOUNDS, "binarization": ("auto", *BINARIZATION_MODES), "prior": PRIORS,
           "compute_dtype": networks.COMPUTE_DTYPES, "latent": LATENTS, "estimator": tuple(registry.ESTIMATORS),
           "flow": ("none", *FLOWS), "devices": ("one", "all"), "data_source": ("memory", "disk"),
           "track": ("none", "tensorboard"), "conditional_prior": families.CONDITIONAL_PRIORS,
           "codebook_update": vq.CODEBOOK_UPDATES, "inference": INFERENCES}
_ELBO_KINDS = ("vae", "conditional")  # trained on an ELBO with beta; m2 sums K ELBOs per example


def estimator_help() -> str:
    """One line per latent kind: the estimators it takes, and the bound each estimates."""
    bound = {b: [n for n, e in registry.ESTIMATORS.items() if e.bound == b] for b in registry.BOUNDS}
    by_latent = "; ".join(f"{latent}: {', '.join(registry.names(latent))}" for latent in LATENTS)
    return f"{by_latent} (with --objective iwae: {', '.join(bound['iwae'])})"


def validate(config: RunConfig) -> RunConfig:
    """``config`` if every field of it is one a run can take; else ``ValueError`` naming the first
    that is not and what it should be.

    Raises:
      ValueError: a bad field, or fields that do not go together (e.g. an estimator
        of the ELBO with ``objective="iwae"``).
    """
    check_config(config.model)
    _check_train(config.train)
    model, train = config.model, config.train
    if train.objective == "iwae" and model.kind != "vae":
        raise ValueError("objective 'iwae' needs a VAE (--model vae).")
    if train.beta != 1.0 and (model.kind not in (*_ELBO_KINDS, "vq") or train.objective != "elbo"):
        raise ValueError("beta applies to the ELBO of a VAE or conditional VAE (and is the commitment weight of a "
                         "VQ-VAE); leave it at 1 for an AE, M2 or IWAE.")
    if train.num_samples != 1 and model.kind not in (*_ELBO_KINDS, "m2"):
        raise ValueError(f"num_samples applies to a VAE, conditional VAE or M2; kind={model.kind!r} has no draws "
                         "of z.")
    if train.estimator or model.latent != "gaussian":
        _check_estimator(config)
    _check_family_train(config)
    return config


def _check_family_train(config: RunConfig) -> None:
    """The training fields of ``kind`` ``conditional``, ``m2`` and ``vq``, and the defaults of the others."""
    model, train = config.model, config.train
    check_positive_int(train.num_labelled, "num_labelled")
    if check_finite_number(train.alpha, "alpha") < 0:
        raise ValueError(f"alpha must be >= 0 (0: the paper's 0.1 N / num_labelled); got {train.alpha!r}.")
    if not 0 <= check_finite_number(train.labelled_share, "labelled_share") <= 1:
        raise ValueError(f"labelled_share must be in [0, 1] (0: the paper's num_labelled / N); got "
                         f"{train.labelled_share!r}.")
    if not 0 <= check_finite_number(train.ema_decay, "ema_decay") < 1:
        raise ValueError(f"ema_decay must be in [0, 1); got {train.ema_decay!r}.")
    defaults = TrainConfig()
    ema = model.kind == "vq" and model.codebook_update == "ema"
    for name, needs, ok in (("num_labelled", "--kind m2", model.kind == "m2"),
                            ("alpha", "--kind m2", model.kind == "m2"),
                            ("labelled_share", "--kind m2", model.kind == "m2"),
                            ("ema_decay", "--kind vq --codebook-update ema", ema)):
        if getattr(train, name) != getattr(defaults, name) and not ok:
            raise ValueError(f"{name} applies to {needs} only; leave it at {getattr(defaults, name)!r}.")
    if model.kind in families.KINDS and (train.devices != "one" or train.data_source != "memory"):
        raise ValueError(f"kind={model.kind!r} trains in memory on one device; leave --devices one and "
                         "--data-source memory.")
    if model.kind == "vq" and train.binarization == "dynamic":
        raise ValueError("a VQ-VAE's step updates its codes from its own inputs, so it takes no dynamic "
                         "binarisation; use --binarize static (the default for a Bernoulli VQ-VAE).")


def _check_train(train: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "num_samples", "validation_size"):
        check_positive_int(getattr(train, name), name)
    if train.train_size != 0:
        check_positive_int(train.train_size, "train_size (0: all)")
    check_finite_number(train.learning_rate, "learning_rate", positive=True)
    check_hparams({"beta": check_finite_number(train.beta, "beta")})
    if isinstance(train.seed, bool) or not isinstance(train.seed, int) or train.seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {train.seed!r}.")
    for name, choices in (("objective", registry.BOUNDS), ("binarization", CHOICES["binarization"]),
                          ("devices", CHOICES["devices"]), ("data_source", CHOICES["data_source"]),
                          ("track", CHOICES["track"])):
        if getattr(train, name) not in choices:
            raise ValueError(f"Unknown {name} {getattr(train, name)!r}; expected one of {choices}.")
    if train.estimator:
        registry.get(train.estimator)
    options = parse_options(train.estimator_options)
    if options and not train.estimator:
        raise ValueError("estimator_options need an --estimator.")
    if "num_samples" in options:
        raise ValueError("the estimator's draws are --num-samples, not an estimator option.")


def estimator_options(train: TrainConfig) -> tuple[dict[str, Any], int | None]:
    """``(options, hidden)``: the estimator's keyword options (with ``num_samples`` where it takes
    one) and the units of its learned network (``None``: the default); ``({}, None)`` without one."""
    if not train.estimator:
        return {}, None
    options = parse_options(train.estimator_options)
    hidden = options.pop("hidden", None)
    if registry.get(train.estimator).takes("num_samples"):
        options["num_samples"] = train.num_samples
    return options, hidden


def _check_estimator(config: RunConfig) -> None:
    """The estimator fits the latent kind, the objective and its options (see ``TrainConfig.estimator``)."""
    model, train = config.model, config.train
    if model.kind != "vae":
        raise ValueError("--estimator needs a VAE (--model vae); an AE has no latent draws.")
    if not train.estimator:
        raise ValueError(f"latent={model.latent!r} has no reparameterisation gradient; choose --estimator "
                         f"from {', '.join(registry.names(model.latent))}.")
    record = registry.get(train.estimator)
    registry.check_latent(record, model.latent)
    flow = model.flow != "none"
    if (model.num_layers > 1 or flow) and not record.takes_posterior(flow):
        takes = [n for n, e in registry.ESTIMATORS.items()
                 if e.latents == registry.GAUSSIAN and e.takes_posterior(flow)]
        needs = "log q(z|x) at given draws, which a flow posterior does not give" if record.any_posterior else \
            "a diagonal Gaussian posterior"
        raise ValueError(f"estimator {record.name!r} needs {needs}; with --num-layers {model.num_layers} and "
                         f"--flow {model.flow} choose from {', '.join(takes)}.")
    if train.objective != record.bound:
        raise ValueError(f"estimator {record.name!r} estimates the gradient of the {record.bound!r} bound; give "
                         f"--objective {record.bound}.")
    if train.beta != 1.0 and not record.takes("beta"):
        raise ValueError(f"beta applies to the pathwise ELBO only; estimator {record.name!r} takes none.")
    options, hidden = estimator_options(train)
    if not record.takes("num_samples") and train.num_samples != 1:
        raise ValueError(f"estimator {record.name!r} takes no num_samples (leave --num-samples at 1)"
                         + ("; it averages --estimator-options num_pairs=N antithetic pairs."
                            if record.takes("num_pairs") else "."))
    loo = options.get("baseline") == "leave_one_out"
    if (loo or record.min_num_samples >= 2) and train.num_samples < 2:
        raise ValueError(f"estimator {record.name!r}{' with a leave-one-out baseline' if loo else ''} "
                         f"needs --num-samples 2 or more; got {train.num_samples}.")
    if hidden is not None:
        if record.hidden is None:
            *others, last = [n for n, e in registry.ESTIMATORS.items() if e.hidden is not None]
            with_net = f"{', '.join(others)} and {last}" if others else last
            raise ValueError(f"the option hidden (units of a learned network) is for {with_net}, "
                             f"not {record.name!r}.")
        check_positive_int(hidden, "hidden")
    registry.check_options(record, options)


def training_objective(config: RunConfig, model: Any) -> tuple[Any, Any, dict[str, Any], dict[str, float]]:
    """What ``config.train`` trains ``model`` with: ``(model, objective, hparams, estimator_state)``.

    Without ``estimator``: the ELBO (pathwise, with ``beta``; a conditional VAE's of ``(x, y)``),
    the IWAE bound, an AE's reconstruction, M2's objective (with ``alpha`` and ``labelled_share``, resolved from
    the data first by :func:`vae_jax.family_runs.resolve_config`) or the VQ-VAE's (``beta`` its commitment
    weight). With one: :func:`vae_jax.estimators.make_estimator` by name; an estimator
    that learns parameters (NVIL, REBAR, RELAX) gets them in the model's ``init`` (so in the
    train state), and ``baseline=running_mean`` a running ELBO mean in ``estimator_state``
    (starting at 0).
    """
    t = config.train
    if config.model.kind == "ae":
        return model, model.objective, {}, {}
    if config.model.kind == "vq":
        return model, model.objective, {"beta": t.beta}, {}
    if config.model.kind == "m2":
        if t.alpha <= 0 or t.labelled_share <= 0:
            raise ValueError("alpha or labelled_share 0 (the paper's) is resolved from the data: train through "
                             "vae_jax.runner.")
        return (model, functools.partial(model.objective, num_samples=t.num_samples),
                {"alpha": t.alpha, "labelled_share": t.labelled_share}, {})
    if not t.estimator:
        if t.objective != "elbo":
            name = registry.pathwise_estimator(t.objective)
            return model, registry.make_estimator(name, model, num_samples=t.num_samples), {}, {}
        return model, functools.partial(model.objective, num_samples=t.num_samples), {"beta": t.beta}, {}
    options, hidden = estimator_options(t)
    record = registry.get(t.estimator)
    estimator_state = {"baseline_value": 0.0} if options.get("baseline") == "running_mean" else {}
    hparams = {"beta": t.beta} if record.takes("beta") else {}
    if record.learned:
        model = registry.with_estimator_params(model, t.estimator, hidden=hidden)
    return model, registry.make_estimator(t.estimator, model, **options), hparams, estimator_state
