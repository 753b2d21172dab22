"""The core imports JAX alone; the package's heavier names load on first use (PEP 562)."""

import json
import subprocess
import sys

import pytest

HEAVY = ("flax", "optax", "orbax", "tqdm", "matplotlib", "sklearn", "tensorflow")


def _loaded_after(statement: str) -> list[str]:
    """Heavy top-level packages in ``sys.modules`` after running ``statement`` in a fresh interpreter."""
    code = (f"import sys, json\n{statement}\n"
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement", [
    "import vae_jax.objectives, vae_jax.distributions, vae_jax.estimators, vae_jax.linear_gaussian, vae_jax.priors",
    "import vae_jax.discrete, vae_jax.discrete_estimators, vae_jax.enumeration, vae_jax.tc",
    "import vae_jax",
    "from vae_jax import elbo, iwae_bound, log_marginal, make_estimator, LinearGaussian",
])
def test_core_imports_jax_only(statement):
    assert _loaded_after(statement) == []


def test_lazy_names_load_their_modules_on_use():
    assert "flax" in _loaded_after("from vae_jax import build_model")
    assert "optax" in _loaded_after("import vae_jax as vj; vj.fit")
    with pytest.raises(subprocess.CalledProcessError):
        _loaded_after("import vae_jax; vae_jax.no_such_name")


def test_every_public_name_resolves():
    import vae_jax

    missing = [name for name in vae_jax.__all__ if getattr(vae_jax, name, None) is None]
    assert missing == []
