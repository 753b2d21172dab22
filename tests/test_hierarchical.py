"""Hierarchical and flow posteriors through the objectives, held to a two-level linear-Gaussian
model's closed forms; the HVAE and the flow VAE train, evaluate and checkpoint like the VAE."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from vae_jax import elbo, evaluation, iwae_bound, log_importance_weights, log_marginal, training
from vae_jax.flow_models import FlowVAE
from vae_jax.hierarchical import HierarchicalVAE
from vae_jax.linear_gaussian import TwoLevelLinearGaussian
from vae_jax.posteriors import HierarchicalPosterior, precision_weighted

D, D1, D2 = 6, 3, 2
LIK = "gaussian_learned"


_exact_factors = jax.jit(lambda model, x: model.exact_factors(x))


def _two_level(diagonal_posterior):
    # jitted: eagerly, the construction's dozens of small linear-algebra ops each compile (~14 s)
    model = jax.jit(TwoLevelLinearGaussian.random, static_argnums=(1, 2, 3), static_argnames="diagonal_posterior")(
        jax.random.key(0), D, D1, D2, diagonal_posterior=diagonal_posterior)
    return model, model.sample(jax.random.key(1), 1)[0]


def _encoder(factors):
    """x -> the HierarchicalPosterior q(z2|x) q(z1|x, z2) of fixed factors (one x)."""
    top_mean, top_log_std, gain, offset, bottom_log_std = factors
    return lambda x: HierarchicalPosterior.create((top_mean, top_log_std),
                                                  [lambda z2: (gain @ z2 + offset, bottom_log_std)])


def test_exact_posterior_factors_give_log_p_x_for_every_draw():
    model, x = _two_level(diagonal_posterior=True)
    encode = _encoder(_exact_factors(model, x))
    run = jax.jit(jax.vmap(lambda k: (elbo(k, x, encode, model.decode, likelihood=LIK, prior=model.prior_log_prob)[0],
                                      iwae_bound(k, x, encode, model.decode, likelihood=LIK, num_samples=3,
                                                 prior=model.prior_log_prob))))
    values, bounds = run(jax.random.split(jax.random.key(2), 50))
    np.testing.assert_allclose(values, np.full(50, model.log_marginal(x)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(bounds, np.full(50, model.log_marginal(x)), rtol=1e-5, atol=1e-4)


def test_monte_carlo_hierarchical_elbo_matches_the_closed_form():
    """Correlated model, the exact factors cut to their diagonals: the Monte-Carlo ELBO's mean is
    the closed-form ELBO (within 4 standard errors), which is below log p(x)."""
    model, x = _two_level(diagonal_posterior=False)
    factors = _exact_factors(model, x)
    encode = _encoder(factors)
    values = jax.jit(jax.vmap(lambda k: elbo(k, x, encode, model.decode, likelihood=LIK,
                                             prior=model.prior_log_prob)[0]))(jax.random.split(jax.random.key(3), 4000))
    values = np.asarray(values, np.float64)
    stderr = values.std(ddof=1) / np.sqrt(values.size)
    exact = float(model.elbo(x, *factors))
    assert abs(values.mean() - exact) < 4 * stderr
    assert exact < float(model.log_marginal(x)) - 0.05


def test_log_marginal_of_the_hierarchical_posterior_converges_to_the_exact_value():
    """Correlated model, diagonal-cut factors as the proposal (ELBO gap 0.66 nats): the mean absolute
    error of log_marginal over 4 keys falls from 0.69 nats at k = 10 to 0.009 at k = 5000."""
    model, x = _two_level(diagonal_posterior=False)
    factors = _exact_factors(model, x)
    encode = _encoder(factors)
    exact = float(model.log_marginal(x))
    lm = functools.partial(log_marginal, x=x, encode=encode, decode=model.decode, likelihood=LIK,
                           prior=model.prior_log_prob)
    keys = jax.random.split(jax.random.key(4), 4)
    errors = {k: np.mean(np.abs(np.asarray(jax.jit(jax.vmap(functools.partial(
        lm, num_samples=k, chunk_size=min(k, 500))))(keys)) - exact)) for k in (10, 5000)}
    gap = exact - float(model.elbo(x, *factors))
    assert errors[5000] < 0.04 < gap and errors[5000] < errors[10] / 4
    chunked = jax.jit(functools.partial(lm, num_samples=60, chunk_size=7))(jax.random.key(5))
    whole = jax.jit(functools.partial(lm, num_samples=60, chunk_size=60))(jax.random.key(5))
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)


def test_iwae_at_one_sample_is_the_elbo_and_analytic_kl_is_refused():
    model, x = _two_level(diagonal_posterior=False)
    encode = _encoder(_exact_factors(model, x))
    key = jax.random.key(6)
    value, _ = elbo(key, x, encode, model.decode, likelihood=LIK, prior=model.prior_log_prob)
    np.testing.assert_allclose(iwae_bound(key, x, encode, model.decode, likelihood=LIK, num_samples=1,
                                          prior=model.prior_log_prob), value, rtol=1e-6)
    with pytest.raises(ValueError, match="needs mean and log_std of a Gaussian q, or the draws' log_q"):
        log_importance_weights(jnp.zeros((2, D1 + D2)), x, None, None, model.decode, likelihood=LIK)
    with pytest.raises(ValueError, match="kl='analytic' needs a \\(mean, log_std\\) encoder"):
        elbo(key, x, encode, model.decode, likelihood=LIK, kl="analytic")


def test_precision_weighted_is_the_normalised_product_of_the_two_gaussians():
    """log N(z; a) + log N(z; b) - log N(z; merged) is the same at every z: the normaliser
    log N(m_a; m_b, s_a^2 + s_b^2) of the product, in closed form. Precisions of e^100 stay finite."""
    from vae_jax.distributions import gaussian_log_prob

    keys = jax.random.split(jax.random.key(7), 5)
    a = (jax.random.normal(keys[0], (5,)), jax.random.uniform(keys[1], (5,), minval=-2.0, maxval=1.0))
    b = (jax.random.normal(keys[2], (5,)), jax.random.uniform(keys[3], (5,), minval=-2.0, maxval=1.0))
    merged = precision_weighted(a, b)
    z = jax.random.normal(keys[4], (4, 5))
    log_ratio = jax.vmap(lambda z: gaussian_log_prob(z, *a) + gaussian_log_prob(z, *b) - gaussian_log_prob(z, *merged))(z)
    normaliser = gaussian_log_prob(a[0], b[0], 0.5 * jnp.log(jnp.exp(2 * a[1]) + jnp.exp(2 * b[1])))
    np.testing.assert_allclose(log_ratio, np.full(4, normaliser), rtol=1e-5)
    mean, log_std = precision_weighted((jnp.array([1.5]), jnp.array([-50.0])), (jnp.array([-3.0]), jnp.array([0.0])))
    np.testing.assert_allclose([float(mean[0]), float(log_std[0])], [1.5, -50.0], rtol=1e-6)


def test_ladder_merge_of_the_likelihood_message_and_the_prior_is_the_exact_bottom_factor():
    """Ladder inference's claim on the two-level linear-Gaussian model with orthogonal W: p(x | z1), as a
    function of z1, is the diagonal Gaussian N((W^T W)^-1 W^T (x - b), sigma^2 (W^T W)^-1), and its
    precision-weighted product with p(z1 | z2) is the exact p(z1 | x, z2) (matrix inverses,
    ``posterior_bottom``); with the exact top factor the ELBO is log p(x) at every draw."""
    model, x = _two_level(diagonal_posterior=True)
    gram = jnp.diag(model.weight.T @ model.weight)
    np.testing.assert_allclose(model.weight.T @ model.weight, jnp.diag(gram), atol=1e-5)  # orthogonal columns
    message = (model.weight.T @ (x - model.bias) / gram, model.log_sigma - 0.5 * jnp.log(gram))
    ladder = lambda z2: precision_weighted(message, (model.weight2 @ z2 + model.bias2, model.log_std1))
    gain, offset, cov = model.posterior_bottom(x)
    for z2 in jax.random.normal(jax.random.key(8), (3, D2)):
        mean, log_std = ladder(z2)
        np.testing.assert_allclose(mean, gain @ z2 + offset, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(log_std, 0.5 * jnp.log(jnp.diag(cov)), rtol=1e-4, atol=1e-5)
    top_mean, top_log_std = _exact_factors(model, x)[:2]
    encode = lambda x: HierarchicalPosterior.create((top_mean, top_log_std), [ladder])
    values = jax.jit(jax.vmap(lambda k: elbo(k, x, encode, model.decode, likelihood=LIK,
                                             prior=model.prior_log_prob)[0]))(jax.random.split(jax.random.key(9), 20))
    np.testing.assert_allclose(values, np.full(20, model.log_marginal(x)), rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def digits():
    images = (load_digits().images[..., None] / 16).astype("float32")
    return images[:64], (images[64:84] > 0.5).astype("float32")


MODELS = {
    "hvae": lambda shape: HierarchicalVAE(shape, latent_sizes=(4, 3), hidden_size=16),
    "hvae_ladder": lambda shape: HierarchicalVAE(shape, latent_sizes=(4, 3), hidden_size=16, inference="ladder"),
    "hvae3_vamp": lambda shape: HierarchicalVAE(shape, latent_sizes=(4, 3, 2), hidden_size=16, prior="vamp",
                                                num_components=3),
    "hvae_householder_mixture": lambda shape: HierarchicalVAE(shape, latent_sizes=(4, 3), hidden_size=16,
                                                              prior="mixture", num_components=3, flow="householder"),
    "iaf": lambda shape: FlowVAE(shape, latent_dim=4, hidden_sizes=(16,), flow="iaf", made_hidden_sizes=(8,),
                                 context_dim=5),
    "planar_mixture": lambda shape: FlowVAE(shape, latent_dim=4, hidden_sizes=(16,), flow="planar", flow_steps=3,
                                            prior="mixture", num_components=3),
}


@pytest.mark.parametrize("name", ["hvae", "iaf"])  # the ladder: its CLI test trains, evaluates and checkpoints it
def test_model_trains_evaluates_and_checkpoints_like_the_vae(name, digits, tmp_path):
    from vae_jax.checkpoints import RunCheckpoints

    train, test = digits
    model = MODELS[name](train.shape[1:])
    state = training.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3), beta=1.0)
    step = training.make_train_step(model.objective, dynamic_binarization=True)
    result = training.fit(step, state, train, jax.random.key(1), epochs=3, batch_size=16, progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    params = result.state.params
    numbers = evaluation.evaluate(model.objective, params, test, jax.random.key(2))
    np.testing.assert_allclose(numbers["elbo"], numbers["reconstruction"] - numbers["kl"], rtol=1e-5)
    estimate = evaluation.log_marginal(model, params, test, jax.random.key(3), num_samples=200, chunk_size=50,
                                       progress=False)
    assert np.all(np.isfinite(estimate.values)) and estimate.mean > numbers["elbo"]
    assert evaluation.active_units(model, params, test) <= model.latent_dim
    assert model.sample(params, jax.random.key(4), 2).shape == (2, *train.shape[1:])
    with RunCheckpoints(tmp_path / "ckpt", metric="m", create=True) as ckpts:
        ckpts.save(1, result.state, history=[{"epoch": 1, "m": 0.0}])
        restored, _ = ckpts.restore(state, which="latest")
    jax.tree.map(np.testing.assert_array_equal, restored.params, params)


@pytest.mark.parametrize("name", ["hvae3_vamp", "hvae_householder_mixture", "planar_mixture"])
def test_other_priors_depths_and_flows_take_a_finite_step(name, digits):
    """One step on the IWAE bound (k = 3) through make_estimator: the estimators that only need
    iwae_bound take posterior objects too."""
    from vae_jax.estimators import make_estimator

    train, test = digits
    model = MODELS[name](train.shape[1:])
    state = training.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3))
    state, metrics = training.make_train_step(make_estimator("iwae", model, num_samples=3), dynamic_binarization=True)(
        state, jnp.asarray(train[:16]), jax.random.key(1))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    value = jax.jit(functools.partial(model.log_marginal, num_samples=20, chunk_size=10))(
        state.params, jax.random.key(2), test[0])
    assert np.isfinite(float(value))


def test_hvae_decodes_from_both_lowest_layers_and_its_prior_is_the_chain(digits):
    train, _ = digits
    model = HierarchicalVAE(train.shape[1:], latent_sizes=(4, 3), hidden_size=16)
    params = model.init(jax.random.key(0), train[0])
    encode, decode, prior = model.bind(params)
    z = jax.random.normal(jax.random.key(1), (7,))
    jacobian = np.asarray(jax.jacfwd(decode)(z)).reshape(-1, 7)
    assert np.abs(jacobian[:, :4]).max() > 1e-3 and np.abs(jacobian[:, 4:]).max() > 1e-3
    mean, log_std = model.conditional_prior(params, 0, z[4:])
    expected = (-0.5 * np.sum(np.square(z[4:])) - 1.5 * np.log(2 * np.pi)
                - 0.5 * np.sum(np.square((z[:4] - mean) / np.exp(log_std))) - np.sum(log_std) - 2 * np.log(2 * np.pi))
    np.testing.assert_allclose(prior(z), expected, rtol=1e-5)
    posterior = encode(train[0])
    assert posterior.mean.shape == (7,) and np.all(np.abs(np.asarray(posterior.top[1])) <= 3.0)
    with pytest.raises(ValueError, match=">= 2 layers"):
        HierarchicalVAE(train.shape[1:], latent_sizes=(4,))
    with pytest.raises(ValueError, match="Unknown flow"):
        FlowVAE(train.shape[1:], flow="radial")
    with pytest.raises(ValueError, match="Unknown flow"):
        HierarchicalVAE(train.shape[1:], flow="radial")


@pytest.mark.parametrize("flow", ["none", "iaf"])
def test_ladder_factors_are_the_bottom_up_gaussian_times_the_decoders_conditional_prior(flow, digits):
    """Every lower factor of ``inference="ladder"`` is precision_weighted(bottom-up Gaussian of x, the
    decoder's p(z1 | z2)) at the given z2, so it moves with the decoder's prior networks (it does
    not with ``"separate"``); the flow, when there is one, comes from the bottom-up layer."""
    from vae_jax._hierarchical_nets import HierarchicalEncoder

    train, _ = digits
    kwargs = dict(latent_sizes=(4, 3), hidden_size=16, flow=flow, made_hidden_sizes=(8,), context_dim=5)
    model = HierarchicalVAE(train.shape[1:], inference="ladder", **kwargs)
    params = model.init(jax.random.key(0), train[0])
    assert "z_branches_0" not in params["encoder"]
    z2 = jax.random.normal(jax.random.key(1), (3,))
    layer = model.encode(params, train[0]).conditionals[0](z2)
    variables = {"params": params["encoder"]}
    h_x = model.encoder.apply(variables, train[0], method=HierarchicalEncoder.x_features)[0]
    bottom_up = model.encoder.apply(variables, 0, h_x, method=HierarchicalEncoder.bottom_up)
    expected = precision_weighted(bottom_up[:2], model.conditional_prior(params, 0, z2))
    np.testing.assert_allclose(layer[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(layer[1], expected[1], rtol=1e-6)
    assert (len(layer) == 3) == (flow != "none")

    def decoder_sensitivity(model, params):
        grad = jax.grad(lambda p: jnp.sum(model.encode(p, train[0]).conditionals[0](z2)[0]))(params)
        return sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grad["decoder"]))

    separate = HierarchicalVAE(train.shape[1:], **kwargs)
    assert decoder_sensitivity(model, params) > 1e-3
    assert decoder_sensitivity(separate, separate.init(jax.random.key(0), train[0])) == 0.0
    with pytest.raises(ValueError, match="Unknown inference 'bottom_up'"):
        HierarchicalVAE(train.shape[1:], inference="bottom_up")


def test_ladder_is_an_option_of_the_cli_and_is_refused_without_layers(tmp_path):
    from vae_jax import ModelConfig, models, runner
    from vae_jax.cli import main

    out = tmp_path / "ladder"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--architecture", "gated_mlp", "--hidden-sizes",
                 "16", "--latent-dim", "3", "--num-layers", "2", "--inference", "ladder", "--validation-size", "200",
                 "--track", "none", "--no-progress", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["inference"] == "ladder"
    assert np.isfinite(runner.evaluate_run(out, progress=False)["test_elbo"])
    with pytest.raises(ValueError, match="inference='ladder' infers the lower layers .* needs num_layers >= 2"):
        models.build_model(ModelConfig(inference="ladder"), (8, 8, 1))
    with pytest.raises(ValueError, match="does not take num_layers=2"):
        models.build_model(ModelConfig(latent="bernoulli", num_layers=2), (8, 8, 1))


def _differentiable_encoder(factors):
    """As :func:`_encoder`, with the bottom factor's arrays held in a Partial (a pytree), so that the
    estimators can stop the gradient at them."""
    top_mean, top_log_std, gain, offset, bottom_log_std = factors
    bottom = jax.tree_util.Partial(lambda g, o, s, z2: (g @ z2 + o, s), gain, offset, bottom_log_std)
    return lambda x: HierarchicalPosterior.create((top_mean, top_log_std), [bottom])


def _estimator_gradients(name, model, x, factors, keys, **options):
    """Per key, the gradient with respect to the five factor arrays of estimator ``name``'s value."""
    from vae_jax.estimators import gaussian

    def value(f, key):
        return getattr(gaussian, name)(key, x, _differentiable_encoder(f), model.decode, likelihood=LIK,
                                       prior=model.prior_log_prob, **options)[0]

    grads = jax.jit(jax.vmap(jax.grad(value), in_axes=(None, 0)))(factors, keys)
    return np.concatenate([np.asarray(g, np.float64).reshape(len(keys), -1) for g in grads], axis=1)


def _z_scores(samples, reference, reference_variance=0.0):
    """|mean of ``samples [N, m]`` - reference| in standard errors, per coordinate (``reference_variance``:
    the squared standard error of a reference that is itself a mean)."""
    stderr = np.sqrt(samples.var(axis=0, ddof=1) / len(samples) + reference_variance)
    return np.abs(samples.mean(axis=0) - reference) / stderr


def test_hierarchical_log_prob_is_the_density_of_the_draws(digits):
    train, _ = digits
    for inference in ("separate", "ladder"):
        model = HierarchicalVAE(train.shape[1:], latent_sizes=(4, 3, 2), hidden_size=16, inference=inference)
        posterior = model.encode(model.init(jax.random.key(0), train[0]), train[0])
        z, log_q = posterior.sample_and_log_prob(jax.random.key(1), 5)
        np.testing.assert_allclose(jax.vmap(posterior.log_prob)(z), log_q, rtol=1e-5)
    with pytest.raises(ValueError, match="z has shape \\(8,\\); this posterior's layers need \\(9,\\)"):
        posterior.log_prob(z[0, :8])
    flows = HierarchicalVAE(train.shape[1:], latent_sizes=(4, 3), hidden_size=16, flow="householder")
    with pytest.raises(ValueError, match="needs Gaussian factors"):
        flows.encode(flows.init(jax.random.key(0), train[0]), train[0]).log_prob(jnp.zeros(7))


def test_stl_and_dreg_encoder_gradients_vanish_at_the_exact_hierarchical_posterior():
    """Exact factors (diagonal model): log p(x, z) - log q(z | x) = log p(x) at every z, so with q's
    parameters stopped STL's and DReG's gradients with respect to them are zero at every key; the
    pathwise gradient is not (it is zero only on average)."""
    model, x = _two_level(diagonal_posterior=True)
    factors = _exact_factors(model, x)
    keys = jax.random.split(jax.random.key(10), 8)
    pathwise = _estimator_gradients("pathwise", model, x, factors, keys)
    assert np.abs(pathwise).max(axis=1).min() > 0.1
    for name, options in [("stl", {}), ("dreg", {"num_samples": 4})]:
        np.testing.assert_allclose(_estimator_gradients(name, model, x, factors, keys, **options), 0.0, atol=2e-4)


def test_hierarchical_estimators_are_unbiased_for_the_closed_form_gradients():
    """Correlated model, factors away from the optimum: the mean over independent keys of STL's and the
    score function's (leave-one-out, k = 4) gradients with respect to the 16 factor numbers is the
    gradient of the closed-form ELBO (every |z| < 5); DReG's mean is the IWAE (k = 4) pathwise mean
    (a two-sample test). Not stopping q's parameters in DReG's weights fails the second check."""
    model, x = _two_level(diagonal_posterior=False)
    factors = tuple(f + 0.2 * jax.random.normal(jax.random.key(i), jnp.shape(f))
                    for i, f in enumerate(_exact_factors(model, x)))
    truth = np.concatenate([np.ravel(g) for g in jax.grad(lambda f: model.elbo(x, *f))(factors)])
    assert np.abs(truth).max() > 0.3

    keys = jax.random.split(jax.random.key(11), 3000)
    assert _z_scores(_estimator_gradients("stl", model, x, factors, keys), truth).max() < 5
    score = _estimator_gradients("score_function", model, x, factors, keys, num_samples=4, baseline="leave_one_out")
    assert _z_scores(score, truth).max() < 5
    iwae = _estimator_gradients("iwae", model, x, factors, keys, num_samples=4)
    dreg = _estimator_gradients("dreg", model, x, factors, jax.random.split(jax.random.key(12), 3000), num_samples=4)
    assert _z_scores(dreg, iwae.mean(axis=0), iwae.var(axis=0, ddof=1) / len(iwae)).max() < 5
    assert _z_scores(iwae, truth).max() > 5  # power: the k = 4 bound's gradient is not the ELBO's


def test_estimators_that_need_log_q_of_given_draws_take_hierarchical_models_but_not_flows(digits):
    from vae_jax import ModelConfig, build
    from vae_jax.config import RunConfig, TrainConfig
    from vae_jax.estimators import make_estimator

    train, _ = digits
    model = MODELS["hvae_ladder"](train.shape[1:])
    for name, options in [("stl", {}), ("dreg", {"num_samples": 3}), ("score_function", {"num_samples": 2})]:
        state = training.create_train_state(model, jax.random.key(0), train[0], optax.adam(1e-3))  # donated
        _, metrics = training.make_train_step(make_estimator(name, model, **options), dynamic_binarization=True)(
            state, jnp.asarray(train[:16]), jax.random.key(1))
        assert all(np.isfinite(float(v)) for v in metrics.values()), name
    flow = MODELS["iaf"](train.shape[1:])
    params = flow.init(jax.random.key(0), train[0])
    with pytest.raises(ValueError, match="estimator 'stl' needs log q\\(z\\|x\\) at given draws.*FlowPosterior"):
        make_estimator("stl", flow)(params, jax.random.key(1), train[0])
    with pytest.raises(ValueError, match="a callable inside it hides its arrays"):
        from vae_jax.estimators import gaussian
        model, x = _two_level(diagonal_posterior=True)
        gaussian.stl(jax.random.key(0), x, _encoder(_exact_factors(model, x)), model.decode, likelihood=LIK)
    hierarchical = ModelConfig(architecture="gated_mlp", num_layers=2)
    build.validate(RunConfig(model=hierarchical, train=TrainConfig(estimator="stl")))
    with pytest.raises(ValueError, match="'dreg' needs log q\\(z\\|x\\) at given draws, which a flow posterior does "
                                         "not give; with --num-layers 1 and --flow iaf choose from pathwise, iwae"):
        build.validate(RunConfig(model=ModelConfig(architecture="gated_mlp", flow="iaf"),
                                 train=TrainConfig(estimator="dreg", objective="iwae", num_samples=2)))


def _ladder_linear_gaussian(model, x, params):
    """Value functions of ``params = (phi, theta)`` for a ladder posterior on the two-level linear-Gaussian
    model: phi = (top_mean, top_log_std, message_mean, message_log_std) is q's own, theta = (A, a, log s1) is
    p(z1 | z2)'s, shared by q's bottom factor (held in Shared). Returns (model of theta, encoder, closed-form
    ELBO); the closed form merges by the precision formula written out here, apart from precision_weighted."""
    from vae_jax.posteriors import Shared

    (top_mean, top_log_std, message_mean, message_log_std), theta = params
    generative = model._replace(weight2=theta[0], bias2=theta[1], log_std1=theta[2])
    bottom = jax.tree_util.Partial(
        lambda shared, m, s, z2: precision_weighted((m, s), (shared.value[0] @ z2 + shared.value[1], shared.value[2])),
        Shared(theta), message_mean, message_log_std)
    encode = lambda x: HierarchicalPosterior.create((top_mean, top_log_std), [bottom])  # noqa: E731
    own, prior = jnp.exp(-2 * message_log_std), jnp.exp(-2 * theta[2])
    weight = own / (own + prior)
    exact = generative.elbo(x, top_mean, top_log_std, (1 - weight)[:, None] * theta[0],
                            weight * message_mean + (1 - weight) * theta[1], -0.5 * jnp.log(own + prior))
    return generative, encode, exact


def test_ladder_estimators_leave_the_shared_prior_live_and_stay_unbiased():
    """A ladder posterior on the correlated two-level linear-Gaussian model, q's bottom factor sharing
    p(z1 | z2)'s parameters theta. Over 3000 keys, STL's mean gradient with respect to q's own numbers and
    theta is the closed-form ELBO's gradient, and DReG's (k = 4) mean is the IWAE gradient's mean. Key by
    key, theta's gradient is exactly the pathwise one (STL) and the IWAE one (DReG): its score in log q
    is kept, where it cancels against log p's. q's own numbers get less variance from STL than pathwise."""
    from vae_jax.estimators import gaussian

    model, x = _two_level(diagonal_posterior=False)
    top_mean, top_log_std = _exact_factors(model, x)[:2]
    keys = jax.random.split(jax.random.key(13), 2)
    phi = (top_mean + 0.2 * jax.random.normal(keys[0], top_mean.shape), top_log_std + 0.1,
           0.5 * jax.random.normal(keys[1], (D1,)), jnp.full((D1,), -0.3))
    params = (phi, (model.weight2, model.bias2, model.log_std1))
    n_phi = sum(np.size(a) for a in phi)
    truth = np.concatenate([np.ravel(g) for g in jax.tree.leaves(
        jax.grad(lambda p: _ladder_linear_gaussian(model, x, p)[2])(params))])

    def gradients(name, keys, **options):
        def value(p, key):
            generative, encode, _ = _ladder_linear_gaussian(model, x, p)
            return getattr(gaussian, name)(key, x, encode, generative.decode, likelihood=LIK,
                                           prior=generative.prior_log_prob, **options)[0]

        grads = jax.jit(jax.vmap(jax.grad(value), in_axes=(None, 0)))(params, keys)
        return np.concatenate([np.asarray(g, np.float64).reshape(len(keys), -1) for g in jax.tree.leaves(grads)],
                              axis=1)

    keys = jax.random.split(jax.random.key(14), 3000)
    stl, pathwise = gradients("stl", keys), gradients("pathwise", keys)
    assert _z_scores(stl, truth).max() < 5
    np.testing.assert_allclose(stl[:, n_phi:], pathwise[:, n_phi:], rtol=1e-4, atol=1e-4)
    assert stl[:, :n_phi].var(axis=0).sum() < 0.8 * pathwise[:, :n_phi].var(axis=0).sum()
    iwae = gradients("iwae", keys, num_samples=4)
    dreg = gradients("dreg", keys, num_samples=4)
    np.testing.assert_allclose(dreg[:, n_phi:], iwae[:, n_phi:], rtol=1e-4, atol=1e-4)
    independent = gradients("dreg", jax.random.split(jax.random.key(15), 3000), num_samples=4)
    assert _z_scores(independent, iwae.mean(axis=0), iwae.var(axis=0, ddof=1) / len(iwae)).max() < 5
