"""Benchmarks of vae_jax: throughput against PyTorch, sweeps, log p(x), the machine's matmul rate.

Run ``python -m benchmarks.run --help``. Modules: :mod:`benchmarks.run` (the
command), :mod:`benchmarks.jax_vae` and :mod:`benchmarks.torch_vae` (the
implementations), :mod:`benchmarks.flops` (FLOP counts),
:mod:`benchmarks.matmul` (the matmul-rate probe), :mod:`benchmarks.timing`.
"""
