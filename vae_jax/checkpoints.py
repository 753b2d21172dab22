"""Orbax checkpoints of a training run: one per epoch, keeping the latest and the best.

A run's ``checkpoints/`` folder holds Orbax step folders named by the number
of completed epochs. Each holds the whole :class:`vae_jax.training.TrainState`
(parameters, optimiser state, step, hparams) and, as JSON, the per-epoch
metrics so far. Orbax writes a step into a temporary folder and renames it
when complete, so a process killed mid-write leaves the previous checkpoints
intact (the half-written folder is ignored and cleaned up on the next open).
Retention: the latest checkpoint (to resume) and the best by a validation
metric (to evaluate), via ``CheckpointManager``'s ``best_fn`` and a
``LatestN(1) | BestN(1)`` preservation policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from vae_jax.training import TrainState

Which = Literal["latest", "best"]


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, empty or unreadable (the message names it)."""


class RunCheckpoints:
    """The checkpoints of one run in ``directory``, ranked by ``metrics[metric]`` (higher is better).

    Args:
      directory: the checkpoint folder (created if ``create``).
      metric: name of the metric that ranks checkpoints, e.g. ``"validation_elbo"``.
      create: create ``directory`` if missing; otherwise a missing folder raises.

    Raises:
      CheckpointError: ``directory`` does not exist and ``create`` is False.
    """

    def __init__(self, directory: str | Path, *, metric: str, create: bool = False):
        self.directory = Path(directory).absolute()
        if not create and not self.directory.is_dir():
            raise CheckpointError(f"No checkpoint folder {str(self.directory)!r}; train a run there first "
                                  "(vae-jax train --out RUN).")
        self.metric = metric
        rank = lambda m: float(m[metric])  # noqa: E731
        options = ocp.CheckpointManagerOptions(
            best_fn=rank, best_mode="max", create=create, enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
            preservation_policy=policies.AnyPreservationPolicy(
                [policies.LatestN(n=1), policies.BestN(get_metric_fn=rank, n=1)]))
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def __enter__(self) -> "RunCheckpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Waits for pending writes and releases Orbax's resources."""
        self._manager.close()

    @property
    def latest_epoch(self) -> int | None:
        """Completed epochs of the newest checkpoint, or None when there is none."""
        return self._manager.latest_step()

    @property
    def best_epoch(self) -> int | None:
        """Completed epochs of the checkpoint with the highest metric, or None."""
        return self._manager.best_step()

    def save(self, epoch: int, state: TrainState, *, history: list[dict[str, float]]) -> None:
        """Writes ``state`` after ``epoch`` completed epochs, atomically.

        Args:
          epoch: number of completed epochs (the Orbax step), ``>= 1``.
          state: the train state to save.
          history: one dict of floats per completed epoch; ``history[-1]`` must
            hold the ranking metric.
        """
        if len(history) != epoch or self.metric not in history[-1]:
            raise ValueError(f"history must hold {epoch} epochs, the last with {self.metric!r}.")
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history))
        self._manager.save(epoch, args=args, metrics={self.metric: history[-1][self.metric]})

    def restore(self, template: TrainState, *, which: Which = "latest"
                ) -> tuple[TrainState, list[dict[str, float]]]:
        """The saved state and history, with ``template``'s structure, dtypes and optimiser.

        Args:
          template: a state of the same model and optimiser (e.g. freshly created);
            only its structure, shapes and dtypes are used.
          which: ``"latest"`` (to resume) or ``"best"`` (by the metric).

        Returns:
          ``(state, history)``; the arrays equal the saved ones bitwise.

        Raises:
          CheckpointError: there is no checkpoint, or it cannot be read.
        """
        epoch = self.latest_epoch if which == "latest" else self.best_epoch
        if epoch is None:
            raise CheckpointError(f"No checkpoint in {str(self.directory)!r} (an interrupted first epoch "
                                  "leaves none; train again).")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore())
        try:
            restored = self._manager.restore(epoch, args=args)
            state, history = restored.state, list(restored.history)
            _check_same_structure(state, template)
        except Exception as e:  # Orbax raises many types for damaged files
            message = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            raise CheckpointError(f"Checkpoint {str(self.directory / str(epoch))!r} is corrupt or does not "
                                  f"match this model ({message}).") from e
        return state, history


def _check_same_structure(state: Any, template: Any) -> None:
    shapes = lambda tree: [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]  # noqa: E731
    if jax.tree.structure(state) != jax.tree.structure(template) or shapes(state) != shapes(template):
        raise ValueError("the restored arrays have another structure or shape")
