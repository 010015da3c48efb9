"""Schedules tell the truth: a fit that ends before the last pruning step is said, not hidden."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.callbacks import IncompleteScheduleWarning, IterativePruning
from keras_prune.errors import ScheduleError
from keras_prune.experiment import RunSettings, run_pruning
from keras_prune.plan import Plan
from keras_prune.schedules import Cubic
from keras_prune.training import compile_classifier
from keras_prune_cli.main import main


def small_mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu", name="hidden"), keras.layers.Dense(10, name="out")])
    model = kp.prunable(model, ["hidden"])
    compile_classifier(model, lr=0.01, momentum=0.9)
    return model


def test_a_cubic_schedule_longer_than_the_fit_warns_how_far_it_got(small_data):
    x, y = small_data.x_train[:256].astype("float32") / 255, small_data.y_train[:256]
    model = small_mlp()
    # 8 training steps an epoch; pruning steps at 0, 8, 16 and 24; 32 steps in all.
    pruning = IterativePruning({"hidden": 0.8}, Cubic(4, frequency=8), steps_per_epoch=8)
    assert pruning.planned_epochs == 4
    with pytest.warns(IncompleteScheduleWarning) as caught:
        model.fit(x, y, batch_size=32, epochs=3, callbacks=[pruning], verbose=0, shuffle=False)
    (warning,) = [w for w in caught if w.category is IncompleteScheduleWarning]
    assert str(warning.message) == (
        "training ended before pruning step 4 of 4 (hidden): pruned hidden at 0.7875 of 0.8; train 32 steps"
    )
    assert model.get_layer("hidden").sparsity() == pytest.approx(0.7875, abs=1e-3)
    assert not pruning.done and pruning.unfinished() == str(warning.message)

    full = small_mlp()
    pruning = IterativePruning({"hidden": 0.8}, Cubic(4, frequency=8), steps_per_epoch=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncompleteScheduleWarning)
        full.fit(x, y, batch_size=32, epochs=pruning.planned_epochs, callbacks=[pruning], verbose=0, shuffle=False)
    assert pruning.done and pruning.unfinished() == ""
    assert full.get_layer("hidden").sparsity() == pytest.approx(0.8, abs=1e-3)


def test_an_epoch_schedule_cut_short_warns_with_planned_epochs(small_data):
    x, y = small_data.x_train[:256].astype("float32") / 255, small_data.y_train[:256]
    model = small_mlp()
    pruning = IterativePruning({"hidden": 0.6}, kp.schedules.Linear(3), epochs_per_step=1)
    with pytest.warns(IncompleteScheduleWarning, match=r"before pruning step 3 of 3 \(hidden\): pruned hidden at 0.4 of 0.6; "
                                                       r"train planned_epochs \(3\) epochs"):
        model.fit(x, y, batch_size=64, epochs=2, callbacks=[pruning], verbose=0)


class StopAfterOneEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_run_pruning_fails_when_a_callback_stops_fit_early(trained_lenet5, small_data):
    settings = RunSettings(iterations=2, retrain=True, epochs=1)
    with pytest.raises(ScheduleError, match=r"^training ended before pruning step 2 of 2 \(fc3\): pruned fc3 at 0.25 of 0.5; "
                                            r"train planned_epochs \(2\) epochs$") as info:
        run_pruning(kp.load_model(trained_lenet5), Plan((12,), (0.5,)), small_data, settings, callbacks=[StopAfterOneEpoch()])
    assert info.value.exit_code == 1


def test_the_cli_fails_clearly_when_retraining_ends_before_the_last_step(trained_lenet5, small_idx_dir, tmp_path, monkeypatch):
    # As if the epochs were miscounted: fit gets one epoch for a two-step cubic schedule.
    monkeypatch.setattr(IterativePruning, "planned_epochs", property(lambda self: 1))
    out = tmp_path / "short.keras"
    result = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir),
                                       "-l", "8,10", "-p", "0.8,0.5", "--schedule", "cubic", "--iterations", "2",
                                       "--retrain", "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last == ("keras-prune: error: training ended before pruning step 2 of 2 (fc1, fc2): "
                    "pruned fc1 at 0.7 of 0.8, fc2 at 0.4375 of 0.5; train 18 steps")
    assert "Warning" not in result.output and "Traceback" not in result.output
    assert not out.exists()
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir()), [])
