"""Orbax checkpoints of one run that are verified when read, and bound to the run's configuration.

A run's ``checkpoints/`` folder holds Orbax step folders named by the number
of completed epochs. Each holds the whole :class:`vae_jax.training.TrainState`
(parameters, optimiser state, step, hparams), as JSON the per-epoch metrics so
far (the history), and an ``integrity`` item: the SHA-256 of the state's arrays
(dtype, shape, bytes), of the history and of the run's configuration (stored
beside it), verified on every restore, so a flipped byte gives
:class:`CheckpointError` ("corrupt checkpoint N") instead of other numbers, and
a configuration that differs from the one the checkpoint was trained with
gives :class:`ConfigMismatchError` naming the fields.

Atomicity: Orbax writes a step into a temporary folder and renames it when
complete; old steps are first renamed into ``checkpoints/deleted/`` and then
removed, so a process killed mid-write or mid-delete leaves only whole step
folders (the leftovers are removed when a writer next opens the folder).
Readers take a shared lock on ``checkpoints.lock`` while they list and read;
the writer takes it exclusively while it saves and deletes, so a reader beside
a running train never sees a step disappear under it.

Several processes (``jax.distributed``): every process saves and restores (Orbax
writes each array once, from the process that holds it, and synchronises them);
process 0 alone takes the lock, cleans up and moves checkpoints aside, so the
folder must be one that every process sees (a shared file system).

Retention: the latest checkpoint (to resume) and the best by a validation
metric (to evaluate). The best is ranked from the history, which the checksum
covers, never from Orbax's metrics file, which it does not.

The run folder's one-writer lock lives in :mod:`vae_jax.runs`
(``checkpoints.RunLock`` and ``checkpoints.RunLockedError`` still resolve to it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from vae_jax import parallel
from vae_jax._quiet import call_quietly, first_line
from vae_jax.training import TrainState

Which = Literal["latest", "best", "latest-intact"]
WHICH = ("best", "latest", "latest-intact")
_TRASH = "deleted"  # Orbax renames steps to delete into this sub-folder (atomic), then removes them
_MOVED = ("RunLock", "RunLockedError")  # now in vae_jax.runs


def __getattr__(name: str) -> Any:
    if name in _MOVED:  # PEP 562: the old names, without an import cycle (vae_jax.runs imports this module)
        return getattr(importlib.import_module("vae_jax.runs"), name)
    raise AttributeError(f"module 'vae_jax.checkpoints' has no attribute {name!r}")


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, empty, unreadable or corrupt (the message names it)."""


class ConfigMismatchError(ValueError):
    """A checkpoint was trained with another configuration than the one given (the message names the fields)."""


class CheckpointWarning(UserWarning):
    """A checkpoint could not be verified (written before checksums existed)."""


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


def checksum(state: Any, history: list[dict[str, float]], config: Mapping[str, Any] | None = None) -> str:
    """SHA-256 (hex) of every leaf of ``state`` (dtype, shape, bytes, in tree order), of ``history`` and,
    when given, of ``config``."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        array = np.ascontiguousarray(jax.device_get(leaf))
        if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):
            array = np.ascontiguousarray(jax.random.key_data(array))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    digest.update(json.dumps(history, sort_keys=True).encode())
    if config is not None:
        digest.update(json.dumps(config, sort_keys=True).encode())
    return digest.hexdigest()


def json_sha256(obj: Any) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON (sorted keys): a configuration's or a history's hash."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def changed_fields(saved: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"name=SAVED (now NOW)"`` for every (nested, dotted) field in which ``now`` differs from ``saved``."""
    changes = []
    for name in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(name, "missing"), now.get(name, "missing")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes += changed_fields(a, b, f"{prefix}{name}.")
        elif a != b:
            changes.append(f"{prefix}{name}={a!r} (now {b!r})")
    return changes


def without_added_defaults(now: Mapping[str, Any], saved: Mapping[str, Any],
                           defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``now`` (nested dicts) less each field that ``saved`` lacks and ``now`` holds at its value in ``defaults``."""
    out = {}
    for name, value in now.items():
        default = defaults.get(name, object()) if isinstance(defaults, Mapping) else object()
        if name not in saved:
            if value == default:
                continue
            out[name] = value
        elif isinstance(value, Mapping) and isinstance(saved[name], Mapping):
            out[name] = without_added_defaults(value, saved[name], default if isinstance(default, Mapping) else {})
        else:
            out[name] = value
    return out


class _Manager(ocp.CheckpointManager):
    """Orbax's manager without its metrics file: checkpoints are ranked from the checksummed history."""

    def metrics(self, step: int) -> None:
        return None  # never read: a file outside the checksum must not choose (or delete) a checkpoint


class RunCheckpoints:
    """The checkpoints of one run in ``directory``, ranked by ``history[-1][metric]`` (higher is better).

    Args:
      directory: the checkpoint folder (created if ``create``).
      metric: name of the metric that ranks checkpoints, e.g. ``"validation_elbo"``.
      config: the run's configuration (JSON-able; only the fields that may not change on
        resume): stored in every checkpoint saved, under its checksum, and compared on every
        restore (``None``: neither).
      defaults: the configuration's default values (same nesting as ``config``): a field
        that a checkpoint's stored configuration lacks (one added to the library after
        the run started) and that ``config`` holds at its default is no change, so
        the runs of an earlier version still resume.
      create: create ``directory`` if missing; otherwise a missing folder raises.
      read_only: open for reading only (``evaluate``, ``sample``): never writes,
        deletes or cleans up anything, and reads under a shared lock, so it may
        run beside the train that writes the folder.

    Raises:
      CheckpointError: ``directory`` does not exist and ``create`` is False, or
        its Orbax metadata cannot be read.
    """

    def __init__(self, directory: str | Path, *, metric: str, config: Mapping[str, Any] | None = None,
                 defaults: Mapping[str, Any] | None = None, create: bool = False, read_only: bool = False):
        self.directory = Path(directory).absolute()
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"No checkpoint folder {str(self.directory)!r}; train a run there first "
                                  "(vae-jax train --out RUN).")
        self.metric, self.read_only = metric, read_only
        self.config = None if config is None else json.loads(json.dumps(config))  # as stored: lists, not tuples
        self.defaults = json.loads(json.dumps(defaults or {}))
        self._lock_path = self.directory.with_name(self.directory.name + ".lock")
        options = ocp.CheckpointManagerOptions(
            create=create and not read_only, enable_async_checkpointing=False, cleanup_tmp_directories=False,
            save_root_metadata=not read_only, todelete_subdir=None if read_only else _TRASH)
        with self._locked():
            if not read_only:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._remove_leftovers()
            self._manager = self._guard(lambda: _Manager(self.directory, options=options))

    def __enter__(self) -> "RunCheckpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Waits for pending writes and releases Orbax's resources."""
        self._manager.close()

    def _locked(self):
        if not self.read_only and not parallel.is_writer():  # process 0 holds it for every process of the job
            return contextlib.nullcontext()
        mode = fcntl.LOCK_SH if self.read_only else fcntl.LOCK_EX
        return _flock(self._lock_path, mode, required=not self.read_only)

    def _guard(self, fn):
        """``fn()`` with Orbax's errors about the folder's metadata turned into a CheckpointError.

        What Orbax logs meanwhile is dropped: it is about damaged step metadata, which
        :meth:`_small_items` checks and names when that step is read.
        """
        value, error = call_quietly(fn, replay=False)
        if error is not None:
            bad = _damaged_json(self.directory)
            what = f"the damaged file {str(bad)!r}" if bad else f"a damaged metadata file in {str(self.directory)!r}"
            raise CheckpointError(f"Corrupt checkpoint folder: {what} cannot be read ({error}); "
                                  "move its step folder away, or train again.")
        return value

    def _remove_leftovers(self) -> None:
        """Removes what a killed process left: unfinished temporary steps and half-deleted old ones (process 0)."""
        for path in self.directory.iterdir() if parallel.is_writer() else ():
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
        """The kept checkpoint with the highest metric in the newest verified history, or None.

        Raises:
          CheckpointError: no kept checkpoint has a history that reads and matches its checksum.
        """
        with self._locked():  # a reader beside a train: no step disappears while the histories are read
            self._guard(self._manager.reload)
            return self._best_epoch()

    def _best_epoch(self) -> int | None:
        epochs = self.epochs
        return _best(self._ranking_history(epochs), self.metric, epochs) if epochs else None

    def _ranking_history(self, epochs: list[int]) -> list[dict]:
        """The history of the newest checkpoint whose history reads and matches its checksum."""
        errors = []
        for epoch in reversed(epochs):
            try:
                return self._small_items(epoch)[0]
            except CheckpointError as e:
                errors.append(str(e))
        raise CheckpointError(f"No checkpoint in {str(self.directory)!r} has a readable history: {' '.join(errors)}")

    def _small_items(self, epoch: int) -> tuple[list[dict], dict | None]:
        """``(history, integrity)`` of step ``epoch``, read as JSON; the history checked against its hash.

        Raises:
          CheckpointError: a file does not read, or the history does not match its hash.
        """
        step = self.directory / str(epoch)
        try:
            json.loads((step / "_CHECKPOINT_METADATA").read_text())
            history = json.loads((step / "history" / "metadata").read_text())
            path = step / "integrity" / "metadata"
            integrity = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError) as e:  # ValueError: invalid JSON or UTF-8
            raise CheckpointError(f"Corrupt checkpoint {epoch}: {str(step)!r} is damaged ({first_line(e)}).") from None
        if integrity is not None and not isinstance(integrity, dict) or not isinstance(history, list):
            raise CheckpointError(f"Corrupt checkpoint {epoch}: {str(step)!r} holds malformed metadata.")
        wanted = (integrity or {}).get("history_sha256")
        if wanted is not None and wanted != json_sha256(history):
            raise CheckpointError(f"Corrupt checkpoint {epoch}: the history in {str(step)!r} does not match the "
                                  "checksum written with it.")
        return history, integrity

    def save(self, epoch: int, state: TrainState, *, history: list[dict[str, float]]) -> None:
        """Writes ``state`` after ``epoch`` completed epochs, atomically, with its checksum; keeps the
        latest and the best checkpoint (by ``history``) and removes the others.

        Args:
          epoch: number of completed epochs (the Orbax step), ``>= 1``.
          state: the train state to save.
          history: one dict of floats per completed epoch; ``history[-1]`` must
            hold the ranking metric.

        Raises:
          CheckpointError: the checkpoint could not be written (e.g. a full disk); nothing
            but whole earlier checkpoints is left.
        """
        if self.read_only:
            raise CheckpointError(f"{str(self.directory)!r} was opened read-only.")
        if len(history) != epoch or self.metric not in history[-1]:
            raise ValueError(f"history must hold {epoch} epochs, the last with {self.metric!r}.")
        integrity = {"sha256": checksum(state, history, self.config), "history_sha256": json_sha256(history),
                     "of": "state leaves (dtype, shape, bytes), history and config"}
        if self.config is not None:
            integrity.update(config=self.config, config_sha256=json_sha256(self.config))
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history),
                                  integrity=ocp.args.JsonSave(integrity))
        with self._locked():
            _, error = call_quietly(lambda: self._manager.save(epoch, args=args))
            if error is not None:
                self._remove_leftovers()
                raise CheckpointError(f"Could not write the checkpoint of epoch {epoch} to "
                                      f"{str(self.directory)!r} (a full disk?): {error}")
            keep = {epoch, _best(history, self.metric, self.epochs)}
            for step in self.epochs:
                if step not in keep:
                    self._guard(lambda: self._manager.delete(step))
            if parallel.is_writer():
                shutil.rmtree(self.directory / _TRASH, ignore_errors=True)

    def restore(self, template: TrainState, *, which: Which = "latest"
                ) -> tuple[TrainState, list[dict[str, float]]]:
        """The saved state and history, with ``template``'s structure, dtypes and optimiser, verified.

        Args:
          template: a state of the same model and optimiser (e.g. freshly created);
            only its structure, shapes and dtypes are used.
          which: ``"latest"`` (to resume), ``"best"`` (by the metric in the checksummed
            history) or ``"latest-intact"`` (the newest checkpoint that reads and verifies;
            ``len(history)`` tells which).

        Returns:
          ``(state, history)``; the arrays equal the saved ones bitwise.

        Raises:
          CheckpointError: there is no checkpoint, or it cannot be read, does not
            match ``template``, or fails its checksum ("corrupt checkpoint N").
          ConfigMismatchError: the checkpoint was trained with another ``config``.
        """
        if which not in WHICH:
            raise ValueError(f"which must be one of {WHICH}; got {which!r}.")
        with self._locked():
            self._guard(self._manager.reload)
            if which == "latest-intact":
                return self._restore_newest_intact(template)
            epoch = self.latest_epoch if which == "latest" else self._best_epoch()
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

    def _check_config(self, epoch: int, integrity: dict | None) -> None:
        """Raises ConfigMismatchError when checkpoint ``epoch`` was trained with another configuration."""
        saved = (integrity or {}).get("config")
        if self.config is None or saved is None:
            return
        now = without_added_defaults(self.config, saved, self.defaults) if isinstance(saved, dict) else self.config
        if saved == now:
            return
        changes = changed_fields(saved, now) if isinstance(saved, dict) else ["the whole configuration"]
        raise ConfigMismatchError(
            f"The checkpoint of epoch {epoch} in {str(self.directory)!r} was trained with another configuration: "
            f"{', '.join(changes)}; restore the run's config.json (or its options), or start a new run in "
            "another folder.")

    def _restore_epoch(self, template: TrainState, epoch: int) -> tuple[TrainState, list[dict[str, float]]]:
        where = f"{str(self.directory / str(epoch))!r}"
        _, integrity = self._small_items(epoch)
        self._check_config(epoch, integrity)  # before the arrays: another latent_dim is no corrupt file
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        items = {"state": ocp.args.StandardRestore(abstract), "history": ocp.args.JsonRestore()}
        restored, error = call_quietly(lambda: self._manager.restore(epoch, args=ocp.args.Composite(**items)))
        if error is None:
            state, history = restored.state, list(restored.history)
            if not _same_structure(state, template):
                error = "the restored arrays have another structure or shape"
        if error is not None:
            raise CheckpointError(f"Corrupt checkpoint {epoch}: {where} is damaged or does not match this "
                                  f"model ({error}).")
        if integrity is None:
            warnings.warn(f"checkpoint {where} has no checksum (written before checksums existed); "
                          "it is not verified.", CheckpointWarning, stacklevel=3)
        elif integrity.get("sha256") != checksum(state, history, integrity.get("config")):
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
        moved = [s for s in self.epochs if s > epoch]
        with self._locked():
            for step in moved if parallel.is_writer() else ():
                target = self.directory.with_name(self.directory.name + ".corrupt") / str(step)
                target.parent.mkdir(exist_ok=True)
                shutil.rmtree(target, ignore_errors=True)
                (self.directory / str(step)).rename(target)
            parallel.barrier("checkpoints moved aside")  # every process reloads after process 0 moved them
            self._guard(self._manager.reload)
        return moved


def _best(history: list[dict], metric: str, epochs: list[int]) -> int:
    """The epoch among ``epochs`` (those ``history`` covers) with the highest ``metric``; the first of equals."""
    covered = [e for e in epochs if 1 <= e <= len(history) and metric in history[e - 1]]
    if not covered:
        raise CheckpointError(f"No kept checkpoint has {metric!r} in its history.")
    return max(covered, key=lambda e: (float(history[e - 1][metric]), -e))


def _damaged_json(directory: Path) -> Path | None:
    """The first step's Orbax metadata file (``_CHECKPOINT_METADATA``) that does not parse."""
    for step in sorted(p for p in directory.iterdir() if p.name.isdigit()):
        path = step / "_CHECKPOINT_METADATA"
        try:
            if path.is_file():
                json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            return path
    return None


def _same_structure(state: Any, template: Any) -> bool:
    shapes = lambda tree: [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]  # noqa: E731
    return jax.tree.structure(state) == jax.tree.structure(template) and shapes(state) == shapes(template)
