"""The IterativePruning callback: in a user's fit, the accuracy guard, reload, cubic
timing, the run's logs, and the custom-training-loop example."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.callbacks import IterativePruning
from keras_prune.state import restore, snapshot
from keras_prune.errors import InputError
from keras_prune.schedules import Cubic, Linear
from keras_prune.selection import select_layer
from keras_prune.training import Evaluation, compile_classifier
from keras_prune_cli.main import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_training_loop.py"


def tiny_mlp() -> keras.Sequential:
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="tanh", name="hidden"),
            keras.layers.Dense(10, name="out"),
        ],
        name="tiny",
    )


@pytest.fixture(scope="module")
def trained_mlp(small_data, tmp_path_factory) -> Path:
    keras.utils.set_random_seed(1)
    model = tiny_mlp()
    kp.training.train(model, small_data, epochs=2, lr=0.05, batch_size=64, seed=0, verbose=0)
    path = tmp_path_factory.mktemp("mlp") / "mlp.keras"
    model.save(path)
    return path


def wrapped_copy(path: Path) -> keras.Model:
    model = kp.prunable(kp.load_model(path))
    compile_classifier(model, lr=0.02, momentum=0.9)
    return model


def all_variables(model: keras.Model) -> list:
    return list(model.variables) + list(model.optimizer.variables)


def test_the_callback_works_in_a_users_own_fit_with_validation_data(trained_mlp, small_data):
    model = kp.prunable(kp.load_model(trained_mlp))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x, y = small_data.x_train.astype("float32") / 255, small_data.y_train
    x_val, y_val = small_data.x_val.astype("float32") / 255, small_data.y_val
    seen = []
    pruning = IterativePruning({"hidden": 0.8, "out": 0.4}, Linear(2), validation_data=(x_val, y_val), on_step=seen.append)
    assert pruning.planned_epochs == 4
    history = model.fit(x, y, validation_data=(x_val, y_val), epochs=pruning.planned_epochs, batch_size=128,
                        callbacks=[pruning], verbose=0)
    assert len(history.history["val_accuracy"]) == 4
    assert [(r.step, r.layer, r.fraction) for r in seen] == [
        (1, "hidden", 0.4), (1, "out", 0.2), (2, "hidden", 0.8), (2, "out", 0.4)
    ]
    assert pruning.done and pruning.results == seen
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    assert hidden.pruned_count() == int(784 * 32 * 0.8) and out.pruned_count() == 128
    # Adam trained the model after the last pruning; pruned weights stayed exactly zero.
    assert np.all(hidden.layer.kernel.numpy()[hidden.mask_arrays()[0] == 0] == 0)
    # The callback's own measure agrees with Keras' validation accuracy of the last epoch.
    assert 100 - seen[-1].validation.error == pytest.approx(100 * history.history["val_accuracy"][-1], abs=1e-3)
    assert seen[0].cost == pytest.approx(seen[0].validation.error - pruning.baseline.error)


def test_the_accuracy_guard_reverts_bit_exactly_and_stops_only_that_layer(trained_mlp, small_data):
    model = wrapped_copy(trained_mlp)
    out = model.get_layer("out")

    def evaluate(m):  # any pruning of 'out' costs as many points as its sparsity in percent
        return Evaluation(loss=0.0, error=100.0 * out.sparsity())

    class Capture(keras.callbacks.Callback):
        """Placed before the pruning callback: sees the state before each event's pruning."""

        def on_epoch_begin(self, epoch, logs=None):
            self.before = snapshot(all_variables(self.model))

    capture = Capture()
    checked = []

    def on_step(result):
        if result.reverted:
            now = snapshot(all_variables(model))
            assert len(now) == len(capture.before)
            for variable, a, b in zip(all_variables(model), capture.before, now):
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), variable.path
            checked.append(result.layer)

    pruning = IterativePruning({"hidden": 0.5, "out": 0.5}, Linear(3), evaluate=evaluate, acc_tradeoff=1.0,
                               stop_when_done=True, on_step=on_step)
    model.fit(small_data.train(128, seed=0), epochs=10, callbacks=[capture, pruning], verbose=0, shuffle=False)
    outcomes = [(r.step, r.layer, r.reverted) for r in pruning.results]
    assert outcomes == [(1, "hidden", False), (1, "out", True), (2, "hidden", False), (3, "hidden", False)]
    assert checked == ["out"] and pruning.stopped == ["out"]
    assert out.pruned_count() == 0 and model.get_layer("hidden").pruned_count() == 784 * 32 // 2
    # The iteration count went back with the revert: 4 epochs of 19 batches ran, 3 count.
    assert int(model.optimizer.iterations) == 3 * 19
    assert pruning.results[1].cost == pytest.approx(100 * 53 / 320)  # floor(320 * 0.5 / 3) pruned


def test_snapshot_and_restore_are_bit_exact():
    variables = [keras.Variable(np.random.rand(3, 4).astype("float32")), keras.Variable(np.int64(7))]
    saved = snapshot(variables)
    variables[0].assign(np.zeros((3, 4), "float32"))
    variables[1].assign(np.int64(9))
    restore(variables, saved)
    assert variables[0].numpy().tobytes() == saved[0].tobytes() and int(variables[1].numpy()) == 7


def test_reload_starts_every_step_from_the_trained_model(trained_mlp, small_data):
    model = wrapped_copy(trained_mlp)
    hidden = model.get_layer("hidden")
    original = hidden.layer.kernel.numpy().copy()
    seen = []

    def on_prune(step, index, name, retained):
        mask = hidden.mask_arrays()[0]
        expected = select_layer([np.abs(original)], [np.ones_like(original)], 0.9 * step / 3)[0]
        # Step i is a one-shot prune of the *trained* weights to 0.9 * i / 3 ...
        np.testing.assert_array_equal(mask, expected)
        # ... with the weights and optimizer as they were before any retraining.
        np.testing.assert_array_equal(hidden.layer.kernel.numpy(), original * mask)
        seen.append((step, int(model.optimizer.iterations)))

    pruning = IterativePruning({"hidden": 0.9}, Linear(3), reload=True, on_prune=on_prune,
                               validation_data=small_data.validation())
    model.fit(small_data.train(128, seed=0), epochs=pruning.planned_epochs, callbacks=[pruning], verbose=0, shuffle=False)
    assert seen == [(1, 0), (2, 0), (3, 0)]
    assert hidden.pruned_count() == int(784 * 32 * 0.9)
    # Retrained after the last one-shot prune, so the surviving weights moved.
    assert not np.array_equal(hidden.layer.kernel.numpy(), original * hidden.mask_arrays()[0])


def test_cubic_prunes_all_layers_together_at_the_scheduled_training_steps(trained_mlp, small_data):
    model = wrapped_copy(trained_mlp)
    seen = []
    schedule = Cubic(steps=3, frequency=7, begin=4)

    def on_prune(step, index, name, retained):
        seen.append((step, name, int(model.optimizer.iterations), model.get_layer(name).pruned_count()))

    pruning = IterativePruning({"hidden": 0.6, "out": 0.3}, schedule, on_prune=on_prune,
                               validation_data=small_data.validation())
    model.fit(small_data.train(128, seed=0), epochs=2, callbacks=[pruning], verbose=0, shuffle=False)
    expected = []
    for step, start in [(1, 4), (2, 11), (3, 18)]:
        for name, size, target in [("hidden", 784 * 32, 0.6), ("out", 320, 0.3)]:
            expected.append((step, name, start, int(np.floor(size * schedule.fraction(target, step) + 1e-9))))
    assert seen == expected
    assert [r.step for r in pruning.results] == [1, 1, 2, 2, 3, 3]  # the last closes at the end of fit


def test_bad_callback_settings_are_refused():
    with pytest.raises(InputError, match="needs validation_data or evaluate"):
        IterativePruning({"fc1": 0.5}, acc_tradeoff=1.0)
    with pytest.raises(InputError, match="epoch-timed schedules"):
        IterativePruning({"fc1": 0.5}, Cubic(2, frequency=3), reload=True)
    with pytest.raises(InputError, match="needs training data"):
        IterativePruning({"fc1": 0.5}, criterion="taylor1")
    model = kp.models.lenet5()
    with pytest.raises(InputError, match="not wrapped"):
        IterativePruning({8: 0.5}, epochs_per_step=0).prune_without_training(model)


def test_run_logs_steps_stops_and_tensorboard_scalars(trained_lenet5, small_idx_dir, tmp_path):
    logs, board = tmp_path / "logs", tmp_path / "tb"
    result = CliRunner().invoke(main, [
        "run", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir), "--out", str(tmp_path / "p.keras"),
        "-l", "12,8", "-p", "1.0,0.6", "-iPruning", "2", "-reTrain", "-nEpochs", "1", "-acctradeoff", "5",
        "-logDir", str(logs), "-jobID", "guard", "--log-test", "--tensorboard", str(board),
    ])
    assert result.exit_code == 0, result.output
    assert "reverted: validation error" in result.output and "Stopped by the accuracy guard or a diverging loss: Layer12" in result.output
    model = kp.load_model(tmp_path / "p.keras")
    # fc3 pruned to 100% cannot recover: that step was reverted; fc1 went on to 60%.
    assert model.get_layer("fc1").pruned_count() == 172800
    assert model.get_layer("fc3").sparsity() < 1.0
    rows = list(csv.reader((logs / "guard.csv").read_text().splitlines()))
    assert rows[0][:3] == ["LayerNo", "Retained%", "TestError"]
    assert ["12", "stop"] == rows[[r[:2] for r in rows].index(["12", "stop"])][:2]
    assert [r[0] for r in rows[1:] if r[1] != "stop"].count("8") == 2
    records = [json.loads(line) for line in (logs / "guard.jsonl").read_text().splitlines()]
    assert {r["outcome"] for r in records} == {"kept", "reverted"}
    assert all(r["test"] is not None and r["validation"]["accuracy"] > 0 for r in records)
    options = json.loads((logs / "guard.options.json").read_text())["options"]
    assert options["acc_tradeoff"] == 5 and options["iterations"] == 2
    assert {"sparsity/fc1", "validation/accuracy", "validation/loss", "test/error"} <= scalar_tags(board / "pruning")
    assert {"loss", "accuracy"} <= scalar_tags(board / "train")  # the training curves beside them


def scalar_tags(folder: Path) -> set[str]:
    """The tags of the scalars TensorBoard's scalar plugin would show from `folder`."""
    tags = set()
    for event_file in folder.iterdir():
        for raw in tf.data.TFRecordDataset(str(event_file)):
            for value in tf.compat.v1.Event.FromString(raw.numpy()).summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                assert tf.make_ndarray(value.tensor).shape == ()
                tags.add(value.tag)
    return tags


def test_the_custom_training_loop_example_prunes_without_fit(small_data):
    spec = importlib.util.spec_from_file_location("custom_training_loop", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    keras.utils.set_random_seed(0)
    model, results = example.prune_in_custom_loop(tiny_mlp(), small_data, fractions={"hidden": 0.75}, steps=3)
    assert [r.fraction for r in results] == [0.25, 0.5, 0.75]
    assert model.get_layer("hidden").pruned_count() == 784 * 32 * 3 // 4
    assert results[-1].validation.error < 50


def test_run_with_the_cubic_schedule_prunes_all_layers_together(trained_lenet5, small_idx_dir, tmp_path):
    out = tmp_path / "cubic.keras"
    result = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir),
                                       "-l", "8,10", "-p", "0.8,0.5", "--schedule", "cubic", "--iterations", "2",
                                       "--retrain", "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    output = result.output
    # Step 1 prunes to 0.8 * (1 - (1 - 1/2)^3) = 0.7 and 0.5 * 0.875 = 0.4375, both at once.
    assert output.index("Layer8: 30% retained (step 1)") < output.index("Layer10: 56.25% retained (step 1)") < output.index("validation:")
    assert output.count("validation:") == 2  # one line per event, not per layer
    model = kp.load_model(out)
    assert model.get_layer("fc1").pruned_count() == 230400 and model.get_layer("fc2").pruned_count() == 5040
