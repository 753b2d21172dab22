"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu, 2017): a grid of codes from a learned codebook.

- :func:`quantize`: the nearest code of each encoder output (squared Euclidean distance).
- :func:`straight_through`: ``z_e + stop_gradient(z_q - z_e)``, the decoder's input: its value is
  ``z_q`` and its gradient passes to ``z_e`` unchanged (``d/dz_e = d/dz_q``).
- :func:`vq_losses`: codebook ``||sg(z_e) - z_q||^2`` and commitment ``||z_e - sg(z_q)||^2``
  (summed over the grid and the embedding, per example, like the nats of the reconstruction).
- :func:`ema_update`: the EMA codebook (the paper's appendix; decay ``gamma``, Laplace smoothing
  ``epsilon``), an alternative to the codebook loss (``VQVAE(codebook_update="ema")``).
- :func:`codebook_usage`: perplexity ``exp(H(usage))`` and the number of dead (unused) codes.

The training objective is NOT a bound: ``log p(x | z_q) - codebook - beta * commitment``. A
likelihood comes from the two-stage model ``p(c) p(x | c)`` with an autoregressive code prior
(:mod:`vae_jax.code_prior`) and the one-hot, deterministic ``q(c | x) = [c = codes(x)]``: its
ELBO is ``log p(x | c*) + log p(c*)`` (zero entropy), a lower bound on that model's
``log p(x)`` (:meth:`VQVAE.log_joint`, :func:`bits_per_dim`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions, networks, training
from vae_jax._checks import check_positive_int

Params = Any
CODEBOOK_UPDATES = ("loss", "ema")


def check_num_codes(num_codes: Any) -> int:
    """``num_codes`` as an int, or ``ValueError`` unless it is an int ``>= 2``."""
    if isinstance(num_codes, bool) or not isinstance(num_codes, int) or num_codes < 2:
        raise ValueError(f"the codebook needs at least 2 codes (num_codes >= 2); got {num_codes!r}.")
    return num_codes


def quantize(z_e: jax.Array, codebook: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The nearest code of every vector.

    Args:
      z_e: ``[..., D]`` encoder outputs.
      codebook: ``[K, D]``, ``K >= 2``.

    Returns:
      ``(z_q [..., D], indices [...] int32)``: ``z_q = codebook[indices]``.
    """
    if codebook.ndim != 2 or z_e.shape[-1] != codebook.shape[1]:
        raise ValueError(f"codebook must be [K, D] with D = z_e.shape[-1]; got {codebook.shape} and {z_e.shape}.")
    check_num_codes(codebook.shape[0])
    code_norms = jnp.sum(jnp.square(codebook), -1).reshape((1,) * (z_e.ndim - 1) + (-1,))
    distance = jnp.sum(jnp.square(z_e), -1, keepdims=True) - 2 * z_e @ codebook.T + code_norms
    indices = jnp.argmin(distance, axis=-1).astype(jnp.int32)
    return codebook[indices], indices


def straight_through(z_e: jax.Array, z_q: jax.Array) -> jax.Array:
    """``z_q`` in value, identity gradient to ``z_e`` (none to ``z_q``)."""
    return z_e + jax.lax.stop_gradient(z_q - z_e)


def vq_losses(z_e: jax.Array, z_q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(codebook, commitment)``: ``||sg(z_e) - z_q||^2`` (moves codes) and ``||z_e - sg(z_q)||^2``
    (moves the encoder), each summed over every element, per example."""
    sg = jax.lax.stop_gradient
    return jnp.sum(jnp.square(sg(z_e) - z_q)), jnp.sum(jnp.square(z_e - sg(z_q)))


class CodebookEMA(NamedTuple):
    """EMA statistics: ``cluster_size [K]`` (N_k) and ``embed_sum [K, D]`` (m_k)."""

    cluster_size: jax.Array
    embed_sum: jax.Array


def init_ema(codebook: jax.Array) -> CodebookEMA:
    """Statistics consistent with ``codebook``: ``N_k = 1``, ``m_k = e_k``."""
    return CodebookEMA(jnp.ones(codebook.shape[:1]), jnp.copy(codebook))  # a copy: a train step donates both


def ema_update(ema: CodebookEMA, z_e: jax.Array, indices: jax.Array, *, decay: float | jax.Array,
               epsilon: float = 1e-5) -> tuple[CodebookEMA, jax.Array]:
    """One EMA step of the codebook from a batch's assignments.

    ``N_k <- g N_k + (1 - g) n_k``, ``m_k <- g m_k + (1 - g) sum_{i: k_i = k} z_i``, then with
    Laplace smoothing ``N~_k = (N_k + eps) / (n + K eps) * n`` (``n = sum_k N_k``) the codes
    ``e_k = m_k / N~_k`` (a code never used keeps decaying towards 0 rather than dividing by 0).

    Args:
      ema: the statistics.
      z_e: ``[N, D]`` encoder outputs (flattened over batch and grid).
      indices: ``[N]`` their codes.
      decay: g in ``[0, 1)``.
      epsilon: eps > 0.

    Returns:
      ``(new statistics, codebook [K, D])``.
    """
    one_hot = jax.nn.one_hot(indices, ema.cluster_size.shape[0], dtype=z_e.dtype)
    cluster_size = decay * ema.cluster_size + (1 - decay) * jnp.sum(one_hot, 0)
    embed_sum = decay * ema.embed_sum + (1 - decay) * one_hot.T @ z_e
    total = jnp.sum(cluster_size)
    smoothed = (cluster_size + epsilon) / (total + cluster_size.shape[0] * epsilon) * total
    return CodebookEMA(cluster_size, embed_sum), embed_sum / smoothed[:, None]


def codebook_usage(indices: jax.Array, num_codes: int) -> dict[str, jax.Array]:
    """``perplexity`` (``exp`` of the entropy of the code frequencies in ``indices``; ``K`` for
    uniform use, 1 for one code) and ``dead_codes`` (codes never used), for any ``indices`` shape."""
    counts = jnp.bincount(jnp.reshape(indices, -1), length=num_codes)
    p = counts / jnp.maximum(jnp.sum(counts), 1)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {"perplexity": jnp.exp(entropy), "dead_codes": jnp.sum(counts == 0).astype(jnp.float32)}


def bits_per_dim(log_density: jax.Array | float, num_dims: int, *, levels: int = 256) -> jax.Array:
    """Bits per dimension of ``levels``-level data from the log-density (nats) of its uniform
    dequantisation ``y = (k + u) / levels`` in ``[0, 1]^D`` (``docs/likelihoods.md``):
    ``-(log p(y) - D log levels) / (D log 2)``; 8 for the uniform density at 256 levels."""
    num_dims = check_positive_int(num_dims, "num_dims")
    return -(log_density - num_dims * jnp.log(levels)) / (num_dims * jnp.log(2.0))


class GridEncoder(nn.Module):
    """``x [H, W, C] -> z_e [H / 2^n, W / 2^n, D]``: ``n = len(features)`` stride-2 convolutions, a 1x1 head."""

    embedding_dim: int
    features: Sequence[int] = (32, 64)
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = networks.get_activation(self.activation)
        h = x
        for f in self.features:
            h = act(nn.Conv(f, (3, 3), strides=(2, 2), padding="SAME")(h))
        return nn.Conv(self.embedding_dim, (1, 1))(h)


class GridDecoder(nn.Module):
    """``z_q [h, w, D] ->`` the parameters of p(x | z_q) of ``output_shape``: stride-2 transposed convolutions."""

    output_shape: Sequence[int]
    features: Sequence[int] = (64, 32)
    activation: str = "relu"
    num_outputs: int = 1

    @nn.compact
    def __call__(self, z: jax.Array) -> Any:
        act = networks.get_activation(self.activation)
        h = act(nn.Conv(self.features[0], (3, 3), padding="SAME")(z))
        for f in self.features:
            h = act(nn.ConvTranspose(f, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = nn.Conv(self.output_shape[-1] * self.num_outputs, (3, 3), padding="SAME")(h)
        return networks._split_outputs(h, self.output_shape, self.num_outputs)


@dataclasses.dataclass(frozen=True)
class VQVAE:
    """``params = {"encoder", "decoder", "codebook" [K, D]}``; every method works on ONE example.

    Attributes:
      encoder: ``x -> z_e [h, w, D]``; decoder: ``z [h, w, D] ->`` the parameters of p(x | z).
      num_codes: K >= 2; embedding_dim: D; likelihood: a name of ``distributions.LIKELIHOODS``.
      input_shape: ``(H, W, C)``.
      codebook_update: ``"loss"`` (the codebook loss trains it) or ``"ema"`` (no codebook loss and no
        gradient to the codebook: :func:`make_train_step` replaces it by :func:`ema_update`).
    """

    encoder: nn.Module
    decoder: nn.Module
    num_codes: int
    embedding_dim: int
    input_shape: tuple[int, ...]
    likelihood: str = "gaussian_learned"
    codebook_update: str = "loss"

    def __post_init__(self):
        check_num_codes(self.num_codes)
        distributions.check_likelihood(self.likelihood)
        if self.codebook_update not in CODEBOOK_UPDATES:
            raise ValueError(f"codebook_update must be one of {CODEBOOK_UPDATES}; got {self.codebook_update!r}.")

    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Parameters for one image ``x``; codes ``N(0, 1)``."""
        k_enc, k_dec, k_code = jax.random.split(key, 3)
        z = self.encoder.init(k_enc, x)
        params = {"encoder": z["params"], "codebook": jax.random.normal(k_code, (self.num_codes, self.embedding_dim))}
        grid = self.encoder.apply(z, x)
        return {**params, "decoder": self.decoder.init(k_dec, grid)["params"]}

    def encode(self, params: Params, x: jax.Array) -> jax.Array:
        """``z_e [h, w, D]``."""
        return self.encoder.apply({"params": params["encoder"]}, x)

    def codes(self, params: Params, x: jax.Array) -> jax.Array:
        """The code grid of ``x``: ``[h, w]`` int32 in ``[0, K)``."""
        return quantize(self.encode(params, x), params["codebook"])[1]

    def decode_codes(self, params: Params, codes: jax.Array) -> Any:
        """The parameters of p(x | c) of a code grid ``[h, w]``."""
        return self.decoder.apply({"params": params["decoder"]}, params["codebook"][codes])

    def reconstruct(self, params: Params, x: jax.Array) -> jax.Array:
        """The mean of p(x | c) at the codes of ``x``: ``[H, W, C]``."""
        return distributions.likelihood_mean(self.likelihood, self.decode_codes(params, self.codes(params, x)))

    def objective(self, params: Params, key: jax.Array, x: jax.Array, *, beta: float | jax.Array = 0.25
                  ) -> tuple[jax.Array, dict]:
        """``log p(x | z_q) - codebook - beta * commitment`` (no codebook term with EMA), to maximise;
        ``key`` is unused. aux: ``reconstruction`` (nats), ``codebook_loss``, ``commitment_loss``."""
        del key
        z_e = self.encode(params, x)
        codebook = params["codebook"]
        if self.codebook_update == "ema":
            codebook = jax.lax.stop_gradient(codebook)
        z_q, _ = quantize(z_e, codebook)
        out = self.decoder.apply({"params": params["decoder"]}, straight_through(z_e, z_q))
        reconstruction = distributions.log_likelihood(self.likelihood, x, out)
        codebook_loss, commitment = vq_losses(z_e, z_q)
        value = reconstruction - beta * commitment - (codebook_loss if self.codebook_update == "loss" else 0.0)
        return value, {"reconstruction": reconstruction, "codebook_loss": codebook_loss,
                       "commitment_loss": commitment}

    def log_joint(self, params: Params, x: jax.Array, code_log_prob: Callable[[jax.Array], jax.Array]
                  ) -> jax.Array:
        """``log p(x | c*) + log p(c*)`` at ``c* = codes(x)``, nats: the ELBO of the one-hot q, a lower
        bound on ``log p(x)`` of the model ``p(c) p(x | c)``; ``code_log_prob``: ``c [h, w] -> log p(c)``."""
        codes = self.codes(params, x)
        return distributions.log_likelihood(self.likelihood, x, self.decode_codes(params, codes)) + code_log_prob(codes)


def vq_vae(input_shape: Sequence[int], *, num_codes: int = 64, embedding_dim: int = 16,
           features: Sequence[int] = (32, 64), likelihood: str = "gaussian_learned", activation: str = "relu",
           codebook_update: str = "loss") -> VQVAE:
    """A convolutional :class:`VQVAE`: a grid of ``H / 2^n x W / 2^n`` codes, ``n = len(features)``."""
    input_shape = tuple(int(s) for s in input_shape)
    check_num_codes(num_codes)
    if len(input_shape) != 3 or any(s % 2 ** len(features) for s in input_shape[:2]):
        raise ValueError(f"input_shape must be (H, W, C) with H, W divisible by {2 ** len(features)}; "
                         f"got {input_shape}.")
    num_outputs = 2 if likelihood == "gaussian_learned" else 1
    return VQVAE(GridEncoder(embedding_dim, tuple(features), activation),
                 GridDecoder(input_shape, tuple(features)[::-1], activation, num_outputs),
                 num_codes, embedding_dim, input_shape, likelihood, codebook_update)


def codebook_from_data(model: VQVAE, params: Params, key: jax.Array, x: jax.Array) -> Params:
    """``params`` with the codebook set to the encoder outputs of ``K`` grid positions of the batch
    ``x [B, ...]``, drawn without replacement from its ``B * h * w`` positions (``>= K``): a
    data-dependent start that puts every code where the data is (an ``N(0, 1)`` codebook can leave
    most codes dead; ``docs/model_families.md``)."""
    z_e = jax.vmap(model.encode, in_axes=(None, 0))(params, x).reshape(-1, model.embedding_dim)
    if z_e.shape[0] < model.num_codes:
        raise ValueError(f"the batch holds {z_e.shape[0]} encoder outputs; initialising {model.num_codes} codes "
                         "needs at least as many.")
    chosen = jax.random.choice(key, z_e.shape[0], (model.num_codes,), replace=False)
    return {**params, "codebook": z_e[chosen]}


def with_codebook_ema(state: training.TrainState) -> training.TrainState:
    """``state`` with :func:`init_ema` of its codebook in ``estimator_state["codebook_ema"]``."""
    return state.replace(estimator_state={**state.estimator_state,
                                          "codebook_ema": init_ema(state.params["codebook"])})


def make_train_step(model: VQVAE, *, decay: float = 0.99, epsilon: float = 1e-5) -> Callable:
    """``train_step(state, batch, key) -> (state, metrics)`` of ``model.objective``, plus the batch's
    codebook usage (``perplexity``, ``dead_codes``) and, for ``codebook_update="ema"``, the EMA
    codebook update from the codes the step assigned (state from :func:`with_codebook_ema`).

    Jitted, state donated. No dynamic binarisation (the EMA must see the step's inputs).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1); got {decay}.")
    inner = training.make_train_step(model.objective)

    def step(state, batch, key):
        if model.codebook_update == "ema" and "codebook_ema" not in state.estimator_state:
            raise ValueError("codebook_update='ema' needs the EMA statistics: train vq.with_codebook_ema(state).")
        z_e = jax.vmap(model.encode, in_axes=(None, 0))(state.params, batch)
        _, indices = quantize(z_e, state.params["codebook"])
        others = {k: v for k, v in state.estimator_state.items() if k != "codebook_ema"}
        new, metrics = inner(state.replace(estimator_state=others), batch, key)
        metrics = {**metrics, **codebook_usage(indices, model.num_codes)}
        if model.codebook_update == "loss":
            return new.replace(estimator_state=state.estimator_state), metrics
        ema, codebook = ema_update(state.estimator_state["codebook_ema"], z_e.reshape(-1, model.embedding_dim),
                                   indices.reshape(-1), decay=decay, epsilon=epsilon)
        return new.replace(params={**new.params, "codebook": codebook},
                           estimator_state={**others, "codebook_ema": ema}), metrics

    return jax.jit(step, donate_argnums=0)
