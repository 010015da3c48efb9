"""TensorBoard scalars: written with tf.summary, read back the way TensorBoard reads them."""

from __future__ import annotations

import pytest

from keras_prune.results import StepResult
from keras_prune.runlog import TensorBoardLog
from keras_prune.training import Evaluation


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    accumulator_module = pytest.importorskip("tensorboard.backend.event_processing.plugin_event_accumulator")
    import tensorflow as tf

    accumulator = accumulator_module.EventAccumulator(str(folder))
    accumulator.Reload()
    found = {}
    for tag in accumulator.Tags()["tensors"]:
        assert accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "scalars", tag
        found[tag] = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
    return found


def test_pruning_events_and_training_curves_are_tensorboard_scalars(tmp_path):
    board = TensorBoardLog(tmp_path)
    board.write(StepResult(1, 8, "fc1", 0.9, 0.1, Evaluation(0.25, 1.5), Evaluation(0.3, 2.0), 1.0))
    board.write(StepResult(1, 10, "fc2", 0.7, 0.3, Evaluation(0.5, 4.0), None, 1.0, reverted=True))
    board.on_epoch_end(0, {"loss": 0.75, "accuracy": 0.5})
    board.on_train_end()

    pruning = _scalars(tmp_path / "pruning")
    assert pruning["sparsity/fc1"] == [(1, pytest.approx(0.9))]
    assert "sparsity/fc2" not in pruning  # a reverted step prunes nothing
    assert pruning["validation/loss"] == [(1, 0.25), (2, 0.5)]
    assert pruning["validation/accuracy"] == [(1, 98.5), (2, 96.0)]
    assert pruning["test/error"] == [(1, 2.0)]
    assert _scalars(tmp_path / "train") == {"loss": [(1, 0.75)], "accuracy": [(1, 0.5)]}
