"""Conditional VAE: q(z | x, y), p(x | z, y) and optionally a learned p(z | y).

The label ``y`` (an int in ``[0, num_classes)``, one-hot inside, or any array) is
bound into the plain callables of :mod:`vae_jax.objectives`:
``ConditionalVAE.bind(params, y) -> Bound(encode, decode, prior)``, so the ELBO,
the IWAE bound and importance-sampled ``log p(x | y)`` are the library's
objectives, unchanged. An example is the pair ``(x, y)``; a batch is the pair
``(x [B, ...], y [B, ...])``, and ``jax.vmap`` maps over both.

:class:`ConditionalLinearGaussian` is the closed-form truth these are held to:
``x = W z + V c + b + sigma * noise`` with ``p(z | y) = N(P c + p, diag(tau^2))``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions, networks, objectives
from vae_jax._checks import LOG_2PI, check_positive_int, is_traced
from vae_jax.objectives import Bound

Params = Any


def split_example(example: Any, what: str = "a conditional model") -> tuple[Any, Any]:
    """``(x, y)`` of a labelled example, or a one-line ``ValueError`` for anything else."""
    if not (isinstance(example, (tuple, list)) and len(example) == 2):
        raise ValueError(f"{what} needs labelled examples (x, y); got {type(example).__name__} "
                         f"(pass the pair (x, y), or (x [B, ...], y [B]) for a batch).")
    return example[0], example[1]


def check_labels(y: Any, num_classes: int, *, allow_unlabelled: bool = False) -> None:
    """``ValueError`` unless concrete integer labels lie in ``[0, num_classes)`` (``-1`` too if
    ``allow_unlabelled``). Tracers pass: check the data at the boundary (a jitted one-hot of an
    out-of-range label is all zeros)."""
    if is_traced(y):
        return
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers in [0, {num_classes}); got dtype {y.dtype}.")
    low = -1 if allow_unlabelled else 0
    bad = (y < low) | (y >= num_classes)
    if y.size and bad.any():
        raise ValueError(f"label {int(y[bad].flat[0])} is outside [{low}, {num_classes}) "
                         f"({int(bad.sum())} bad label(s)).")


def condition(y: Any, *, num_classes: int | None) -> jax.Array:
    """The conditioning vector ``c [C]`` of one label: ``one_hot(y)`` (``C = num_classes``) or,
    for ``num_classes=None``, ``y`` flattened to float32."""
    if num_classes is None:
        return jnp.asarray(y, jnp.float32).reshape(-1)
    if jnp.ndim(y) != 0:
        raise ValueError(f"a class label is one int per example; got shape {jnp.shape(y)} "
                         "(use num_classes=None to condition on an array).")
    check_labels(y, num_classes)
    return jax.nn.one_hot(y, num_classes, dtype=jnp.float32)


@dataclasses.dataclass(frozen=True)
class ConditionalVAE:
    """A VAE whose encoder, decoder and (optionally) prior see the label.

    ``params`` is ``{"encoder", "decoder"}`` plus ``"prior"`` with a learned p(z | y).
    Every method works on ONE example.

    Attributes:
      encoder: Flax module, ``concat(x.reshape(-1), c) -> (mean [d], log_std [d])``.
      decoder: Flax module, ``concat(z, c) ->`` the parameters of p(x | z, y).
      likelihood: a name of :data:`vae_jax.distributions.LIKELIHOODS`.
      latent_dim: d.
      input_shape: the shape of one ``x``.
      num_classes: labels are ints in ``[0, num_classes)``; ``None``: ``y`` is an array of ``label_shape``.
      label_shape: shape of one array label (``num_classes=None`` only).
      prior_net: Flax module ``c -> (mean [d], log_std [d])`` of p(z | y); ``None``: N(0, I).
    """

    encoder: nn.Module
    decoder: nn.Module
    likelihood: str
    latent_dim: int
    input_shape: tuple[int, ...]
    num_classes: int | None = None
    label_shape: tuple[int, ...] = ()
    prior_net: nn.Module | None = None

    @property
    def condition_dim(self) -> int:
        """C, the length of the conditioning vector."""
        return self.num_classes if self.num_classes is not None else math.prod(self.label_shape)

    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Parameters for one image ``x`` (the label's size is the model's: one ``x`` is enough, so
        :func:`vae_jax.training.create_train_state` works unchanged)."""
        k_enc, k_dec, k_prior = jax.random.split(key, 3)
        c = jnp.zeros((self.condition_dim,), jnp.float32)
        params = {"encoder": self.encoder.init(k_enc, _join(x, c))["params"],
                  "decoder": self.decoder.init(k_dec, _join(jnp.zeros((self.latent_dim,)), c))["params"]}
        if self.prior_net is not None:
            params["prior"] = self.prior_net.init(k_prior, c)["params"]
        return params

    def bind(self, params: Params, y: Any) -> Bound:
        """``(encode, decode, prior)`` of label ``y``: what every objective takes. ``prior`` is None
        for N(0, I) (closed-form KL), else ``log p(z | y)``."""
        c = condition(y, num_classes=self.num_classes)
        encode = lambda x: self.encoder.apply({"params": params["encoder"]}, _join(x, c))  # noqa: E731
        decode = lambda z: self.decoder.apply({"params": params["decoder"]}, _join(z, c))  # noqa: E731
        if self.prior_net is None:
            return Bound(encode, decode, None)
        return Bound(encode, decode, lambda z: distributions.gaussian_log_prob(z, *self.prior_params(params, c)))

    def prior_params(self, params: Params, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mean [d], log_std [d])`` of p(z | y) for the conditioning vector ``c [C]``."""
        if self.prior_net is None:
            return jnp.zeros((self.latent_dim,)), jnp.zeros((self.latent_dim,))
        return self.prior_net.apply({"params": params["prior"]}, c)

    def objective(self, params: Params, key: jax.Array, example: Any, **kwargs) -> tuple[jax.Array, dict]:
        """:func:`vae_jax.objectives.elbo` of ``example = (x, y)``; ``kwargs``: beta, num_samples, kl."""
        x, y = split_example(example)
        encode, decode, prior = self.bind(params, y)
        return objectives.elbo(key, x, encode, decode, likelihood=self.likelihood, prior=prior, **kwargs)

    def iwae_bound(self, params: Params, key: jax.Array, example: Any, *, num_samples: int) -> jax.Array:
        """:func:`vae_jax.objectives.iwae_bound` of ``log p(x | y)``, nats."""
        x, y = split_example(example)
        encode, decode, prior = self.bind(params, y)
        return objectives.iwae_bound(key, x, encode, decode, likelihood=self.likelihood, prior=prior,
                                     num_samples=num_samples)

    def log_marginal(self, params: Params, key: jax.Array, example: Any, *, num_samples: int = 5000,
                     chunk_size: int = 500) -> jax.Array:
        """Importance-sampled ``log p(x | y)`` (:func:`vae_jax.objectives.log_marginal`), nats."""
        x, y = split_example(example)
        encode, decode, prior = self.bind(params, y)
        return objectives.log_marginal(key, x, encode, decode, likelihood=self.likelihood, prior=prior,
                                       num_samples=num_samples, chunk_size=chunk_size)

    def sample(self, params: Params, key: jax.Array, y: Any) -> jax.Array:
        """Means of p(x | z, y) for ``z ~ p(z | y)``, one per label of ``y [n, ...]``: ``[n, *input_shape]``."""
        keys = jax.random.split(key, jnp.shape(y)[0])

        def one(k, label):
            c = condition(label, num_classes=self.num_classes)
            mean, log_std = self.prior_params(params, c)
            z = objectives.reparameterize(k, mean, log_std)
            return distributions.likelihood_mean(self.likelihood, self.bind(params, label).decode(z))

        return jax.vmap(one)(keys, y)


def _join(x: jax.Array, c: jax.Array) -> jax.Array:
    return jnp.concatenate([jnp.reshape(x, -1).astype(jnp.float32), c])


def conditional_vae(input_shape: Sequence[int], *, latent_dim: int, num_classes: int | None = None,
                    label_shape: Sequence[int] = (), hidden_sizes: Sequence[int] = (256,),
                    likelihood: str = "bernoulli", activation: str = "relu", learned_prior: bool = False,
                    prior_hidden_sizes: Sequence[int] = ()) -> ConditionalVAE:
    """An MLP :class:`ConditionalVAE` (networks of :mod:`vae_jax.networks` on the concatenated inputs).

    Args:
      input_shape: shape of one ``x``, e.g. ``(28, 28, 1)``.
      latent_dim: d.
      num_classes: for integer labels; ``None`` with ``label_shape`` for array labels.
      label_shape: shape of one array label.
      hidden_sizes: encoder widths, reversed for the decoder (``()``: affine maps).
      likelihood, activation: as for :class:`vae_jax.config.ModelConfig`.
      learned_prior: learn p(z | y) = N(mean(c), diag(exp(log_std(c))^2)).
      prior_hidden_sizes: widths of the prior's network (``()``: affine in c, i.e. a table for labels).

    Raises:
      ValueError: a bad latent_dim, num_classes, likelihood or activation, or neither / both of
        num_classes and label_shape.
    """
    check_positive_int(latent_dim, "latent_dim")
    distributions.check_likelihood(likelihood)
    networks.get_activation(activation)
    if (num_classes is None) == (len(label_shape) == 0):
        raise ValueError("give num_classes (integer labels) or a label_shape (array labels), not both or neither; "
                         f"got num_classes={num_classes!r}, label_shape={tuple(label_shape)}.")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 2):
        raise ValueError(f"num_classes must be an int >= 2; got {num_classes!r}.")
    input_shape = tuple(int(s) for s in input_shape)
    num_outputs = 2 if likelihood == "gaussian_learned" else 1
    prior_net = networks.MLPEncoder(latent_dim, tuple(prior_hidden_sizes), activation) if learned_prior else None
    return ConditionalVAE(networks.MLPEncoder(latent_dim, tuple(hidden_sizes), activation),
                          networks.MLPDecoder(input_shape, tuple(hidden_sizes)[::-1], activation, num_outputs),
                          likelihood, latent_dim, input_shape, num_classes, tuple(label_shape), prior_net)


class ConditionalLinearGaussian(NamedTuple):
    """``p(z | y) = N(P c + p, diag(tau^2))``, ``p(x | z, y) = N(W z + V c + b, sigma^2 I_D)``.

    ``c [C]`` is the conditioning vector (a one-hot label or an array). Everything is
    closed form: ``p(x | y) = N(W (P c + p) + V c + b, W diag(tau^2) W^T + sigma^2 I)``,
    the posterior ``p(z | x, y)`` and the ELBO of any diagonal Gaussian q. Attributes:
    ``weight [D, d]``, ``label_weight [D, C]``, ``bias [D]``, scalar ``log_sigma``,
    ``prior_weight [d, C]``, ``prior_bias [d]``, ``prior_log_std [d]``.
    """

    weight: jax.Array
    label_weight: jax.Array
    bias: jax.Array
    log_sigma: jax.Array
    prior_weight: jax.Array
    prior_bias: jax.Array
    prior_log_std: jax.Array

    @classmethod
    def random(cls, key: jax.Array, data_dim: int, latent_dim: int, condition_dim: int, *,
               sigma: float = 0.5, learned_prior: bool = True) -> "ConditionalLinearGaussian":
        """A random model with orthogonal columns of W, so p(z | x, y) is diagonal (and an affine
        encoder can be exact); ``learned_prior=False`` gives p(z | y) = N(0, I)."""
        k_w, k_v, k_b, k_p, k_pb, k_ps = jax.random.split(key, 6)
        q, _ = jnp.linalg.qr(jax.random.normal(k_w, (data_dim, latent_dim)))
        weight = q * jnp.linspace(0.5, 2.0, latent_dim)[None]
        scale = 1.0 if learned_prior else 0.0
        return cls(weight, jax.random.normal(k_v, (data_dim, condition_dim)), 0.5 * jax.random.normal(k_b, (data_dim,)),
                   jnp.log(jnp.asarray(sigma, jnp.float32)),
                   scale * jax.random.normal(k_p, (latent_dim, condition_dim)),
                   scale * jax.random.normal(k_pb, (latent_dim,)),
                   scale * jax.random.uniform(k_ps, (latent_dim,), minval=-0.7, maxval=0.3))

    def marginal(self, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``p(x | y) = N(mean [D], cov [D, D])``."""
        factor = self.weight * jnp.exp(self.prior_log_std)[None]
        mean = self.weight @ (self.prior_weight @ c + self.prior_bias) + self.label_weight @ c + self.bias
        return mean, factor @ factor.T + jnp.exp(2 * self.log_sigma) * jnp.eye(self.bias.shape[0])

    def log_marginal(self, x: jax.Array, c: jax.Array) -> jax.Array:
        """Exact ``log p(x | y)`` of ``x [D]``, nats."""
        mean, cov = self.marginal(c)
        chol = jnp.linalg.cholesky(cov)
        r = jax.scipy.linalg.solve_triangular(chol, x - mean, lower=True)
        return -0.5 * (r @ r) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * x.shape[0] * LOG_2PI

    def posterior(self, x: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Exact ``p(z | x, y) = N(mean [d], cov [d, d])``."""
        prior_precision = jnp.exp(-2 * self.prior_log_std)
        noise_precision = jnp.exp(-2 * self.log_sigma)
        cov = jnp.linalg.inv(jnp.diag(prior_precision) + noise_precision * self.weight.T @ self.weight)
        residual = x - self.label_weight @ c - self.bias
        mean = cov @ (prior_precision * (self.prior_weight @ c + self.prior_bias)
                      + noise_precision * self.weight.T @ residual)
        return mean, cov

    def elbo(self, x: jax.Array, c: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
        """Exact ELBO of ``q = N(mean, diag(exp(log_std))^2)``, nats:
        ``log N(x; W m + V c + b, sigma^2 I) - sum_j s_j^2 ||W_j||^2 / (2 sigma^2) - KL(q || p(z | y))``."""
        sigma2 = jnp.exp(2 * self.log_sigma)
        fit = distributions.gaussian_log_prob(x, self.weight @ mean + self.label_weight @ c + self.bias,
                                              self.log_sigma)
        spread = jnp.sum(jnp.exp(2 * log_std) * jnp.sum(jnp.square(self.weight), axis=0)) / (2 * sigma2)
        prior_mean = self.prior_weight @ c + self.prior_bias
        kl = jnp.sum(self.prior_log_std - log_std - 0.5 + (jnp.exp(2 * log_std) + jnp.square(mean - prior_mean))
                     / (2 * jnp.exp(2 * self.prior_log_std)))
        return fit - spread - kl

    def exact_model(self, *, num_classes: int | None, learned_prior: bool = True
                    ) -> tuple[ConditionalVAE, Params]:
        """An affine :class:`ConditionalVAE` whose decoder and prior are this model and whose
        encoder is the posterior p(z | x, y), with its parameters (x is ``[D]``). The encoder is
        exact when the posterior covariance is diagonal (:meth:`random` makes it so)."""
        data_dim, latent_dim = self.weight.shape
        condition_dim = self.label_weight.shape[1]
        model = conditional_vae((data_dim,), latent_dim=latent_dim, num_classes=num_classes,
                                label_shape=() if num_classes else (condition_dim,), hidden_sizes=(),
                                likelihood="gaussian_learned", learned_prior=learned_prior)
        # mean(x, c) = A x + B c + a: the posterior mean is affine in (x, c); its covariance is constant.
        x0, c0 = jnp.zeros(data_dim), jnp.zeros(condition_dim)
        gain_x = jax.jacfwd(lambda x: self.posterior(x, c0)[0])(x0)
        gain_c = jax.jacfwd(lambda c: self.posterior(x0, c)[0])(c0)
        mean0, cov = self.posterior(x0, c0)
        params = {"encoder": {"head": _affine(jnp.concatenate([gain_x, gain_c], 1), mean0,
                                              0.5 * jnp.log(jnp.diag(cov)))},
                  "decoder": {"Dense_0": _affine(jnp.concatenate([self.weight, self.label_weight], 1), self.bias,
                                                 jnp.broadcast_to(self.log_sigma, (data_dim,)))}}
        if learned_prior:
            params["prior"] = {"head": _affine(self.prior_weight, self.prior_bias, self.prior_log_std)}
        return model, params


def _affine(gain: jax.Array, bias: jax.Array, log_std: jax.Array) -> dict:
    """Flax Dense params of ``h -> [gain @ h + bias, log_std]`` (a constant second half)."""
    kernel = jnp.concatenate([gain.T, jnp.zeros((gain.shape[1], log_std.shape[0]))], 1)
    return {"kernel": kernel, "bias": jnp.concatenate([bias, log_std])}
