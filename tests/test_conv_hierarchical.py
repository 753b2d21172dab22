"""The convolutional HVAE (ConvHVAE, ``HierarchicalVAE(net="conv")``): the authors' layers and sizes,
the per-layer ELBO identity against closed-form Gaussian KLs, the z1/z2 dependencies, the VampPrior
of image pseudo-inputs, training, log p(x), checkpoints and the config path."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from vae_jax import evaluation, models, training
from vae_jax.hierarchical import HierarchicalVAE
from vae_jax.networks import GatedConv
from vae_jax.posteriors import split_layers

TINY = dict(latent_sizes=(4, 3), hidden_size=16, net="conv", conv_channels=(4, 8))


@pytest.fixture(scope="module")
def digits():
    images = (load_digits().images[..., None] / 16).astype("float32")
    return images[:64], (images[64:84] > 0.5).astype("float32")


def _gaussian_log_prob(z, mean, log_std):
    z, mean, log_std = (np.asarray(a, np.float64) for a in (z, mean, log_std))
    return np.sum(-0.5 * np.square((z - mean) / np.exp(log_std)) - log_std - 0.5 * np.log(2 * np.pi), axis=-1)


def _kl_diagonal(m_q, s_q, m_p, s_p):
    """Closed-form KL(N(m_q, e^{2 s_q}) || N(m_p, e^{2 s_p})), summed over the last axis."""
    m_q, s_q, m_p, s_p = (np.asarray(a, np.float64) for a in (m_q, s_q, m_p, s_p))
    return np.sum(s_p - s_q + (np.exp(2 * s_q) + np.square(m_q - m_p)) / (2 * np.exp(2 * s_p)) - 0.5, axis=-1)


@pytest.mark.parametrize("side, kernel, stride, out", [(7, 3, 2, 4), (4, 5, 1, 4), (3, 5, 2, 2)])
def test_gated_conv_is_the_authors_padded_gated_convolution(side, kernel, stride, out):
    """Against a direct NumPy convolution with PyTorch's symmetric padding k // 2: an odd 7x7 image
    at stride 2 gives 4x4 (Flax's 'SAME' would pad one side only); kernels larger than the map take the
    shifted-slices path, with the same sums; and the gradient (vmapped) against finite differences."""
    x = np.asarray(jax.random.uniform(jax.random.key(0), (side, side, 2)), np.float64)
    layer = GatedConv(3, kernel=kernel, stride=stride)
    params = layer.init(jax.random.key(1), jnp.asarray(x, jnp.float32))
    weights, bias = (np.asarray(params["params"]["conv_and_gate"][k], np.float64) for k in ("kernel", "bias"))
    padded = np.pad(x, ((kernel // 2,) * 2, (kernel // 2,) * 2, (0, 0)))
    both = np.array([[np.einsum("ijc,ijco->o", padded[stride * r:stride * r + kernel, stride * c:stride * c + kernel],
                                weights) + bias for c in range(out)] for r in range(out)])
    expected = both[..., :3] / (1 + np.exp(-both[..., 3:]))
    batch = jnp.stack([jnp.asarray(x, jnp.float32)] * 2)
    np.testing.assert_allclose(jax.jit(jax.vmap(functools.partial(layer.apply, params)))(batch)[1], expected,
                               rtol=1e-5, atol=1e-6)
    loss = jax.jit(lambda p: jnp.sum(jnp.sin(jax.vmap(functools.partial(layer.apply, p))(batch))))
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(2), a.shape), params)
    shift = lambda eps: jax.tree.map(lambda a, d: a + eps * d, params, direction)  # noqa: E731
    numeric = (float(loss(shift(1e-2))) - float(loss(shift(-1e-2)))) / 2e-2
    analytic = sum(np.vdot(g, d) for g, d in zip(jax.tree.leaves(jax.grad(loss)(params)), jax.tree.leaves(direction)))
    np.testing.assert_allclose(analytic, numeric, rtol=2e-3)


def _gated_conv(c_in, c_out, k):
    return 2 * (c_in * c_out * k * k + c_out)


def _gated_dense(n_in, n_out):
    return 2 * (n_in * n_out + n_out)


def test_parameter_count_is_the_authors_layer_list():
    """28x28 Bernoulli, z1 = z2 = 40, the authors' convHVAE_2level.py layer by layer (PyTorch shapes;
    a head is Linear(n, 40) for the mean and one for the log-variance; h_size = 294)."""
    q_z2 = (_gated_conv(1, 32, 7) + _gated_conv(32, 32, 3) + _gated_conv(32, 64, 5) + _gated_conv(64, 64, 3)
            + _gated_conv(64, 6, 3) + 2 * (294 * 40 + 40))
    q_z1 = (_gated_conv(1, 32, 3) + _gated_conv(32, 32, 3) + _gated_conv(32, 64, 3) + _gated_conv(64, 64, 3)
            + _gated_conv(64, 6, 3) + _gated_dense(40, 294) + _gated_dense(588, 300) + 2 * (300 * 40 + 40))
    p_z1 = _gated_dense(40, 300) + _gated_dense(300, 300) + 2 * (300 * 40 + 40)
    p_x = (2 * _gated_dense(40, 300) + _gated_dense(600, 784) + _gated_conv(1, 64, 3) + 3 * _gated_conv(64, 64, 3)
           + (64 * 1 + 1))
    model = HierarchicalVAE((28, 28, 1), latent_sizes=(40, 40), net="conv")
    shapes = jax.eval_shape(model.init_params, jax.random.key(0), jnp.zeros((28, 28, 1)))
    assert sum(math.prod(a.shape) for a in jax.tree.leaves(shapes)) == q_z2 + q_z1 + p_z1 + p_x == 2_210_861
    vamp = HierarchicalVAE((28, 28, 1), latent_sizes=(40, 40), net="conv", prior="vamp", num_components=500)
    assert jax.eval_shape(vamp.init_params, jax.random.key(0), jnp.zeros((28, 28, 1)))["prior"][
        "pseudo_inputs"].shape == (500, 28, 28, 1)


@pytest.fixture(scope="module")
def trained(digits):
    """The tiny ConvHVAE with a VampPrior of 3 pseudo-images, 4 epochs on 64 digits."""
    train, _ = digits
    model = HierarchicalVAE(train.shape[1:], **TINY, prior="vamp", num_components=3)
    state = training.create_train_state(model, jax.random.key(0), train[0], optax.adam(3e-3), beta=1.0)
    step = training.make_train_step(model.objective, dynamic_binarization=True)
    return model, state, training.fit(step, state, train, jax.random.key(1), epochs=4, batch_size=16, progress=False)


def _log_vamp(model, params, z2):
    """log (1/K) sum_k q(z2 | u_k) in NumPy, u_k the pseudo-images clipped to [0, 1]."""
    pseudo = jnp.clip(params["prior"]["pseudo_inputs"], 0, 1)
    means, log_stds = jax.jit(jax.vmap(functools.partial(model.top_gaussian, params)))(pseudo)
    return np.logaddexp.reduce([_gaussian_log_prob(z2, m, s) for m, s in zip(means, log_stds)], axis=0) - np.log(
        len(means))


def test_elbo_is_reconstruction_minus_the_per_layer_kls(trained, digits):
    """2000 draws of one elbo call, rebuilt from the model's pieces in NumPy: the reconstruction,
    KL = (log q(z2|x) - log p_vamp(z2)) + (log q(z1|x,z2) - log p(z1|z2)) and log q = both layers'
    densities at every draw; the bottom layer's Monte-Carlo KL averages to its closed form given the
    drawn z2 (within 4 s.e.)."""
    model, _, result = trained
    params = result.state.params
    x = (digits[1][0]).astype(np.float32)
    encode, decode, _ = model.bind(params)
    key, k = jax.random.key(1), 2000

    @jax.jit
    def pieces():
        value, aux = model.objective(params, key, x, num_samples=k)
        z, log_q = encode(x).sample_and_log_prob(key, k)
        z1, z2 = split_layers(z, model.latent_sizes)
        q1 = jax.vmap(encode(x).conditionals[0])(z2)
        p1 = jax.vmap(functools.partial(model.conditional_prior, params, 0))(z2)
        return value, aux, z1, z2, log_q, q1, p1, model.top_gaussian(params, x), jax.vmap(decode)(z)

    value, aux, z1, z2, log_q, q1, p1, q2, logits = jax.tree.map(np.asarray, pieces())
    logits = logits.astype(np.float64)
    recon = np.sum(x * logits - np.logaddexp(0, logits), axis=(1, 2, 3))
    layer2 = _gaussian_log_prob(z2, *q2) - _log_vamp(model, params, z2)
    layer1 = _gaussian_log_prob(z1, *q1) - _gaussian_log_prob(z1, *p1)
    np.testing.assert_allclose(log_q, _gaussian_log_prob(z2, *q2) + _gaussian_log_prob(z1, *q1), rtol=1e-5)
    np.testing.assert_allclose(aux["reconstruction"], recon.mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["kl"], (layer2 + layer1).mean(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(value, aux["reconstruction"] - aux["kl"], rtol=1e-6)
    diff1 = layer1 - _kl_diagonal(*q1, *p1)
    assert abs(diff1.mean()) < 4 * diff1.std() / np.sqrt(k) and layer1.mean() > 0.1


def test_decoder_reads_z1_and_z2_and_the_vamp_prior_mixes_image_pseudo_inputs(trained):
    model, _, result = trained
    params = result.state.params
    _, decode, prior = model.bind(params)
    z = jax.random.normal(jax.random.key(1), (7,))
    jacobian = np.asarray(jax.jit(jax.jacfwd(decode))(z)).reshape(-1, 7)
    assert np.abs(jacobian[:, :4]).max() > 1e-3 and np.abs(jacobian[:, 4:]).max() > 1e-3
    prior_jacobian = np.asarray(jax.jit(jax.jacfwd(lambda z2: model.conditional_prior(params, 0, z2)[0]))(z[4:]))
    assert prior_jacobian.shape == (4, 3) and np.abs(prior_jacobian).max() > 1e-3
    assert params["prior"]["pseudo_inputs"].shape == (3, 8, 8, 1)
    p1 = jax.jit(functools.partial(model.conditional_prior, params, 0))(z[4:])
    expected = _log_vamp(model, params, np.asarray(z[4:])[None])[0] + _gaussian_log_prob(z[:4], *p1)
    np.testing.assert_allclose(jax.jit(prior)(z), expected, rtol=1e-5)


def test_trains_evaluates_samples_and_checkpoints(trained, digits, tmp_path):
    from vae_jax.checkpoints import RunCheckpoints

    model, state, result = trained
    test = digits[1]
    losses = [row["train_loss"] for row in result.history]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    params = result.state.params
    numbers = evaluation.evaluate(model.objective, params, test, jax.random.key(2))
    np.testing.assert_allclose(numbers["elbo"], numbers["reconstruction"] - numbers["kl"], rtol=1e-5)
    estimate = evaluation.log_marginal(model, params, test, jax.random.key(3), num_samples=200, chunk_size=50,
                                       progress=False)
    assert np.all(np.isfinite(estimate.values)) and estimate.mean > numbers["elbo"]
    assert jax.jit(model.sample, static_argnums=2)(params, jax.random.key(4), 2).shape == (2, 8, 8, 1)
    with RunCheckpoints(tmp_path / "ckpt", metric="m", create=True) as ckpts:
        ckpts.save(1, result.state, history=[{"epoch": 1, "m": 0.0}])
        restored, _ = ckpts.restore(state, which="latest")
    jax.tree.map(np.testing.assert_array_equal, restored.params, params)


def test_config_builds_the_conv_hvae_and_refuses_what_it_does_not_take():
    config = models.ModelConfig(latent_dim=40, hidden_sizes=(300,), architecture="conv", num_layers=2)
    model = models.build_model(config, (28, 28, 1))
    assert isinstance(model, HierarchicalVAE) and (model.net, model.latent_sizes, model.hidden_size) == (
        "conv", (40, 40), 300)
    with pytest.raises(ValueError, match="does not take compute_dtype='bfloat16'"):
        models.build_model(models.ModelConfig(architecture="conv", num_layers=2, compute_dtype="bfloat16"), (8, 8, 1))
    with pytest.raises(ValueError, match=r"--architecture gated_mlp\); it does not take architecture='conv'"):
        models.build_model(models.ModelConfig(architecture="conv", flow="iaf"), (8, 8, 1))
    with pytest.raises(ValueError, match="Unknown net"):
        HierarchicalVAE((8, 8, 1), net="resnet")
    with pytest.raises(ValueError, match="conv_channels must be"):
        HierarchicalVAE((8, 8, 1), net="conv", conv_channels=(4,))
