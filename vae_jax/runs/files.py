"""Atomic writers (a temporary file of its own, then a rename) and readers of a run folder's files."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from vae_jax.config import RunConfig


def write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file of its own in the same folder and a rename:
    readers see the old or the new file, never a part, and two writers never share a temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0o600 would hide the run's files from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any, *, allow_nan: bool = True) -> None:
    """Writes ``obj`` as indented JSON atomically (readers see the old or the new file, never a part).

    Raises:
      ValueError: ``allow_nan`` is False and ``obj`` holds NaN or infinity.
    """
    write_bytes(path, (json.dumps(obj, indent=2, allow_nan=allow_nan) + "\n").encode())


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes ``rows`` (dicts; the columns are the first row's keys) as CSV atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["epoch"])
    writer.writeheader()
    writer.writerows(rows)
    write_bytes(path, text.getvalue().encode())


def read_json(path: str | Path, *, what: str) -> Any:
    """Reads JSON, raising ``FileNotFoundError`` / ``ValueError`` that name the file and ``what`` it is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} not found.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON ({e}).") from None


def load_run_config(run: str | Path) -> tuple[RunConfig, tuple[int, ...]]:
    """The :class:`vae_jax.config.RunConfig` and image shape ``(H, W, C)`` saved in ``run/config.json``.

    Raises:
      FileNotFoundError: ``run`` or its ``config.json`` is missing.
      ValueError: ``config.json`` is not valid JSON or not a run config.
    """
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"Run folder {str(run)!r} not found; create one with vae-jax train --out RUN.")
    saved = read_json(run / "config.json", what="Run config")
    try:
        return RunConfig.from_dict(saved), tuple(int(s) for s in saved["input_shape"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"Run config {str(run / 'config.json')!r} is malformed ({e!r}).") from None


def bound_config(config: Mapping[str, Any], free: Iterable[str]) -> dict[str, Any]:
    """``config`` (nested dicts) without the fields named in ``free`` at any level: what a checkpoint binds."""
    free = frozenset(free)
    return {k: bound_config(v, free) if isinstance(v, Mapping) else v for k, v in config.items() if k not in free}


class CSVLog:
    """Hook: rewrites ``path`` from the whole history every epoch (atomically, so it always matches it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> None:
        write_csv(self.path, history)



def previous_seconds(path: Path) -> float:
    """The ``seconds`` recorded in a status file, or 0 when it is missing or damaged (it never stops a resume)."""
    try:
        seconds = read_json(path, what="Run status")["seconds"]
        if isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0:
            return float(seconds)
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        pass
    if path.exists():
        warnings.warn(f"{str(path)!r} is damaged; its time so far is not counted.", RuntimeWarning, stacklevel=2)
    return 0.0
