"""Serving-ready export: stripped SavedModels, TFLite files, plain .keras files, sizes.

Every export strips the wrappers first (`keras_prune.strip`): the files hold plain
Keras layers (or plain TensorFlow graphs) with pruned weights exactly 0.0, and load
where keras_prune is not installed.

The SavedModel has one signature, ``serving_default``, for a classifier:

- input ``images``: the model's input dtype (float32 for the reference models) and
  shape ``(-1, *model.input_shape[1:])``, e.g. ``(-1, 28, 28, 1)``;
- outputs, float32, ``(-1, classes)``, named after what they hold (`serving_outputs`):
  ``logits`` and ``probabilities`` when the model returns logits (probabilities =
  softmax of the logits, or sigmoid for a single column) or ends in a separate
  softmax/sigmoid operation (logits = that operation's input); only ``probabilities``,
  the model's own output, when the activation is fused into the last layer
  (``Dense(10, activation="softmax")``). Softmax is never applied twice.

It is written by `tf.saved_model.save` from a `tf.Module` that tracks each variable
once. Keras' own export API (`keras.export.ExportArchive`, `model.export`) would serve,
but on the TensorFlow backend it stores every variable twice (keras-team/keras#23553),
doubling the file a pruned model is exported to make small.

It is written in TensorFlow Serving's layout, ``BASE/NAME/VERSION/saved_model.pb``
plus ``variables/``. Every file and folder is written under a temporary name beside
its destination and renamed into place when complete (TensorFlow Serving ignores
folders whose names are not numbers, so it never sees a half-written version).
"""

from __future__ import annotations

import gzip
import numbers
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import keras
import numpy as np

from keras_prune.api import strip, walk_layers, wrapped_layers
from keras_prune.errors import InputError, ModelError
from keras_prune.sparse_encoding import encode_bitmask, encode_relative_index
from keras_prune.storage import atomic_folder, atomic_path, load_model, make_folder, save_model

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "images"
LOGITS = "logits"
PROBABILITIES = "probabilities"
SOFTMAX = "softmax"
SIGMOID = "sigmoid"
FORMATS = ("savedmodel", "tflite", "keras")
QUANTIZATIONS = ("float32", "float16", "dynamic")

ModelSource = Union[keras.Model, str, Path]


def plain_model(model: keras.Model) -> keras.Model:
    """`model` with no keras_prune classes: stripped if it holds wrappers.

    Args:
        model: a wrapped or plain model.

    Returns:
        A stripped copy of a wrapped model, or `model` itself if it has no wrappers.

    Raises:
        ModelError: a keras_prune class is left that `strip` cannot remove.

    Example:

    ```python
    plain = plain_model(keras_prune.load_model("saved_models/lenet5_pruned.keras"))
    ```
    """
    if wrapped_layers(model):
        model = strip(model)
    for path, layer in walk_layers(model):
        if type(layer).__module__.startswith("keras_prune"):
            raise ModelError(
                f"layer '{path}' is a {type(layer).__name__}; strip() leaves none in a "
                "Sequential or Functional model"
            )
    return model


def _load(model: ModelSource) -> keras.Model:
    return model if isinstance(model, keras.Model) else load_model(model)


def check_version(version: object) -> int:
    """A SavedModel version: a positive integer (TensorFlow Serving serves the highest).

    Raises:
        InputError: anything else (booleans, floats and strings included).
    """
    if isinstance(version, bool) or not isinstance(version, numbers.Integral) or version < 1:
        raise InputError(f"version must be a positive integer, got {version!r}")
    return int(version)


def check_name(name: str) -> str:
    """An export name: one non-empty path component.

    Raises:
        InputError: an empty name, '.', '..', or one containing a path separator.
    """
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise InputError(
            f"export name must be one folder/file name without '/', got {name!r}"
        )
    return name


def check_quantization(quantization: str) -> str:
    """One of `QUANTIZATIONS`.

    Raises:
        InputError: any other value.
    """
    if quantization not in QUANTIZATIONS:
        raise InputError(
            f"unknown TFLite quantization {quantization!r}; choose one of: "
            f"{', '.join(QUANTIZATIONS)}"
        )
    return quantization


@dataclass(frozen=True)
class ServingOutputs:
    """What a classifier returns, as the serving signature names it.

    Attributes:
        activation: the model's final activation, `SOFTMAX`, `SIGMOID` or None (it
            returns logits).
        names: the signature's outputs: ``("logits", "probabilities")`` or
            ``("probabilities",)``.
        logits: the tensor the final activation takes, when it is a separate
            operation (a `Softmax` or `Activation` layer, `keras.ops.softmax`); None
            otherwise.
    """

    activation: str | None
    names: tuple[str, ...]
    logits: object = None


def _output_operation(model: keras.Model):
    """The layer or operation that computes the model's (single) output, if it can be told."""
    if isinstance(model, keras.Sequential):
        return model.layers[-1] if model.layers else None
    operations = getattr(model, "operations", None)
    # A Functional model lists its operations in topological order; with one output,
    # every operation feeds it, so the last one computes it.
    return operations[-1] if operations else None


def _activation_name(operation) -> str | None:
    """SOFTMAX or SIGMOID if `operation` ends in that activation, else None."""
    if isinstance(operation, keras.Model):
        return serving_outputs(operation).activation
    if isinstance(operation, keras.layers.Softmax):
        return SOFTMAX
    activation = getattr(operation, "activation", None)
    if callable(activation):
        name = getattr(activation, "__name__", "")
    elif not isinstance(operation, keras.layers.Layer):  # a keras.ops node: ops.softmax, ops.sigmoid
        name = type(operation).__name__.lower()
    else:
        name = ""
    return name if name in (SOFTMAX, SIGMOID) else None


def _is_separate_activation(operation) -> bool:
    """Whether `operation` does nothing but apply the activation (its input is the logits)."""
    return isinstance(operation, (keras.layers.Softmax, keras.layers.Activation)) or not isinstance(
        operation, keras.layers.Layer
    )


def serving_outputs(model: keras.Model) -> ServingOutputs:
    """Finds the final activation of a classifier and the outputs its export serves.

    The activation is that of the layer or operation computing the output: a layer's
    ``activation`` (``Dense(10, activation="softmax")``), a `Softmax` or
    `Activation` layer, a `keras.ops.softmax`/`keras.ops.sigmoid` node, or the same
    at the end of a nested model. A model whose output cannot be traced (a subclassed
    model) is taken to return logits.

    Args:
        model: a plain (stripped) model with one output.

    Returns:
        The activation, the output names, and the logits tensor when there is one
        apart from the model's own output.

    Example:

    ```python
    serving_outputs(keras.applications.MobileNet(weights=None)).names
    # ('logits', 'probabilities'): it ends in an Activation("softmax") layer
    serving_outputs(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])).names
    # ('probabilities',)
    ```
    """
    operation = _output_operation(model)
    activation = _activation_name(operation) if operation is not None else None
    if activation is None:
        return ServingOutputs(None, (LOGITS, PROBABILITIES))
    if _is_separate_activation(operation):
        try:
            logits = operation.input
        except (AttributeError, ValueError):  # a shared layer: no single input
            logits = None
        if logits is not None and not isinstance(logits, (list, tuple, dict)):
            return ServingOutputs(activation, (LOGITS, PROBABILITIES), logits)
    return ServingOutputs(activation, (PROBABILITIES,))


def _serving_module(model: keras.Model):
    """A `tf.Module` tracking the model's variables once, and its serving function."""
    import tensorflow as tf

    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs, outputs = [], []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"'{model.name}' must have exactly one input and one output (a classifier) "
            f"to be exported; it has {len(inputs)} and {len(outputs)}"
        )
    spec = tf.TensorSpec((None, *inputs[0].shape[1:]), inputs[0].dtype, name=INPUT_NAME)
    head = serving_outputs(model)
    if head.logits is not None:  # one forward pass yields both tensors
        served = keras.Model(inputs[0], [head.logits, outputs[0]], name=model.name)

        @tf.function(input_signature=[spec])
        def serve(images):
            logits, probabilities = served(images, training=False)
            return {LOGITS: tf.cast(logits, tf.float32), PROBABILITIES: tf.cast(probabilities, tf.float32)}

    elif head.activation is not None:
        served = model

        @tf.function(input_signature=[spec])
        def serve(images):
            return {PROBABILITIES: tf.cast(model(images, training=False), tf.float32)}

    else:
        served = model

        @tf.function(input_signature=[spec])
        def serve(images):
            logits = tf.cast(model(images, training=False), tf.float32)
            squash = tf.sigmoid if logits.shape[-1] == 1 else tf.nn.softmax
            return {LOGITS: logits, PROBABILITIES: squash(logits)}

    module = tf.Module()
    module.model_variables = [v.value for v in served.variables]  # the tf.Variables `serve` captures
    return module, serve


def describe_signature(model: keras.Model) -> str:
    """The ``serving_default`` signature an export of `model` has, in one line.

    Example:

    ```python
    describe_signature(keras_prune.models.lenet5())
    # 'serving_default: images float32 (-1, 28, 28, 1) -> logits, probabilities float32 (-1, 10)'
    ```
    """

    def shape(dims) -> str:
        return "(" + ", ".join("-1" if d is None else str(d) for d in dims) + ")"

    return (
        f"{SIGNATURE_KEY}: {INPUT_NAME} {model.inputs[0].dtype} {shape(model.input_shape)} -> "
        f"{', '.join(serving_outputs(model).names)} float32 {shape(model.output_shape)}"
    )


def _write_savedmodel(model: keras.Model, folder: Path) -> None:
    import tensorflow as tf

    module, serve = _serving_module(model)
    tf.saved_model.save(module, str(folder), signatures={SIGNATURE_KEY: serve.get_concrete_function()})


def export_savedmodel(
    model: ModelSource, base_dir: str | Path, name: str | None = None, version: int = 1
) -> Path:
    """Writes the stripped model as a SavedModel in TensorFlow Serving's layout.

    Args:
        model: a wrapped or plain model, or the path of a .keras file.
        base_dir: TensorFlow Serving's model base path; created if missing.
        name: the model's folder under `base_dir`. Default: the model's name.
        version: a positive integer; an earlier export of the same version is replaced.

    Returns:
        The version folder, ``base_dir/name/version``, holding ``saved_model.pb``
        and ``variables/``.

    Raises:
        InputError: a bad name or version, or a folder that cannot be written.
        ModelError: a model that cannot be stripped or has more than one input or output.

    Example:

    ```python
    path = export_savedmodel(pruned, "serving", name="lenet5", version=1)
    logits = tf.saved_model.load(str(path)).signatures["serving_default"](
        images=tf.zeros([1, 28, 28, 1]))["logits"]
    ```
    """
    version = check_version(version)
    model = plain_model(_load(model))
    name = check_name(name or model.name)
    model_folder = make_folder(Path(base_dir) / name)
    destination = model_folder / str(version)
    if destination.exists() and not (destination / "saved_model.pb").is_file():
        raise InputError(f"{destination} exists and is not a SavedModel; remove it or pick another version")
    with atomic_folder(destination) as tmp:
        _write_savedmodel(model, tmp)
    return destination


def tflite_bytes(model: ModelSource, quantization: str = "float32", sparse: bool = False) -> bytes:
    """The stripped model converted to a TFLite flatbuffer with the serving signature.

    Args:
        model: a wrapped or plain model, or the path of a .keras file.
        quantization: "float32" (weights as they are), "float16" (weights stored
            as float16) or "dynamic" (dynamic-range: larger weight tensors stored as
            int8, activations float). Zeros stay zero in all three; quantisation
            may also round small non-zero weights to zero.
        sparse: store sufficiently sparse weight tensors in TFLite's sparse format
            (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``): a smaller file with the
            same outputs; the interpreter densifies them when it loads the model.

    Returns:
        The flatbuffer.

    Raises:
        InputError: an unknown quantization.
        ModelError: see `export_savedmodel`; or the converter cannot convert the
            model (e.g. an LSTM's tensor lists), in one line.
    """
    import tensorflow as tf

    check_quantization(quantization)
    model = plain_model(_load(model))
    with tempfile.TemporaryDirectory(prefix="keras_prune_tflite_") as folder:
        _write_savedmodel(model, Path(folder))
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=[SIGNATURE_KEY])
        optimizations = []
        if quantization != "float32":
            optimizations.append(tf.lite.Optimize.DEFAULT)
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if sparse:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        converter.optimizations = optimizations
        try:
            return converter.convert()
        except Exception as exc:  # tf.lite's ConverterError and others: many lines of MLIR diagnostics.
            raise ModelError(f"TFLite cannot convert '{model.name}': {_converter_message(exc)}") from None


def _converter_message(exc: Exception) -> str:
    """The first diagnostic of a TFLite converter error, without its source location."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line] or lines or [type(exc).__name__]
    message = errors[0].split(": error: ", 1)[-1]
    if message.startswith("loc("):  # loc(callsite(...)): the op's place in the graph
        message = message[message.rfind(")): ") + 4:] if ")): " in message else message
    return " ".join(message.split())[:300]


def export_tflite(
    model: ModelSource, path: str | Path, quantization: str = "float32", sparse: bool = False
) -> Path:
    """Writes the stripped model as a .tflite file, atomically.

    Args:
        model: a wrapped or plain model, or the path of a .keras file.
        path: the destination, ending in .tflite; its folder must exist.
        quantization: see `tflite_bytes`.
        sparse: see `tflite_bytes`.

    Returns:
        `path`.

    Raises:
        InputError: `path` does not end in .tflite or cannot be written, or an
            unknown quantization.

    Example:

    ```python
    export_tflite(pruned, "lenet5.tflite")
    runner = tf.lite.Interpreter("lenet5.tflite").get_signature_runner("serving_default")
    logits = runner(images=np.zeros([1, 28, 28, 1], "float32"))["logits"]
    ```
    """
    path = Path(path)
    if path.suffix != ".tflite":
        raise InputError(f"TFLite files must end in .tflite, got {path}")
    content = tflite_bytes(model, quantization, sparse)
    with atomic_path(path, suffix=".tflite") as tmp:
        tmp.write_bytes(content)
    return path


def export_keras(model: ModelSource, path: str | Path) -> Path:
    """Writes the stripped model as a plain .keras file (no keras_prune classes), atomically.

    Args:
        model: a wrapped or plain model, or the path of a .keras file.
        path: the destination, ending in .keras; its folder must exist.

    Returns:
        `path`.

    Example:

    ```python
    export_keras(pruned, "lenet5_plain.keras")
    keras.models.load_model("lenet5_plain.keras")  # no custom_objects needed
    ```
    """
    return save_model(plain_model(_load(model)), path)


def export_model(
    model: ModelSource,
    out_dir: str | Path,
    formats: Sequence[str] = ("savedmodel",),
    name: str | None = None,
    version: int = 1,
    quantization: str = "float32",
    sparse_tflite: bool = False,
) -> dict[str, Path]:
    """Strips the wrappers once and writes the model in each of `formats` under `out_dir`.

    Args:
        model: a wrapped or plain model, or the path of a .keras file.
        out_dir: created if missing.
        formats: any of "savedmodel" (``out_dir/name/version/``), "tflite"
            (``out_dir/name.tflite``, ``name_float16.tflite`` or
            ``name_dynamic.tflite``) and "keras" (``out_dir/name.keras``).
        name: default: the model's name.
        version: the SavedModel version, a positive integer.
        quantization: of the TFLite file, see `tflite_bytes`.
        sparse_tflite: TFLite's sparse weight format, see `tflite_bytes`.

    Returns:
        format -> the path written.

    Raises:
        InputError: an unknown format or quantization, a bad name or version, a
            missing model file or a folder that cannot be written; all checked
            before anything is written.
        ModelError: see `export_savedmodel`.

    Example:

    ```python
    paths = keras_prune.export_model("saved_models/lenet5_pruned.keras", "serving",
                               formats=["savedmodel", "tflite"], name="lenet5")
    ```
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(
            f"unknown export format {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from: {', '.join(FORMATS)}"
        )
    version = check_version(version)
    check_quantization(quantization)
    model = plain_model(_load(model))
    name = check_name(name or model.name)
    out_dir = make_folder(Path(out_dir))
    written: dict[str, Path] = {}
    for fmt in dict.fromkeys(formats):
        if fmt == "savedmodel":
            written[fmt] = export_savedmodel(model, out_dir, name, version)
        elif fmt == "tflite":
            suffix = "" if quantization == "float32" else f"_{quantization}"
            written[fmt] = export_tflite(model, out_dir / f"{name}{suffix}.tflite", quantization, sparse_tflite)
        else:
            written[fmt] = export_keras(model, out_dir / f"{name}.keras")
    return written


@dataclass(frozen=True)
class FileSize:
    """The size of a file (or of all files in a folder), as stored and gzip-compressed.

    Attributes:
        raw: bytes on disk.
        gzip: bytes after ``gzip -9`` of each file.
    """

    raw: int
    gzip: int

    @classmethod
    def of(cls, path: str | Path) -> "FileSize":
        """Measures a file, or every file under a folder (sizes summed)."""
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        contents = [p.read_bytes() for p in files]
        return cls(
            raw=sum(len(c) for c in contents),
            gzip=sum(len(gzip.compress(c, compresslevel=9, mtime=0)) for c in contents),
        )


@dataclass(frozen=True)
class SizeReport:
    """What a model costs on disk in each export format and in compact sparse encodings.

    Attributes:
        parameters: all weights of the stripped model, biases included.
        nonzeros: how many of them are non-zero.
        keras_file: the plain .keras file.
        savedmodel_variables: the SavedModel's ``variables/`` folder (the weights;
            ``saved_model.pb``, the graph, does not depend on them).
        tflite_file: the float32 .tflite file, weights stored dense.
        tflite_sparse_file: the float32 .tflite file with TFLite's sparse weight format.
        dense_bytes: all parameters as float32 arrays.
        bitmask_bytes: weights of rank >= 2 as a bitmask plus non-zero values
            (`keras_prune.sparse_encoding.encode_bitmask`), other parameters dense.
        relative_index_bytes: weights of rank >= 2 as relative-index CSR as in Deep
            Compression (`encode_relative_index`), other parameters dense.
    """

    parameters: int
    nonzeros: int
    keras_file: FileSize
    savedmodel_variables: FileSize
    tflite_file: FileSize
    tflite_sparse_file: FileSize
    dense_bytes: int
    bitmask_bytes: int
    relative_index_bytes: int


def size_report(model: ModelSource) -> SizeReport:
    """Exports the stripped model to a temporary folder in every format and measures it.

    Args:
        model: a wrapped or plain model, or the path of a .keras file.

    Returns:
        The sizes.

    Example:

    ```python
    dense = size_report("saved_models/lenet5.keras")
    pruned = size_report("saved_models/lenet5_pruned.keras")
    print(dense.savedmodel_variables.gzip / pruned.savedmodel_variables.gzip)
    ```
    """
    model = plain_model(_load(model))
    arrays = [keras.ops.convert_to_numpy(v).astype(np.float32) for v in model.weights]
    dense_bytes = bitmask = relative = 0
    for array in arrays:
        dense_bytes += array.nbytes
        bitmask += len(encode_bitmask(array)) if array.ndim >= 2 else array.nbytes
        relative += len(encode_relative_index(array)) if array.ndim >= 2 else array.nbytes
    with tempfile.TemporaryDirectory(prefix="keras_prune_sizes_") as tmp:
        folder = Path(tmp)
        keras_path = export_keras(model, folder / "model.keras")
        _write_savedmodel(model, folder / "savedmodel")
        (folder / "dense.tflite").write_bytes(tflite_bytes(model))
        (folder / "sparse.tflite").write_bytes(tflite_bytes(model, sparse=True))
        return SizeReport(
            parameters=int(sum(a.size for a in arrays)),
            nonzeros=int(sum(np.count_nonzero(a) for a in arrays)),
            keras_file=FileSize.of(keras_path),
            savedmodel_variables=FileSize.of(folder / "savedmodel" / "variables"),
            tflite_file=FileSize.of(folder / "dense.tflite"),
            tflite_sparse_file=FileSize.of(folder / "sparse.tflite"),
            dense_bytes=dense_bytes,
            bitmask_bytes=bitmask,
            relative_index_bytes=relative,
        )
