"""Logs of pruning runs: a CSV, JSON lines, the run's options, TensorBoard scalars.

`RunLog` writes, in its folder, for a job id ``JOB``:

- ``JOB.csv``: one row per layer and step. The first three columns are the original
  tool's plotlog (``LayerNo,Retained%,TestError``: layer index, share of weights
  retained 0..1, error in percent), so its plotting scripts read it; the third column
  is ``TestError`` when test data was measured, else ``ValError`` (decisions use the
  validation split; the test split is measured only when asked). More columns follow:
  ``Step,Layer,Fraction,ValLoss,ValAccuracy,Seconds,Outcome`` (``kept`` or
  ``reverted``). A layer that the accuracy guard stops gets the original's
  ``LayerNo,stop`` row.
- ``JOB.jsonl``: the same events with everything, one JSON object a line
  (`keras_prune.results.StepResult.to_record`, plus the ``time`` it was written).
- ``JOB.options.json``: the run's options, written when the log is opened.

Every write replaces the whole file atomically (`keras_prune.storage`), so a file on
disk is always complete, even if the run is interrupted.

`TensorBoardLog` writes per-layer sparsity and the validation (and test) figures of
each event, and `fit`'s training curves, as TensorBoard scalars.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any, Mapping

import keras
import numpy as np

from keras_prune.errors import InputError
from keras_prune.results import StepResult
from keras_prune.storage import atomic_write_text, make_folder

CSV_COLUMNS = ("Step", "Layer", "Fraction", "ValLoss", "ValAccuracy", "Seconds", "Outcome")
"""The CSV columns after the original's three."""


def layer_label(result: StepResult) -> str:
    """The ``LayerNo`` of a result: its 1-based index, or its name inside a nested model."""
    return str(result.index) if result.index is not None else result.layer


def _number(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}g}"


class RunLog:
    """Writes a run's CSV, JSON lines and options into a folder.

    Args:
        log_dir: the folder; created if missing.
        job_id: prefix of the file names (the original's ``-jobID``).
        options: the run's options, saved as ``<job_id>.options.json``.
        test_error: whether the results carry test figures (third CSV column
            ``TestError``) or not (``ValError``).

    Example:

    ```python
    log = RunLog("logs", "fc1-sweep", options={"layers": "8", "fraction": 0.9})
    IterativePruning({8: 0.9}, Linear(10), validation_data=val, on_step=log.write)
    ```
    """

    def __init__(
        self,
        log_dir: str | Path,
        job_id: str = "localMain",
        options: Mapping[str, Any] | None = None,
        test_error: bool = False,
    ):
        if not job_id or any(c in job_id for c in "/\\") or job_id in (".", ".."):
            raise InputError(f"job id must be a plain file name prefix, got '{job_id}'")
        self.log_dir = make_folder(log_dir, "log folder")
        self.job_id = job_id
        self.test_error = test_error
        self.csv_path = self.log_dir / f"{job_id}.csv"
        self.jsonl_path = self.log_dir / f"{job_id}.jsonl"
        self.options_path = self.log_dir / f"{job_id}.options.json"
        self._rows: list[list[str]] = []
        self._lines: list[str] = []
        record = {"job_id": job_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": dict(options or {})}
        atomic_write_text(self.options_path, json.dumps(record, indent=2, default=str) + "\n")
        self._flush()

    @property
    def header(self) -> list[str]:
        """The CSV header row."""
        error = "TestError" if self.test_error else "ValError"
        return ["LayerNo", "Retained%", error, *CSV_COLUMNS]

    def write(self, result: StepResult) -> None:
        """Adds one result to the CSV and the JSON lines (and a stop row if reverted).

        Args:
            result: a layer's step, as `IterativePruning` reports it.
        """
        split = result.test if self.test_error else result.validation
        validation = result.validation
        self._rows.append(
            [
                layer_label(result),
                _number(result.retained, 8),
                _number(None if split is None else split.error),
                str(result.step),
                result.layer,
                _number(result.fraction, 8),
                _number(None if validation is None else validation.loss),
                _number(None if validation is None else 100.0 - validation.error),
                f"{result.seconds:.2f}",
                "reverted" if result.reverted else "kept",
            ]
        )
        if result.reverted:
            self._rows.append([layer_label(result), "stop"] + [""] * (len(self.header) - 2))
        self._lines.append(json.dumps({**result.to_record(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        self._flush()

    def _flush(self) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self._rows)
        atomic_write_text(self.csv_path, buffer.getvalue())
        atomic_write_text(self.jsonl_path, "".join(line + "\n" for line in self._lines))


class TensorBoardLog(keras.callbacks.Callback):
    """Writes pruning events and training curves as TensorBoard scalars.

    Use its `write` as an ``on_step`` listener and pass it to `fit` as a callback:

    - ``DIR/pruning``: for each event, ``sparsity/<layer>`` (1 - retained; not
      written for a reverted step), ``validation/loss``, ``validation/accuracy`` and,
      with test figures, ``test/error``; the x-axis counts events in the order they
      closed.
    - ``DIR/train``: every number in `fit`'s epoch logs (loss, accuracy, ...), by epoch.

    The scalars are written with `tf.summary.scalar`; view them with
    ``tensorboard --logdir DIR``.

    Args:
        log_dir: the TensorBoard folder.

    Example:

    ```python
    board = TensorBoardLog("tb")
    pruning = IterativePruning({8: 0.9}, Linear(10), validation_data=val, on_step=board.write)
    model.fit(x, y, epochs=pruning.planned_epochs, callbacks=[pruning, board])
    ```
    """

    def __init__(self, log_dir: str | Path):
        import tensorflow as tf

        super().__init__()
        self.log_dir = Path(log_dir)
        self._pruning = tf.summary.create_file_writer(str(self.log_dir / "pruning"))
        self._train = tf.summary.create_file_writer(str(self.log_dir / "train"))
        self._count = 0

    def write(self, result: StepResult) -> None:
        """Writes one result's scalars and flushes.

        Args:
            result: a layer's step.
        """
        self._count += 1
        values = {}
        if not result.reverted:
            values[f"sparsity/{result.layer}"] = 1.0 - result.retained
        if result.validation is not None:
            values["validation/loss"] = result.validation.loss
            values["validation/accuracy"] = 100.0 - result.validation.error
        if result.test is not None:
            values["test/error"] = result.test.error
        _write_scalars(self._pruning, values, self._count)

    def on_epoch_end(self, epoch, logs=None):
        numbers = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        _write_scalars(self._train, numbers, epoch + 1)

    def on_train_end(self, logs=None):
        self._train.flush()
        self._pruning.flush()


def _write_scalars(writer, values: Mapping[str, float], step: int) -> None:
    """Writes float scalars with `tf.summary.scalar` and flushes."""
    import tensorflow as tf

    with writer.as_default(step=step):
        for tag, value in values.items():
            tf.summary.scalar(tag, float(value))
    writer.flush()
