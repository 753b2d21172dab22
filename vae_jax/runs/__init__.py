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

The package's modules: :mod:`~vae_jax.runs.lock`, :mod:`~vae_jax.runs.files`,
:mod:`~vae_jax.runs.folder` and :mod:`~vae_jax.runs.fit`; every public name is
importable from ``vae_jax.runs``.
"""

from vae_jax.runs.files import (CSVLog, bound_config, load_run_config, previous_seconds, read_json, write_bytes,
                                write_csv, write_json)
from vae_jax.runs.fit import FitPlan, Fitted, Interrupted, kept, resumable_fit
from vae_jax.runs.folder import (CLI_LAYOUT, Layout, RunFolder, check_epochs, check_run_folder, check_run_path,
                                 checkpoint_epochs)
from vae_jax.runs.lock import LOCK_FILE, RunLock, RunLockedError

__all__ = ["CLI_LAYOUT", "CSVLog", "FitPlan", "Fitted", "Interrupted", "LOCK_FILE", "Layout", "RunFolder", "RunLock",
           "RunLockedError", "bound_config", "check_epochs", "check_run_folder", "check_run_path",
           "checkpoint_epochs", "kept", "load_run_config", "previous_seconds", "read_json", "resumable_fit",
           "write_bytes", "write_csv", "write_json"]
