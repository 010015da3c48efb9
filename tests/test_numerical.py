"""NaN or Inf during retraining: the step is reverted and said so; no NaN is ever saved."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.data import Dataset
from keras_prune.errors import NumericalError
from keras_prune.experiment import RunSettings, run_pruning
from keras_prune.plan import Plan
from keras_prune.storage import save_model
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
