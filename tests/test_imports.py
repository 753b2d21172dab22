"""The core imports JAX alone; the package's heavier names load on first use (PEP 562); the config is a
leaf; the estimator registry is the one list of estimator names."""

import ast
import json
import pathlib
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
    "import vae_jax.discrete, vae_jax.enumeration, vae_jax.tc, vae_jax.mlp, vae_jax.schedules",
    "import vae_jax.estimators.registry, vae_jax.estimators.relaxed, vae_jax.config",
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


def test_config_imports_no_other_vae_jax_module():
    """``config.py`` runs with every other ``vae_jax`` module unimportable (a fresh interpreter)."""
    code = f"""
import importlib.util, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'vae_jax':
            raise ImportError('config imported ' + name)
sys.meta_path.insert(0, Refuse())
spec = importlib.util.spec_from_file_location('config_alone', {str(PACKAGE / 'config.py')!r})
config = sys.modules['config_alone'] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(config)
run = config.RunConfig(config.ModelConfig(), config.TrainConfig(estimator_options='num_pairs=2'))
print(run.train.binarization, sorted(m for m in sys.modules if m.startswith('vae_jax')))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dynamic", "[]"]


PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "vae_jax"


def _string_literals(path: pathlib.Path) -> set[str]:
    """Every string constant of a module except docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings}


def test_estimator_names_are_listed_in_the_registry_only():
    from vae_jax.estimators import registry

    # "iwae" is also the name of the bound it estimates (registry.BOUNDS), which aux dicts and
    # objectives name; every other estimator name may appear as a string in the registry alone.
    names = set(registry.ESTIMATORS) - set(registry.BOUNDS)
    assert len(names) == len(registry.ESTIMATORS) - 1
    registry_file = pathlib.Path(registry.__file__).resolve()
    found = {str(path.relative_to(PACKAGE)): sorted(names & _string_literals(path))
             for path in PACKAGE.rglob("*.py") if path.resolve() != registry_file}
    assert {k: v for k, v in found.items() if v} == {}
    assert names <= _string_literals(registry_file)
