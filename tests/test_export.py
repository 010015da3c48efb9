"""Export for deployment: every format computes what the Keras model computes, holds
the same zeros, carries no keras_prune classes, and is smaller on disk once pruned."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.errors import WriteError
from keras_prune.export import FileSize, export_model, export_savedmodel, export_tflite, size_report
from keras_prune.resources import PRETRAINED_MODEL, PRUNED_MODEL
from keras_prune.sparse_encoding import (
    best_index_bits,
    decode_bitmask,
    decode_relative_index,
    encode_bitmask,
    encode_relative_index,
    relative_index_size,
)
from keras_prune.training import compile_classifier
from keras_prune_cli.main import main

FRACTIONS = {1: 0.5, 4: 0.7, 8: 0.95, 10: 0.7, 12: 0.5}
TOLERANCE = 1e-5

# Runs in a fresh interpreter (-I: no PYTHONPATH, no user site, no cwd on sys.path)
# with the editable install's finder removed, so keras_prune cannot be imported.
SERVE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.meta_path = [f for f in sys.meta_path if "keras_prune" not in getattr(f, "__module__", "")]
    assert importlib.util.find_spec("keras_prune") is None, "keras_prune is importable"
    import numpy as np
    import tensorflow as tf

    folder, images, out = sys.argv[1:]
    loaded = tf.saved_model.load(folder)
    serve = loaded.signatures["serving_default"]
    outputs = serve(images=tf.constant(np.load(images)))
    arrays = {name: value.numpy() for name, value in outputs.items()}
    arrays.update({f"var{i}": v.numpy() for i, v in enumerate(loaded.model_variables)})
    np.savez(out, **arrays)
    inputs = serve.structured_input_signature[1]
    print(json.dumps({
        "inputs": {k: [s.dtype.name, s.shape.as_list()] for k, s in inputs.items()},
        "outputs": {k: [s.dtype.name, s.shape.as_list()] for k, s in serve.structured_outputs.items()},
        "keras_prune_loaded": any(m.startswith("keras_prune") for m in sys.modules),
    }))
    """
)


def tflite_runner(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(path))
    return interpreter, interpreter.get_signature_runner("serving_default")


def tflite_constants(interpreter) -> list[np.ndarray]:
    """The constant tensors of rank >= 2 (the weights) of a not yet allocated interpreter."""
    constants = []
    for detail in interpreter.get_tensor_details():
        try:
            value = interpreter.get_tensor(detail["index"])
        except ValueError:  # not a constant: no data before allocate_tensors
            continue
        if value.ndim >= 2:
            constants.append(value)
    return constants


def tflite_layout(kernel: np.ndarray) -> np.ndarray:
    """A Keras kernel in TFLite's layout: Dense (in, out) -> (out, in); Conv2D HWIO -> OHWI."""
    return kernel.T if kernel.ndim == 2 else kernel.transpose(3, 0, 1, 2)


def by_size(arrays: list[np.ndarray]) -> dict[int, np.ndarray]:
    sizes = [a.size for a in arrays]
    assert len(set(sizes)) == len(sizes), "kernel sizes must be distinct to match them"
    return dict(zip(sizes, arrays))


def kernels(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in model.weights if len(v.shape) >= 2]


@pytest.fixture(scope="module")
def images(small_data) -> np.ndarray:
    return (small_data.x_test[:64] / 255.0).astype("float32")


@pytest.fixture(scope="module")
def pruned_path(trained_lenet5, tmp_path_factory) -> Path:
    """The trained LeNet-5, wrapped and pruned with the original's conf, saved wrapped."""
    model = kp.prunable(kp.load_model(trained_lenet5))
    kp.prune(model, FRACTIONS)
    path = tmp_path_factory.mktemp("pruned") / "lenet5_pruned.keras"
    return kp.save_model(model, path)


@pytest.fixture(scope="module")
def pruned(pruned_path) -> keras.Model:
    return kp.load_model(pruned_path)


@pytest.fixture(scope="module")
def exported(pruned_path, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export")
    return export_model(pruned_path, out, formats=["savedmodel", "tflite", "keras"], name="lenet5", version=3)


@pytest.fixture(scope="module")
def served(exported, images, tmp_path_factory):
    """What the SavedModel returns in a Python process where keras_prune cannot be imported."""
    folder = tmp_path_factory.mktemp("serve")
    script, batch, out = folder / "serve.py", folder / "images.npy", folder / "out.npz"
    script.write_text(SERVE_SCRIPT)
    np.save(batch, images)
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(exported["savedmodel"]), str(batch), str(out)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), dict(np.load(out))


def test_keras_stripped_served_and_tflite_outputs_agree(pruned, exported, served, images):
    expected = keras.ops.convert_to_numpy(pruned(images, training=False))
    stripped = keras.ops.convert_to_numpy(kp.strip(pruned)(images, training=False))
    plain = keras.models.load_model(exported["keras"], compile=False)
    _, runner = tflite_runner(exported["tflite"])
    outputs = {
        "stripped": stripped,
        "plain .keras": keras.ops.convert_to_numpy(plain(images, training=False)),
        "SavedModel": served[1]["logits"],
        "TFLite": runner(images=images)["logits"],
    }
    for name, logits in outputs.items():
        assert logits.shape == (64, 10), name
        assert np.max(np.abs(logits - expected)) <= TOLERANCE, name
    softmax = keras.ops.convert_to_numpy(keras.ops.softmax(expected))
    assert np.max(np.abs(served[1]["probabilities"] - softmax)) <= TOLERANCE


def test_savedmodel_loads_without_keras_prune_and_has_the_documented_signature(served):
    signature, _ = served
    assert signature["inputs"] == {"images": ["float32", [None, 28, 28, 1]]}
    assert signature["outputs"] == {
        "logits": ["float32", [None, 10]],
        "probabilities": ["float32", [None, 10]],
    }
    assert not signature["keras_prune_loaded"]


def test_saved_model_cli_describes_the_export(exported):
    cli = Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run(
        [str(cli), "show", "--all", "--dir", str(exported["savedmodel"])],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert "signature_def['serving_default']" in text
    assert "inputs['images'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 28, 28, 1)" in text
    for output in ("logits", "probabilities"):
        assert f"outputs['{output}'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 10)" in text
    assert "Method name is: tensorflow/serving/predict" in text


def test_savedmodel_uses_tensorflow_servings_layout(exported, pruned_path):
    version = exported["savedmodel"]
    assert version == version.parent.parent / "lenet5" / "3"
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables" / "variables.index").is_file()
    again = export_savedmodel(pruned_path, version.parent.parent, name="lenet5", version=3)
    newer = export_savedmodel(pruned_path, version.parent.parent, name="lenet5", version=4)
    assert again == version and newer.name == "4"
    assert sorted(p.name for p in version.parent.iterdir()) == ["3", "4"]  # no temporary folders left


def test_savedmodel_stores_each_weight_once(pruned, exported):
    stored = tf.train.list_variables(str(exported["savedmodel"] / "variables" / "variables"))
    values = sum(int(np.prod(shape)) for name, shape in stored if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert values == kp.strip(pruned).count_params()


def test_exports_hold_no_keras_prune_classes(pruned, exported):
    stripped = kp.strip(pruned)
    classes = {type(layer).__module__ for _, layer in kp.graph.walk(stripped)}
    assert not [module for module in classes if module.startswith("keras_prune")]
    with zipfile.ZipFile(exported["keras"]) as archive:
        assert "keras_prune" not in archive.read("config.json").decode()
    assert b"keras_prune" not in (exported["savedmodel"] / "saved_model.pb").read_bytes()
    assert b"keras_prune" not in exported["tflite"].read_bytes()


def test_sparsity_is_exactly_preserved_in_every_format(pruned, exported, served):
    effective = [w for layer in kp.wrapped_layers(pruned) for w in layer.effective_weights()]
    stripped = kp.strip(pruned)
    plain = keras.models.load_model(exported["keras"], compile=False)
    assert [np.count_nonzero(w == 0) for w in effective] == [75, 10080, 273600, 7056, 420]
    for a, b, c in zip(effective, kernels(stripped), kernels(plain)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    for i, variable in enumerate(stripped.variables):  # the SavedModel's variables, as served
        np.testing.assert_array_equal(served[1][f"var{i}"], keras.ops.convert_to_numpy(variable))
    interpreter, _ = tflite_runner(exported["tflite"])
    in_tflite = by_size(tflite_constants(interpreter))
    for kernel in effective:
        np.testing.assert_array_equal(in_tflite[kernel.size], tflite_layout(kernel))


def test_quantised_tflite_keeps_every_pruned_weight_at_zero(pruned, images, tmp_path):
    expected = keras.ops.convert_to_numpy(pruned(images, training=False))
    effective = [w for layer in kp.wrapped_layers(pruned) for w in layer.effective_weights()]
    half = export_tflite(pruned, tmp_path / "half.tflite", quantization="float16")
    dynamic = export_tflite(pruned, tmp_path / "dynamic.tflite", quantization="dynamic")
    interpreter, runner = tflite_runner(half)
    in_half = by_size(tflite_constants(interpreter))
    for kernel in effective:
        np.testing.assert_array_equal(in_half[kernel.size] == 0, tflite_layout(kernel) == 0)
    assert np.max(np.abs(runner(images=images)["logits"] - expected)) < 1e-2
    interpreter, runner = tflite_runner(dynamic)
    in_dynamic = by_size(tflite_constants(interpreter))
    for kernel in effective:
        pruned_positions = tflite_layout(kernel) == 0
        assert np.all(in_dynamic[kernel.size][pruned_positions] == 0)
    assert in_dynamic[288000].dtype == np.int8
    agreement = np.mean(runner(images=images)["logits"].argmax(1) == expected.argmax(1))
    assert agreement >= 0.95
    assert dynamic.stat().st_size < half.stat().st_size < 0.6 * 1_258_724


def test_sparse_tflite_is_smaller_and_computes_the_same(pruned, exported, images, tmp_path):
    sparse = export_tflite(pruned, tmp_path / "sparse.tflite", sparse=True)
    _, runner = tflite_runner(sparse)
    expected = keras.ops.convert_to_numpy(pruned(images, training=False))
    assert np.max(np.abs(runner(images=images)["logits"] - expected)) <= TOLERANCE
    assert sparse.stat().st_size < exported["tflite"].stat().st_size / 4


def test_pruned_savedmodel_variables_gzip_to_a_quarter_of_the_dense_ones(trained_lenet5, pruned_path):
    dense, pruned = size_report(trained_lenet5), size_report(pruned_path)
    assert dense.parameters == pruned.parameters == 313_786
    assert dense.nonzeros - pruned.nonzeros == 75 + 10080 + 273600 + 7056 + 420
    assert pruned.savedmodel_variables.raw == pytest.approx(dense.savedmodel_variables.raw, rel=0.01)
    assert pruned.savedmodel_variables.gzip <= dense.savedmodel_variables.gzip / 4
    assert pruned.keras_file.gzip <= dense.keras_file.gzip / 4
    assert pruned.tflite_sparse_file.raw < pruned.tflite_file.raw / 4
    assert pruned.relative_index_bytes < pruned.bitmask_bytes < pruned.dense_bytes / 8
    assert dense.bitmask_bytes > dense.dense_bytes  # no free lunch for a dense model


@pytest.mark.skipif(
    not (PRUNED_MODEL.is_file() and PRETRAINED_MODEL.is_file()),
    reason="saved_models/lenet5_pruned.keras and lenet5.keras are not shipped yet "
    "(made by `keras-prune train` and `keras-prune run --retrain`)",
)
def test_shipped_pruned_lenet5_variables_gzip_to_a_quarter_of_the_dense_ones():
    dense, pruned = size_report(PRETRAINED_MODEL), size_report(PRUNED_MODEL)
    assert pruned.savedmodel_variables.gzip <= dense.savedmodel_variables.gzip / 4


SHIPPED_SERVING = PRUNED_MODEL.parent / "serving" / "lenet5_pruned" / "1"


@pytest.mark.skipif(not SHIPPED_SERVING.is_dir(), reason=f"{SHIPPED_SERVING} is not shipped yet")
def test_shipped_serving_export_is_the_shipped_pruned_lenet5(images):
    expected = keras.ops.convert_to_numpy(kp.load_model(PRUNED_MODEL)(images, training=False))
    served = tf.saved_model.load(str(SHIPPED_SERVING)).signatures["serving_default"]
    logits = served(images=tf.constant(images))["logits"].numpy()
    assert np.max(np.abs(logits - expected)) <= TOLERANCE, (
        "the serving export is stale; remake it with "
        "`keras-prune export -m saved_models/lenet5_pruned.keras --out saved_models/serving`"
    )


def test_wrapped_model_saved_mid_training_resumes_with_masks_gates_and_optimizer(
    trained_lenet5, small_data, tmp_path
):
    model = kp.prunable(kp.load_model(trained_lenet5), gated=True)
    kp.prune(model, FRACTIONS)
    fc2 = model.get_layer("fc2")
    gates = np.random.default_rng(0).uniform(0.5, 1.5, fc2.gates[0].shape).astype("float32")
    fc2.gates[0].assign(gates)
    compile_classifier(model, lr=0.01)
    x, y = small_data.x_train[:1024], small_data.y_train[:1024]
    checkpoint = tmp_path / "mid.keras"
    model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0,
              callbacks=[keras.callbacks.ModelCheckpoint(checkpoint, save_freq=8)])
    path = tmp_path / "wrapped.keras"
    model.save(path)

    mid = keras.models.load_model(checkpoint)  # a checkpoint taken during fit is sparse
    for layer in kp.wrapped_layers(mid):
        for variable, mask in zip(layer.pruned_variables, layer.mask_arrays()):
            assert np.all(keras.ops.convert_to_numpy(variable)[mask == 0] == 0)

    loaded = keras.models.load_model(path)  # no custom_objects, no scope
    for before, after in zip(kp.wrapped_layers(model), kp.wrapped_layers(loaded)):
        assert isinstance(after, kp.PruneWrapper)
        for a, b in zip(before.mask_arrays(), after.mask_arrays()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.get_layer("fc2").gates[0]), gates)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 16

    for m in (model, loaded):
        m.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6)
    assert kp.sparsity_report(loaded).zeros == kp.sparsity_report(model).zeros >= 291_231


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p, out: export_model(p.parent / "missing.keras", out), "model file not found"),
        (lambda p, out: export_model(p, out, formats=["onnx"]), "unknown export format 'onnx'"),
        (lambda p, out: export_model(p, out, version=0), "positive integer, got 0"),
        (lambda p, out: export_model(p, out, version="2"), "positive integer, got '2'"),
        (lambda p, out: export_model(p, out, version=True), "positive integer, got True"),
        (lambda p, out: export_model(p, out, formats=["tflite"], quantization="int4"), "unknown TFLite quantization"),
        (lambda p, out: export_model(p, out, name="a/b"), "export name"),
        (lambda p, out: export_model(p, p / "sub"), "cannot"),
        (lambda p, out: export_tflite(p, out / "model.lite"), "must end in .tflite"),
    ],
)
def test_bad_input_is_a_one_line_error(pruned_path, tmp_path, call, message):
    with pytest.raises(kp.InputError, match=message) as info:
        call(pruned_path, tmp_path)
    assert "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_failed_export_leaves_the_previous_version_intact(pruned_path, tmp_path, monkeypatch):
    version = export_savedmodel(pruned_path, tmp_path, name="m", version=1)
    before = FileSize.of(version)

    def crash(model, folder):
        (folder / "saved_model.pb").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("keras_prune.export._write_savedmodel", crash)
    with pytest.raises(WriteError, match="cannot write .*m/1: disk full"):
        export_savedmodel(pruned_path, tmp_path, name="m", version=1)
    with pytest.raises(WriteError, match="disk full"):
        export_savedmodel(pruned_path, tmp_path, name="m", version=2)
    assert FileSize.of(version) == before
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]


def test_a_folder_in_the_way_is_refused(pruned_path, tmp_path):
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "notes.txt").write_text("mine")
    with pytest.raises(kp.InputError, match="is not a SavedModel"):
        export_savedmodel(pruned_path, tmp_path, name="m", version=1)
    assert (tmp_path / "m" / "1" / "notes.txt").read_text() == "mine"


def test_cli_export_writes_each_format_and_names_the_signature(pruned_path, tmp_path):
    result = CliRunner().invoke(main, ["export", "-m", str(pruned_path), "--out", str(tmp_path),
                                       "--format", "savedmodel", "--format", "tflite", "--version", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "lenet5_pruned" / "2" / "saved_model.pb").is_file()
    assert (tmp_path / "lenet5_pruned.tflite").is_file()
    assert ("signature serving_default: images float32 (-1, 28, 28, 1) -> "
            "logits, probabilities float32 (-1, 10)") in result.output


def test_cli_info_compares_dense_and_pruned_sizes(trained_lenet5, pruned_path):
    result = CliRunner().invoke(main, ["info", "-m", str(pruned_path), "--dense", str(trained_lenet5)])
    assert result.exit_code == 0, result.output
    rows = {line[:28].strip(): line[28:].split() for line in result.output.splitlines()}
    assert rows["parameters"] == ["313,786", "313,786"]
    assert float(rows["SavedModel variables/, gzip"][2].rstrip("x")) >= 4
    assert "Total Compression: 0.929" in result.output


@pytest.mark.parametrize("args", [["--format", "pdf"], ["--version", "-1"], ["--dense", "x.keras"]])
def test_cli_export_errors_are_one_line(pruned_path, tmp_path, args):
    result = CliRunner().invoke(main, ["export", "-m", str(pruned_path), "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    assert result.output.startswith("keras-prune: error: ") and result.output.count("\n") == 1


@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("index_bits", [None, 1, 4, 16])
def test_sparse_encodings_round_trip_exactly(density, index_bits):
    rng = np.random.default_rng(1)
    weights = (rng.normal(size=(37, 53)) * (rng.random((37, 53)) < density)).astype("float32")
    bitmask = encode_bitmask(weights)
    assert len(bitmask) == (weights.size + 7) // 8 + 4 * np.count_nonzero(weights)
    np.testing.assert_array_equal(decode_bitmask(bitmask, weights.shape), weights)
    relative = encode_relative_index(weights, index_bits)
    bits = index_bits or best_index_bits(weights)
    assert len(relative) == relative_index_size(weights, bits)
    np.testing.assert_array_equal(decode_relative_index(relative, weights.shape), weights)


def test_relative_index_bridges_long_zero_runs_with_fillers():
    weights = np.zeros(100, "float32")
    weights[[3, 90]] = [1.5, -2.0]
    # 3-bit indices: the 86 zeros between the two weights need 86 // 8 = 10 fillers
    encoded = encode_relative_index(weights, index_bits=3)
    assert int.from_bytes(encoded[1:5], "little") == 2 + 10
    np.testing.assert_array_equal(decode_relative_index(encoded, weights.shape), weights)


# --- Outputs named after what the model returns: softmax, sigmoid, logits -------------


def _dense_head(activation=None, units=4):
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    return inputs, keras.layers.Dense(units, activation=activation, name="head")(hidden)


def _logits_model():
    return keras.Model(*_dense_head())


def _fused_softmax_model():
    return keras.Model(*_dense_head("softmax"))


def _softmax_layer_model():
    inputs, logits = _dense_head()
    return keras.Model(inputs, keras.layers.Softmax()(logits))


def _ops_softmax_model():
    inputs, logits = _dense_head()
    return keras.Model(inputs, keras.ops.softmax(logits))


def _fused_sigmoid_model():
    return keras.Model(*_dense_head("sigmoid", units=1))


def _sigmoid_activation_sequential():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(3), keras.layers.Activation("sigmoid")])


def _binary_logit_model():
    return keras.Model(*_dense_head(units=1))


def _mobilenet():
    keras.utils.set_random_seed(0)
    return keras.applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=5, include_top=True
    )


def _pre_activation(model):
    """The input of the model's last layer: its logits when that layer is the activation."""
    return keras.Model(model.inputs[0], model.layers[-1].input)


# name -> (model factory, activation, what each output must equal given the model and x)
HEADS = {
    "logits": (_logits_model, None, {
        "logits": lambda m, x: m(x), "probabilities": lambda m, x: keras.ops.softmax(m(x))}),
    "Dense(softmax)": (_fused_softmax_model, "softmax", {"probabilities": lambda m, x: m(x)}),
    "Softmax layer": (_softmax_layer_model, "softmax", {
        "logits": lambda m, x: _pre_activation(m)(x), "probabilities": lambda m, x: m(x)}),
    "keras.ops.softmax": (_ops_softmax_model, "softmax", {
        "logits": lambda m, x: m.get_layer("head")(m.layers[1](x)), "probabilities": lambda m, x: m(x)}),
    "Dense(1, sigmoid)": (_fused_sigmoid_model, "sigmoid", {"probabilities": lambda m, x: m(x)}),
    "Activation(sigmoid)": (_sigmoid_activation_sequential, "sigmoid", {
        "logits": lambda m, x: m.layers[0](x), "probabilities": lambda m, x: m(x)}),
    "binary logit": (_binary_logit_model, None, {
        "logits": lambda m, x: m(x), "probabilities": lambda m, x: keras.ops.sigmoid(m(x))}),
    "MobileNet": (_mobilenet, "softmax", {
        "logits": lambda m, x: _pre_activation(m)(x), "probabilities": lambda m, x: m(x)}),
}


@pytest.mark.parametrize("head", list(HEADS))
def test_exports_name_outputs_by_the_final_activation_and_match_keras(head, tmp_path):
    factory, activation, expected_outputs = HEADS[head]
    keras.utils.set_random_seed(1)
    model = factory()
    x = np.random.default_rng(0).normal(size=(5, *model.input_shape[1:])).astype("float32")
    expected = {name: keras.ops.convert_to_numpy(f(model, x)) for name, f in expected_outputs.items()}

    outputs = kp.export.serving_outputs(model)
    assert outputs.activation == activation
    assert outputs.names == tuple(expected)
    if activation is not None:  # the model's own output is served as is: never squashed twice
        np.testing.assert_allclose(expected["probabilities"], keras.ops.convert_to_numpy(model(x)))

    paths = export_model(model, tmp_path, formats=["savedmodel", "tflite"], name="m")
    served = tf.saved_model.load(str(paths["savedmodel"])).signatures["serving_default"](images=tf.constant(x))
    _, runner = tflite_runner(paths["tflite"])
    for where, result in {"SavedModel": served, "TFLite": runner(images=x)}.items():
        got = {name: np.asarray(value) for name, value in result.items()}
        assert sorted(got) == sorted(expected), where
        for name, value in expected.items():
            assert np.max(np.abs(got[name] - value)) <= TOLERANCE, (where, name)
    assert ", ".join(expected) in kp.export.describe_signature(model)


def test_a_nested_softmax_model_serves_its_probabilities_only():
    inner = _fused_softmax_model()
    outer = keras.Sequential([keras.Input((6,)), inner])
    assert kp.export.serving_outputs(outer).names == ("probabilities",)


def test_a_tflite_conversion_failure_is_one_line(tmp_path):
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)], name="lstm")
    with pytest.raises(kp.ModelError) as caught:
        export_tflite(model, tmp_path / "lstm.tflite")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("TFLite cannot convert 'lstm': ")
    assert "loc(" not in message and "<unknown>" not in message
    assert not list(tmp_path.iterdir())

    model.save(tmp_path / "lstm.keras")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", "-m", str(tmp_path / "lstm.keras"), "--out", str(out), "--format", "tflite"])
    assert result.exit_code == 2
    assert result.output.startswith("keras-prune: error: TFLite cannot convert 'lstm': ")
    assert result.output.count("\n") == 1
    assert not [p for p in out.rglob("*") if p.is_file()]


def _two_inputs_two_outputs() -> keras.Model:
    """A scoring model with dict inputs and dict outputs, as keras-hub backbones have."""
    tokens = keras.Input((6,), dtype="int32", name="token_ids")
    side = keras.Input((3,), name="extra features")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4, name="emb")(tokens))
    h = keras.layers.Dense(8, activation="relu", name="fc")(keras.layers.Concatenate()([h, side]))
    outputs = {"score": keras.layers.Dense(1, name="score_head")(h),
               "classes": keras.layers.Dense(3, activation="softmax", name="class_head")(h)}
    return keras.Model({"token_ids": tokens, "extra features": side}, outputs, name="two_by_two")


def test_a_model_with_several_inputs_and_outputs_exports_each_by_name(tmp_path):
    keras.utils.set_random_seed(2)
    model = kp.prunable(_two_inputs_two_outputs())
    kp.prune(model, {"fc": 0.5, "score_head": 0.5})
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(0, 20, (4, 6)).astype("int32"), "extra features": rng.normal(size=(4, 3)).astype("float32")}
    expected = {k: keras.ops.convert_to_numpy(v) for k, v in model(x).items()}

    assert kp.export.describe_signature(kp.strip(model)) == (
        "serving_default: extra_features float32 (-1, 3), token_ids int32 (-1, 6) "
        "-> classes float32 (-1, 3), score float32 (-1, 1)"
    )
    paths = export_model(model, tmp_path, formats=["savedmodel", "tflite"], name="m")
    signature = tf.saved_model.load(str(paths["savedmodel"])).signatures["serving_default"]
    served = signature(token_ids=tf.constant(x["token_ids"]), extra_features=tf.constant(x["extra features"]))
    _, runner = tflite_runner(paths["tflite"])
    converted = runner(token_ids=x["token_ids"], extra_features=x["extra features"])
    for where, result in {"SavedModel": served, "TFLite": converted}.items():
        assert sorted(result) == ["classes", "score"], where
        for name, value in expected.items():
            assert np.max(np.abs(np.asarray(result[name]) - value)) <= TOLERANCE, (where, name)

    with pytest.raises(kp.ModelError, match=r"one input; 'two_by_two' has 2 \(extra_features, token_ids\)"):
        export_tflite(model, tmp_path / "int8.tflite", quantization="int8", calibration=np.zeros((2, 3), "float32"))
    assert not (tmp_path / "int8.tflite").exists()


def test_a_subclassed_model_is_refused_in_one_line(tmp_path):
    class Scorer(keras.Model):
        def __init__(self):
            super().__init__(name="scorer")
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Scorer()
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(kp.ModelError, match="'scorer' has no symbolic inputs and outputs to export"):
        export_savedmodel(model, tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_list_inputs_and_outputs_are_named_after_their_layers():
    features, extra = keras.Input((4,), name="features"), keras.Input((2,), name="extra")
    h = keras.layers.Dense(3, name="body")(features)
    model = keras.Model([features, extra], [keras.layers.Dense(1, name="score")(h), keras.layers.Add(name="plus")([keras.layers.Dense(2, name="cls")(h), extra])])
    assert kp.export.describe_signature(model) == (
        "serving_default: features float32 (-1, 4), extra float32 (-1, 2) -> score float32 (-1, 1), plus float32 (-1, 2)"
    )


def test_nested_outputs_are_refused_and_an_integer_output_still_serves(tmp_path):
    x = keras.Input((4,), name="x")
    nested = keras.Model(x, {"a": {"u": keras.layers.Dense(2)(x), "v": keras.layers.Dense(5)(x)}, "b": keras.layers.Dense(3)(x)})
    with pytest.raises(kp.ModelError, match="nested outputs"):
        export_savedmodel(nested, tmp_path / "nested")
    classes = keras.Model(x, keras.ops.argmax(keras.layers.Dense(3)(x), -1), name="argmax")
    folder = export_savedmodel(classes, tmp_path)
    served = tf.saved_model.load(str(folder)).signatures["serving_default"](images=tf.ones((2, 4)))
    np.testing.assert_array_equal(served["logits"].numpy(), keras.ops.convert_to_numpy(classes(np.ones((2, 4), "float32"))))
