"""Multiply-adds (MACs) and FLOPs of a Keras model's inference, layer by layer.

One multiply-add is one multiplication and one addition; FLOPs are twice the MACs,
the convention of the papers that publish these counts (MobileNetV2's "300M
multiply-adds", ResNet-50's "3.8 x 10^9 FLOPs" that are multiply-adds too). Counts are
per example (batch dimension excluded) and cover the layers that carry the arithmetic:

| layer | multiply-adds per example |
| --- | --- |
| Dense | output positions x inputs x units |
| EinsumDense | output elements x the product of the contracted kernel axes |
| Conv1D/2D/3D (any `groups`) | output positions x filters x kernel taps x input channels / groups |
| Conv1D/2D/3DTranspose | input positions x kernel taps x input channels x filters |
| DepthwiseConv1D/2D | output elements x kernel taps |
| SeparableConv1D/2D | its depthwise step + its pointwise (1x1) step |
| MultiHeadAttention | its four projections + ``heads x Tq x Tk x (key_dim + value_dim)`` for the scores and the weighted sum |

Everything else (activations, pooling, normalisation, element-wise merges, softmax,
reshapes, embeddings lookups) is not counted: together they are a few percent of a
CNN's or Transformer's arithmetic, and inference runtimes fold BatchNorm into the
preceding convolution. Layers with weights that no row above covers (an LSTM, a custom
layer) are listed in `FlopsReport.uncounted`, so a count is never silently partial.
Wrappers (keras-prune's `PruneWrapper`, `TimeDistributed`) are counted as the layer
they wrap; nested models are walked. A layer called more than once is counted for its
first call only (Keras keeps the shapes of the first call).

Example:

```python
from keras_prune.flops import count_flops
report = count_flops(keras.applications.MobileNetV2(weights=None))
report.macs      # 300,774,272 (the paper: 300M); ResNet50: 3,857,973,248 (3.8G)
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras

from keras_prune.errors import ModelError

__all__ = [
    "count_flops",
    "count_macs",
    "FlopsReport",
]


@dataclass(frozen=True)
class FlopsReport:
    """A model's inference cost per example.

    Attributes:
        by_layer: multiply-adds of each counted layer, by layer path
            (``outer/inner`` inside nested models), in graph order.
        uncounted: paths of layers that hold weights but have no counting rule.
    """

    by_layer: dict[str, int]
    uncounted: tuple[str, ...] = ()

    @property
    def macs(self) -> int:
        """Total multiply-adds per example."""
        return sum(self.by_layer.values())

    @property
    def flops(self) -> int:
        """Total FLOPs per example: two per multiply-add."""
        return 2 * self.macs

    def __str__(self) -> str:
        text = f"{self.macs / 1e6:,.2f}M multiply-adds ({self.flops / 1e6:,.2f} MFLOPs) per example"
        if self.uncounted:
            text += f"; not counted: {', '.join(self.uncounted)}"
        return text


def count_flops(model: keras.Model) -> FlopsReport:
    """Multiply-adds of every Dense, convolution, EinsumDense and attention layer of `model`.

    Args:
        model: a built Sequential or Functional model (plain or wrapped by keras-prune)
            whose inputs have fixed sizes except the batch dimension.

    Returns:
        A `FlopsReport` (``.macs``, ``.flops``, ``.by_layer``, ``.uncounted``).

    Raises:
        ModelError: if the model is not built, or a counted layer's shapes are not
            fixed (for example an image model built for ``(None, None, 3)`` inputs).

    Example:

    ```python
    count_flops(keras_prune.models.lenet_300_100()).macs  # 266200
    ```
    """
    if not model.built or not model.layers:
        raise ModelError(
            f"model '{model.name}' is not built; build it (call it once, or give it an Input) before counting FLOPs"
        )
    by_layer: dict[str, int] = {}
    uncounted: list[str] = []
    _walk(model, "", by_layer, uncounted)
    return FlopsReport(by_layer, tuple(uncounted))


def count_macs(model: keras.Model) -> int:
    """Multiply-adds per example: ``count_flops(model).macs``.

    Args:
        model: as for `count_flops`.

    Returns:
        The total.

    Example:

    ```python
    count_macs(keras_prune.models.lenet5())  # 1,856,520
    ```
    """
    return count_flops(model).macs


def _walk(model: keras.Model, prefix: str, by_layer: dict[str, int], uncounted: list[str]) -> None:
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            _walk(layer, path + "/", by_layer, uncounted)
            continue
        macs = _layer_macs(layer, path)
        if macs is not None:
            by_layer[path] = macs
        elif layer.weights and not isinstance(layer, _FREE):
            uncounted.append(path)


# Layers whose weights cost no multiply-adds worth counting: lookups, normalisation
# (folded into the preceding layer at inference, or a few operations per element).
_FREE = (
    keras.layers.Embedding,
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
    keras.layers.Normalization,
    keras.layers.PReLU,
)

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def _layer_macs(layer: keras.layers.Layer, path: str) -> int | None:
    """The layer's multiply-adds per example, or None if it has no counting rule."""
    inner = layer
    while isinstance(inner, keras.layers.Wrapper) and not isinstance(inner, keras.layers.Bidirectional):
        inner = inner.layer
    if isinstance(inner, keras.layers.MultiHeadAttention):
        return _attention_macs(inner, path)
    if isinstance(inner, keras.layers.EinsumDense):
        return _einsum_macs(inner, path)
    if not isinstance(inner, (keras.layers.Dense, *_CONV, *_TRANSPOSED, *_DEPTHWISE, *_SEPARABLE)):
        return None
    out = _output_shape(layer, path)[1:]
    if isinstance(inner, _SEPARABLE):
        depthwise, pointwise = inner.depthwise_kernel.shape, inner.pointwise_kernel.shape
        positions = _positions(out, inner.data_format)
        return positions * (math.prod(depthwise) + math.prod(pointwise))
    kernel = tuple(inner.kernel.shape)
    if isinstance(inner, _DEPTHWISE):  # kernel: taps..., channels, multiplier
        return math.prod(out) * math.prod(kernel[:-2])
    if isinstance(inner, _TRANSPOSED):  # every input position scatters through the whole kernel
        source = _input_shape(layer, path)[1:]
        return _positions(source, inner.data_format) * math.prod(kernel)
    if isinstance(inner, keras.layers.Dense):
        return math.prod(out[:-1]) * math.prod(kernel)
    # Conv: kernel taps..., input channels / groups, filters
    return _positions(out, inner.data_format) * math.prod(kernel)


def _attention_macs(layer: keras.layers.MultiHeadAttention, path: str) -> int:
    projections = (layer.query_dense, layer.key_dense, layer.value_dense)
    # the q, k and v projections give (batch, positions..., heads, width)
    query, key, value = (_einsum_output(p, path)[1:] for p in projections)
    heads, key_dim, value_dim = query[-2], query[-1], value[-1]
    queries, keys = math.prod(query[:-2]), math.prod(key[:-2])
    # the output projection maps each query position's heads x value_dim to the output
    # width; Keras builds it without the positions, so count it from the queries
    output = queries * math.prod(layer.output_dense.kernel.shape)
    return sum(_einsum_macs(p, path) for p in projections) + output + heads * queries * keys * (key_dim + value_dim)


def _einsum_macs(layer: keras.layers.EinsumDense, path: str) -> int:
    """Output elements times the product of the kernel axes summed over."""
    operands, output = layer.equation.replace(" ", "").split("->")
    kernel_axes = operands.split(",")[1]
    contracted = math.prod(size for axis, size in zip(kernel_axes, layer.kernel.shape) if axis not in output)
    return math.prod(_einsum_output(layer, path)[1:]) * contracted


def _einsum_output(layer: keras.layers.EinsumDense, path: str) -> tuple:
    """The layer's output shape, from the input shape it was built for and its kernel."""
    if not layer.built:
        raise ModelError(f"layer '{path}' is not built; call the model once before counting FLOPs")
    source = tuple(layer.get_build_config()["input_shape"])
    operands, output = layer.equation.replace(" ", "").split("->")
    input_axes, kernel_axes = operands.split(",")
    sizes = dict(zip(kernel_axes, layer.kernel.shape))
    sizes.update(zip(input_axes[len(input_axes) - len(source) :], source))
    shape = tuple(sizes[axis] for axis in output)
    _check_fixed(shape[1:], path)
    return shape


def _positions(shape: tuple, data_format: str) -> int:
    """Spatial positions of a convolution's input or output (channels excluded)."""
    spatial = shape[1:] if data_format == "channels_first" else shape[:-1]
    return math.prod(spatial)


def _output_shape(layer: keras.layers.Layer, path: str) -> tuple:
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):
        raise ModelError(f"layer '{path}' has never been called in a model; cannot count its FLOPs") from None
    _check_fixed(shape[1:], path)
    return shape


def _input_shape(layer: keras.layers.Layer, path: str) -> tuple:
    shape = tuple(layer.input.shape)
    _check_fixed(shape[1:], path)
    return shape


def _check_fixed(shape: tuple, path: str) -> None:
    if any(size is None for size in shape):
        raise ModelError(
            f"layer '{path}' has shape {shape} with unknown sizes; build the model for a fixed input "
            "size (e.g. keras.Input((224, 224, 3))) to count FLOPs"
        )
