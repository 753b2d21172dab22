"""The public API against the README's module table, and the README's and docs' Python examples, run as written."""

import importlib
import re
import types
from pathlib import Path

import pytest

import vae_jax

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Pages whose Python examples are run as written (the study pages of other engineers carry their own tests).
EXAMPLE_PAGES = [README] + [ROOT / "docs" / f"{name}.md" for name in (
    "data", "marginal_likelihood", "gradient_estimators", "benchmarks")]


def _layout_section() -> str:
    return README.read_text().split("## Library layout", 1)[1].split("\n## ", 1)[0]


def _module_table() -> dict[str, str]:
    """``{module name: its row's description}`` from the README's "Library layout" table."""
    section = _layout_section()
    rows = re.findall(r"^\| `vae_jax\.(\w+)` \| (.*) \|$", section, flags=re.M)
    assert rows, "the README's Library layout table has no `vae_jax.NAME` rows"
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), f"modules listed twice: {sorted({n for n in names if names.count(n) > 1})}"
    return dict(rows)


def _public_module_files() -> set[str]:
    package = Path(vae_jax.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} | {p.parent.name for p in package.glob("*/__init__.py")}
    return {name for name in modules if not name.startswith("_")}


def test_module_table_lists_every_module_of_the_package():
    table = set(_module_table())
    files = _public_module_files()
    assert not files - table, f"modules missing from the README's table: {sorted(files - table)}"
    assert not table - files, f"README's table lists modules that do not exist: {sorted(table - files)}"


def test_all_matches_the_module_table():
    """Every module in ``__all__`` has a row; every other name of ``__all__`` is named in the
    row of a module that defines it; and every name exists."""
    table = _module_table()
    for name in vae_jax.__all__:
        value = getattr(vae_jax, name)
        assert value is not None, name
        if isinstance(value, types.ModuleType):
            assert name in table, f"vae_jax.{name} is in __all__ but not in the README's module table"
            continue
        home = getattr(value, "__module__", "") or ""
        if home.startswith("vae_jax._"):  # a private module's helper: named in the section's text
            assert f"`{name}`" in _layout_section() or f"`vj.{name}`" in _layout_section(), (
                f"vae_jax.{name} (in __all__, from {home}) is not named in the README's Library layout section")
            continue
        rows = [m for m, text in table.items() if f"`{name}`" in text
                and getattr(importlib.import_module(f"vae_jax.{m}"), name, None) is value]
        assert rows, (f"vae_jax.{name} (in __all__) is not named in the README's table row of the module "
                      "that defines it")


def test_every_module_in_the_table_imports():
    for name in _module_table():
        assert importlib.import_module(f"vae_jax.{name}").__name__ == f"vae_jax.{name}"


def test_core_modules_import_jax_only():
    """The maths modules must stay usable without Flax, Optax or any framework: they import
    the standard library, ``jax`` and ``vae_jax`` only (a fresh-subprocess test checks the
    modules actually loaded)."""
    import ast
    import sys
    allowed = set(sys.stdlib_module_names) | {"jax", "vae_jax"}
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


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


DOC_PAGES = [README] + [ROOT / "docs" / f"{name}.md" for name in (
    "cli", "data", "ae_vs_vae", "beta_vae", "likelihoods", "gradient_estimators", "marginal_likelihood", "benchmarks",
    "model_families", "conditional", "semi_supervised", "vq_vae")]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: p.name)
def test_links_and_figures_resolve(page):
    """Every relative link and image of the README and the study pages names an existing file."""
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=lambda p: p.name)
def test_python_examples_run(page):
    blocks = _python_blocks(page)
    assert blocks, f"{page.name} has no python example"
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "readme"})
