"""The two reasons a pruning event is reverted: the accuracy guard and divergence.

`AccuracyGuard` judges an event by its validation error against that of the model
before any pruning; `loss_diverged` and `weights_diverged` detect a loss or weights
that became NaN or Inf while retraining. `IterativePruning` asks both when an event
closes and reverts the event if either says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from keras_prune.errors import InputError
from keras_prune.training import Evaluation

__all__ = ["AccuracyGuard", "check_tradeoff", "loss_diverged", "weights_diverged"]


def check_tradeoff(tradeoff: float | None) -> float | None:
    """`tradeoff` if it is None (no guard) or >= 0 percentage points.

    Raises:
        InputError: a negative or NaN trade-off.
    """
    if tradeoff is not None and not tradeoff >= 0:
        raise InputError(f"the accuracy trade-off must be >= 0 percentage points, got {tradeoff}")
    return tradeoff


@dataclass
class AccuracyGuard:
    """Rejects an event that costs more validation accuracy than a trade-off allows.

    Attributes:
        tradeoff: the most validation error, in percentage points above the
            baseline's, an event may leave; None: the guard is off (costs are still
            measured).
        baseline: the model's validation measure before any pruning; set it
            before judging.

    Raises:
        InputError: a negative trade-off.

    Example:

    ```python
    guard = AccuracyGuard(tradeoff=0.5, baseline=Evaluation(loss=0.03, error=0.9))
    cost = guard.cost(Evaluation(loss=0.05, error=1.6))  # 0.7 points
    guard.rejects(cost)                                   # True
    ```
    """

    tradeoff: float | None = None
    baseline: Evaluation | None = None

    def __post_init__(self):
        check_tradeoff(self.tradeoff)

    def cost(self, validation: Evaluation | None) -> float | None:
        """Validation error of `validation` minus the baseline's, in percentage points.

        Args:
            validation: the measure after the event; None without validation data.

        Returns:
            The cost, or None when there is no measure.
        """
        if validation is None:
            return None
        if self.baseline is None:
            raise InputError("the accuracy guard has no baseline: measure the model before pruning first")
        return validation.error - self.baseline.error

    def rejects(self, cost: float | None) -> bool:
        """Whether an event of this `cost` must be reverted (never with the guard off)."""
        return self.tradeoff is not None and cost is not None and cost > self.tradeoff


def loss_diverged(logs: Mapping[str, Any] | None) -> bool:
    """Whether the ``loss`` of Keras epoch logs is NaN or Inf (False without a loss)."""
    loss = (logs or {}).get("loss")
    return loss is not None and not np.isfinite(float(loss))


def weights_diverged(variables: Sequence[keras.Variable]) -> bool:
    """Whether any of `variables` holds a NaN or Inf.

    The loss alone does not tell: max-pooling can hide NaN weights from it (oneDNN
    drops NaN).
    """
    return not all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in variables)
