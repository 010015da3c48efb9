"""The state `IterativePruning` keeps, saves and restores.

- `snapshot` / `restore` and `TrainingState`: the values of the model's and the
  optimizer's variables, taken before an event and put back, bit for bit, when the
  event is reverted (or, with ``reload``, at every step).
- `prune_on_replicas` / `measure_on_replicas`: under a tf.distribute strategy, the
  first replica's masks and measures, sent to every replica and worker, so all hold
  the same masks and take the same decisions.
- `EventCursor`: where the schedule is: the next event and the layers stopped.
- `PruningState`: what a checkpoint keeps to continue a schedule (`IterativePruning.state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from keras_prune.api import Selector, prune_with, wrapped_layers
from keras_prune.devices import broadcast_first, is_distributed, strategy_of
from keras_prune.results import StepResult
from keras_prune.settings import PruneOptions
from keras_prune.training import Evaluation
from keras_prune.wrapper import PruneWrapper

__all__ = ["EventCursor", "PruningState", "TrainingState", "measure_on_replicas", "prune_on_replicas", "restore", "snapshot"]


def snapshot(variables: Sequence[keras.Variable]) -> list[np.ndarray]:
    """Copies of the variables' values, for `restore`.

    Args:
        variables: Keras variables (model and optimizer variables).

    Returns:
        One numpy array per variable.
    """
    return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in variables]


def restore(variables: Sequence[keras.Variable], values: Sequence[np.ndarray]) -> None:
    """Assigns values taken by `snapshot` back to the same variables, bit for bit.

    Args:
        variables: the variables `snapshot` was taken of, in the same order.
        values: what `snapshot` returned.
    """
    if len(variables) != len(values):
        raise ValueError(f"snapshot of {len(values)} variables cannot restore {len(variables)}")
    for variable, value in zip(variables, values):
        variable.assign(value)


class TrainingState:
    """Every variable of a model and its optimizer (weights, masks, gates, statistics,
    iteration count, momentum and other slots), saved and restored together.

    Args:
        model: the model.
        optimizer: its optimizer, or None.

    Example:

    ```python
    state = TrainingState(model, model.optimizer)
    saved = state.save()
    model.fit(x, y)
    state.restore(saved)  # as if fit had never run
    ```
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer | None):
        self.model = model
        self.optimizer = optimizer

    @property
    def variables(self) -> list[keras.Variable]:
        """The model's variables, then the optimizer's."""
        optimizer_variables = list(self.optimizer.variables) if self.optimizer is not None else []
        return list(self.model.variables) + optimizer_variables

    def save(self) -> list[np.ndarray]:
        """The values of `variables` now."""
        return snapshot(self.variables)

    def restore(self, saved: Sequence[np.ndarray]) -> None:
        """Puts back values `save` returned."""
        restore(self.variables, saved)


def prune_on_replicas(
    model: keras.Model, targets: Mapping[Selector, float], options: PruneOptions, data: Any = None
) -> None:
    """`keras_prune.api.prune_with`, leaving every replica and worker with the first
    replica's masks (each may choose others: a criterion scores on its own batches).

    Args:
        model: the wrapped model, built under its distribution strategy.
        targets: selector -> fraction, as `keras_prune.prune` takes them.
        options: the prune step's options.
        data: scoring or calibration batches, where the pruner needs them.
    """
    strategy = strategy_of(model)
    if not is_distributed(strategy):
        prune_with(model, targets, options, data)
        return
    # set_mask zeroes weights at once, so go back to the weights before pruning,
    # identical everywhere, and apply the first replica's masks.
    held = [v for layer in wrapped_layers(model) for v in [*layer.pruned_variables, *layer.masks]]
    before = snapshot(held)
    pruned = prune_with(model, targets, options, data)
    chosen = {id(layer): broadcast_first(strategy, layer.mask_arrays()) for layer in pruned}
    restore(held, before)
    for layer in pruned:
        layer.set_mask(chosen[id(layer)])


def measure_on_replicas(evaluate: Callable[[keras.Model], Evaluation], model: keras.Model) -> Evaluation:
    """``evaluate(model)``, the first replica's figures on every replica and worker."""
    result = evaluate(model)
    strategy = strategy_of(model)
    if is_distributed(strategy):
        loss, error = broadcast_first(strategy, [np.array([result.loss, result.error], np.float64)])[0]
        result = Evaluation(loss=float(loss), error=float(error))
    return result


class EventCursor:
    """Where a schedule is: the next event, and the layers pruned no further.

    Events run step by step (1..`steps`); within a step, group by group. A group's
    stopped layers are skipped, and a group with none left is skipped whole.

    Args:
        steps: the schedule's number of steps.
        groups: the layers pruned together in one event, in order.
        position: (step, group number) of the next event to look at.
        stopped: layers pruned no further.
    """

    def __init__(
        self,
        steps: int,
        groups: Sequence[Sequence[PruneWrapper]],
        position: tuple[int, int] = (1, 0),
        stopped: Sequence[PruneWrapper] = (),
    ):
        self.steps = steps
        self.groups = [list(group) for group in groups]
        self.position = tuple(position)
        self._stopped = {id(layer) for layer in stopped}

    def is_stopped(self, layer: PruneWrapper) -> bool:
        """Whether `layer` is pruned no further."""
        return id(layer) in self._stopped

    def stop(self, layers: Sequence[PruneWrapper]) -> None:
        """Prunes `layers` no further."""
        self._stopped.update(id(layer) for layer in layers)

    def peek(self) -> tuple[int, list[PruneWrapper]] | None:
        """The next event (step, active layers), or None when there is none."""
        found = self._find()
        return None if found is None else (found[0], found[2])

    def advance(self) -> tuple[int, list[PruneWrapper]]:
        """The next event (step, active layers); moves past it."""
        step, group, active = self._find()
        self.position = (step, group + 1)
        return step, active

    def _find(self) -> tuple[int, int, list[PruneWrapper]] | None:
        step, group = self.position
        while step <= self.steps:
            while group < len(self.groups):
                active = [layer for layer in self.groups[group] if not self.is_stopped(layer)]
                if active:
                    return step, group, active
                group += 1
            step, group = step + 1, 0
        return None


@dataclass(frozen=True)
class PruningState:
    """What a checkpoint keeps to continue a schedule later.

    Attributes:
        cursor: the `EventCursor` position of the next event.
        current_step: the step of the last event started, or None.
        stopped: names of the layers pruned no further.
        baseline: the validation measure of the model before any pruning.
        results: the results so far.

    Example:

    ```python
    record = pruning.state()                          # PruningState(...).to_json()
    assert PruningState.from_json(record).to_json() == record
    ```
    """

    cursor: tuple[int, int]
    current_step: int | None
    stopped: tuple[str, ...]
    baseline: Evaluation | None
    results: tuple[StepResult, ...]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (results as `StepResult.to_record`)."""
        return {
            "cursor": list(self.cursor),
            "current_step": self.current_step,
            "stopped": list(self.stopped),
            "baseline": None if self.baseline is None else {"loss": self.baseline.loss, "error": self.baseline.error},
            "results": [result.to_record() for result in self.results],
        }

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> "PruningState":
        """The inverse of `to_json`."""
        baseline = record["baseline"]
        return cls(
            cursor=tuple(record["cursor"]),
            current_step=record["current_step"],
            stopped=tuple(record["stopped"]),
            baseline=None if baseline is None else Evaluation(loss=baseline["loss"], error=baseline["error"]),
            results=tuple(StepResult.from_record(r) for r in record["results"]),
        )
