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
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import keras
import numpy as np

from keras_prune import _keras_compat
from keras_prune.api import strip, wrapped_layers
from keras_prune.errors import BackendError, InputError, ModelError
from keras_prune.graph import walk
from keras_prune.sparse_encoding import encode_bitmask, encode_relative_index
from keras_prune.storage import atomic_folder, atomic_path, load_model, make_folder, save_model

__all__ = [
    "check_name",
    "check_quantization",
    "check_version",
    "describe_signature",
    "export_keras",
    "export_model",
    "export_savedmodel",
    "export_tflite",
    "FileSize",
    "FORMATS",
    "INPUT_NAME",
    "LOGITS",
    "ModelSource",
    "plain_model",
    "PROBABILITIES",
    "QUANTIZATIONS",
    "serving_outputs",
    "ServingOutputs",
    "SIGMOID",
    "SIGNATURE_KEY",
    "signature_inputs",
    "signature_outputs",
    "size_report",
    "SizeReport",
    "SOFTMAX",
    "tflite_bytes",
]

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "images"
LOGITS = "logits"
PROBABILITIES = "probabilities"
SOFTMAX = "softmax"
SIGMOID = "sigmoid"
FORMATS = ("savedmodel", "tflite", "keras")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
KERAS_QUANTIZATIONS = ("int8",)
CALIBRATION_IMAGES = 500

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
    for path, layer in walk(model):
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


def check_calibration(model: keras.Model, quantization: str, calibration: object) -> np.ndarray | None:
    """The calibration images a TFLite quantization needs: required for "int8" only.

    Args:
        model: the model to convert (its input shape is checked).
        quantization: one of `QUANTIZATIONS`.
        calibration: model inputs (an array of shape ``(N, *input_shape)``, N >= 1), or None.

    Returns:
        The images as a float32 array, or None when `quantization` is not "int8".

    Raises:
        InputError: int8 without calibration images, calibration images with another
            quantization, or images of the wrong shape.
        ModelError: int8 for a model with several inputs.
    """
    if quantization != "int8":
        if calibration is not None:
            raise InputError(
                f"calibration images go with TFLite quantization 'int8', not {quantization!r}"
            )
        return None
    if calibration is None:
        raise InputError(
            "TFLite int8 quantization needs calibration images (a few hundred model inputs "
            "from the training split) to set the activations' ranges"
        )
    if len(model.inputs) != 1:
        raise ModelError(
            f"TFLite int8 quantization calibrates models with one input; '{model.name}' has "
            f"{len(model.inputs)} ({', '.join(name for name, _ in signature_inputs(model))}): "
            "use 'dynamic' or 'float16'"
        )
    images = np.asarray(calibration, dtype=np.float32)
    expected = tuple(model.inputs[0].shape[1:])
    shape_fits = images.ndim == len(expected) + 1 and all(
        e is None or e == d for e, d in zip(expected, images.shape[1:])
    )
    if not shape_fits or len(images) == 0:
        shown = "(N, " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        raise InputError(
            f"calibration images must be an array of shape {shown} with N >= 1 for "
            f"'{model.name}', got shape {images.shape}"
        )
    return images


def check_keras_quantization(mode: str) -> str:
    """One of `KERAS_QUANTIZATIONS` (a mode of `keras.Model.quantize` that keeps zeros zero).

    Raises:
        InputError: any other value.
    """
    if mode not in KERAS_QUANTIZATIONS:
        raise InputError(
            f"unknown Keras quantization {mode!r}; choose one of: {', '.join(KERAS_QUANTIZATIONS)}"
        )
    return mode


def quantize_keras(model: ModelSource, mode: str = "int8") -> keras.Model:
    """A stripped copy of the model quantized by Keras itself (`keras.Model.quantize`).

    Keras 3 quantizes the kernels of Dense, EinsumDense and Embedding layers (per
    output channel, symmetric: 0.0 maps to 0, so pruned weights stay zero) and leaves
    the other layers (convolutions included) in float32. The model passed in is not
    changed. The result saves as .keras and exports as a SavedModel; the TFLite
    converter cannot read Keras' int8 layers (use `tflite_bytes(..., "int8")`).

    Args:
        model: a wrapped or plain model, or the path of a .keras file.
        mode: one of `KERAS_QUANTIZATIONS`.

    Returns:
        The quantized copy.

    Raises:
        InputError: an unknown mode.
        ModelError: the model has no layer Keras can quantize.

    Example:

    ```python
    small = quantize_keras("saved_models/lenet5_pruned.keras")
    small.get_layer("fc1").kernel.dtype  # 'int8'; conv1 and conv2 stay float32
    ```
    """
    check_keras_quantization(mode)
    source = model
    model = plain_model(_load(model))
    if model is source:  # quantize() works in place: quantize a copy
        with tempfile.TemporaryDirectory(prefix="keras_prune_quantize_") as folder:
            model = load_model(save_model(model, Path(folder) / "model.keras"), safe_mode=False)
    before = {id(v): v.dtype for v in model.weights}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Layer InputLayer does not have a `quantize` method"
        model.quantize(mode)
    if all(before.get(id(v)) == v.dtype for v in model.weights):
        raise ModelError(
            f"Keras {mode} quantization changes nothing in '{model.name}': it quantizes "
            "Dense, EinsumDense and Embedding layers only"
        )
    return model


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


def _signature_names(structure, tensors: list) -> list[str]:
    """A signature name for each of `tensors` (a model's flat inputs or outputs): the
    keys of a dict `structure`, otherwise the names of the layers (or ops) computing
    them, made valid and unique."""
    if isinstance(structure, dict):
        raw = keras.tree.flatten({key: str(key) for key in structure})
    else:
        raw = [_keras_compat.producer(t).name for t in tensors]
    names: list[str] = []
    for name in raw:
        name = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "tensor"
        unique, n = name, 1
        while unique in names:
            n += 1
            unique = f"{name}_{n}"
        names.append(unique)
    return names


def signature_inputs(model: keras.Model) -> list[tuple[str, object]]:
    """The serving signature's inputs, as (name, model input) in `model.inputs`' order:
    `INPUT_NAME` for a model with one input; with several (a keras-hub backbone's
    ``token_ids`` and ``padding_mask``), the keys of the model's input dict or the names
    of its `keras.Input` layers.

    Raises:
        ModelError: `model` has no symbolic inputs and outputs (a subclassed model).
    """
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs, outputs = [], []
    if not inputs or not outputs:
        raise ModelError(
            f"'{model.name}' has no symbolic inputs and outputs to export; build it as a "
            "Functional or Sequential model"
        )
    if len(inputs) == 1:
        return [(INPUT_NAME, inputs[0])]
    names = _signature_names(model.input, inputs)
    if len(names) != len(inputs):
        raise ModelError(f"'{model.name}' takes nested inputs; export serves a flat list or dict of inputs")
    return list(zip(names, inputs))


def signature_outputs(model: keras.Model) -> list[str]:
    """The serving signature's output names: `serving_outputs(model).names` for a model
    with one output (a classifier's logits and probabilities); with several, the keys of
    the model's output dict or the names of the layers computing them."""
    if len(model.outputs) == 1:
        return list(serving_outputs(model).names)
    names = _signature_names(model.output, model.outputs)
    if len(names) != len(model.outputs):
        raise ModelError(f"'{model.name}' returns nested outputs; export serves a flat list or dict of outputs")
    return names


def _serving_module(model: keras.Model):
    """A `tf.Module` tracking the model's variables once, and its serving function: one
    argument per model input (named as `signature_inputs` says), a dict of float32
    outputs (named as `signature_outputs` says)."""
    import tensorflow as tf

    inputs = signature_inputs(model)
    specs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=name) for name, t in inputs]
    names = signature_outputs(model)
    structure = model.inputs[0] if len(inputs) == 1 else model.input  # a Sequential model has no .input

    def call(served: keras.Model, args) -> list:
        return keras.tree.flatten(served(keras.tree.pack_sequence_as(structure, list(args)), training=False))

    def as_float32(t):  # several outputs: integer ones stay as they are
        return tf.cast(t, tf.float32) if t.dtype.is_floating or head is not None else t

    head = serving_outputs(model) if len(model.outputs) == 1 else None
    served = model
    if head is not None and head.logits is not None:  # one forward pass yields both tensors
        served = keras.Model(structure, [head.logits, model.outputs[0]], name=model.name)

    @tf.function(input_signature=specs)
    def serve(*args):
        outputs = [as_float32(t) for t in call(served, args)]
        if head is None or head.logits is not None or head.activation is not None:
            return dict(zip(names, outputs))
        # a model returning logits: the signature adds their softmax (sigmoid for one unit)
        squash = tf.sigmoid if outputs[0].shape[-1] == 1 else tf.nn.softmax
        return {LOGITS: outputs[0], PROBABILITIES: squash(outputs[0])}

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
        return "(" + ", ".join("-1" if d is None else str(d) for d in (None, *dims[1:])) + ")"

    sources = ", ".join(f"{name} {t.dtype} {shape(t.shape)}" for name, t in signature_inputs(model))
    names = signature_outputs(model)
    if len(model.outputs) == 1:
        results = f"{', '.join(names)} float32 {shape(model.outputs[0].shape)}"
    else:
        results = ", ".join(
            f"{name} {'float32' if 'float' in str(t.dtype) else t.dtype} {shape(t.shape)}"
            for name, t in zip(names, model.outputs)
        )
    return f"{SIGNATURE_KEY}: {sources} -> {results}"


TENSORFLOW_FORMATS = ("savedmodel", "tflite")
"""Export formats written through `tf.function` and `tf.lite`: the TensorFlow backend only."""


def check_backend(what: str) -> None:
    """Raises `BackendError` unless Keras runs on TensorFlow.

    SavedModel and TFLite files are traced from the model by `tf.function`, which
    runs a Keras model only on the TensorFlow backend. (Keras' own ``model.export``
    goes through jax2tf on JAX, without keras-prune's serving signature.)

    Args:
        what: the export, for the message (``"SavedModel export"``).
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise BackendError(
            f"{what} needs the tensorflow backend; KERAS_BACKEND is '{backend}' "
            "(export the .keras file, which loads on every backend, and convert it under KERAS_BACKEND=tensorflow)"
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
        ModelError: a model that cannot be stripped or has no symbolic inputs (a
            subclassed model).

    The signature takes one argument per model input (`signature_inputs`: ``images``
    for a single input) and returns float32 tensors named by `signature_outputs`: a
    classifier's ``logits`` and ``probabilities``, or, for a model with several
    outputs, each output under its name.

    Example:

    ```python
    path = export_savedmodel(pruned, "serving", name="lenet5", version=1)
    logits = tf.saved_model.load(str(path)).signatures["serving_default"](
        images=tf.zeros([1, 28, 28, 1]))["logits"]
    ```
    """
    check_backend("SavedModel export")
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


def tflite_bytes(
    model: ModelSource, quantization: str = "float32", sparse: bool = False, calibration: object = None
) -> bytes:
    """The stripped model converted to a TFLite flatbuffer with the serving signature.

    Args:
        model: a wrapped or plain model, or the path of a .keras file.
        quantization: "float32" (weights as they are), "float16" (weights stored
            as float16), "dynamic" (dynamic range: larger weight tensors stored as
            int8, activations float) or "int8" (full integer: every weight int8,
            per output channel and symmetric, and activations int8, their ranges
            measured on `calibration`; the signature still takes and returns
            float32). Zeros stay zero in all four; quantization may also round small
            non-zero weights to zero.
        sparse: store sufficiently sparse weight tensors in TFLite's sparse format
            (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``): a smaller file with the
            same outputs. XNNPACK has sparse kernels for float convolution networks
            of one narrow shape; otherwise the interpreter densifies the weights when
            it loads (no speed-up in docs/export.md's measurements).
        calibration: for "int8" only, and required there: model inputs (e.g. a few
            hundred training images, scaled as in training), shape ``(N, *input_shape)``.

    Returns:
        The flatbuffer.

    Raises:
        InputError: an unknown quantization, or calibration images missing (int8),
            misplaced or of the wrong shape.
        ModelError: see `export_savedmodel`; or the converter cannot convert the
            model (e.g. an LSTM's tensor lists), in one line.

    Example:

    ```python
    data = keras_prune.data.load_dataset()
    flatbuffer = tflite_bytes("saved_models/lenet5_pruned.keras", "int8", sparse=True,
                              calibration=data.x_train[:500] / 255.0)
    ```
    """
    check_backend("TFLite export")
    check_quantization(quantization)
    model = plain_model(_load(model))
    calibration = check_calibration(model, quantization, calibration)
    with tempfile.TemporaryDirectory(prefix="keras_prune_tflite_") as folder:
        _write_savedmodel(model, Path(folder))
        return _convert(Path(folder), model.name, quantization, sparse, calibration)


def _convert(
    savedmodel: Path, name: str, quantization: str, sparse: bool, calibration: np.ndarray | None
) -> bytes:
    """Converts an exported SavedModel (arguments checked by `tflite_bytes`)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel), signature_keys=[SIGNATURE_KEY])
    optimizations = []
    if quantization != "float32":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: ({INPUT_NAME: image[None]} for image in calibration)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # int8 calibration: tf.lite.Interpreter's deprecation notice
            return converter.convert()
    except Exception as exc:  # tf.lite's ConverterError and others: many lines of MLIR diagnostics.
        raise ModelError(f"TFLite cannot convert '{name}': {_converter_message(exc)}") from None


def _converter_message(exc: Exception) -> str:
    """The first diagnostic of a TFLite converter error, without its source location."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if ": error: " in line] or lines or [type(exc).__name__]
    message = errors[0].split(": error: ", 1)[-1]
    if message.startswith("loc("):  # loc(callsite(...)): the op's place in the graph
        message = message[message.rfind(")): ") + 4:] if ")): " in message else message
    return " ".join(message.split())[:300]


def export_tflite(
    model: ModelSource,
    path: str | Path,
    quantization: str = "float32",
    sparse: bool = False,
    calibration: object = None,
) -> Path:
    """Writes the stripped model as a .tflite file, atomically.

    Args:
        model: a wrapped or plain model, or the path of a .keras file.
        path: the destination, ending in .tflite; its folder must exist.
        quantization: see `tflite_bytes`.
        sparse: see `tflite_bytes`.
        calibration: see `tflite_bytes` (int8 only).

    Returns:
        `path`.

    Raises:
        InputError: `path` does not end in .tflite or cannot be written, or see
            `tflite_bytes`.

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
    content = tflite_bytes(model, quantization, sparse, calibration)
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
    calibration: object = None,
    keras_quantization: str | None = None,
) -> dict[str, Path]:
    """Strips the wrappers once and writes the model in each of `formats` under `out_dir`.

    Args:
        model: a wrapped or plain model, or the path of a .keras file.
        out_dir: created if missing.
        formats: any of "savedmodel" (``out_dir/name/version/``), "tflite"
            (``out_dir/name.tflite``, or ``name_float16.tflite``, ``name_dynamic.tflite``,
            ``name_int8.tflite`` when quantized) and "keras" (``out_dir/name.keras``).
        name: default: the model's name.
        version: the SavedModel version, a positive integer.
        quantization: of the TFLite file, see `tflite_bytes`; anything but
            "float32" needs "tflite" among `formats`.
        sparse_tflite: TFLite's sparse weight format, see `tflite_bytes`.
        calibration: model inputs for the TFLite "int8" quantization, see `tflite_bytes`.
        keras_quantization: "int8" to write the .keras file and the SavedModel
            from `quantize_keras(model, "int8")`; not with "tflite".

    Returns:
        format -> the path written.

    Raises:
        InputError: an unknown format or quantization, a quantization without
            the format it applies to, missing or misplaced calibration images, a bad
            name or version, a missing model file or a folder that cannot be
            written; all checked before anything is written.
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
    for fmt in TENSORFLOW_FORMATS:
        if fmt in formats:
            check_backend(f"{fmt} export")
    version = check_version(version)
    check_quantization(quantization)
    if quantization != "float32" and "tflite" not in formats:
        raise InputError(
            f"TFLite quantization {quantization!r} needs the tflite format (Keras' own int8 "
            "quantization of the .keras file and the SavedModel is keras_quantization='int8', "
            "in the CLI --keras-quantize int8)"
        )
    if keras_quantization is not None:
        check_keras_quantization(keras_quantization)
        if "tflite" in formats:
            raise InputError(
                f"Keras {keras_quantization} quantization does not go with the tflite format "
                "(the TFLite converter cannot read Keras' int8 layers); use TFLite quantization "
                "'int8' for the TFLite file"
            )
    model = plain_model(_load(model))
    calibration = check_calibration(model, quantization, calibration)
    name = check_name(name or model.name)
    if keras_quantization is not None:
        model = quantize_keras(model, keras_quantization)
    out_dir = make_folder(Path(out_dir))
    written: dict[str, Path] = {}
    for fmt in dict.fromkeys(formats):
        if fmt == "savedmodel":
            written[fmt] = export_savedmodel(model, out_dir, name, version)
        elif fmt == "tflite":
            suffix = "" if quantization == "float32" else f"_{quantization}"
            path = out_dir / f"{name}{suffix}.tflite"
            written[fmt] = export_tflite(model, path, quantization, sparse_tflite, calibration)
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
    def of_bytes(cls, content: bytes) -> "FileSize":
        """Measures the contents of one file."""
        return cls(raw=len(content), gzip=len(gzip.compress(content, compresslevel=9, mtime=0)))

    @classmethod
    def of(cls, path: str | Path) -> "FileSize":
        """Measures a file, or every file under a folder (sizes summed)."""
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        sizes = [cls.of_bytes(p.read_bytes()) for p in files]
        return cls(raw=sum(s.raw for s in sizes), gzip=sum(s.gzip for s in sizes))


@dataclass(frozen=True)
class SizeReport:
    """What a model costs on disk in each export format and in compact sparse encodings.

    Attributes:
        parameters: all weights of the stripped model, biases included.
        nonzeros: how many of them are non-zero.
        keras_file: the plain .keras file (a zip archive).
        keras_int8_file: the .keras file after Keras' int8 quantization
            (`quantize_keras`); None when the model has no layer Keras quantizes.
        savedmodel_variables: the SavedModel's ``variables/`` folder (the weights;
            ``saved_model.pb``, the graph, does not depend on them).
        tflite_file: the float32 .tflite file, weights stored dense.
        tflite_sparse_file: the float32 .tflite file with TFLite's sparse weight format.
        tflite_float16_file: the .tflite file with float16 weights.
        tflite_int8_file: the .tflite file with int8 weights (dynamic range: no
            calibration data needed; a full-integer int8 file is a little larger,
            2,088 bytes for the LeNet-5: the activations' quantization parameters).
        tflite_int8_sparse_file: the same with TFLite's sparse weight format.
        tflite_error: why the TFLite converter refused the model (all TFLite sizes
            are then None), or None.
            The SavedModel and TFLite sizes are None on a backend other than TensorFlow
            (see `check_backend`).
        dense_bytes: all parameters as float32 arrays.
        bitmask_bytes: weights of rank >= 2 as a bitmask plus non-zero values
            (`keras_prune.sparse_encoding.encode_bitmask`), other parameters dense.
        relative_index_bytes: weights of rank >= 2 as relative-index CSR as in Deep
            Compression (`encode_relative_index`), other parameters dense.
    """

    parameters: int
    nonzeros: int
    keras_file: FileSize
    keras_int8_file: FileSize | None
    savedmodel_variables: FileSize | None
    tflite_file: FileSize | None
    tflite_sparse_file: FileSize | None
    tflite_float16_file: FileSize | None
    tflite_int8_file: FileSize | None
    tflite_int8_sparse_file: FileSize | None
    tflite_error: str | None
    dense_bytes: int
    bitmask_bytes: int
    relative_index_bytes: int


#: The TFLite files `size_report` measures: field -> (quantization, sparse).
_TFLITE_SIZES = {
    "tflite_file": ("float32", False),
    "tflite_sparse_file": ("float32", True),
    "tflite_float16_file": ("float16", False),
    "tflite_int8_file": ("dynamic", False),
    "tflite_int8_sparse_file": ("dynamic", True),
}


def size_report(model: ModelSource) -> SizeReport:
    """Exports the stripped model in every format and measures it; no file is left behind.

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
        keras_file = FileSize.of(export_keras(model, folder / "model.keras"))
        try:
            keras_int8_file = FileSize.of(export_keras(quantize_keras(model), folder / "int8.keras"))
        except ModelError:  # no Dense, EinsumDense or Embedding layer
            keras_int8_file = None
        tensorflow = keras.backend.backend() == "tensorflow"
        tflite: dict[str, FileSize | None] = dict.fromkeys(_TFLITE_SIZES)
        tflite_error = None if tensorflow else f"TFLite needs the TensorFlow backend, not {keras.backend.backend()}"
        if tensorflow:
            _write_savedmodel(model, folder / "savedmodel")
            try:
                for field, (quantization, sparse) in _TFLITE_SIZES.items():
                    content = _convert(folder / "savedmodel", model.name, quantization, sparse, None)
                    tflite[field] = FileSize.of_bytes(content)
            except ModelError as exc:
                tflite, tflite_error = dict.fromkeys(_TFLITE_SIZES), str(exc)
        return SizeReport(
            parameters=int(sum(a.size for a in arrays)),
            nonzeros=int(sum(np.count_nonzero(a) for a in arrays)),
            keras_file=keras_file,
            keras_int8_file=keras_int8_file,
            savedmodel_variables=FileSize.of(folder / "savedmodel" / "variables") if tensorflow else None,
            **tflite,
            tflite_error=tflite_error,
            dense_bytes=dense_bytes,
            bitmask_bytes=bitmask,
            relative_index_bytes=relative,
        )
