"""The (mean, log_std) path of objectives against the module before posterior objects (354c76b), bit for bit.

    PYTHONPATH=$PWD python docs/results/hierarchical_flows/bitwise_check.py > docs/results/hierarchical_flows/bitwise_check.txt
"""
import importlib.util, subprocess, tempfile, jax
import numpy as np
from vae_jax import objectives as new
old_path = tempfile.mktemp(suffix="_objectives_old.py")
with open(old_path, "w") as f:
    f.write(subprocess.run(["git", "show", "354c76b:vae_jax/objectives.py"], capture_output=True, text=True, check=True).stdout)
spec = importlib.util.spec_from_file_location("objectives_old", old_path)
old = importlib.util.module_from_spec(spec); spec.loader.exec_module(old)
from vae_jax import build_model, ModelConfig
from sklearn.datasets import load_digits
x = (load_digits().images[:64, ..., None] / 16 > 0.5).astype("float32")
res = {}
for prior in ("standard_normal", "mixture", "vamp"):
    for arch in ("mlp", "gated_mlp"):
        m = build_model(ModelConfig(latent_dim=4, hidden_sizes=(16,), prior=prior, num_components=3, architecture=arch), x.shape[1:])
        p = m.init(jax.random.key(0), x[0])
        e, d, pr = m.bind(p)
        keys = jax.random.split(jax.random.key(1), x.shape[0])
        def run(mod, jit):
            f1 = lambda k, xx: mod.elbo(k, xx, e, d, prior=pr, num_samples=3)
            f2 = lambda k, xx: mod.elbo(k, xx, e, d, prior=pr, kl="monte_carlo")
            f3 = lambda k, xx: mod.iwae_bound(k, xx, e, d, prior=pr, num_samples=5)
            f4 = lambda k, xx: mod.log_marginal(k, xx, e, d, prior=pr, num_samples=50, chunk_size=20)
            g = jax.grad(lambda pp, k, xx: mod.elbo(k, xx, *m.bind(pp)[:2], prior=m.bind(pp)[2])[0])
            outs = []
            for f in (f1, f2, f3, f4):
                v = jax.vmap(f)(keys, x) if not jit else jax.jit(jax.vmap(f))(keys, x)
                outs.append(jax.tree.leaves(v))
            outs.append(jax.tree.leaves(jax.jit(g)(p, keys[0], x[0])))
            return [np.asarray(a) for o in outs for a in o]
        for jit in (False, True):
            a, b = run(old, jit), run(new, jit)
            same = all(np.array_equal(u, v) for u, v in zip(a, b))
            res[(prior, arch, jit)] = (same, len(a))
for k, v in res.items(): print(k, v)
print("ALL BITWISE EQUAL:", all(v[0] for v in res.values()))
