"""Import smoke test and the README's Python examples, run as written."""

import re
from pathlib import Path

import vae_jax

README = Path(__file__).resolve().parents[1] / "README.md"


def test_public_api_is_importable():
    for name in vae_jax.__all__:
        assert getattr(vae_jax, name) is not None, name


def test_core_modules_import_jax_only():
    """The maths modules must stay usable without Flax, Optax or any framework."""
    import ast
    allowed = {"__future__", "math", "typing", "jax", "vae_jax"}
    package = Path(vae_jax.__file__).parent
    for name in ("distributions", "objectives", "linear_gaussian"):
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{name}.py imports {roots - allowed}"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run():
    blocks = _python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
