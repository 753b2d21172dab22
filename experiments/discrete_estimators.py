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
the models an uninterrupted one would; only its timings differ).
"""

from __future__ import annotations

import functools
import time

import flax.serialization
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments import _common
from vae_jax import data as vdata
from vae_jax import estimators as DE
from vae_jax import models
from vae_jax import enumeration as EN
from vae_jax import training

SETTINGS = {  # label -> (estimator, options)
    "reinforce": ("reinforce", {"num_samples": 2}),
    "reinforce_loo": ("reinforce", {"baseline": "leave_one_out", "num_samples": 2}),
    "nvil": ("nvil", {"num_samples": 2}),
    "vimco": ("vimco", {"num_samples": 2}),
    "arm": ("arm", {}),
    "disarm": ("disarm", {}),
    "disarm_iw": ("disarm_iw", {"num_samples": 2}),
    "gumbel_softmax": ("gumbel_softmax", {"temperature": 0.5, "num_samples": 2}),
    "straight_through": ("straight_through", {"temperature": 1.0, "num_samples": 2}),
    "rebar": ("rebar", {}),
    "relax": ("relax", {}),
    "vimco_k4": ("vimco", {"num_samples": 4}),
}
EVALUATIONS = {label: {"rebar": 3, "relax": 3, "disarm_iw": 4, "vimco_k4": 4}.get(label, 2) for label in SETTINGS}
BOUND_LABELS = ("vimco", "disarm_iw")  # estimators of the 2-sample bound's gradient
# Study B only: the 4-sample bound of study A's model would take 1024^4 configurations to enumerate.
# VIMCO with k = 4 is DisARM-IW's match at equal evaluations (four per example), as in the DisARM paper.
NOT_ENUMERABLE = ("vimco_k4",)
ESTIMATOR_PARAMS = {"nvil": "baseline", "rebar": "control", "relax": "control"}


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


def enumerable_study(args, key, parts):
    """Study A: bias and variance against the exact gradient through exact-gradient training."""
    labels = [label for label in args.estimators if label not in NOT_ENUMERABLE]
    config = {k: getattr(args, k) for k in ("seed", "quick", "draws", "enum_latents", "enum_epochs",
                                            "enum_checkpoints", "enum_learning_rate")}
    config["estimators"] = labels
    done = parts.load("enumerable", config)
    if done is not None:
        print(f"study A: loaded from {parts.folder}", flush=True)
        return done
    digits = vdata.load_digits().images
    model = models.DiscreteVAE(digits.shape[1:], args.enum_latents)
    k_init, k_batch, k_fit, k_measure, k_extra = jax.random.split(key, 5)
    state = training.create_train_state(model, k_init, digits[0], optax.adam(args.enum_learning_rate))
    batch = jax.random.bernoulli(k_batch, jnp.asarray(digits[:args.enum_batch])).astype(jnp.float32)
    objective = _exact_objective(model)
    exact_elbo = jax.jit(functools.partial(_exact_gradient, objective))
    exact_value = jax.jit(lambda p, b: jnp.mean(jax.vmap(lambda v: objective(p, None, v)[0])(b)))
    exact_bound = jax.jit(functools.partial(_exact_gradient, _exact_objective(model, 2)))
    measure = make_measure(model, labels, num_draws=args.draws)
    record = {"epoch": [], "exact_elbo": [], "measure_seconds": [], "estimators": {l: [] for l in labels},
              "truth": {l: "exact 2-sample bound" if l in BOUND_LABELS else "exact ELBO" for l in labels}}

    compiled = []

    def checkpoint(epoch, params):
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
        if epoch in args.enum_checkpoints or epoch == args.enum_epochs:
            checkpoint(epoch, state.params)

    step = training.make_train_step(objective, dynamic_binarization=True)
    training.fit(step, state, digits[:args.enum_train], k_fit, epochs=args.enum_epochs, batch_size=50,
                 hooks=(hook,), progress=not args.no_progress, desc="exact-gradient training")
    parts.save("enumerable", config, record)
    return record


def fashion_mnist_study(args, key, parts):
    """Study B: equal-step training of the DisARM paper's linear model, per estimator and seed."""
    ds = _common.load_data(args, quick_train=args.quick_train, quick_test=500)
    train, test = ds.train.images[:args.train_size], ds.test.images
    model = models.linear_sbn(train.shape[1:], args.latents)
    k_data, k_measure = jax.random.split(key)
    fixed_train = jax.random.bernoulli(k_data, jnp.asarray(train[:args.eval_size])).astype(jnp.float32)
    fixed_test = jax.random.bernoulli(jax.random.fold_in(k_data, 1),
                                      jnp.asarray(test[:args.eval_size])).astype(jnp.float32)

    @functools.partial(jax.jit, static_argnames="num_samples")
    def bound(params, data, k, *, num_samples):
        keys = jax.random.split(k, data.shape[0])
        if num_samples == 0:  # the ELBO with 10 draws
            objective = functools.partial(model.objective, num_samples=10)
        else:  # the k-sample bound is VIMCO's value (one route to it, as make_estimator("iwae") for Gaussians)
            objective = DE.make_estimator("vimco", model, num_samples=num_samples)
        return jnp.mean(jax.vmap(lambda kk, v: objective(params, kk, v)[0])(keys, data))

    runs = {label: [] for label in args.fm_estimators}
    final = {}
    run_config = {k: getattr(args, k) for k in ("seed", "quick", "epochs", "batch_size", "learning_rate", "latents",
                                                "train_size", "eval_size")}
    trained_params = parts.folder / "disarm_seed0_params.msgpack"  # the variance's second point
    for seed in range(args.seeds):
        k_init, k_fit, k_eval = jax.random.split(jax.random.fold_in(key, 100 + seed), 3)
        for label in args.fm_estimators:
            done = parts.load(f"{label}_seed{seed}", run_config)
            if done is not None and ((seed, label) != (0, "disarm") or trained_params.exists()):
                runs[label].append(done)
                if (seed, label) == (0, "disarm"):
                    final = flax.serialization.msgpack_restore(trained_params.read_bytes())
                print(f"{label} seed {seed}: loaded from {parts.folder}", flush=True)
                continue
            name = SETTINGS[label][0]
            wrapped = DE.with_estimator_params(model, name)
            state = training.create_train_state(wrapped, k_init, train[0], optax.adam(args.learning_rate))
            # Same model parameters for every estimator of a seed (estimator groups drawn beside them).
            state = state.replace(params={**state.params, **training.create_train_state(
                model, k_init, train[0], optax.adam(args.learning_rate)).params})
            state = state.replace(opt_state=state.tx.init(state.params))
            curve = {"epoch": [0], "train_elbo": [float(bound(state.params, fixed_train, k_eval, num_samples=0))],
                     "test_bound_100": [float(bound(state.params, fixed_test, k_eval, num_samples=100))],
                     "seconds": [0.0]}
            clock = {"start": time.perf_counter(), "excluded": 0.0}

            def hook(epoch, state, history, curve=curve, clock=clock):
                now = time.perf_counter()
                curve["seconds"].append(now - clock["start"] - clock["excluded"])
                curve["epoch"].append(epoch)
                curve["train_elbo"].append(float(bound(state.params, fixed_train, k_eval, num_samples=0)))
                curve["test_bound_100"].append(float(bound(state.params, fixed_test, k_eval, num_samples=100)))
                clock["excluded"] += time.perf_counter() - now

            step = training.make_train_step(estimator(wrapped, label), dynamic_binarization=True)
            result = training.fit(step, state, train, k_fit, epochs=args.epochs, batch_size=args.batch_size,
                                  hooks=(hook,), progress=not args.no_progress, desc=f"{label} seed {seed}")
            curve["steps"] = args.epochs * (len(train) // args.batch_size)
            runs[label].append(curve)
            if seed == 0 and label == "disarm":
                final = {g: result[0].params[g] for g in ("encoder", "decoder")}
                parts.folder.mkdir(parents=True, exist_ok=True)
                trained_params.write_bytes(flax.serialization.msgpack_serialize(jax.device_get(final)))
            parts.save(f"{label}_seed{seed}", run_config, curve)
            print(f"{label} seed {seed}: train ELBO {curve['train_elbo'][-1]:.2f}, test bound "
                  f"{curve['test_bound_100'][-1]:.2f}, {curve['seconds'][-1]:.1f} s", flush=True)

    # Variance of every estimator at the same parameters (initial, and DisARM-trained), one compiled call each.
    measure = make_measure(model, args.fm_estimators, num_draws=args.fm_draws)
    batch = jax.random.bernoulli(jax.random.fold_in(k_data, 2), jnp.asarray(train[:args.fm_batch])).astype(
        jnp.float32)
    init_params = model.init(jax.random.split(jax.random.fold_in(key, 100), 3)[0], train[0])
    variance = {}
    for where, params in [("initial", init_params), ("disarm_trained", final or None)]:
        if params is None:
            continue
        model_params = {"encoder": params["encoder"], "decoder": params["decoder"]}
        ext = with_extras(model, model_params, k_measure, train[0], args.fm_estimators)
        start = time.perf_counter()
        stats = jax.block_until_ready(measure(ext, k_measure, batch, None))
        variance[where] = {"seconds_with_compilation": time.perf_counter() - start,
                           **{label: _to_float(stats[label]) for label in args.fm_estimators}}
    return {"runs": runs, "variance": variance, "summary": summarise_runs(runs)}


def summarise_runs(runs):
    """Final mean and spread over seeds, and the train ELBO at the shortest run's wall-clock time."""
    if not runs or not any(runs.values()):
        return {}
    budget = min(c["seconds"][-1] for curves in runs.values() for c in curves)
    out = {"equal_wall_clock_seconds": budget}
    for label, curves in runs.items():
        final = np.array([c["train_elbo"][-1] for c in curves])
        test = np.array([c["test_bound_100"][-1] for c in curves])
        at_budget = np.array([np.interp(budget, c["seconds"], c["train_elbo"]) for c in curves])
        out[label] = {"train_elbo": float(final.mean()), "train_elbo_std": float(final.std()),
                      "test_bound_100": float(test.mean()), "test_bound_100_std": float(test.std()),
                      "train_elbo_at_equal_wall_clock": float(at_budget.mean()),
                      "seconds": float(np.mean([c["seconds"][-1] for c in curves]))}
    return out


def plot(results, out):
    colors = dict(zip(SETTINGS, plt.cm.tab20(np.linspace(0, 1, len(SETTINGS)))))
    enum = results["enumerable"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in enum["estimators"].items():
        axes[0].semilogy(enum["epoch"], [r["encoder"]["total_variance"] for r in rows], "o-", color=colors[label],
                         label=label)
        axes[1].semilogy(enum["epoch"], [max(r["encoder"]["max_z"], 0.1) for r in rows], "o-", color=colors[label])
    axes[0].set(xlabel="epoch (exact-gradient training)", ylabel="encoder gradient variance (trace)",
                title=f"{enum['latents']} binary latents, 8x8 digits")
    axes[1].axhline(5.0, color="k", ls=":", lw=1)
    axes[1].set(xlabel="epoch", ylabel="largest |mean - exact| / std. error",
                title="bias: z-scores against the exact gradient (dotted: 5)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "enumerable.png", dpi=110)
    plt.close(fig)

    fm = results["fashion_mnist"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label, curves in fm["runs"].items():
        for i, c in enumerate(curves):
            kw = {"color": colors[label], "label": label if i == 0 else None, "alpha": 0.9 if i == 0 else 0.4}
            axes[0].plot(c["epoch"], c["train_elbo"], **kw)
            axes[1].plot(c["seconds"], c["train_elbo"], **kw)
            axes[2].plot(c["epoch"], c["test_bound_100"], **kw)
    axes[0].set(xlabel="epoch (equal steps)", ylabel="train ELBO (nats)", title="Fashion-MNIST, linear 200-bit")
    axes[1].set(xlabel="training seconds (this CPU)", ylabel="train ELBO (nats)", title="equal wall-clock")
    axes[2].set(xlabel="epoch", ylabel="test 100-sample bound (nats)")
    lows = [c["train_elbo"][len(c["train_elbo"]) // 2] for curves in fm["runs"].values() for c in curves
            if len(c["train_elbo"]) > 2]  # the first epochs' fall would hide the differences
    if lows:
        for ax in axes:
            ax.set_ylim(bottom=min(lows) - 5)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fashion_mnist_training.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.4
    labels = list(fm["runs"])
    for j, (where, stats) in enumerate(fm["variance"].items()):
        values = [stats[label]["encoder"]["total_variance"] for label in labels]
        ax.bar(np.arange(len(labels)) + j * width, values, width, label=where)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(labels)) + width / 2, labels, rotation=45, ha="right")
    ax.set(ylabel="encoder gradient variance (trace)", title="Fashion-MNIST linear model, same parameters")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fashion_mnist_variance.png", dpi=110)
    plt.close(fig)


def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--estimators", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                   help="estimators of both studies (default: all; vimco_k4 only in study B: its 4-sample bound "
                        "cannot be enumerated)")
    p.add_argument("--fm-estimators", nargs="+", default=None, choices=list(SETTINGS),
                   help="estimators trained in study B (default: --estimators)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per estimator in study B (default 2; 1 quick)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of study B (default 3; 1 quick)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--latents", type=int, default=200)
    p.add_argument("--train-size", type=int, default=None, help="training images of study B (default all)")
    p.add_argument("--enum-checkpoints", type=int, nargs="+", default=None,
                   help="epochs of study A at which the estimators are measured (default 1 2 5 10 20)")
    p.add_argument("--fm-draws", type=int, default=None, help="gradient draws of study B's variance (default 100)")
    p.add_argument("--draws", type=int, default=None, help="gradient draws in study A (default 2000; 100 quick)")
    p.add_argument("--enum-latents", type=int, default=None, help="latents of study A (default 10; 6 quick)")
    p.add_argument("--enum-epochs", type=int, default=None, help="exact-gradient epochs of study A (default 20)")
    p.add_argument("--enum-learning-rate", type=float, default=3e-3)
    p.add_argument("--resume", action="store_true",
                   help="keep the finished pieces in OUT/parts (study A; each estimator and seed of study B) and "
                        "compute only the rest; without it, an OUT holding pieces is an error")
    args = p.parse_args(argv)
    q = args.quick
    args.fm_estimators = args.fm_estimators or args.estimators
    args.seeds = args.seeds or (1 if q else 2)
    args.epochs = args.epochs or (1 if q else 3)
    args.draws = args.draws or (100 if q else 2000)
    args.enum_latents = args.enum_latents or (6 if q else 10)
    args.enum_epochs = args.enum_epochs or (1 if q else 20)
    args.enum_checkpoints = args.enum_checkpoints or ([1, 2, 5, 10, 20] if not q else [1])
    args.enum_batch, args.enum_train = (10, 500) if q else (50, None)
    args.quick_train, args.eval_size = 500, (50 if q else 1000)
    args.fm_draws, args.fm_batch = args.fm_draws or (8 if q else 100), (10 if q else 50)
    key = jax.random.key(args.seed)
    start = time.perf_counter()
    parts = _common.Parts(args.out / "parts", resume=args.resume)
    enum = enumerable_study(args, jax.random.fold_in(key, 0), parts)
    enum["latents"] = args.enum_latents
    results = {"enumerable": enum, "fashion_mnist": fashion_mnist_study(args, jax.random.fold_in(key, 1), parts),
               "evaluations_per_example": EVALUATIONS, "seconds": time.perf_counter() - start}
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out)
    config = {k: v for k, v in vars(args).items()}
    config["settings"] = SETTINGS
    _common.write_outputs(args.out, config=config, results=results)
    return results


if __name__ == "__main__":
    main()
