"""Run folders: one writer at a time, and Orbax checkpoints that are verified when read.

:class:`RunLock` is an exclusive ``fcntl.flock`` lock on ``RUN/.lock``, held by
every command that writes a run folder for its whole life (the kernel drops it
when the process ends, even by SIGKILL); a second writer gets
:class:`RunLockedError` naming the holder's pid.

A run's ``checkpoints/`` folder holds Orbax step folders named by the number
of completed epochs. Each holds the whole :class:`vae_jax.training.TrainState`
(parameters, optimiser state, step, hparams), as JSON the per-epoch metrics so
far, and an ``integrity`` item: the SHA-256 of the state's arrays (dtype, shape,
bytes) and of the history, verified on every restore, so a flipped byte gives
:class:`CheckpointError` ("corrupt checkpoint N") instead of other numbers.

Atomicity: Orbax writes a step into a temporary folder and renames it when
complete; old steps are first renamed into ``checkpoints/deleted/`` and then
removed, so a process killed mid-write or mid-delete leaves only whole step
folders (the leftovers are removed when a writer next opens the folder).
Readers take a shared lock on ``checkpoints.lock`` while they list and read;
the writer takes it exclusively while it saves and deletes, so a reader beside
a running train never sees a step disappear under it.

Retention: the latest checkpoint (to resume) and the best by a validation
metric (to evaluate), via ``CheckpointManager``'s ``best_fn`` and a
``LatestN(1) | BestN(1)`` preservation policy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from vae_jax.training import TrainState

Which = Literal["latest", "best", "latest-intact"]
WHICH = ("best", "latest", "latest-intact")
_TRASH = "deleted"  # Orbax renames steps to delete into this sub-folder (atomic), then removes them
_HELD: dict[str, int] = {}  # run folders this process has locked, with the nesting depth


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, empty, unreadable or corrupt (the message names it)."""


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock (the message names its pid)."""


class CheckpointWarning(UserWarning):
    """A checkpoint could not be verified (written before checksums existed)."""


class RunLock:
    """Exclusive lock on the run folder ``folder`` (``folder/.lock``), re-entrant within a process.

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
        self.folder, self.create, self._fd = Path(folder), create, None

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
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise RunLockedError(f"Run folder {str(folder)!r} is in use by {who} (a running vae-jax train?); "
                                 "wait for it to end, or stop it, then try again.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd, self._key = fd, key
        _HELD[key] = 1

    def release(self) -> None:
        key = getattr(self, "_key", None)
        if key is None or key not in _HELD:
            return
        _HELD[key] -= 1
        if _HELD[key] == 0:
            del _HELD[key]
            if self._fd is not None:
                os.close(self._fd)  # closing the file releases the lock (the pid left in it is harmless)
                self._fd = None


@contextlib.contextmanager
def _flock(path: Path, mode: int, *, required: bool) -> Iterator[None]:
    """Holds ``flock(path, mode)`` (blocking); without ``required``, an unopenable path means no lock."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if required:
            raise
        yield  # a read-only folder: nothing can write it either
        return
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


def _call_quietly(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """``(fn(), None)``, or ``(None, the first line of its exception)``, with file descriptor 2 captured.

    What ``fn`` printed to file descriptor 2 is replayed when it succeeds and
    dropped when it fails. When a damaged checkpoint aborts an Orbax read,
    TensorStore's pending reads call back into a closed asyncio loop and print
    tracebacks, in TensorStore's threads after Orbax has raised and again when
    the garbage collector finalises the abandoned reads, at a random later
    moment (CI caught both in the next command): noise after a clear error. So
    on an error the exception is let go (it holds the abandoned reads), they
    are collected, and the capture must be quiet for a moment (at most 2 s)
    before file descriptor 2 is given back. Hence an error string here, not
    an exception chained to Orbax's.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to capture
        saved = None
    error = None
    with tempfile.TemporaryFile() as capture:
        if saved is not None:
            os.dup2(capture.fileno(), 2)
        try:
            try:
                return fn(), None
            except Exception as e:  # Orbax raises many types for damaged files
                error = _first_line(e)
            _settle(capture)  # `e` and its traceback are gone: the abandoned reads can be collected
            return None, error
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read()
                if error is None and text:
                    os.write(2, text)


def _settle(capture: Any, quiet: float = 0.25, limit: float = 2.0) -> None:
    """Collects garbage until nothing new reaches the file ``capture`` for ``quiet`` s (at most ``limit`` s)."""
    deadline, size = time.monotonic() + limit, -1
    while time.monotonic() < deadline:
        gc.collect()
        now = os.fstat(capture.fileno()).st_size
        if now == size:
            return
        size = now
        time.sleep(quiet)


def checksum(state: Any, history: list[dict[str, float]]) -> str:
    """SHA-256 (hex) of every leaf of ``state`` (dtype, shape, bytes, in tree order) and of ``history``."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        array = np.ascontiguousarray(jax.device_get(leaf))
        if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):
            array = np.ascontiguousarray(jax.random.key_data(array))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(json.dumps(history, sort_keys=True).encode())
    return digest.hexdigest()


class RunCheckpoints:
    """The checkpoints of one run in ``directory``, ranked by ``metrics[metric]`` (higher is better).

    Args:
      directory: the checkpoint folder (created if ``create``).
      metric: name of the metric that ranks checkpoints, e.g. ``"validation_elbo"``.
      create: create ``directory`` if missing; otherwise a missing folder raises.
      read_only: open for reading only (``evaluate``, ``sample``): never writes,
        deletes or cleans up anything, and reads under a shared lock, so it may
        run beside the train that writes the folder.

    Raises:
      CheckpointError: ``directory`` does not exist and ``create`` is False, or
        its Orbax metadata cannot be read.
    """

    def __init__(self, directory: str | Path, *, metric: str, create: bool = False, read_only: bool = False):
        self.directory = Path(directory).absolute()
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"No checkpoint folder {str(self.directory)!r}; train a run there first "
                                  "(vae-jax train --out RUN).")
        self.metric, self.read_only = metric, read_only
        self._lock_path = self.directory.with_name(self.directory.name + ".lock")
        rank = lambda m: float(m[metric])  # noqa: E731
        options = ocp.CheckpointManagerOptions(
            best_fn=rank, best_mode="max", create=create and not read_only, enable_async_checkpointing=False,
            cleanup_tmp_directories=False, save_root_metadata=not read_only,
            todelete_subdir=None if read_only else _TRASH,
            preservation_policy=policies.AnyPreservationPolicy(
                [policies.LatestN(n=1), policies.BestN(get_metric_fn=rank, n=1)]))
        with self._locked():
            if not read_only:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._remove_leftovers()
            self._manager = self._guard(lambda: ocp.CheckpointManager(self.directory, options=options))

    def __enter__(self) -> "RunCheckpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Waits for pending writes and releases Orbax's resources."""
        self._manager.close()

    def _locked(self):
        mode = fcntl.LOCK_SH if self.read_only else fcntl.LOCK_EX
        return _flock(self._lock_path, mode, required=not self.read_only)

    def _guard(self, fn):
        """``fn()``, with Orbax's errors about the folder's metadata turned into a CheckpointError."""
        try:
            return fn()
        except Exception as e:  # a damaged metrics or metadata file: Orbax raises many types
            bad = _damaged_json(self.directory)
            what = f"the damaged file {str(bad)!r}" if bad else f"a damaged metadata file in {str(self.directory)!r}"
            raise CheckpointError(f"Corrupt checkpoint folder: {what} cannot be read ({_first_line(e)}); "
                                  "move its step folder away, or train again.") from e

    def _remove_leftovers(self) -> None:
        """Removes what a killed process left: unfinished temporary steps and half-deleted old ones."""
        for path in self.directory.iterdir():
            if path.name == _TRASH or ".orbax-checkpoint-tmp" in path.name:
                shutil.rmtree(path, ignore_errors=True)

    @property
    def epochs(self) -> list[int]:
        """Completed epochs of every checkpoint kept, ascending."""
        return sorted(self._guard(self._manager.all_steps))

    @property
    def latest_epoch(self) -> int | None:
        """Completed epochs of the newest checkpoint, or None when there is none."""
        return self._guard(self._manager.latest_step)

    @property
    def best_epoch(self) -> int | None:
        """Completed epochs of the checkpoint with the highest metric, or None."""
        return self._guard(self._manager.best_step)

    def save(self, epoch: int, state: TrainState, *, history: list[dict[str, float]]) -> None:
        """Writes ``state`` after ``epoch`` completed epochs, atomically, with its checksum.

        Args:
          epoch: number of completed epochs (the Orbax step), ``>= 1``.
          state: the train state to save.
          history: one dict of floats per completed epoch; ``history[-1]`` must
            hold the ranking metric.
        """
        if self.read_only:
            raise CheckpointError(f"{str(self.directory)!r} was opened read-only.")
        if len(history) != epoch or self.metric not in history[-1]:
            raise ValueError(f"history must hold {epoch} epochs, the last with {self.metric!r}.")
        integrity = {"sha256": checksum(state, history), "of": "state leaves (dtype, shape, bytes) and history"}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history),
                                  integrity=ocp.args.JsonSave(integrity))
        with self._locked():
            self._manager.save(epoch, args=args, metrics={self.metric: history[-1][self.metric]})
            self._manager.wait_until_finished()
            shutil.rmtree(self.directory / _TRASH, ignore_errors=True)

    def restore(self, template: TrainState, *, which: Which = "latest"
                ) -> tuple[TrainState, list[dict[str, float]]]:
        """The saved state and history, with ``template``'s structure, dtypes and optimiser, verified.

        Args:
          template: a state of the same model and optimiser (e.g. freshly created);
            only its structure, shapes and dtypes are used.
          which: ``"latest"`` (to resume), ``"best"`` (by the metric) or
            ``"latest-intact"`` (the newest checkpoint that reads and verifies;
            ``len(history)`` tells which).

        Returns:
          ``(state, history)``; the arrays equal the saved ones bitwise.

        Raises:
          CheckpointError: there is no checkpoint, or it cannot be read, does not
            match ``template``, or fails its checksum ("corrupt checkpoint N").
        """
        if which not in WHICH:
            raise ValueError(f"which must be one of {WHICH}; got {which!r}.")
        with self._locked():
            self._guard(self._manager.reload)
            if which == "latest-intact":
                return self._restore_newest_intact(template)
            epoch = self.latest_epoch if which == "latest" else self.best_epoch
            if epoch is None:
                raise CheckpointError(f"No checkpoint in {str(self.directory)!r} (an interrupted first epoch "
                                      "leaves none; train again).")
            try:
                return self._restore_epoch(template, epoch)
            except CheckpointError as e:
                others = [s for s in self.epochs if s != epoch]
                hint = " --checkpoint latest-intact uses the newest intact one." if others else ""
                raise CheckpointError(f"{e}{hint}") from None

    def _restore_newest_intact(self, template: TrainState) -> tuple[TrainState, list[dict[str, float]]]:
        errors = []
        for epoch in reversed(self.epochs):
            try:
                return self._restore_epoch(template, epoch)
            except CheckpointError as e:
                errors.append(str(e))
        raise CheckpointError(f"No intact checkpoint in {str(self.directory)!r}: "
                              + (" ".join(errors) if errors else "there is none."))

    def _restore_epoch(self, template: TrainState, epoch: int) -> tuple[TrainState, list[dict[str, float]]]:
        where = f"{str(self.directory / str(epoch))!r}"
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        items = {"state": ocp.args.StandardRestore(abstract), "history": ocp.args.JsonRestore()}
        verified = (self.directory / str(epoch) / "integrity").is_dir()
        if verified:
            items["integrity"] = ocp.args.JsonRestore()
        restored, error = _call_quietly(lambda: self._manager.restore(epoch, args=ocp.args.Composite(**items)))
        if error is None:
            state, history = restored.state, list(restored.history)
            if not _same_structure(state, template):
                error = "the restored arrays have another structure or shape"
        if error is not None:
            raise CheckpointError(f"Corrupt checkpoint {epoch}: {where} is damaged or does not match this "
                                  f"model ({error}).")
        if not verified:
            warnings.warn(f"checkpoint {where} has no checksum (written before checksums existed); "
                          "it is not verified.", CheckpointWarning, stacklevel=3)
        elif not isinstance(restored.integrity, dict) or restored.integrity.get("sha256") != checksum(state, history):
            raise CheckpointError(f"Corrupt checkpoint {epoch}: the arrays in {where} do not match the "
                                  "checksum written with them.")
        return state, history

    def discard_after(self, epoch: int) -> list[int]:
        """Moves the checkpoints newer than ``epoch`` (e.g. corrupt ones) out of the way.

        They go to ``checkpoints.corrupt/<epoch>`` beside the folder, for inspection.
        Returns the epochs moved.
        """
        if self.read_only:
            raise CheckpointError(f"{str(self.directory)!r} was opened read-only.")
        moved = []
        with self._locked():
            for step in [s for s in self.epochs if s > epoch]:
                target = self.directory.with_name(self.directory.name + ".corrupt") / str(step)
                target.parent.mkdir(exist_ok=True)
                shutil.rmtree(target, ignore_errors=True)
                (self.directory / str(step)).rename(target)
                moved.append(step)
            self._guard(self._manager.reload)
        return moved


def _damaged_json(directory: Path) -> Path | None:
    """The first of the steps' JSON metadata files (metrics, checkpoint metadata) that does not parse."""
    for step in sorted(p for p in directory.iterdir() if p.name.isdigit()):
        for path in (step / "metrics" / "metrics", step / "_CHECKPOINT_METADATA"):
            try:
                if path.is_file():
                    json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError):
                return path
    return None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__


def _same_structure(state: Any, template: Any) -> bool:
    shapes = lambda tree: [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]  # noqa: E731
    return jax.tree.structure(state) == jax.tree.structure(template) and shapes(state) == shapes(template)
