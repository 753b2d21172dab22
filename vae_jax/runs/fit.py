"""ONE resumable fit: restore the latest checkpoint, train with the run's hooks, restore the best."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax

from vae_jax import hooks, training
from vae_jax._quiet import first_line
from vae_jax.checkpoints import CheckpointError, RunCheckpoints
from vae_jax.runs.folder import RunFolder


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

