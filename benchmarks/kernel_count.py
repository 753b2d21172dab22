"""What XLA:CPU runs per training step: the kernels of vae_jax's compiled epoch against the hand-written one.

    python -m benchmarks.kernel_count --out benchmarks/results/kernel_count.json

Compiles :func:`vae_jax.train_epoch` (the library's step, as timed by ``benchmarks.run``)
and :func:`benchmarks.jax_vae.handwritten_runner`'s epoch for the same MLP and batch, and
counts in each compiled program: the matmul fusions (``kind=kCustom``), the element-wise
loop fusions (``kind=kLoop``), the ``dot`` instructions and the ``xor`` instructions
(threefry, JAX's random-number generator, is mostly xor, shifts and adds). No timing:
on XLA:CPU each kernel is one launch of the runtime, so the per-step overhead of a
program grows with its kernel count while its arithmetic stays the matmuls'.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import vae_jax as vj
from benchmarks import jax_vae


def counts(hlo_text: str) -> dict[str, int]:
    """Matmul fusions, loop fusions, dots and xors in a compiled program's HLO text."""
    return {"matmul_fusions": len(re.findall(r"kind=kCustom", hlo_text)),
            "loop_fusions": len(re.findall(r"kind=kLoop", hlo_text)),
            "dots": len(re.findall(r"= \S+ dot\(", hlo_text)),
            "xors": len(re.findall(r"= \S+ xor\(", hlo_text))}


def compiled_texts(*, hidden_sizes: tuple[int, ...], latent_dim: int, batch_size: int, examples: int = 1000
                   ) -> dict[str, str]:
    """The compiled HLO text of both epochs on ``examples`` binary 28x28 images."""
    x = (np.random.default_rng(0).random((examples, 28, 28, 1)) < 0.3).astype(np.float32)
    model = jax_vae.build(x.shape[1:], hidden_sizes=hidden_sizes, latent_dim=latent_dim)
    step = vj.make_train_step(model.objective)
    state = vj.create_train_state(model, jax.random.key(0), x[0], optax.adam(1e-3))
    library = vj.train_epoch.lower(step, state, jnp.asarray(x), jax.random.key(1), batch_size=batch_size).compile()
    hand = jax_vae.handwritten_runner(x, hidden_sizes=hidden_sizes, latent_dim=latent_dim, batch_size=batch_size,
                                      seed=0)
    hand.warm_up()
    return {"vae_jax epoch scan": library.as_text(), "hand-written jax step": hand.compiled().as_text()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="results JSON")
    p.add_argument("--quick", action="store_true", help="a tiny MLP (what the tests run)")
    args = p.parse_args(argv)
    models = ([((16, 16), 4, 10)] if args.quick else [((300, 300), 40, 100), ((512, 512), 32, 128)])
    result = {"command": " ".join(["python -m benchmarks.kernel_count", *(argv if argv is not None else sys.argv[1:])]),
              "jax": jax.__version__, "backend": jax.default_backend(), "models": []}
    for hidden_sizes, latent_dim, batch_size in models:
        texts = compiled_texts(hidden_sizes=hidden_sizes, latent_dim=latent_dim, batch_size=batch_size)
        result["models"].append({"model": f"784-{'-'.join(map(str, hidden_sizes))}-{latent_dim}",
                                 "batch_size": batch_size, **{name: counts(t) for name, t in texts.items()}})
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
