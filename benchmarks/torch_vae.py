"""The benchmark's VAE written the way a PyTorch user would: the baseline.

Same model as ``vae_jax.build_model(ModelConfig(hidden_sizes=(512, 512),
latent_dim=32))``: an MLP encoder ``784 -> 512 -> 512 -> 2 * 32`` (mean,
log_std), one reparameterised draw, an MLP decoder ``32 -> 512 -> 512 -> 784``
giving Bernoulli logits, the closed-form KL, and Adam on the negative mean ELBO.
One epoch shuffles the data with ``torch.randperm`` and indexes batches from a
tensor in memory (no DataLoader, which would only add overhead).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.timing import Runner


class TorchVAE(nn.Module):
    """MLP VAE on flattened images ``[B, D]`` with a Bernoulli likelihood.

    Args:
      input_dim: pixels per image ``D`` (784 for 28x28x1).
      hidden_sizes: encoder widths; the decoder uses them reversed.
      latent_dim: size ``d`` of z.
    """

    def __init__(self, input_dim: int = 784, hidden_sizes: Sequence[int] = (512, 512), latent_dim: int = 32):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = _mlp([input_dim, *hidden_sizes, 2 * latent_dim])
        self.decoder = _mlp([latent_dim, *hidden_sizes[::-1], input_dim])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, D] -> (mean [B, d], log_std [B, d])``."""
        out = self.encoder(x)
        return out[:, : self.latent_dim], out[:, self.latent_dim:]

    def per_example_elbo(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """ELBO of each example (nats) with the standard-normal draws ``eps [B, d]`` given.

        ``sum_j x_j * logit_j - softplus(logit_j) - KL(q(z|x) || N(0, I))``, the
        formula of :func:`vae_jax.distributions.bernoulli_log_prob` and
        :func:`vae_jax.distributions.kl_to_standard_normal`.

        Returns:
          ``[B]`` ELBO values.
        """
        mean, log_std = self.encode(x)
        logits = self.decoder(mean + torch.exp(log_std) * eps)
        reconstruction = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = -0.5 * (1.0 + 2.0 * log_std - mean.square() - torch.exp(2.0 * log_std)).sum(-1)
        return reconstruction - kl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Negative mean ELBO of ``x [B, D]`` with fresh draws: the training loss."""
        eps = torch.randn(x.shape[0], self.latent_dim, dtype=x.dtype, device=x.device)
        return -self.per_example_elbo(x, eps).mean()


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def make_train_step(model: TorchVAE, *, compile: bool | str, learning_rate: float = 1e-3, autocast: bool = False
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``step(batch [B, D]) -> loss`` doing one Adam update in place.

    Args:
      model: the VAE to train (updated in place).
      compile: False for eager mode; True (or a backend name, e.g. "aot_eager")
        compiles the loss with its backward (``torch.compile``; True: Inductor,
        its C++ backend on CPU) and the optimizer step, as PyTorch's tutorials recommend.
      learning_rate: Adam's step size.
      autocast: run the forward pass (and so its backward) under
        ``torch.autocast(device, dtype=torch.bfloat16)``: what a PyTorch user turns on for
        speed. Linear layers then multiply in bf16; parameters, Adam and the loss stay float32.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    backend = compile if isinstance(compile, str) else "inductor"
    loss_fn = torch.compile(model, backend=backend) if compile else model
    update = torch.compile(optimizer.step, backend=backend) if compile else optimizer.step

    def step(batch: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(batch)
        loss.backward()
        update()
        return loss.detach()

    return step


def train_epoch(step: Callable[[torch.Tensor], torch.Tensor], data: torch.Tensor, *, batch_size: int,
                generator: torch.Generator, max_batches: int | None = None) -> float:
    """One epoch over shuffled batches of ``data [N, D]``; drops the last partial batch.

    ``max_batches``: stop after this many batches (a shortened epoch, for quick checks).

    Returns:
      The mean training loss of the epoch (nats per example).
    """
    num_batches = min(data.shape[0] // batch_size, max_batches or data.shape[0])
    order = torch.randperm(data.shape[0], generator=generator, device=data.device)[: num_batches * batch_size]
    total = torch.zeros((), device=data.device)
    for indices in order.view(num_batches, batch_size):
        total += step(data[indices])
    return float(total) / num_batches


def runner(data: np.ndarray, *, batch_size: int, seed: int, compile: bool | str, hidden_sizes: Sequence[int],
           latent_dim: int, device: str = "cpu", warm_up_steps: int = 3, autocast: bool = False,
           max_batches: int | None = None) -> Runner:
    """A :class:`benchmarks.timing.Runner` training :class:`TorchVAE` on ``data [N, H, W, C]``.

    ``warm_up()`` takes ``warm_up_steps`` steps (with ``compile=True`` these
    trigger the compilation); ``run()`` trains one epoch on ``device``, in bf16 autocast
    if ``autocast``, or its first ``max_batches`` batches (the runner's ``examples`` says how many).
    """
    torch.manual_seed(seed)
    flat = torch.from_numpy(np.ascontiguousarray(data.reshape(data.shape[0], -1))).to(device)
    model = TorchVAE(flat.shape[1], hidden_sizes, latent_dim).to(device)
    step = make_train_step(model, compile=compile, autocast=autocast)
    generator = torch.Generator(device).manual_seed(seed)

    def warm_up():
        for _ in range(warm_up_steps):
            step(flat[:batch_size])

    examples = None if max_batches is None else min(max_batches, flat.shape[0] // batch_size) * batch_size
    return Runner(warm_up, lambda: train_epoch(step, flat, batch_size=batch_size, generator=generator,
                                               max_batches=max_batches), examples=examples)
