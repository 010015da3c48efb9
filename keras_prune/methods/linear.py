"""How a layer's kernel acts as a matrix: ``outputs = features @ matrix``.

Dense, convolution, EinsumDense and MultiHeadAttention projections all compute, for
every output position, a matrix product of an *input feature* vector with their
kernel seen as an ``(inputs, outputs)`` matrix:

- Dense ``(in, out)``: the kernel itself; features are the input's last axis.
- Conv1D/Conv2D ``(k..., in_channels, out_channels)``: ``(prod(k) * in_channels,
  out_channels)``; features are the input's patches (`tf.image.extract_patches`),
  ordered (kernel row, kernel column, channel) as the kernel is.
- EinsumDense: the kernel axes summed over (in the input, not in the output) come
  first; features are the input with those axes last, flattened.
- MultiHeadAttention: its four EinsumDense projections (query, key, value, output).

`KernelView` turns a kernel into that matrix and back, and computes the features
from the layer's input. The input dimension of the matrix is the one N:M patterns
group along and SparseGPT/Wanda read their input statistics from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_prune import _keras_compat
from keras_prune.errors import InputError
from keras_prune.handlers import handler_for, prunable_variables


@dataclass(frozen=True)
class KernelView:
    """A kernel seen as an ``(inputs, outputs)`` matrix.

    Attributes:
        shape: the kernel's shape.
        order: kernel axes, input axes first (the matrix is the kernel transposed to
            this order and reshaped to ``(inputs, -1)``).
        inputs: the matrix's number of rows (input features).
        features: maps the layer's input tensor to a ``(rows, inputs)`` feature
            matrix, or None where the layer type is not known (the view is then the
            kernel reshaped to ``(-1, last axis)``).
    """

    shape: tuple[int, ...]
    order: tuple[int, ...]
    inputs: int
    features: Callable[[tf.Tensor], tf.Tensor] | None = None

    def matrix(self, kernel: np.ndarray) -> np.ndarray:
        """The kernel (or an array shaped like it) as an ``(inputs, outputs)`` matrix."""
        return np.transpose(kernel, self.order).reshape(self.inputs, -1)

    def kernel(self, matrix: np.ndarray) -> np.ndarray:
        """Inverse of `matrix`: the ``(inputs, outputs)`` matrix back in kernel shape."""
        permuted = tuple(self.shape[a] for a in self.order)
        return np.transpose(np.reshape(matrix, permuted), np.argsort(self.order))


def _fallback(shape: tuple[int, ...]) -> KernelView:
    return KernelView(shape, tuple(range(len(shape))), int(np.prod(shape[:-1])))


def _dense_view(layer: keras.layers.Dense, shape) -> KernelView:
    return KernelView(shape, (0, 1), shape[0], lambda x: tf.reshape(x, (-1, shape[0])))


def _conv_view(layer, shape) -> KernelView:
    rank = len(shape) - 2
    if rank not in (1, 2) or getattr(layer, "groups", 1) != 1:
        return _fallback(shape)
    size = list(layer.kernel_size) if rank == 2 else [1, layer.kernel_size[0]]
    strides = list(layer.strides) if rank == 2 else [1, layer.strides[0]]
    rates = list(layer.dilation_rate) if rank == 2 else [1, layer.dilation_rate[0]]
    padding = layer.padding.upper()
    if padding not in ("VALID", "SAME"):
        return _fallback(shape)
    channels_first = layer.data_format == "channels_first"
    inputs = int(np.prod(shape[:-1]))

    def features(x):
        if channels_first:
            x = tf.transpose(x, [0, *range(2, rank + 2), 1])
        if rank == 1:
            x = x[:, None]
        patches = tf.image.extract_patches(
            x, [1, *size, 1], [1, *strides, 1], [1, *rates, 1], padding
        )
        return tf.reshape(patches, (-1, inputs))

    return KernelView(shape, tuple(range(len(shape))), inputs, features)


def _einsum_view(layer: keras.layers.EinsumDense, shape) -> KernelView:
    equation = layer.equation.replace(" ", "")
    sources, output = equation.split("->")
    x_spec, kernel_spec = sources.split(",")
    if "." in kernel_spec:
        return _fallback(shape)
    summed = [c for c in kernel_spec if c in x_spec and c not in output]
    if any(c in x_spec and c in output for c in kernel_spec):
        return _fallback(shape)  # a kernel axis batched over: not one matrix
    order = tuple(kernel_spec.index(c) for c in summed) + tuple(
        i for i, c in enumerate(kernel_spec) if c not in summed
    )
    inputs = int(np.prod([shape[kernel_spec.index(c)] for c in summed]))
    letters = x_spec.replace("...", "")

    def features(x):
        rank = len(x.shape)
        lead = rank - len(letters)  # axes the ellipsis stands for
        position = {c: lead + i for i, c in enumerate(letters)}
        moved = [position[c] for c in summed]
        rest = [a for a in range(rank) if a not in moved]
        return tf.reshape(tf.transpose(x, rest + moved), (-1, inputs))

    return KernelView(tuple(shape), order, inputs, features)


def kernel_view(layer: keras.layers.Layer, variable: keras.Variable) -> KernelView:
    """How `variable`, a prunable variable of `layer`, reads as an (inputs, outputs) matrix.

    Args:
        layer: the layer that holds `variable` (a MultiHeadAttention layer, or the
            EinsumDense projection in it that computes with `variable`).
        variable: one of its kernels.

    Returns:
        The view. For layer types not listed in the module docstring, or a variable
        other than the kernel, the kernel reshaped to ``(-1, last axis)``, with no
        features.

    Example:

    ```python
    view = kernel_view(conv, conv.kernel)        # Conv2D 5x5, 1 -> 20 channels
    view.matrix(conv.kernel.numpy()).shape       # (25, 20)
    ```
    """
    shape = tuple(int(d) for d in variable.shape)
    if isinstance(layer, keras.layers.MultiHeadAttention):
        owner = [p for p in linear_parts(layer) if p.kernel is variable]
        return kernel_view(owner[0], variable) if owner else _fallback(shape)
    if getattr(layer, "kernel", None) is not variable or getattr(layer, "lora_enabled", False):
        return _fallback(shape)
    if isinstance(layer, keras.layers.Dense):
        return _dense_view(layer, shape)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)) and not isinstance(
        layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    ):
        return _conv_view(layer, shape)
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_view(layer, shape)
    return _fallback(shape)


def linear_parts(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers inside `layer` that compute with one kernel each, as a matrix product.

    A Dense, Conv1D/2D or EinsumDense layer is its own part; a MultiHeadAttention
    layer has four: its query, key, value and output projections, in that order. A
    layer made of layers (one without a handler: keras-hub's TransformerEncoder and
    TransformerDecoder, the Gemma, Mistral and Llama decoder blocks, a block of your
    own) has the parts of the layers it holds, in the order Keras tracks them (the
    order the block creates them), if they hold every kernel the block prunes.

    Raises:
        InputError: a layer of another type, or a block with a prunable variable
            (an embedding, a recurrent kernel) that is no part's kernel.
    """
    parts = _parts(layer)
    if parts:
        return parts
    raise InputError(
        f"layer '{layer.name}' ({type(layer).__name__}) is not supported by the "
        "reconstruction pruners (sparsegpt, wanda): they prune Dense, Conv1D, Conv2D "
        "(groups=1), EinsumDense and MultiHeadAttention layers, and layers made of "
        "only these among their prunable ones"
    )


def _parts(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """`linear_parts`, or [] where there are none."""
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return [layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense]
    if hasattr(layer, "kernel") and kernel_view(layer, layer.kernel).features is not None:
        return [layer]
    if handler_for(layer) is not None:
        return []
    parts = [part for sub in _keras_compat.sublayers(layer) for part in _parts(sub)]
    kernels = {id(part.kernel) for part in parts}
    if not all(id(v) in kernels for v in prunable_variables(layer)):
        return []
    return parts
