"""Semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling, 2014).

A classifier ``q(y | x)``, ``q(z | x, y)``, ``p(x | y, z)``, ``p(z) = N(0, I)`` and a
uniform ``p(y) = 1 / K``; the label-conditioned parts are a
:class:`vae_jax.conditional.ConditionalVAE`, so every bound below is
:func:`vae_jax.objectives.elbo` of ``bind(params, y)``.

- Labelled: ``L(x, y) = ELBO(x | y) + log p(y) <= log p(x, y)``.
- Unlabelled: ``U(x) = sum_y q(y|x) (L(x, y) - log q(y|x)) = sum_y q(y|x) L(x, y) + H(q(y|x))
  <= log p(x)``, the label summed out EXACTLY over the ``K`` classes (class ``c``'s ELBO uses
  the key ``fold_in(key, c)``).
- Training (:meth:`M2.objective`): the paper's summed objective
  ``J^alpha = sum_l [L(x, y) + alpha log q(y|x)] + sum_u U(x)`` over ``N_l`` labelled and ``N_u``
  unlabelled examples (``N = N_l + N_u``; ``alpha`` per labelled example, below), estimated from
  PAIRED batches: every step takes a batch of unlabelled images and an equally large batch of
  labelled pairs drawn, cycled, from the labelled set (:func:`paired_examples`), so every step sees
  labels however few there are.
  **Convention for alpha.** The paper adds ``alpha * E_labelled[-log q(y|x)]`` with
  ``alpha = 0.1 N``; per labelled example that is the weight ``0.1 * N / N_l`` on ``log q(y | x)``,
  which is what ``alpha`` is here (:func:`paper_alpha`; Kingma et al.'s code:
  ``beta = alpha * n_tot / n_labeled`` with ``alpha = 0.1``). **The two batch means** are weighted
  ``s`` (labelled) and ``1 - s`` (unlabelled), ``s`` = ``labelled_share``: ``s = N_l / N``
  (:func:`paper_share`) makes the step's value an unbiased estimate of ``J^alpha / N`` (the same
  objective, in expectation, as batches drawn from the mixed pool); ``s = 1/2`` counts every
  labelled example ``N_u / N_l`` times, as reimplementations that average the two batches with
  equal weight do.

Data: the training pool as ``(x, y)`` with ``y = -1`` (:data:`UNLABELLED`) for an unlabelled
image; :func:`paired_examples` arranges it as examples ``(x [2, ...], y)``, the unlabelled
image then a labelled one and the labelled one's label, which the one epoch loop
(:func:`vae_jax.training.fit`) shuffles like any other pairs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import networks, objectives
from vae_jax.conditional import ConditionalVAE, check_labels, conditional_vae, split_example
from vae_jax.objectives import Bound

UNLABELLED = -1
Params = Any


def paper_alpha(num_examples: int, num_labelled: int) -> float:
    """The per-labelled-example weight of ``log q(y|x)``: the paper's ``alpha = 0.1 N`` over ``N_l``."""
    if not 0 < num_labelled <= num_examples:
        raise ValueError(f"need 0 < num_labelled <= num_examples; got {num_labelled} and {num_examples}.")
    return 0.1 * num_examples / num_labelled


def paper_share(num_examples: int, num_labelled: int) -> float:
    """The labelled batch's weight ``s = N_l / N`` that makes :meth:`M2.objective` estimate the paper's
    ``J^alpha / N`` without bias (the unlabelled batch gets ``1 - s = N_u / N``)."""
    paper_alpha(num_examples, num_labelled)  # the same checks
    return num_labelled / num_examples


def paired_examples(x: np.ndarray, y: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The pool ``(x [N, ...], y [N])`` (``y = -1``: unlabelled) as M2's paired training examples.

    Row ``i`` pairs unlabelled image ``i mod N_u`` with labelled example ``order[i mod N_l]``,
    ``order`` a permutation of the labelled ones seeded by ``seed``, for ``max(N_u, N_l)`` rows:
    the labelled set is cycled, every labelled example appears ``floor`` or ``ceil`` of
    ``max(N_u, N_l) / N_l`` times. The epoch loop's shuffle (``fold_in(key, epoch)``) then pairs
    them anew each epoch, so the pairing depends only on ``seed``, the run's key and the epoch.

    Returns:
      ``(pairs [max(N_u, N_l), 2, ...], labels [max(N_u, N_l)] int32)``: ``pairs[:, 0]`` unlabelled,
      ``pairs[:, 1]`` labelled with label ``labels``.

    Raises:
      ValueError: ``x`` and ``y`` of different lengths, or no labelled or no unlabelled example
        (the labels' range is checked by the objective).
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length; got {len(x)} and {len(y)}.")
    labelled, unlabelled = np.flatnonzero(y >= 0), np.flatnonzero(y == UNLABELLED)
    if not (len(labelled) and len(unlabelled)):
        raise ValueError(f"M2 needs labelled and unlabelled examples (y = -1); got {len(labelled)} labelled and "
                         f"{len(unlabelled)} unlabelled.")
    rows = np.arange(max(len(labelled), len(unlabelled)))
    chosen = labelled[np.random.default_rng(seed).permutation(len(labelled))[rows % len(labelled)]]
    pairs = np.stack([x[unlabelled[rows % len(unlabelled)]], x[chosen]], axis=1)
    return pairs, y[chosen].astype(np.int32)


def labelled_bound(key: jax.Array, x: jax.Array, y: jax.Array, bind_label: Callable[[Any], Bound], *,
                   num_classes: int, likelihood: str, **elbo_kwargs) -> tuple[jax.Array, dict]:
    """``L(x, y) = ELBO(x | y) + log p(y)`` with the uniform ``p(y) = 1 / num_classes``, nats.

    Args:
      key: PRNG key of the ELBO's draws.
      x: one example.
      y: its int label.
      bind_label: ``y -> (encode, decode, prior)`` (e.g. ``partial(model.bind, params)``).
      num_classes: K.
      likelihood: observation model name.
      **elbo_kwargs: forwarded to :func:`vae_jax.objectives.elbo` (num_samples, kl, beta).

    Returns:
      ``(value, aux)`` as :func:`vae_jax.objectives.elbo` (aux without the log p(y) term).
    """
    encode, decode, prior = bind_label(y)
    value, aux = objectives.elbo(key, x, encode, decode, likelihood=likelihood, prior=prior, **elbo_kwargs)
    return value - math.log(num_classes), aux


def class_bounds(key: jax.Array, x: jax.Array, bind_label: Callable[[Any], Bound], *, num_classes: int,
                 likelihood: str, **elbo_kwargs) -> jax.Array:
    """``[K]`` labelled bounds ``L(x, c)`` of every class, class ``c`` with key ``fold_in(key, c)``."""
    def one(c):
        return labelled_bound(jax.random.fold_in(key, c), x, c, bind_label, num_classes=num_classes,
                              likelihood=likelihood, **elbo_kwargs)[0]

    return jax.vmap(one)(jnp.arange(num_classes))


def unlabelled_bound(bounds: jax.Array, logits: jax.Array) -> jax.Array:
    """``U(x) = sum_c q(c|x) L(x, c) + H(q(y|x))`` from ``bounds [K]`` (:func:`class_bounds`) and
    the classifier's ``logits [K]``, nats."""
    log_q = jax.nn.log_softmax(logits)
    q = jnp.exp(log_q)
    return jnp.sum(q * bounds) - jnp.sum(q * log_q)


@dataclasses.dataclass(frozen=True)
class M2:
    """The M2 model: ``params = {"encoder", "decoder", "classifier"}`` (the first two are the
    :class:`~vae_jax.conditional.ConditionalVAE`'s, with integer labels).

    Attributes:
      cvae: q(z | x, y) and p(x | y, z), ``num_classes`` set, no learned prior.
      classifier: Flax module ``x -> logits [K]`` of q(y | x).
    """

    cvae: ConditionalVAE
    classifier: nn.Module

    def __post_init__(self):
        if self.cvae.num_classes is None or self.cvae.prior_net is not None:
            raise ValueError("M2 needs a ConditionalVAE with num_classes and the N(0, I) prior.")

    @property
    def num_classes(self) -> int:
        return self.cvae.num_classes

    @property
    def likelihood(self) -> str:
        return self.cvae.likelihood

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.cvae.input_shape

    def init(self, key: jax.Array, x: jax.Array) -> Params:
        """Parameters for one image ``x``."""
        k_vae, k_cls = jax.random.split(key)
        return {**self.cvae.init(k_vae, x), "classifier": self.classifier.init(k_cls, x)["params"]}

    def classify(self, params: Params, x: jax.Array) -> jax.Array:
        """Logits ``[K]`` of q(y | x)."""
        return self.classifier.apply({"params": params["classifier"]}, x)

    def bounds(self, params: Params, key: jax.Array, x: jax.Array, **elbo_kwargs) -> jax.Array:
        """:func:`class_bounds` of ``x``: ``[K]``."""
        return class_bounds(key, x, lambda y: self.cvae.bind(params, y), num_classes=self.num_classes,
                            likelihood=self.likelihood, **elbo_kwargs)

    def objective(self, params: Params, key: jax.Array, example: Any, *, alpha: float | jax.Array,
                  labelled_share: float | jax.Array, **elbo_kwargs) -> tuple[jax.Array, dict]:
        """The training objective of one pair ``example = (x [2, ...], y)`` (:func:`paired_examples`), to maximise.

        ``s (L(x_l, y) + alpha log q(y|x_l)) + (1 - s) U(x_u)`` with ``x_u = x[0]`` unlabelled,
        ``x_l = x[1]`` labelled ``y``, ``s = labelled_share``; averaged over a batch of pairs it is
        ``s`` times the labelled batch mean plus ``1 - s`` times the unlabelled one (the module's
        weighting: :func:`paper_alpha`, :func:`paper_share`). ``U`` takes the key's first split
        (its class ``c`` ``fold_in(., c)``), ``L`` the second.

        Returns:
          ``(value, aux)``: ``labelled_bound`` (L, nats), ``unlabelled_bound`` (U, nats),
          ``classifier_log_prob`` (log q(y|x_l)), ``correct`` (argmax q(.|x_l) == y).

        Raises:
          ValueError: not a pair, ``x`` not ``[2, *input_shape]``, or a label outside ``[0, K)``.
        """
        x, y = split_example(example, "M2")
        if tuple(jnp.shape(x)) != (2, *self.input_shape):
            raise ValueError(f"M2 trains on pairs (x [2, ...], y): an unlabelled and a labelled image of shape "
                             f"{tuple(self.input_shape)} (vae_jax.semi_supervised.paired_examples); got x of shape "
                             f"{tuple(jnp.shape(x))}.")
        check_labels(y, self.num_classes)
        key_u, key_l = jax.random.split(key)
        bound_l, _ = labelled_bound(key_l, x[1], y, lambda c: self.cvae.bind(params, c), num_classes=self.num_classes,
                                    likelihood=self.likelihood, **elbo_kwargs)
        log_q = jax.nn.log_softmax(self.classify(params, x[1]))
        bound_u = unlabelled_bound(self.bounds(params, key_u, x[0], **elbo_kwargs), self.classify(params, x[0]))
        value = labelled_share * (bound_l + alpha * log_q[y]) + (1 - labelled_share) * bound_u
        return value, {"labelled_bound": bound_l, "unlabelled_bound": bound_u, "classifier_log_prob": log_q[y],
                       "correct": (jnp.argmax(log_q) == y).astype(jnp.float32)}

    def evaluation(self, params: Params, key: jax.Array, example: Any, **elbo_kwargs) -> tuple[jax.Array, dict]:
        """Held-out numbers of a labelled ``example = (x, y)``, the label hidden from the bound.

        Returns:
          ``(U(x), aux)``: ``bound`` (``U(x)``, the label summed out, nats), ``error`` (1 if the
          classifier's most probable class is not ``y``, else 0) and ``classifier_log_prob``
          (``log q(y | x)``).
        """
        x, y = split_example(example, "M2")
        check_labels(y, self.num_classes)
        logits = self.classify(params, x)
        bound = unlabelled_bound(self.bounds(params, key, x, **elbo_kwargs), logits)
        return bound, {"bound": bound, "error": (jnp.argmax(logits) != y).astype(jnp.float32),
                       "classifier_log_prob": jax.nn.log_softmax(logits)[y]}


def m2(input_shape: Sequence[int], *, num_classes: int = 10, latent_dim: int = 32,
       hidden_sizes: Sequence[int] = (256,), classifier_sizes: Sequence[int] = (256,),
       likelihood: str = "bernoulli", activation: str = "relu") -> M2:
    """An MLP :class:`M2`: :func:`vae_jax.conditional.conditional_vae` and an MLP classifier."""
    cvae = conditional_vae(input_shape, latent_dim=latent_dim, num_classes=num_classes,
                           hidden_sizes=hidden_sizes, likelihood=likelihood, activation=activation)
    return M2(cvae, networks.MLPEncoder(num_classes, tuple(classifier_sizes), activation, stochastic=False))
