"""Re-executes notebooks/vae_walkthrough.ipynb from scratch and stores its outputs in place.

    .venv/bin/python scripts/run_notebook.py            # regenerate the stored outputs
    .venv/bin/python scripts/run_notebook.py --check    # execute, write nothing, report problems

The kernel is THIS interpreter (the venv's python): a kernelspec naming
``sys.executable`` is written into a temporary folder put first on
``JUPYTER_PATH``, so no ``python3`` kernel installed elsewhere can be picked up.
The kernel runs in the repository root with the root on ``PYTHONPATH`` (the
notebook imports ``experiments``). The stored notebook keeps its generic
``python3`` kernelspec, no per-cell timing metadata, and outputs only: a
re-run changes the numbers' last digits and the figures' pixels, nothing else.

:func:`execute` is also what ``tests/test_notebook.py`` runs, and
:func:`missing_outputs` is its check of a notebook's outputs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "vae_walkthrough.ipynb"
KERNEL = "vae-jax-notebook"
MAX_BYTES = 2_000_000


def execute(notebook: nbformat.NotebookNode, *, timeout: int = 900) -> nbformat.NotebookNode:
    """A copy of ``notebook`` executed top to bottom on this interpreter; raises on the first failing cell.

    Args:
      notebook: the notebook (its outputs are ignored and replaced).
      timeout: seconds allowed per cell.

    Raises:
      nbclient.exceptions.CellExecutionError: a cell raised (the message names the cell).
    """
    nb = copy.deepcopy(notebook)
    metadata = copy.deepcopy(nb.metadata)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "kernels" / KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "vae_jax (this interpreter)", "language": "python",
            "env": {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}}))
        saved = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [tmp, saved]))
        try:
            NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, record_timing=False,
                           resources={"metadata": {"path": str(ROOT)}}).execute()
        finally:
            if saved is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = saved
    nb.metadata = metadata  # keep the generic kernelspec, not the temporary one
    return nb


def is_figure_cell(cell: nbformat.NotebookNode) -> bool:
    """A code cell that draws a figure: a line of its own (not indented, so not inside a function
    definition) calls ``plt.show()`` or the notebook's ``show_rows``."""
    return cell.cell_type == "code" and any(
        line.startswith(("plt.show()", "show_rows(")) for line in cell.source.splitlines())


def missing_outputs(nb: nbformat.NotebookNode) -> list[str]:
    """What is wrong with ``nb``'s outputs: empty list if every code cell ran and shows its output.

    Every code cell must have been executed and have at least one output, none an
    error; every figure cell (:func:`is_figure_cell`) must hold an ``image/png``.
    """
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        name = f"cell {i} ({cell.source.splitlines()[0][:50]!r})"
        if cell.get("execution_count") is None:
            problems.append(f"{name}: not executed")
        if not cell.get("outputs"):
            problems.append(f"{name}: no output stored")
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            problems.append(f"{name}: stored an error")
        if is_figure_cell(cell) and not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            problems.append(f"{name}: draws a figure but holds no image/png")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notebook", type=Path, default=NOTEBOOK, help=f"notebook to run (default {NOTEBOOK})")
    p.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell (default 900)")
    p.add_argument("--check", action="store_true", help="execute and check, but do not write the notebook")
    args = p.parse_args(argv)
    start = time.perf_counter()
    nb = execute(nbformat.read(args.notebook, as_version=4), timeout=args.timeout)
    seconds = time.perf_counter() - start
    problems = missing_outputs(nb)
    text = nbformat.writes(nb) + "\n"
    print(f"executed {args.notebook} in {seconds:.0f} s; {len(text.encode()):,} bytes with outputs")
    for problem in problems:
        print("problem:", problem, file=sys.stderr)
    if len(text.encode()) > MAX_BYTES:
        problems.append(f"larger than {MAX_BYTES:,} bytes")
        print("problem:", problems[-1], file=sys.stderr)
    if not args.check:  # every cell ran: store the outputs, even if a check above failed (rc says so)
        args.notebook.write_text(text)
        print("wrote", args.notebook)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
