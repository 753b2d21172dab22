"""Hooks for :func:`vae_jax.training.fit`: validation, early stopping, time limit, checkpoints.

The run folder's logs (``CSVLog``) are in :mod:`vae_jax.runs`, with its atomic writers.

A hook is any callable ``hook(epoch, state, history) -> str | None`` run after
each epoch, with ``epoch`` the number of completed epochs and ``history[-1]``
that epoch's row (a dict). It may add entries to the row (validation metrics)
and stops training by returning the reason as a string. Hooks run in the order
given, so put the ones that add metrics before the ones that read them.

Every hook here is stateless across processes (it reads what it needs from
``history``), so a run resumed from a checkpoint stops exactly where an
uninterrupted one would (:class:`TimeLimit` counts this process's time only).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from vae_jax import evaluation
from vae_jax._checks import check_positive_int


class Validate:
    """Adds ``{prefix}{name}`` for every metric of :func:`vae_jax.evaluation.evaluate` on ``data``.

    Args:
      objective: per-example ``(params, key, x, **hparams) -> (value, aux)``.
      data: ``[N, H, W, C]`` validation inputs (binarised as the model expects).
      key: evaluation key; epoch ``e`` uses ``fold_in(key, e - 1)`` (or ``key`` itself
        every epoch with ``same_draws=True``: common random numbers, so two epochs
        differ by their parameters only).
      hparams: forwarded to the objective (e.g. ``{"beta": 1.0}``).
      prefix: prepended to each metric name.
      same_draws: reuse ``key`` every epoch.
    """

    def __init__(self, objective: Callable, data: Any, key: jax.Array, *, hparams: Mapping[str, Any] | None = None,
                 prefix: str = "validation_", same_draws: bool = False, batch_size: int = 500):
        self.objective, self.key, self.hparams = objective, key, dict(hparams or {})
        self.data = evaluation.as_device_data(data)
        self.prefix, self.same_draws, self.batch_size = prefix, same_draws, batch_size

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> None:
        key = self.key if self.same_draws else jax.random.fold_in(self.key, epoch - 1)
        values = evaluation.evaluate(self.objective, state.params, self.data, key, hparams=self.hparams,
                                     batch_size=self.batch_size, check=False)
        history[-1].update({f"{self.prefix}{k}": v for k, v in values.items()})


class EarlyStopping:
    """Stops when ``metric`` has not improved for ``patience`` epochs.

    Args:
      metric: a key of the history rows (e.g. ``"validation_elbo"``).
      patience: epochs without a new best before stopping, ``>= 1``.
      mode: ``"max"`` (higher is better: bounds) or ``"min"`` (losses).
      count_from: epochs before which patience does not run down: the count starts at the
        later of the best epoch and ``count_from`` (e.g. the end of a KL warm-up, as in the
        VampPrior authors' code, whose counter is reset during the warm-up).
    """

    def __init__(self, metric: str, *, patience: int, mode: str = "max", count_from: int = 0):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}.")
        self.metric, self.patience, self.mode = metric, check_positive_int(patience, "patience"), mode
        self.count_from = count_from

    def best(self, history: list[dict]) -> dict:
        """The row with the best value of the metric (the first of equals)."""
        sign = 1.0 if self.mode == "max" else -1.0
        return max(history, key=lambda row: sign * row[self.metric])

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> str | None:
        if not history:
            return None
        best = self.best(history)
        if epoch - max(best["epoch"], self.count_from) >= self.patience:
            return (f"early stopping: no better {self.metric} in {self.patience} epochs "
                    f"(best {best[self.metric]:.4f} at epoch {best['epoch']})")
        return None


class TimeLimit:
    """Stops once this process has trained for ``minutes`` (wall clock, from the hook's creation)."""

    def __init__(self, minutes: float):
        if not (isinstance(minutes, (int, float)) and np.isfinite(minutes) and minutes > 0):
            raise ValueError(f"minutes must be a finite number > 0; got {minutes!r}.")
        self.minutes, self.start = float(minutes), time.perf_counter()

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> str | None:
        elapsed = (time.perf_counter() - self.start) / 60
        return f"time limit: {elapsed:.1f} of {self.minutes:g} minutes" if elapsed >= self.minutes else None


class RequireFinite:
    """Raises ``FloatingPointError`` naming the epoch if any of ``metrics`` in the row is not finite."""

    def __init__(self, *metrics: str, message: str = ""):
        self.metrics, self.message = metrics, message

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> None:
        bad = [m for m in self.metrics if not np.all(np.isfinite(history[-1][m]))]
        if bad:
            raise FloatingPointError(f"Non-finite {', '.join(bad)} after epoch {epoch}. {self.message}".strip())


class Checkpoint:
    """Saves the state and history every epoch to ``checkpoints`` (a :class:`vae_jax.checkpoints.RunCheckpoints`)."""

    def __init__(self, checkpoints: Any):
        self.checkpoints = checkpoints

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> None:
        self.checkpoints.save(epoch, state, history=history)


class Uninterrupted:
    """Runs ``hooks`` in order with Ctrl-C held back until the last has returned.

    Wrap the hooks that must agree with each other, e.g. the checkpoint and the
    logs that record it: a SIGINT that arrives while they run is delivered right
    after them, so an interrupted run never has a checkpoint its logs do not know
    about (nor the reverse). Returns the last stop reason any of them gave, as
    :func:`vae_jax.training.fit` keeps the last.
    Outside the main thread, where Python cannot hold back signals, or where
    SIGINT's handler was not set from Python (it could not be put back), the
    hooks simply run.
    """

    def __init__(self, *hooks: Callable[..., str | None]):
        self.hooks = hooks

    def __call__(self, epoch: int, state: Any, history: list[dict]) -> str | None:
        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
            return self._run(epoch, state, history)
        held: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        try:
            return self._run(epoch, state, history)
        finally:
            signal.signal(signal.SIGINT, previous)
            if held:  # deliver it now, to whatever handled SIGINT before
                if callable(previous):
                    previous(signal.SIGINT, None)
                elif previous != signal.SIG_IGN:
                    os.kill(os.getpid(), signal.SIGINT)

    def _run(self, epoch: int, state: Any, history: list[dict]) -> str | None:
        reasons = [hook(epoch, state, history) for hook in self.hooks]
        return next((r for r in reversed(reasons) if r), None)
