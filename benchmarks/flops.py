"""Floating-point operations of the MLP VAE, counted from its layer widths.

Only the matrix multiplies are counted (``2 * fan_in * fan_out`` per dense
layer and example: a multiply and an add); they are over 99% of the work (XLA's
own cost analysis of the train step agrees to within 1%, see
``tests/test_benchmarks.py``). Element-wise work (activations, the
log-likelihood, Adam) is left out, so an achieved rate is a lower bound of
what the hardware did.
"""

from __future__ import annotations

from typing import Sequence


def dense_widths(input_dim: int, hidden_sizes: Sequence[int], latent_dim: int
                 ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(fan_in, fan_out)`` of each dense layer of the encoder and of the decoder.

    The encoder maps ``input_dim -> hidden_sizes -> 2 * latent_dim`` (mean and
    log_std); the decoder maps ``latent_dim -> reversed(hidden_sizes) -> input_dim``.
    """
    encoder = [input_dim, *hidden_sizes, 2 * latent_dim]
    decoder = [latent_dim, *hidden_sizes[::-1], input_dim]
    return list(zip(encoder[:-1], encoder[1:])), list(zip(decoder[:-1], decoder[1:]))


def _forward(layers: list[tuple[int, int]]) -> int:
    return sum(2 * fan_in * fan_out for fan_in, fan_out in layers)


def forward_flops(input_dim: int, hidden_sizes: Sequence[int], latent_dim: int) -> int:
    """FLOPs of encoding and decoding one example with one draw of z."""
    encoder, decoder = dense_widths(input_dim, hidden_sizes, latent_dim)
    return _forward(encoder) + _forward(decoder)


def decoder_flops(input_dim: int, hidden_sizes: Sequence[int], latent_dim: int) -> int:
    """FLOPs of decoding one ``z``: the cost of one importance sample of ``log p(x)``."""
    return _forward(dense_widths(input_dim, hidden_sizes, latent_dim)[1])


def train_step_flops(input_dim: int, hidden_sizes: Sequence[int], latent_dim: int) -> int:
    """FLOPs of one example's forward and backward pass (one draw of z).

    Backward costs two multiplies per layer (gradients of the weights and of the
    layer's input), except that the first encoder layer needs no input gradient
    (the data is not differentiated): ``3 * forward - 2 * 784 * 512`` here.
    """
    first_in, first_out = dense_widths(input_dim, hidden_sizes, latent_dim)[0][0]
    return 3 * forward_flops(input_dim, hidden_sizes, latent_dim) - 2 * first_in * first_out


def log_marginal_flops(input_dim: int, hidden_sizes: Sequence[int], latent_dim: int, *,
                       num_samples: int) -> int:
    """FLOPs of one example's importance-sampled ``log p(x)``: one encode, ``num_samples`` decodes."""
    encoder = dense_widths(input_dim, hidden_sizes, latent_dim)[0]
    return _forward(encoder) + num_samples * decoder_flops(input_dim, hidden_sizes, latent_dim)
