"""The stored parts of a study: its JSON values, the finished pieces of a long study (:class:`Parts`), ``.npz`` bytes.

Re-exported by :mod:`experiments._common` (the studies write ``_common.NAME``).
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from vae_jax.runs import write_bytes, write_json


class StudyError(RuntimeError):
    """A stored part of a study that cannot be used (damaged, truncated): exit status 1."""


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.generic, jax.Array)) or hasattr(obj, "item"):
        arr = np.asarray(obj)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    return obj


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz`` file."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def read_npz(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of the bytes of an ``.npz`` file."""
    with np.load(io.BytesIO(data)) as arrays:
        return dict(arrays)


def check_resume(out: Path, *, resume: bool) -> None:
    """Refuses ``--resume`` when ``out`` holds no earlier run (as ``vae-jax train --resume`` does).

    Raises:
      ValueError: ``resume`` and ``out`` is not a folder.
    """
    if resume and not out.is_dir():
        raise ValueError(f"--resume continues an earlier run in --out, but there is no folder {str(out)!r}; "
                         f"check the path, or start without --resume.")


class Parts:
    """The finished pieces of a long study, one file each in ``folder``, for ``--resume``.

    A run that is stopped (a session's end, a crash) keeps every piece it
    finished; the same command loads them instead of recomputing and computes
    the rest. Each JSON piece records the ``options`` it was made with: loading
    it under other options is an error naming the changed ones, never a silent
    mix of two runs. Without ``resume``, a folder that already holds pieces is an
    error too (nothing is overwritten). Every file is written atomically; one that
    cannot be read (truncated, edited) is a :class:`StudyError` naming it.

    Args:
      folder: where the pieces live (created on the first ``save``).
      resume: whether pieces already in ``folder`` may be used.

    Raises:
      ValueError: ``folder`` holds pieces and ``resume`` is False.
    """

    def __init__(self, folder: Path, *, resume: bool):
        self.folder = Path(folder)
        held = sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []
        if held and not resume:
            raise ValueError(f"{self.folder} holds {len(held)} finished pieces of an earlier run; pass --resume "
                             f"to keep them, or choose another --out.")

    def load(self, name: str, options: dict[str, Any]) -> Any | None:
        """The value saved under ``name`` with the same ``options``, or None when there is none.

        Raises:
          ValueError: the piece was made with other options.
          StudyError: the piece cannot be read.
        """
        path = self.folder / f"{name}.json"
        saved = self.read_file(f"{name}.json", lambda data: _piece(json.loads(data)))
        if saved is None:
            return None
        options, made = (_without_neutral_scale(json.loads(json.dumps(_jsonable(o))))
                         for o in (options, saved["config"]))
        if made != options:
            diff = sorted(k for k in set(made) | set(options) if made.get(k) != options.get(k))
            raise ValueError(f"{path} was made with other options ({', '.join(diff)}); run with the options it "
                             f"was made with, or choose another --out (or delete it to recompute it).")
        return saved["value"]

    def save(self, name: str, options: dict[str, Any], value: Any) -> None:
        """Saves ``value`` (JSON-able) under ``name`` with the ``options`` it was made with."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / f"{name}.json", {"config": _jsonable(options), "value": _jsonable(value)})

    def read_file(self, filename: str, decode: Callable[[bytes], Any]) -> Any | None:
        """``decode(bytes)`` of ``folder / filename``, or None when it does not exist.

        Raises:
          StudyError: the file cannot be read or ``decode`` fails on it.
        """
        path = self.folder / filename
        if not path.exists():
            return None
        try:
            return decode(path.read_bytes())
        except Exception as e:  # any decoder's error: the file is what is wrong
            raise StudyError(f"{path} is damaged ({type(e).__name__}: {e}); delete it to recompute that part, "
                             f"or choose another --out.") from e

    def write_file(self, filename: str, data: bytes) -> None:
        """Writes ``data`` to ``folder / filename`` atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes(self.folder / filename, data)


def _without_neutral_scale(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` less what changes no stored number: ``track``, and ``devices`` when ``"one"`` (the pieces
    of the family studies made before they honoured the two options hold both; the others' hold neither)."""
    return {k: v for k, v in options.items() if k != "track" and not (k == "devices" and v == "one")}


def _piece(saved: Any) -> dict[str, Any]:
    if not isinstance(saved, dict) or set(saved) != {"config", "value"} or not isinstance(saved["config"], dict):
        raise ValueError("expected {\"config\": {...}, \"value\": ...}")
    return saved


def computed_piece(parts: Parts, name: str, options: dict[str, Any],
                   compute: Callable[[], tuple[Any, dict[str, np.ndarray]]]) -> tuple[Any, dict[str, np.ndarray]]:
    """A piece of a study with its arrays: loaded from ``parts`` (``NAME.json`` and ``NAME.npz``) when it was
    made with ``options``, else ``compute()`` and saved (the arrays first, so a piece found is complete).

    Args:
      parts: the study's pieces.
      name: the piece's name.
      options: what it depends on (a piece of other options is refused: :meth:`Parts.load`).
      compute: ``() -> (JSON-able value, {name: array})``.

    Returns:
      ``(value, arrays)``.
    """
    value = parts.load(name, options)
    arrays = parts.read_file(f"{name}.npz", read_npz) if value is not None else None
    if value is not None and arrays is not None:
        print(f"{name}: loaded from {parts.folder}", flush=True)
        return value, arrays
    value, arrays = compute()
    value = json.loads(json.dumps(_jsonable(value)))  # as a resumed run reads it
    parts.write_file(f"{name}.npz", npz_bytes(arrays))
    parts.save(name, options, value)
    return value, arrays
