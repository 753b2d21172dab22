"""The run folder: one writer, what the folder may hold, atomic JSON and CSV, and ONE resumable fit.

A *run folder* is where one training writes: its status file, its config, its
per-epoch log and its checkpoints. Everything that writes one goes through this
module:

- :class:`RunLock`: an exclusive ``fcntl.flock`` lock on ``RUN/.lock`` (the
  holder's pid inside), held for a command's whole life; the kernel drops it when
  the process ends, even by SIGKILL; a second writer gets :class:`RunLockedError`
  naming the holder. The file is removed when the lock is released.
- :func:`check_run_folder` and :class:`RunFolder` (the lock and the check, taken
  once): a fresh run needs an empty folder or one that only its own kind of run
  wrote (a run stopped before its first checkpoint); ``resume`` needs a run with
  a checkpoint. A folder holding files no run wrote is refused, never overwritten.
- :func:`write_json` and :func:`write_csv`: one atomic strategy (a temporary file
  of its own in the same folder, then a rename), so readers see the old or the
  new file, never a part, and two writers never share a temporary file.
- :func:`resumable_fit`: restore the latest checkpoint and its history, build the
  hooks (validate, finite, checkpoint, logs, early stopping, time limit), call
  :func:`vae_jax.training.fit`, and restore the best checkpoint. The run's
  configuration is bound to every checkpoint (:class:`vae_jax.checkpoints.RunCheckpoints`'s
  ``config``): a resume with a changed configuration is refused, naming the fields.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import fcntl
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import jax

from vae_jax import hooks, training
from vae_jax._quiet import first_line
from vae_jax.checkpoints import CheckpointError, RunCheckpoints
from vae_jax.config import RunConfig

_HELD: dict[str, int] = {}  # run folders this process has locked, with the nesting depth
LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock (the message names its pid)."""


class RunLock:
    """Exclusive lock on the run folder ``folder`` (``folder/.lock``), re-entrant within a process.

    The lock file is removed on release; a process that opened it just before
    checks, once it holds the lock, that the path still names the file it locked
    (else it tries again), so removing it never admits a second writer.

    Args:
      folder: the run folder.
      create: create ``folder`` (and its parents) if missing; otherwise a missing
        folder raises ``FileNotFoundError``.

    Raises:
      RunLockedError: another process holds the lock (names its pid).
      ValueError: ``folder`` or one of its parents is a file.
      FileNotFoundError: ``folder`` is missing and ``create`` is False.
    """

    def __init__(self, folder: str | Path, *, create: bool = True):
        self.folder, self.create, self._fd, self._key = Path(folder), create, None, None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        folder = self.folder
        try:
            if self.create:
                folder.mkdir(parents=True, exist_ok=True)
            elif not folder.is_dir():
                if folder.exists():
                    raise NotADirectoryError
                raise FileNotFoundError(f"Run folder {str(folder)!r} not found.")
        except (FileExistsError, NotADirectoryError):
            raise ValueError(f"Run folder {str(folder)!r} is a file or lies under one; choose a folder.") from None
        key = str(folder.resolve())
        if key in _HELD:
            _HELD[key] += 1
            self._key = key
            return
        while self._fd is None:
            self._fd = _lock_file(folder / LOCK_FILE)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        self._key, _HELD[key] = key, 1

    def release(self) -> None:
        key = self._key
        if key is None or key not in _HELD:
            return
        _HELD[key] -= 1
        if _HELD[key] == 0:
            del _HELD[key]
            (self.folder / LOCK_FILE).unlink(missing_ok=True)  # still held: nobody else can be using it
            os.close(self._fd)
            self._fd = None


def _lock_file(path: Path) -> int | None:
    """An open descriptor of ``path`` locked exclusively, or None when ``path`` was replaced meanwhile."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.read(fd, 64).decode(errors="replace").strip()
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise RunLockedError(f"Run folder {str(path.parent)!r} is in use by {who} (a running vae-jax train?); "
                             "wait for it to end, or stop it, then try again.") from None
    try:
        same = os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:  # its holder removed it as it released it
        same = False
    if not same:
        os.close(fd)
        return None
    return fd


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
    writing anything), the folder is removed again.

    Attributes:
      path: the folder.
      resume: whether the run continues from a checkpoint.
      epochs: the epochs of the checkpoints found (after the lock was taken).
    """

    def __init__(self, path: str | Path, *, resume: bool, layout: Layout = CLI_LAYOUT):
        self.path, self.resume, self.layout = Path(path), resume, layout
        self.epochs: list[int] = []

    def __enter__(self) -> "RunFolder":
        check_run_path(self.path, resume=self.resume)  # what the lock needs; the rest is checked under it
        self._created = not self.path.exists()
        self._lock = RunLock(self.path, create=not self.resume)
        self._lock.acquire()
        try:
            self.epochs = check_run_folder(self.path, resume=self.resume, layout=self.layout)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
        if self._created and self.path.is_dir() and not any(self.path.iterdir()):
            with contextlib.suppress(OSError):  # another process may have just begun to use it
                self.path.rmdir()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`resumable_fit`; every epoch it reports is checkpointed and logged.

    Attributes:
      epochs: the complete (checkpointed) epochs.
      kept: a sentence naming the intact checkpoint (or saying there is none).
    """

    def __init__(self, epochs: int, kept: str):
        super().__init__(f"interrupted after {epochs} complete epochs")
        self.epochs, self.kept = epochs, kept


class Fitted(NamedTuple):
    """What :func:`resumable_fit` returns.

    Attributes:
      state: the state after the last epoch.
      history: one row per completed epoch (restored ones included).
      stop_reason: ``"max epochs"`` or the reason a hook gave.
      best_state: the state of the best checkpoint (by ``metric`` in the checksummed history).
      best_epoch: its epoch.
    """

    state: training.TrainState
    history: list[dict]
    stop_reason: str
    best_state: training.TrainState
    best_epoch: int


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """How :func:`resumable_fit` trains and judges a run (every field but the first five has a default).

    Attributes:
      step: the jitted train step (:func:`vae_jax.training.make_train_step`).
      data: ``[N, H, W, C]`` training images.
      key: the run's training key (epoch ``e`` uses ``fold_in(key, e)``).
      epochs: total epochs (restored ones included).
      batch_size: examples per step.
      metric: the history column that ranks checkpoints (higher is better), added by ``validate``.
      validate: the hook that adds ``metric`` (e.g. :class:`vae_jax.hooks.Validate`).
      config: the run's configuration, bound to every checkpoint (JSON-able; without the
        fields a resume may change).
      defaults: ``config``'s default values (:class:`vae_jax.checkpoints.RunCheckpoints`'s
        ``defaults``: a field added after the run started, at its default, is no change).
      before: hooks run before ``validate`` (e.g. an epoch timer).
      logs: hooks run right after the checkpoint, with Ctrl-C held back until they are
        done (CSV log, status file), so the logs always match the checkpoints.
      early_stopping: an :class:`vae_jax.hooks.EarlyStopping`, also asked before training
        (a resumed run that had stopped trains no further).
      max_minutes: stop after this many minutes of this process (``0``: after one epoch).
      progress, desc: the progress bar.
      epoch_fn: how an epoch runs (:func:`vae_jax.training.fit`'s; ``None``: the in-memory scan),
        e.g. data-parallel (:func:`vae_jax.parallel.train_epoch_sharded`) or streamed from disk.
    """

    step: Callable
    data: Any
    key: jax.Array
    epochs: int
    batch_size: int
    metric: str
    validate: Callable
    config: Mapping[str, Any] | None = None
    defaults: Mapping[str, Any] | None = None
    before: Sequence[Callable] = ()
    logs: Sequence[Callable] = ()
    early_stopping: hooks.EarlyStopping | None = None
    max_minutes: float | None = None
    progress: bool = True
    desc: str = "train"
    epoch_fn: Callable | None = None


def resumable_fit(run: RunFolder, state: training.TrainState, plan: FitPlan, *, checkpoint: str = "latest",
                  status: Callable[..., None] | None = None,
                  on_resume: Callable[[list[dict], list[int]], None] | None = None) -> Fitted:
    """Trains the run in the locked folder ``run`` with checkpoints every epoch, resuming if ``run.resume``.

    Args:
      run: the locked, checked run folder (:class:`RunFolder`).
      state: a fresh state: the start of a new run, and the template checkpoints restore into.
      plan: what to train and how (:class:`FitPlan`).
      checkpoint: with ``run.resume``: ``"latest"`` or ``"latest-intact"`` (the newest
        checkpoint that verifies; the newer ones move to ``checkpoints.corrupt/``).
      status: called as ``status(history, status=..., error=...)`` when training ends
        (``"finished"``), fails (``"failed"``) or is interrupted (``"interrupted"``).
      on_resume: called as ``on_resume(restored history, epochs moved aside)`` after a restore.

    Returns:
      :class:`Fitted`.

    Raises:
      Interrupted: Ctrl-C (a ``KeyboardInterrupt``): every reported epoch is checkpointed.
      FloatingPointError: a non-finite loss, parameter or metric (names the intact checkpoint).
      CheckpointError: a checkpoint could not be read or written (e.g. a full disk).
      ConfigMismatchError: the checkpoints were trained with another ``plan.config``.
    """
    status = status or (lambda history, **fields: None)
    with RunCheckpoints(run.path / "checkpoints", metric=plan.metric, config=plan.config,
                         defaults=plan.defaults, create=True) as ckpts:
        history, template = [], state
        if run.resume:
            state, history = ckpts.restore(template, which=checkpoint)
            moved = ckpts.discard_after(len(history))
            if on_resume is not None:
                on_resume(history, moved)
        seen = _Seen(history)
        fit_hooks = _hooks(plan, ckpts, seen)
        stopped = plan.early_stopping(len(history), state, history) if plan.early_stopping and history else None
        try:
            result = training.FitResult(state, history, stopped) if stopped else training.fit(
                plan.step, state, plan.data, plan.key, epochs=plan.epochs, batch_size=plan.batch_size,
                history=history, hooks=fit_hooks, epoch_fn=plan.epoch_fn, progress=plan.progress, desc=plan.desc)
        except KeyboardInterrupt:
            _report(status, seen.history, status="interrupted")
            raise Interrupted(len(seen.history), kept(ckpts)) from None
        except FloatingPointError as e:
            _report(status, seen.history, status="failed", error=str(e))
            raise FloatingPointError(f"{e} {kept(ckpts)}") from None
        except (CheckpointError, OSError) as e:  # e.g. a full disk
            message = f"{first_line(e)} {kept(ckpts)}"
            _report(status, seen.history, status="failed", error=message)
            raise CheckpointError(message) from None
        _report(status, result.history, status="finished")
        best_state, _ = ckpts.restore(template, which="best")
        return Fitted(result.state, result.history, result.stop_reason, best_state, ckpts.best_epoch)


def _hooks(plan: FitPlan, ckpts: RunCheckpoints, seen: "_Seen") -> list[Callable]:
    """validate, finite, checkpoint + logs (Ctrl-C held back), early stopping, time limit, in that order."""
    stop = [plan.early_stopping] if plan.early_stopping else []
    if plan.max_minutes is not None:
        stop.append(hooks.TimeLimit(plan.max_minutes) if plan.max_minutes > 0 else
                    (lambda epoch, state, history: "time limit: 0 minutes"))
    return [*plan.before, plan.validate, hooks.RequireFinite(plan.metric),
            hooks.Uninterrupted(hooks.Checkpoint(ckpts), seen, *plan.logs), *stop]


class _Seen:
    """Hook: remembers the checkpointed history (it runs right after the checkpoint)."""

    def __init__(self, history: list[dict]):
        self.history = list(history)

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> None:
        self.history = list(history)


def _report(report: Callable[..., None], history: list[dict], **fields: Any) -> None:
    """``report(history, **fields)``; a status file that cannot be written (a full disk) is warned about."""
    try:
        report(history, **fields)
    except OSError as e:
        warnings.warn(f"could not record status {fields.get('status')!r} ({e}).", RuntimeWarning, stacklevel=2)


def kept(ckpts: RunCheckpoints) -> str:
    """A sentence naming the newest checkpoint of ``ckpts`` (or saying there is none)."""
    epoch = ckpts.latest_epoch
    if not epoch:
        return f"no checkpoint was written to {str(ckpts.directory)!r}."
    return f"the checkpoint of epoch {epoch} in {str(ckpts.directory)!r} is intact."


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
