"""NaN or Inf during retraining: the step is reverted and said so; no NaN is ever saved."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.data import Dataset
from keras_prune.callbacks import IterativePruning
from keras_prune.errors import NumericalError
from keras_prune.experiment import RunSettings, run_pruning
from keras_prune.plan import Plan
from keras_prune.runlog import RunLog
from keras_prune.schedules import Linear
from keras_prune.storage import save_model
from keras_prune.training import compile_classifier
from keras_prune_cli.main import main


def _with_a_nan_image(data: Dataset) -> Dataset:
    """The same data as float images, one training image all NaN (a corrupt record)."""
    x_train = data.x_train.astype("float32") / 255
    x_train[700] = np.nan
    return dataclasses.replace(data, x_train=x_train, x_val=data.x_val.astype("float32") / 255,
                               x_test=data.x_test.astype("float32") / 255)


def test_a_diverging_step_is_reverted_to_the_state_before_it(trained_lenet5, small_data):
    model = kp.load_model(trained_lenet5)
    before = {v.path: v.numpy().copy() for v in model.weights}
    settings = RunSettings(retrain=True, epochs=1, batch_size=64)
    pruned, results = run_pruning(model, Plan((12,), (0.5,)), _with_a_nan_image(small_data), settings)
    (result,) = results
    assert result.diverged and result.reverted
    fc3 = pruned.get_layer("fc3")
    assert fc3.pruned_count() == 0  # the masks from before the step
    np.testing.assert_array_equal(fc3.layer.kernel.numpy(), before["fc3/kernel"])
    for variable in pruned.weights:
        assert np.isfinite(variable.numpy()).all(), variable.path


def test_the_cli_says_a_step_diverged(trained_lenet5, small_data, tmp_path, monkeypatch):
    monkeypatch.setattr("keras_prune.data.load_dataset", lambda **_: _with_a_nan_image(small_data))
    out = tmp_path / "x.keras"
    result = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "-l", "12", "-p", "0.5", "--retrain",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "reverted: the loss or the weights became NaN or Inf while retraining; Layer12" in result.output
    assert kp.load_model(out).get_layer("fc3").pruned_count() == 0


def test_a_model_holding_nan_is_never_saved(tmp_path):
    model = kp.models.lenet_300_100()
    kernel = model.get_layer("fc2").kernel
    kernel.assign(np.where(np.arange(kernel.shape[1]) == 3, np.nan, kernel.numpy()))
    path = tmp_path / "nan.keras"
    with pytest.raises(NumericalError, match="NaN or Inf in lenet_300_100/fc2/kernel") as info:
        save_model(model, path)
    assert info.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_a_diverged_layer_is_pruned_no_further_while_the_others_go_on(trained_lenet5, small_data, tmp_path):
    """Three linear steps of fc3 and fc2; retraining after fc3's first step diverges."""
    model = kp.prunable(kp.load_model(trained_lenet5), [10, 12])
    compile_classifier(model, lr=0.01, momentum=0.9)
    log = RunLog(tmp_path, "nan")
    pruning = IterativePruning({12: 0.5, 10: 0.6}, Linear(3), validation_data=small_data.validation(), on_step=log.write)
    # A custom loop (docs/iterative.md) that trains nothing: only the epoch losses matter here.
    pruning.set_model(model)
    pruning.on_train_begin()
    for epoch in range(pruning.planned_epochs):
        pruning.on_epoch_begin(epoch)
        pruning.on_epoch_end(epoch, {"loss": float("nan") if epoch == 0 else 0.1})
    pruning.on_train_end()
    assert [(r.step, r.layer, r.fraction, r.reverted, r.diverged) for r in pruning.results] == [
        (1, "fc3", 0.5 / 3, True, True),
        (1, "fc2", pytest.approx(0.2), False, False),
        (2, "fc2", pytest.approx(0.4), False, False),
        (3, "fc2", pytest.approx(0.6), False, False),
    ]
    assert pruning.stopped == ["fc3"] and pruning.done
    assert model.get_layer("fc3").pruned_count() == 0
    assert model.get_layer("fc2").pruned_count() == 6048
    records = [json.loads(line) for line in log.jsonl_path.read_text().splitlines()]
    assert [(r["layer"], r["outcome"], r["diverged"]) for r in records] == [
        ("fc3", "reverted", True), ("fc2", "kept", False), ("fc2", "kept", False), ("fc2", "kept", False)]


def test_run_stops_each_layer_whose_retraining_diverges_and_logs_it(trained_lenet5, small_data, tmp_path, monkeypatch):
    # A NaN image in every epoch: every step diverges, so each layer is tried once.
    monkeypatch.setattr("keras_prune.data.load_dataset", lambda **_: _with_a_nan_image(small_data))
    out = tmp_path / "x.keras"
    result = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "-l", "12,10", "-p", "0.5", "--iterations", "3",
                                       "--retrain", "--out", str(out), "--log-dir", str(tmp_path), "--job-id", "nan"])
    assert result.exit_code == 0, result.output
    assert result.output.count("reverted: the loss or the weights became NaN or Inf while retraining") == 2
    assert "Stopped by the accuracy guard or a diverging loss: Layer12, Layer10" in result.output
    records = [json.loads(line) for line in (tmp_path / "nan.jsonl").read_text().splitlines()]
    assert [(r["step"], r["layer"], r["diverged"]) for r in records] == [(1, "fc3", True), (1, "fc2", True)]
    assert kp.sparsity_report(kp.load_model(out)).zeros == 0
