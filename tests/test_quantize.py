"""Prune, then quantize: Keras 3's int8 and TFLite's float16/int8 keep pruned weights at
zero, compute what the float model computes, and report their sizes."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.export import export_model, export_tflite, quantize_keras, size_report, tflite_bytes
from keras_prune_cli.main import main

FRACTIONS = {1: 0.5, 4: 0.7, 8: 0.95, 10: 0.7, 12: 0.5}


def interpreter_for(content: bytes) -> tf.lite.Interpreter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return tf.lite.Interpreter(model_content=content)


def weight_tensors(interpreter: tf.lite.Interpreter) -> dict[int, dict]:
    """The constant tensors of rank >= 2 of a not yet allocated interpreter, by size:
    {size: {"value": array, "zero_points": array}}."""
    weights = {}
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:  # not a constant: no data before allocate_tensors
            continue
        if value.ndim >= 2:
            assert value.size not in weights, "kernel sizes must be distinct to match them"
            weights[value.size] = {"value": value, "zero_points": detail["quantization_parameters"]["zero_points"]}
    return weights


def tflite_layout(kernel: np.ndarray) -> np.ndarray:
    """A Keras kernel in TFLite's layout: Dense (in, out) -> (out, in); Conv2D HWIO -> OHWI."""
    return kernel.T if kernel.ndim == 2 else kernel.transpose(3, 0, 1, 2)


def run_tflite(content: bytes, images: np.ndarray) -> np.ndarray:
    runner = interpreter_for(content).get_signature_runner("serving_default")
    return np.concatenate([runner(images=images[i : i + 250])["logits"] for i in range(0, len(images), 250)])


@pytest.fixture(scope="module")
def pruned(trained_lenet5) -> keras.Model:
    """The trained LeNet-5 pruned with the original's conf, stripped."""
    model = kp.prunable(kp.load_model(trained_lenet5))
    kp.prune(model, FRACTIONS)
    return kp.strip(model)


@pytest.fixture(scope="module")
def calibration(small_data) -> np.ndarray:
    return (small_data.x_train[:200] / 255.0).astype("float32")


@pytest.fixture(scope="module")
def test_images(small_data) -> np.ndarray:
    return (small_data.x_test / 255.0).astype("float32")


@pytest.fixture(scope="module")
def int8_tflite(pruned, calibration) -> bytes:
    return tflite_bytes(pruned, "int8", calibration=calibration)


def test_int8_quantization_of_a_stripped_pruned_model_keeps_its_zeros():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((20,))
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    model = kp.prunable(keras.Model(inputs, keras.layers.Dense(5, name="fc2")(x)))
    x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
    kp.prune(model, {"fc1": 0.7, "fc2": 0.5}, "sparsegpt", data=[(x, np.zeros(64))], pattern=None)
    plain = kp.strip(model)
    pruned = {name: plain.get_layer(name).kernel.numpy() == 0 for name in ("fc1", "fc2")}
    before = plain(x).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "InputLayer does not have a quantize method"
        plain.quantize("int8")
    for name, zeros in pruned.items():
        layer = plain.get_layer(name)
        quantized = keras.ops.convert_to_numpy(next(w for w in layer.weights if w.name == "kernel"))
        assert quantized.dtype == np.int8
        assert (quantized[zeros] == 0).all(), name
        assert (quantized == 0).mean() >= zeros.mean()
    after = plain(x).numpy()
    assert np.abs(after - before).max() < 0.05 * np.abs(before).max()


def test_full_integer_tflite_holds_int8_weights_with_every_pruned_weight_zero(pruned, int8_tflite):
    weights = weight_tensors(interpreter_for(int8_tflite))
    kernels = [keras.ops.convert_to_numpy(v) for v in pruned.weights if len(v.shape) >= 2]
    assert len(kernels) == 5
    for kernel in kernels:
        stored = weights[kernel.size]
        assert stored["value"].dtype == np.int8
        assert (stored["zero_points"] == 0).all()  # symmetric: 0.0 is stored as 0
        pruned_positions = tflite_layout(kernel) == 0
        assert pruned_positions.mean() >= 0.5
        assert (stored["value"][pruned_positions] == 0).all()


def test_full_integer_tflite_classifies_the_test_images_as_the_keras_model_does(
    pruned, int8_tflite, test_images, small_data
):
    keras_logits = keras.ops.convert_to_numpy(pruned.predict(test_images, verbose=0))
    int8_logits = run_tflite(int8_tflite, test_images)
    keras_error = np.mean(keras_logits.argmax(1) != small_data.y_test)
    int8_error = np.mean(int8_logits.argmax(1) != small_data.y_test)
    assert np.mean(keras_logits.argmax(1) == int8_logits.argmax(1)) >= 0.98
    assert abs(int8_error - keras_error) <= 0.01, (keras_error, int8_error)
    # Activations are int8 inside: the outputs are close, not equal.
    assert 0 < np.max(np.abs(int8_logits - keras_logits)) < 0.2 * np.max(np.abs(keras_logits))


def test_sparse_full_integer_tflite_is_smaller_and_computes_the_same(pruned, calibration, int8_tflite, test_images):
    sparse = tflite_bytes(pruned, "int8", sparse=True, calibration=calibration)
    assert len(sparse) < len(int8_tflite) / 3
    np.testing.assert_array_equal(run_tflite(sparse, test_images[:250]), run_tflite(int8_tflite, test_images[:250]))


def test_keras_int8_export_writes_int8_kernels_and_leaves_the_model_as_it_was(pruned, test_images, tmp_path):
    float_kernel = pruned.get_layer("fc1").kernel.numpy()
    expected = keras.ops.convert_to_numpy(pruned(test_images[:100], training=False))
    paths = export_model(pruned, tmp_path, formats=["keras", "savedmodel"], name="m", keras_quantization="int8")
    assert pruned.get_layer("fc1").kernel.dtype == "float32"
    np.testing.assert_array_equal(pruned.get_layer("fc1").kernel.numpy(), float_kernel)

    loaded = keras.models.load_model(paths["keras"])
    for name in ("fc1", "fc2", "fc3"):
        kernel = keras.ops.convert_to_numpy(loaded.get_layer(name).kernel)
        assert kernel.dtype == np.int8
        assert (kernel[pruned.get_layer(name).kernel.numpy() == 0] == 0).all(), name
    assert loaded.get_layer("conv2").kernel.dtype == "float32"  # Keras quantizes Dense, not Conv2D
    served = tf.saved_model.load(str(paths["savedmodel"])).signatures["serving_default"]
    for got in (keras.ops.convert_to_numpy(loaded(test_images[:100])), served(images=test_images[:100])["logits"].numpy()):
        assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.98
        assert np.max(np.abs(got - expected)) < 0.1 * np.max(np.abs(expected))


def test_keras_quantization_of_a_model_without_dense_layers_is_refused():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)], name="convs")
    with pytest.raises(kp.ModelError, match="changes nothing in 'convs'"):
        quantize_keras(model)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"formats": ["tflite"], "quantization": "int8"}, "needs calibration images"),
        ({"formats": ["tflite"], "quantization": "float16", "calibration": np.zeros((4, 28, 28, 1))},
         "calibration images go with TFLite quantization 'int8', not 'float16'"),
        ({"formats": ["tflite"], "quantization": "int8", "calibration": np.zeros((4, 28, 28))},
         r"shape \(N, 28, 28, 1\) with N >= 1 for 'lenet5', got shape \(4, 28, 28\)"),
        ({"formats": ["tflite"], "quantization": "int8", "calibration": np.zeros((0, 28, 28, 1))}, "N >= 1"),
        ({"formats": ["keras"], "quantization": "float16"}, "'float16' needs the tflite format"),
        ({"formats": ["tflite"], "keras_quantization": "int8"}, "does not go with the tflite format"),
        ({"formats": ["keras"], "keras_quantization": "int4"}, "unknown Keras quantization 'int4'; choose one of: int8"),
    ],
)
def test_bad_quantization_input_is_a_one_line_error_and_writes_nothing(pruned, tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(kp.InputError, match=message) as caught:
        export_model(pruned, out, **kwargs)
    assert "\n" not in str(caught.value)
    assert not out.exists()


def test_export_tflite_refuses_int8_without_calibration_before_writing(pruned, tmp_path):
    with pytest.raises(kp.InputError, match="needs calibration images"):
        export_tflite(pruned, tmp_path / "m.tflite", quantization="int8")
    assert not list(tmp_path.iterdir())


def test_cli_exports_full_integer_tflite_calibrated_on_the_training_split(trained_lenet5, small_idx_dir, tmp_path):
    result = CliRunner().invoke(main, [
        "export", "-m", str(trained_lenet5), "--out", str(tmp_path), "--format", "tflite",
        "--quantize", "int8", "--calibration-images", "64", "--data-dir", str(small_idx_dir), "--sparse-tflite",
    ])
    assert result.exit_code == 0, result.output
    assert "Calibrating int8 on 64 training images" in result.output
    weights = weight_tensors(interpreter_for((tmp_path / "lenet5_int8.tflite").read_bytes()))
    assert weights and all(w["value"].dtype == np.int8 for w in weights.values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "tflite", "--calibration-images", "10"], "--calibration-images, --data-dir and --dataset go with --quantize int8"),
        (["--format", "keras", "--keras-quantize", "int4"], "unknown Keras quantization 'int4'"),
        (["--format", "tflite", "--keras-quantize", "int8"], "does not go with the tflite format"),
        (["--format", "tflite", "--quantize", "int16"], "unknown TFLite quantization 'int16'"),
    ],
)
def test_cli_quantization_errors_are_one_line(trained_lenet5, tmp_path, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", "-m", str(trained_lenet5), "--out", str(out), *args])
    assert result.exit_code == 2
    assert result.output.startswith("keras-prune: error: ") and result.output.count("\n") == 1
    assert message in result.output
    assert not out.exists()


def test_size_report_measures_quantized_files_and_leaves_no_file_behind(pruned, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    report = size_report(pruned)
    assert not list(tmp_path.iterdir())
    assert report.tflite_error is None
    float32, float16, int8 = report.tflite_file, report.tflite_float16_file, report.tflite_int8_file
    assert 0.45 < float16.raw / float32.raw < 0.55 and 0.2 < int8.raw / float32.raw < 0.3
    assert report.tflite_int8_sparse_file.raw < int8.raw / 3
    assert report.tflite_int8_sparse_file.raw < report.tflite_sparse_file.raw / 1.5
    assert report.keras_int8_file.raw < report.keras_file.raw / 2  # fc1 holds 92% of the weights


def test_size_report_of_a_model_tflite_cannot_convert_says_why(tmp_path):
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)], name="lstm")
    report = size_report(model)
    assert report.tflite_error.startswith("TFLite cannot convert 'lstm': ")
    assert report.tflite_file is None and report.tflite_int8_file is None
    assert report.keras_int8_file is not None  # its Dense layer is quantized

    model.save(tmp_path / "lstm.keras")
    result = CliRunner().invoke(main, ["info", "-m", str(tmp_path / "lstm.keras")])
    assert result.exit_code == 0, result.output
    rows = {line[:31].strip(): line[31:].split() for line in result.output.splitlines()}
    assert rows["TFLite int8"] == ["-"]
    assert "pruned: no TFLite sizes: TFLite cannot convert 'lstm': " in result.output


def test_cli_info_shows_quantized_sizes_of_dense_and_pruned(trained_lenet5, pruned, tmp_path):
    kp.save_model(pruned, tmp_path / "pruned.keras")
    result = CliRunner().invoke(main, ["info", "-m", str(tmp_path / "pruned.keras"), "--dense", str(trained_lenet5)])
    assert result.exit_code == 0, result.output
    rows = {line[:31].strip(): line[31:].split() for line in result.output.splitlines()}
    for label in (".keras file, Keras int8", "TFLite float16", "TFLite int8", "TFLite int8 sparse, gzip"):
        dense, pruned_size, ratio = rows[label]
        assert int(dense.replace(",", "")) > 0 and int(pruned_size.replace(",", "")) > 0
    assert float(rows["TFLite int8 sparse"][2].rstrip("x")) >= 3
