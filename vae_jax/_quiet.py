"""Calls whose file-descriptor-2 noise is dropped when they fail: Orbax and TensorStore on damaged files.

When a damaged checkpoint aborts an Orbax read (or a full disk aborts a
write), TensorStore's pending operations call back into a closed asyncio loop
and print tracebacks, in TensorStore's threads after Orbax has raised and again
when the garbage collector finalises the abandoned operations, at a random
later moment (CI caught both in the next command), and absl logs its own
errors: noise after a clear error. :func:`call_quietly` captures file
descriptor 2 around such a call and drops it when the call fails.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from typing import Any, Callable


def call_quietly(fn: Callable[[], Any], *, replay: bool = True) -> tuple[Any, str | None]:
    """``(fn(), None)``, or ``(None, the first line of its exception)``, with file descriptor 2 captured.

    What ``fn`` printed to file descriptor 2 is replayed when it succeeds (with
    ``replay``) and dropped when it fails. On an error the exception is let go (it holds the
    abandoned operations), they are collected, and the capture must be quiet for
    a moment (at most 2 s) before file descriptor 2 is given back. Hence an
    error string here, not an exception chained to Orbax's.
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
                error = first_line(e)
            settle(capture)  # `e` and its traceback are gone: the abandoned operations can be collected
            return None, error
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read()
                if error is None and replay and text:
                    os.write(2, text)


def settle(capture: Any, quiet: float = 0.25, limit: float = 2.0) -> None:
    """Collects garbage until nothing new reaches the file ``capture`` for ``quiet`` s (at most ``limit`` s)."""
    deadline, size = time.monotonic() + limit, -1
    while time.monotonic() < deadline:
        gc.collect()
        now = os.fstat(capture.fileno()).st_size
        if now == size:
            return
        size = now
        time.sleep(quiet)


def first_line(e: BaseException) -> str:
    """The first line of ``str(e)`` (at most 300 characters), or the exception's type name."""
    return str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
