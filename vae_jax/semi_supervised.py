"""Semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling, 2014).

A classifier ``q(y | x)``, ``q(z | x, y)``, ``p(x | y, z)``, ``p(z) = N(0, I)`` and a
uniform ``p(y) = 1 / K``; the label-conditioned parts are a
:class:`vae_jax.conditional.ConditionalVAE`, so every bound below is
:func:`vae_jax.objectives.elbo` of ``bind(params, y)``.

- Labelled: ``L(x, y) = ELBO(x | y) + log p(y) <= log p(x, y)``.
- Unlabelled: ``U(x) = sum_y q(y|x) (L(x, y) - log q(y|x)) = sum_y q(y|x) L(x, y) + H(q(y|x))
  <= log p(x)``, the label summed out EXACTLY over the ``K`` classes (class ``c``'s ELBO uses
  the key ``fold_in(key, c)``).
- Training: ``L(x, y) + alpha * log q(y | x)`` for a labelled example, ``U(x)`` for an
  unlabelled one. **Convention for alpha.** The paper adds ``alpha * E_labelled[-log q(y|x)]``
  to an objective SUMMED over the ``N`` training examples, with ``alpha = 0.1 * N``; per
  labelled example that is the weight ``0.1 * N / N_l`` (``N_l`` labelled examples) on
  ``log q(y | x)``, which is what the ``alpha`` of :meth:`M2.objective` is
  (:func:`paper_alpha`). Reimplementations that average labelled and unlabelled batches
  separately use about the same per-example weight (``0.1 * N_unlabelled / N_l``).

An example is ``(x, y)`` with ``y = -1`` (:data:`UNLABELLED`) for an unlabelled one, so a
mixed batch is one array pair and one per-example objective.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

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

    def objective(self, params: Params, key: jax.Array, example: Any, *, alpha: float | jax.Array = 0.0,
                  **elbo_kwargs) -> tuple[jax.Array, dict]:
        """The training objective of ``example = (x, y)`` (``y = -1``: unlabelled), to maximise.

        ``L(x, y) + alpha * log q(y|x)`` if labelled, else ``U(x)``; both from the same
        :func:`class_bounds` (``K`` ELBOs per example), so ``L(x, y)`` is its entry ``y``.

        Returns:
          ``(value, aux)``: ``bound`` (L or U, nats), ``classifier_log_prob`` (log q(y|x), 0 if
          unlabelled), ``labelled`` (1 or 0), ``correct`` (argmax q == y, 0 if unlabelled).
        """
        x, y = split_example(example, "M2")
        check_labels(y, self.num_classes, allow_unlabelled=True)
        bounds = self.bounds(params, key, x, **elbo_kwargs)
        logits = self.classify(params, x)
        labelled = y >= 0
        label = jnp.maximum(y, 0)
        log_q_y = jax.nn.log_softmax(logits)[label]
        bound = jnp.where(labelled, bounds[label], unlabelled_bound(bounds, logits))
        value = bound + jnp.where(labelled, alpha * log_q_y, 0.0)
        mask = labelled.astype(jnp.float32)
        return value, {"bound": bound, "classifier_log_prob": mask * log_q_y, "labelled": mask,
                       "correct": mask * (jnp.argmax(logits) == label)}

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
