"""What a run folder may hold (:class:`Layout`), its check, and :class:`RunFolder`: the lock and the check, once."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import NamedTuple

from vae_jax import parallel
from vae_jax.runs.lock import LOCK_FILE, RunLock


class Layout(NamedTuple):
    """What a kind of run writes into its folder.

    Attributes:
      marker: the status file it writes first (its presence marks the folder as its own).
      files: every name it writes there.
      config: the file ``resume`` needs besides a checkpoint (``None``: none).
    """

    marker: str
    files: frozenset[str]
    config: str | None = None


CLI_LAYOUT = Layout("run.json", frozenset({
    LOCK_FILE, "run.json", "config.json", "metrics.csv", "checkpoints", "checkpoints.lock", "checkpoints.corrupt",
    "evaluation.json", "samples.png", "reconstructions.png", "prior_samples.png", "learning_curves.png",
    "latent_space.png", "latent_manifold.png", "tensorboard", "train_images.npy"}), "config.json")


def checkpoint_epochs(out: Path) -> list[int]:
    """The epochs of the checkpoints in ``out/checkpoints`` (step folders), ascending."""
    folder = Path(out) / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def check_run_folder(out: Path, *, resume: bool, epochs: int | None = None, layout: Layout = CLI_LAYOUT
                     ) -> list[int]:
    """Whether ``out`` may be trained into; returns the epochs of its checkpoints.

    A fresh run (``resume=False``) needs a missing or empty folder, or one that
    holds only what such a run writes, with its marker (a run stopped before its
    first checkpoint), and no checkpoint. ``resume`` needs a run with a checkpoint
    (and its config file), and ``epochs`` no fewer than the latest checkpoint's.

    Raises:
      ValueError: the folder does not fit (the message says what to do).
    """
    out = Path(out)
    check_run_path(out, resume=resume)
    done = checkpoint_epochs(out)
    if not resume:
        _check_fresh(out, done, layout)
        return done
    if layout.config and not (out / layout.config).is_file():
        if done:
            raise ValueError(f"{str(out)!r} holds checkpoints but no {layout.config} (deleted?); put the run's "
                             f"{layout.config} back (each checkpoint keeps its settings in checkpoints/"
                             f"{done[-1]}/integrity/metadata), or train a new run into another folder.")
        raise ValueError(f"--resume needs a run, and {str(out)!r} holds none (no {layout.config}); "
                         "check the path, or start the run without --resume.")
    if not done:
        raise ValueError(f"--resume needs a checkpoint, and {str(out)!r} holds none (its first epoch never "
                         "finished); start it again without --resume.")
    check_epochs(out, done, epochs)
    return done


def check_epochs(out: Path, done: list[int], epochs: int | None) -> None:
    """Raises ValueError when ``epochs`` is below the latest of the checkpoint epochs ``done`` of ``out``."""
    if done and epochs is not None and epochs < done[-1]:
        raise ValueError(f"--epochs {epochs} is below the {done[-1]} epochs {str(out)!r} has completed; "
                         f"give --epochs {done[-1]} or more.")


def check_run_path(out: Path, *, resume: bool) -> None:
    """The part of :func:`check_run_folder` that needs no lock: ``out`` is a folder (or, fresh, can become one).

    Raises:
      ValueError: ``out`` is a file, or ``resume`` and there is no folder ``out``.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"Run folder {str(out)!r} is a file or lies under one; give the run's folder.")
    if resume and not out.is_dir():
        raise ValueError(f"--resume needs a run, and there is no folder {str(out)!r}; check the path, "
                         "or start the run without --resume.")


def _check_fresh(out: Path, done: list[int], layout: Layout) -> None:
    if done:
        raise ValueError(f"{str(out)!r} already holds a run; add --resume to continue it, or choose another --out.")
    held = {p.name for p in out.iterdir()} - {LOCK_FILE} if out.is_dir() else set()
    foreign = sorted(held - layout.files)
    if foreign or (held and layout.marker not in held):
        named = ", ".join(foreign or sorted(held))
        raise ValueError(f"{str(out)!r} holds files that no run wrote ({named}); nothing was overwritten: "
                         "choose a new or empty folder for --out.")


class RunFolder:
    """A run folder locked (:class:`RunLock`) and checked (:func:`check_run_folder`) once, for a ``with`` block.

    A fresh run creates the folder; if the block leaves it empty (it failed before
    writing anything), the folder is removed again. In a job of several processes
    (``jax.distributed``) every process checks the folder, process 0 alone locks
    and writes it, and none goes on before all have checked.

    Attributes:
      path: the folder.
      resume: whether the run continues from a checkpoint.
      epochs: the epochs of the checkpoints found (after the lock was taken).
      writer: whether this process writes the folder's files (process 0; the only process of a one-process run).
    """

    def __init__(self, path: str | Path, *, resume: bool, layout: Layout = CLI_LAYOUT):
        self.path, self.resume, self.layout = Path(path), resume, layout
        self.epochs: list[int] = []
        self.writer = True

    def __enter__(self) -> "RunFolder":
        check_run_path(self.path, resume=self.resume)  # what the lock needs; the rest is checked under it
        self.writer = parallel.is_writer()
        self._created = self.writer and not self.path.exists()
        self._lock = RunLock(self.path, create=not self.resume) if self.writer else None
        try:
            if self._lock is not None:
                self._lock.acquire()
            self.epochs = self._check_with_every_process()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _check_with_every_process(self) -> list[int]:
        error = None
        try:
            epochs = check_run_folder(self.path, resume=self.resume, layout=self.layout)
        except ValueError as e:
            error = e
        if not parallel.all_agree(error is None):  # also the barrier: nothing is written before all have checked
            raise error or ValueError(f"Another process of this job refused the run folder {str(self.path)!r}; "
                                      "see its message.")
        return epochs

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
        if self._created and self.path.is_dir() and not any(self.path.iterdir()):
            with contextlib.suppress(OSError):  # another process may have just begun to use it
                self.path.rmdir()
