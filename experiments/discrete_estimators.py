"""Gradient estimators for binary latents: bias and variance against exact gradients, and training.

Ten estimators from ``vae_jax.discrete_estimators`` at (nearly) equal function
evaluations, two per example (``EVALUATIONS``): REINFORCE without and with a
leave-one-out baseline (k = 2), NVIL (k = 2), VIMCO (k = 2, the 2-sample bound),
ARM and DisARM (one antithetic pair), Gumbel-softmax (t = 0.5) and
straight-through Gumbel (t = 1) with 2 draws, REBAR and RELAX (one draw, three
evaluations of f); DisARM-IW (two antithetic pairs, four evaluations, the
2-sample bound like VIMCO) and, in study B only, its match at equal evaluations,
VIMCO with k = 4 (the 4-sample bound).

A. Enumerable model: a linear sigmoid-belief-net VAE with ``--enum-latents``
   (10) binary latents on the 8x8 digits (dynamically binarised) is trained with
   the EXACT ELBO gradient (the sum over all 2^d configurations). At checkpoints,
   every estimator's gradient on a fixed batch is drawn ``--draws`` times, all
   estimators in ONE compiled, vmapped call (its time is recorded), and compared
   with the exact gradient: total variance of the encoder gradient, the
   bias-corrected relative bias ``sqrt(max(||mean - exact||^2 - trace/N, 0)) /
   ||exact||``, and the largest z-score. NVIL, REBAR and RELAX use their initial
   estimator parameters here (unbiased for any).
B. Fashion-MNIST: the DisARM paper's linear model (784-200 binary latents,
   learned factorised prior, Bernoulli pixels), dynamically binarised training
   images, one model per estimator and seed from the same initial parameters,
   equal number of Adam steps; after each epoch (hook of ``training.fit``) the
   ELBO (10 draws) on a fixed binarised training subset, the 100-sample bound on
   a binarised test subset and the cumulative training seconds (equal
   wall-clock comparison). The encoder-gradient variance of every estimator on
   a fixed batch at the initial parameters and at the end of the DisARM run is
   measured in one compiled call.

Writes ``enumerable.png``, ``fashion_mnist_training.png``, ``fashion_mnist_variance.png``,
``results.json`` and ``config.json`` into ``--out``. Resumable: study A and each
estimator and seed of study B are saved in ``OUT/parts`` when they finish; the
same command with ``--resume`` computes only what is missing (the PRNG keys
depend only on the seed, estimator and step, so a resumed run trains exactly
the models an uninterrupted one would; only its timings differ). Each piece
records the options it was made with; a piece made with other options is
refused, naming them. ``--resume`` needs the folder of an earlier run.

``--devices all`` trains both studies data-parallel over every local device
(the one-device numbers to float32 rounding; pieces made so record it, and
are refused by a run on one device). ``--track tensorboard`` (the default at full size)
writes each training's epochs (study B's with its bounds) and images to
``tensorboard/`` (docs/scale.md).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import optax

from experiments import _common
from experiments._discrete_report import plot, summarise_runs
from vae_jax import data as vdata
from vae_jax import estimators as DE
from vae_jax import models, scale, training
from vae_jax import enumeration as EN

PROG = "experiments.discrete_estimators"


class Setting(NamedTuple):
    """One estimator of the study: the library's name and its options."""

    estimator: str
    options: dict[str, Any]


SETTINGS = {
    "reinforce": Setting("reinforce", {"num_samples": 2}),
    "reinforce_loo": Setting("reinforce", {"baseline": "leave_one_out", "num_samples": 2}),
    "nvil": Setting("nvil", {"num_samples": 2}),
    "vimco": Setting("vimco", {"num_samples": 2}),
    "arm": Setting("arm", {}),
    "disarm": Setting("disarm", {}),
    "disarm_iw": Setting("disarm_iw", {"num_samples": 2}),
    "gumbel_softmax": Setting("gumbel_softmax", {"temperature": 0.5, "num_samples": 2}),
    "straight_through": Setting("straight_through", {"temperature": 1.0, "num_samples": 2}),
    "rebar": Setting("rebar", {}),
    "relax": Setting("relax", {}),
    "vimco_k4": Setting("vimco", {"num_samples": 4}),
}
EVALUATIONS = {label: {"rebar": 3, "relax": 3, "disarm_iw": 4, "vimco_k4": 4}.get(label, 2) for label in SETTINGS}
BOUND_LABELS = ("vimco", "disarm_iw")  # estimators of the 2-sample bound's gradient
# Study B only: the 4-sample bound of study A's model would take 1024^4 configurations to enumerate.
# VIMCO with k = 4 is DisARM-IW's match at equal evaluations (four per example), as in the DisARM paper.
NOT_ENUMERABLE = ("vimco_k4",)
ESTIMATOR_PARAMS = {"nvil": "baseline", "rebar": "control", "relax": "control"}
MAX_ENUM_LATENTS = 16  # study A enumerates 2^d configurations per example (and 2^2d for the 2-sample bound)
TRAINED_PARAMS = "disarm_seed0_params.msgpack"  # study B's DisARM-trained parameters: the variance's second point


@dataclasses.dataclass(frozen=True)
class EnumerableConfig:
    """Study A: exact-gradient training of the enumerable model, estimators measured at ``checkpoints``."""

    latents: int
    epochs: int
    checkpoints: tuple[int, ...]
    learning_rate: float
    draws: int
    batch: int
    train: int | None


@dataclasses.dataclass(frozen=True)
class FashionConfig:
    """Study B: equal-step training on Fashion-MNIST, per estimator and seed; variance at two points."""

    estimators: tuple[str, ...]
    seeds: int
    epochs: int
    batch_size: int
    learning_rate: float
    latents: int
    train_size: int | None
    quick_train: int
    eval_size: int
    draws: int
    batch: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(_common.ScaledConfig):
    """The study's options, resolved and checked before anything is computed or written."""

    estimators: tuple[str, ...]
    resume: bool
    enumerable: EnumerableConfig
    fashion: FashionConfig

    def __post_init__(self):
        if self.enumerable.latents > MAX_ENUM_LATENTS:
            raise ValueError(f"--enum-latents must be <= {MAX_ENUM_LATENTS} (study A enumerates 2^d "
                             f"configurations); got {self.enumerable.latents}.")
        if min(self.enumerable.draws, self.fashion.draws) < 2:
            raise ValueError("--draws and --fm-draws must be >= 2 (a variance needs two draws).")
        sizes = [n for n in (self.fashion.train_size, self.fashion.quick_train if self.quick else None) if n]
        if sizes and self.fashion.batch_size > min(sizes):
            raise ValueError(f"--batch-size {self.fashion.batch_size} is larger than the {min(sizes)} training "
                             f"images of study B.")

    def enumerable_options(self) -> dict[str, Any]:
        """The options study A's stored piece depends on."""
        return {"seed": self.seed, "quick": self.quick, "estimators": self.enumerable_labels(),
                **dataclasses.asdict(self.enumerable), **self.stored_scale_options()}

    def enumerable_labels(self) -> list[str]:
        return [label for label in self.estimators if label not in NOT_ENUMERABLE]

    def fashion_options(self) -> dict[str, Any]:
        """The options each of study B's stored runs depends on (not which estimators or how many seeds)."""
        options = dataclasses.asdict(self.fashion)
        for key in ("estimators", "seeds", "draws", "batch"):
            del options[key]
        return {"seed": self.seed, "quick": self.quick, **options, **self.stored_scale_options()}


def estimator(model, label):
    name, options = SETTINGS[label]
    return DE.make_estimator(name, model, **options)


def with_extras(model, params, key, x, labels):
    """``params`` plus the initial parameter groups of the estimators ``labels`` use (baseline, REBAR and
    RELAX controls)."""
    extras = {"model": params}
    for label in ("nvil", "rebar", "relax"):
        if label in labels:
            extras["baseline" if label == "nvil" else label] = DE.init_estimator_params(
                label, model, key, x)[ESTIMATOR_PARAMS[label]]
    return extras


def make_measure(model, labels, *, num_draws):
    """One jitted function: ``num_draws`` encoder/decoder gradients of every estimator on a batch.

    Returns ``measure(extended, key, x, exact) -> {label: {group: stats}}`` where ``exact`` maps each
    label to the exact gradient ``{"encoder", "decoder"}`` of its objective (or is None: no bias).
    """
    estimators = {label: estimator(model, label) for label in labels}

    def params_for(label, ext):
        extra = {ESTIMATOR_PARAMS[label]: ext["baseline" if label == "nvil" else label]} \
            if label in ESTIMATOR_PARAMS else {}
        return {**ext["model"], **extra}

    def summarise(grads, truth):
        flat = jnp.concatenate([g.reshape(num_draws, -1) for g in jax.tree.leaves(grads)], axis=1)
        mean, var = jnp.mean(flat, 0), jnp.var(flat, 0, ddof=1)
        out = {"total_variance": jnp.sum(var), "mean_norm": jnp.linalg.norm(mean)}
        if truth is not None:
            t = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(truth)])
            sq = jnp.sum(jnp.square(mean - t)) - jnp.sum(var) / num_draws
            out["relative_bias"] = jnp.sqrt(jnp.maximum(sq, 0.0)) / jnp.linalg.norm(t)
            out["max_z"] = jnp.max(jnp.abs(mean - t) / jnp.sqrt(jnp.maximum(var, 1e-30) / num_draws))
        return out

    def measure(ext, key, x, exact):
        results = {}
        for label, est in estimators.items():
            params = params_for(label, ext)

            def objective(p, k, est=est):
                keys = jax.random.split(k, x.shape[0])
                return jnp.mean(jax.vmap(lambda kk, xi: est(p, kk, xi)[0])(keys, x))

            grads = jax.vmap(lambda k, params=params, objective=objective: jax.grad(objective)(params, k))(
                jax.random.split(key, num_draws))  # common random numbers: ARM and DisARM share draws
            results[label] = {g: summarise(grads[g], None if exact is None else exact[label][g])
                              for g in ("encoder", "decoder")}
        return results

    return jax.jit(measure)


def _exact_objective(model, num_samples=1):
    """Per-example exact ELBO (``num_samples=1``) or exact k-sample bound, by enumeration."""
    def objective(params, key, x):
        del key
        fns = dict(encode=lambda v: model.encode(params, v), decode=lambda b: model.decode(params, b),
                   prior_logits=model.prior_logits(params))
        if num_samples == 1:
            value = EN.exact_elbo(x, **fns)
        else:
            value = EN.exact_iwae(x, **fns, num_samples=num_samples)
        return value, {"elbo": value}
    return objective


def _exact_gradient(objective, params, batch):
    # lax.map over examples: the 2-sample bound enumerates C^2 pairs per example.
    return jax.grad(lambda p: jnp.mean(jax.lax.map(lambda v: objective(p, None, v)[0], batch)))(params)


def _to_float(tree):
    return jax.tree.map(lambda v: float(v), tree)


def enumerable_study(cfg: Config, key, parts: _common.Parts) -> dict:
    """Study A: bias and variance against the exact gradient through exact-gradient training."""
    labels, enum = cfg.enumerable_labels(), cfg.enumerable
    done = parts.load("enumerable", cfg.enumerable_options())
    if done is not None:
        print(f"study A: loaded from {parts.folder}", flush=True)
        return done
    digits = vdata.load_digits().images
    model = models.DiscreteVAE(digits.shape[1:], enum.latents)
    k_init, k_batch, k_fit, k_measure, k_extra = jax.random.split(key, 5)
    state = training.create_train_state(model, k_init, digits[0], optax.adam(enum.learning_rate))
    batch = jax.random.bernoulli(k_batch, jnp.asarray(digits[:enum.batch])).astype(jnp.float32)
    objective = _exact_objective(model)
    exact_elbo = jax.jit(functools.partial(_exact_gradient, objective))
    exact_value = jax.jit(lambda p, b: jnp.mean(jax.vmap(lambda v: objective(p, None, v)[0])(b)))
    exact_bound = jax.jit(functools.partial(_exact_gradient, _exact_objective(model, 2)))
    measure = make_measure(model, labels, num_draws=enum.draws)
    record = {"epoch": [], "exact_elbo": [], "measure_seconds": [], "estimators": {l: [] for l in labels},
              "truth": {l: "exact 2-sample bound" if l in BOUND_LABELS else "exact ELBO" for l in labels}}
    compiled = []

    def checkpoint(epoch, params):
        params = scale.on_one_device(params)  # the measurement's compiled call takes one device's arrays
        ext = with_extras(model, params, k_extra, digits[0], labels)
        grad_elbo = exact_elbo(params, batch)
        grad_bound = exact_bound(params, batch) if set(BOUND_LABELS) & set(labels) else None
        exact = {l: grad_bound if l in BOUND_LABELS else grad_elbo for l in labels}
        if not compiled:  # ahead of time, once: the timed call is the computation alone
            compiled.append(measure.lower(ext, k_measure, batch, exact).compile())
        start = time.perf_counter()
        stats = jax.block_until_ready(compiled[0](ext, k_measure, batch, exact))
        record["measure_seconds"].append(time.perf_counter() - start)
        record["epoch"].append(epoch)
        record["exact_elbo"].append(float(exact_value(params, batch)))
        for label in labels:
            record["estimators"][label].append(_to_float(stats[label]))

    checkpoint(0, state.params)

    def hook(epoch, state, history):
        if epoch in enum.checkpoints or epoch == enum.epochs:
            checkpoint(epoch, state.params)

    step = training.make_train_step(objective, dynamic_binarization=True)
    _common.fit_scaled(model, state, step, digits[:enum.train], k_fit, epochs=enum.epochs, batch_size=50,
                       seed=cfg.seed, hooks=(hook,), progress=cfg.progress, desc="exact-gradient training",
                       **_common.scale_kwargs(cfg))
    parts.save("enumerable", cfg.enumerable_options(), record)
    return record


class FashionData(NamedTuple):
    """Study B's data: ``train [N, 28, 28, 1]`` grey levels and fixed binarised evaluation subsets."""

    train: jax.Array
    fixed_train: jax.Array
    fixed_test: jax.Array


def _bound_function(model):
    """``bound(params, data, key, *, num_samples)``: mean ELBO with 10 draws (0) or the k-sample bound (k)."""
    @functools.partial(jax.jit, static_argnames="num_samples")
    def bound(params, data, k, *, num_samples):
        keys = jax.random.split(k, data.shape[0])
        if num_samples == 0:  # the ELBO with 10 draws
            objective = functools.partial(model.objective, num_samples=10)
        else:  # the k-sample bound is VIMCO's value (one route to it, as make_estimator("iwae") for Gaussians)
            objective = DE.make_estimator("vimco", model, num_samples=num_samples)
        return jnp.mean(jax.vmap(lambda kk, v: objective(params, kk, v)[0])(keys, data))
    return bound


def train_one(model, label: str, seed_keys, data: FashionData, cfg: FashionConfig, bound, *, progress: bool,
              desc: str, scaled: dict | None = None):
    """Trains one model of study B with estimator ``label``: ``(curve, trained state)``.

    ``seed_keys = (k_init, k_fit, k_eval)``: the model parameters come from ``k_init`` for every estimator
    of a seed (estimator parameter groups drawn beside them); the curve has the 10-draw train ELBO, the
    100-sample test bound and the training seconds (evaluation and tracking excluded) after each epoch.
    ``scaled``: :func:`experiments._common.fit_scaled`'s ``devices``, ``track`` and ``logdir``.
    """
    k_init, k_fit, k_eval = seed_keys
    wrapped = DE.with_estimator_params(model, SETTINGS[label].estimator)
    state = training.create_train_state(wrapped, k_init, data.train[0], optax.adam(cfg.learning_rate))
    state = state.replace(params={**state.params, **training.create_train_state(
        model, k_init, data.train[0], optax.adam(cfg.learning_rate)).params})
    state = state.replace(opt_state=state.tx.init(state.params))
    curve = {"epoch": [0], "train_elbo": [float(bound(state.params, data.fixed_train, k_eval, num_samples=0))],
             "test_bound_100": [float(bound(state.params, data.fixed_test, k_eval, num_samples=100))],
             "seconds": [0.0]}
    clock = {"start": time.perf_counter(), "excluded": 0.0}

    def hook(epoch, state, history):  # the bounds join the row the trackers log
        clock["now"] = time.perf_counter()
        curve["seconds"].append(clock["now"] - clock["start"] - clock["excluded"])
        curve["epoch"].append(epoch)
        for name, fixed, k in (("train_elbo", data.fixed_train, 0), ("test_bound_100", data.fixed_test, 100)):
            history[-1][name] = float(bound(state.params, fixed, k_eval, num_samples=k))
            curve[name].append(history[-1][name])

    def after_trackers(epoch, state, history):
        clock["excluded"] += time.perf_counter() - clock["now"]

    step = training.make_train_step(estimator(wrapped, label), dynamic_binarization=True)
    result = _common.fit_scaled(wrapped, state, step, data.train, k_fit, epochs=cfg.epochs,
                                batch_size=cfg.batch_size, hooks=(hook,), then=(after_trackers,), progress=progress,
                                desc=desc, **(scaled or {}))
    curve["steps"] = cfg.epochs * (len(data.train) // cfg.batch_size)
    return curve, result[0]


def fashion_data(cfg: Config, key) -> FashionData:
    """Study B's training images and its fixed binarised train and test subsets (``eval_size`` each)."""
    ds = _common.load_data(cfg, quick_train=cfg.fashion.quick_train, quick_test=500)
    train, test = ds.train.images[:cfg.fashion.train_size], ds.test.images
    n = cfg.fashion.eval_size
    fixed_train = jax.random.bernoulli(key, jnp.asarray(train[:n])).astype(jnp.float32)
    fixed_test = jax.random.bernoulli(jax.random.fold_in(key, 1), jnp.asarray(test[:n])).astype(jnp.float32)
    return FashionData(train, fixed_train, fixed_test)


def fashion_mnist_study(cfg: Config, key, parts: _common.Parts) -> dict:
    """Study B: equal-step training of the DisARM paper's linear model, per estimator and seed."""
    fm = cfg.fashion
    k_data, k_measure = jax.random.split(key)
    data = fashion_data(cfg, k_data)
    model = models.linear_sbn(data.train.shape[1:], fm.latents)
    bound = _bound_function(model)
    runs, final = {label: [] for label in fm.estimators}, {}
    for seed in range(fm.seeds):
        seed_keys = jax.random.split(jax.random.fold_in(key, 100 + seed), 3)
        for label in fm.estimators:
            keeps_params = (seed, label) == (0, "disarm")
            done = parts.load(f"{label}_seed{seed}", cfg.fashion_options())
            params = (parts.read_file(TRAINED_PARAMS, flax.serialization.msgpack_restore)
                      if keeps_params and done is not None else None)
            if done is not None and (params is not None or not keeps_params):
                runs[label].append(done)
                final = params if keeps_params else final
                print(f"{label} seed {seed}: loaded from {parts.folder}", flush=True)
                continue
            curve, state = train_one(model, label, seed_keys, data, fm, bound, progress=cfg.progress,
                                     desc=f"{label} seed {seed}", scaled=_common.scale_kwargs(cfg))
            runs[label].append(curve)
            if keeps_params:
                final = {g: state.params[g] for g in ("encoder", "decoder")}
                parts.write_file(TRAINED_PARAMS, flax.serialization.msgpack_serialize(jax.device_get(final)))
            parts.save(f"{label}_seed{seed}", cfg.fashion_options(), curve)
            print(f"{label} seed {seed}: train ELBO {curve['train_elbo'][-1]:.2f}, test bound "
                  f"{curve['test_bound_100'][-1]:.2f}, {curve['seconds'][-1]:.1f} s", flush=True)
    init_params = model.init(jax.random.split(jax.random.fold_in(key, 100), 3)[0], data.train[0])
    variance = variance_at(model, {"initial": init_params, "disarm_trained": final or None}, data.train, fm,
                           jax.random.fold_in(k_data, 2), k_measure)
    return {"runs": runs, "variance": variance, "summary": summarise_runs(runs)}


def variance_at(model, points: dict, train, fm: FashionConfig, key_batch, key_measure) -> dict:
    """Every estimator's encoder/decoder gradient variance at each parameter point, one compiled call each."""
    measure = make_measure(model, fm.estimators, num_draws=fm.draws)
    batch = jax.random.bernoulli(key_batch, jnp.asarray(train[:fm.batch])).astype(jnp.float32)
    variance = {}
    for where, params in points.items():
        if params is None:
            continue
        model_params = {"encoder": params["encoder"], "decoder": params["decoder"]}
        ext = with_extras(model, model_params, key_measure, train[0], fm.estimators)
        start = time.perf_counter()
        stats = jax.block_until_ready(measure(ext, key_measure, batch, None))
        variance[where] = {"seconds_with_compilation": time.perf_counter() - start,
                           **{label: _to_float(stats[label]) for label in fm.estimators}}
    return variance


def _arguments():
    p = _common.parser(__doc__, PROG)
    p.add_argument("--estimators", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                   help="estimators of both studies (default: all; vimco_k4 only in study B: its 4-sample bound "
                        "cannot be enumerated)")
    p.add_argument("--fm-estimators", nargs="+", default=None, choices=list(SETTINGS),
                   help="estimators trained in study B (default: --estimators)")
    p.add_argument("--seeds", type=_common.positive_int, default=None,
                   help="seeds per estimator in study B (default 2; 1 quick)")
    p.add_argument("--epochs", type=_common.positive_int, default=None, help="epochs of study B (default 3; 1 quick)")
    p.add_argument("--batch-size", type=_common.positive_int, default=50)
    p.add_argument("--learning-rate", type=_common.positive_float, default=1e-3)
    p.add_argument("--latents", type=_common.positive_int, default=200)
    p.add_argument("--train-size", type=_common.positive_int, default=None,
                   help="training images of study B (default all)")
    p.add_argument("--enum-checkpoints", type=_common.positive_int, nargs="+", default=None,
                   help="epochs of study A at which the estimators are measured (default 1 2 5 10 20)")
    p.add_argument("--fm-draws", type=_common.positive_int, default=None,
                   help="gradient draws of study B's variance (default 100; 8 quick)")
    p.add_argument("--draws", type=_common.positive_int, default=None,
                   help="gradient draws in study A (default 2000; 100 quick)")
    p.add_argument("--enum-latents", type=_common.positive_int, default=None,
                   help="latents of study A (default 10; 6 quick)")
    p.add_argument("--enum-epochs", type=_common.positive_int, default=None,
                   help="exact-gradient epochs of study A (default 20; 1 quick)")
    p.add_argument("--enum-learning-rate", type=_common.positive_float, default=3e-3)
    p.add_argument("--resume", action="store_true",
                   help="keep the finished pieces in OUT/parts (study A; each estimator and seed of study B) and "
                        "compute only the rest; without it, an OUT holding pieces is an error")
    _common.add_scale_args(p)
    return p


def parse_args(argv: list[str] | None) -> Config:
    """The command line as a checked :class:`Config` (``--quick`` and the defaults resolved)."""
    args = _arguments().parse_args(argv)
    q = args.quick
    r = _common.resolve_defaults(args, dict(
        enum_latents=(6, 10), enum_epochs=(1, 20), enum_checkpoints=([1], [1, 2, 5, 10, 20]), draws=(100, 2000),
        fm_estimators=(args.estimators, args.estimators), seeds=(1, 2), epochs=(1, 3), fm_draws=(8, 100),
        **_common.TRACK_DEFAULTS))
    enumerable = EnumerableConfig(latents=r["enum_latents"], epochs=r["enum_epochs"],
                                  checkpoints=r["enum_checkpoints"], learning_rate=args.enum_learning_rate,
                                  draws=r["draws"], batch=10 if q else 50, train=500 if q else None)
    fashion = FashionConfig(estimators=r["fm_estimators"], seeds=r["seeds"], epochs=r["epochs"],
                            batch_size=args.batch_size, learning_rate=args.learning_rate, latents=args.latents,
                            train_size=args.train_size, quick_train=500, eval_size=50 if q else 1000,
                            draws=r["fm_draws"], batch=10 if q else 50)
    return Config.from_args(args, estimators=tuple(args.estimators), enumerable=enumerable, fashion=fashion,
                            track=r["track"])


def run(cfg: Config) -> dict:
    """Both studies (computing only the pieces ``OUT/parts`` lacks), the figures and the JSON files."""
    _common.check_resume(cfg.out, resume=cfg.resume)
    parts = _common.Parts(cfg.out / "parts", resume=cfg.resume)
    key = jax.random.key(cfg.seed)
    start = time.perf_counter()
    enum = enumerable_study(cfg, jax.random.fold_in(key, 0), parts)
    enum["latents"] = cfg.enumerable.latents
    results = {"enumerable": enum, "fashion_mnist": fashion_mnist_study(cfg, jax.random.fold_in(key, 1), parts),
               "evaluations_per_example": EVALUATIONS, "seconds": time.perf_counter() - start}
    cfg.out.mkdir(parents=True, exist_ok=True)
    plot(results, cfg.out, list(SETTINGS))
    _common.write_outputs(cfg.out, config={**cfg.to_json(), "settings": SETTINGS}, results=results)
    return results


@_common.study_main(PROG)
def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
