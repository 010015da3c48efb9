"""What a pruning event reports: `StepResult`, and its one serialisation.

A `StepResult` is written in one form only, `StepResult.to_record` (a JSON-ready
dict), and read back by `StepResult.from_record`. Run logs (``JOB.jsonl``,
`keras_prune.runlog`) and checkpoints (`keras_prune.checkpoint`) both store that
form, so a result read back from either equals the one that was written.

This module imports no callback: runlog, checkpoint and sensitivity use it on their own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from keras_prune.training import Evaluation
from keras_prune.wrapper import PruneWrapper

__all__ = ["StepResult", "mask_digest"]


@dataclass(frozen=True)
class StepResult:
    """One layer's pruning event, as reported and logged.

    Attributes:
        step: the schedule step, 1-based.
        index: the layer's 1-based index in the model (None inside a nested model).
        layer: the layer's name.
        fraction: the fraction this step pruned the layer to.
        retained: share of the layer's weights left after this step's pruning.
        validation: validation loss and error when the event closed (after
            retraining); None without validation data.
        test: test loss and error, only when test data was given (reporting only).
        seconds: wall time from the pruning to the close of the event.
        cost: validation error after the event minus that of the model before any
            pruning, in percentage points; None without validation data.
        reverted: the event was reverted (by the accuracy guard, or because the
            loss became NaN or Inf); the layer is pruned no further and holds the
            masks it had before.
        mask_digest: SHA-1 of the layer's masks after the event (after a revert, the
            restored masks): equal digests mean identical masks.
        diverged: the loss or a weight became NaN or Inf while retraining after
            this event.

    Example:

    ```python
    record = result.to_record()            # what run logs and checkpoints store
    assert StepResult.from_record(record) == result
    ```
    """

    step: int
    index: int | None
    layer: str
    fraction: float
    retained: float
    validation: Evaluation | None
    test: Evaluation | None
    seconds: float
    cost: float | None = None
    reverted: bool = False
    mask_digest: str = ""
    diverged: bool = False

    def to_record(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (errors and accuracies in percent).

        Returns:
            Every field; evaluations as ``{"loss", "error", "accuracy"}``, and
            ``outcome`` (``"kept"`` or ``"reverted"``) in place of `reverted`.
        """
        return {
            "step": self.step,
            "index": self.index,
            "layer": self.layer,
            "fraction": self.fraction,
            "retained": self.retained,
            "validation": _evaluation_record(self.validation),
            "test": _evaluation_record(self.test),
            "cost": self.cost,
            "outcome": "reverted" if self.reverted else "kept",
            "diverged": self.diverged,
            "seconds": self.seconds,
            "mask_digest": self.mask_digest,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "StepResult":
        """The inverse of `to_record` (keys it does not write, such as a log's ``time``, are ignored).

        Args:
            record: a dict `to_record` returned, possibly read back from JSON.

        Returns:
            The result.

        Raises:
            KeyError, TypeError, ValueError: `record` is not such a dict.
        """
        return cls(
            step=int(record["step"]),
            index=record["index"],
            layer=record["layer"],
            fraction=record["fraction"],
            retained=record["retained"],
            validation=_evaluation(record["validation"]),
            test=_evaluation(record["test"]),
            seconds=record["seconds"],
            cost=record["cost"],
            reverted=record["outcome"] == "reverted",
            mask_digest=record["mask_digest"],
            diverged=bool(record["diverged"]),
        )


def _evaluation_record(evaluation: Evaluation | None) -> dict[str, float] | None:
    if evaluation is None:
        return None
    return {"loss": evaluation.loss, "error": evaluation.error, "accuracy": 100.0 - evaluation.error}


def _evaluation(record: Mapping[str, float] | None) -> Evaluation | None:
    return None if record is None else Evaluation(loss=record["loss"], error=record["error"])


def mask_digest(layer: PruneWrapper) -> str:
    """SHA-1 of a wrapped layer's masks (as 0/1 bytes), to compare masks cheaply.

    Args:
        layer: a built `PruneWrapper`.

    Returns:
        40 hex digits.

    Example:

    ```python
    assert mask_digest(model_a.get_layer("fc1")) == mask_digest(model_b.get_layer("fc1"))
    ```
    """
    digest = hashlib.sha1()
    for mask in layer.mask_arrays():
        digest.update(np.asarray(mask != 0, np.uint8).tobytes())
    return digest.hexdigest()
