"""The run folder's one-writer lock: ``fcntl.flock`` on ``RUN/.lock``, the holder's pid inside."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

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

