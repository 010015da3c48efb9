"""BatchNormalization folding: a serving model without the normalisation layers that
follow Dense and convolution layers.

At inference a BatchNormalization layer computes ``(x - mean) / sqrt(var + eps) *
gamma + beta``, a per-channel affine map. When it directly follows a Dense,
Conv1D/2D/3D or DepthwiseConv1D/2D layer without an activation (``x = W * h + b``), the
two fold into one layer: ``W' = W * s`` and ``b' = (b - mean) * s + beta`` per output
channel, with ``s = gamma / sqrt(var + eps)``. `fold_batchnorm` does that for every such
pair and drops the normalisation layer; the other layers keep their names. The folded
model computes the same outputs in inference mode, up to float32 round-off; it is for
serving, not for training (the normalisation's statistics are gone).

A pair is folded only when the normalisation is the only consumer of the layer's
output, normalises the last (channels-last) axis, and neither layer is called more than
once (nor has LoRA enabled); other BatchNormalization layers are left as they are.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_prune.graph import CHANNEL_LAYERS, UNIT_LAYERS, graph_nodes, kernel_outputs, rebuild, walk
from keras_prune.wrapper import strip_layer

__all__ = ["fold_batchnorm"]

_FOLDABLE = UNIT_LAYERS + CHANNEL_LAYERS


def _foldable_pairs(model: keras.Model) -> list[tuple[keras.layers.Layer, keras.layers.BatchNormalization]]:
    """Every (layer, the BatchNormalization after it) pair that folds, in `model`'s graph
    and the graphs of the models nested in it."""
    pairs = []
    graphs = [model] + [layer for _, layer in walk(model) if isinstance(layer, keras.Model)]
    for graph_model in graphs:
        graph, nodes = graph_nodes(graph_model)
        calls: dict[int, int] = {}
        readers: dict[int, int] = {}
        made_by: dict[int, keras.layers.Layer] = {}
        for node in nodes:
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
            for t in node.arguments.keras_tensors:
                readers[id(t)] = readers.get(id(t), 0) + 1
            for t in node.outputs:
                made_by[id(t)] = node.operation
        for t in keras.tree.flatten(graph.output):
            readers[id(t)] = readers.get(id(t), 0) + 1
        for node in nodes:
            bn = node.operation
            tensors = node.arguments.keras_tensors
            if type(bn) is not keras.layers.BatchNormalization or len(tensors) != 1:
                continue
            source = made_by.get(id(tensors[0]))
            if (
                type(source) in _FOLDABLE
                and getattr(source, "data_format", "channels_last") == "channels_last"
                and getattr(source.activation, "__name__", "") == "linear"
                and not getattr(source, "lora_enabled", False)
                and bn.axis in (-1, len(tensors[0].shape) - 1)
                and readers[id(tensors[0])] == 1
                and calls[id(bn)] == 1
                and calls[id(source)] == 1
            ):
                pairs.append((source, bn))
    return pairs


def _folded_weights(layer: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """The kernel and bias of `layer` with `bn` folded in."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    channels = np.prod(kernel_outputs(layer))
    bias = keras.ops.convert_to_numpy(layer.bias).astype(np.float64) if layer.use_bias else np.zeros(channels)
    mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64)
    var = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
    gamma = keras.ops.convert_to_numpy(bn.gamma).astype(np.float64) if bn.scale else 1.0
    beta = keras.ops.convert_to_numpy(bn.beta).astype(np.float64) if bn.center else 0.0
    scale = gamma / np.sqrt(var + bn.epsilon) * np.ones(channels)
    # a depthwise kernel's outputs are its last two axes (channels x multiplier)
    kernel = kernel * scale.reshape(kernel.shape[-2:] if isinstance(layer, CHANNEL_LAYERS) else (-1,))
    return [kernel, (bias - mean) * scale + beta]


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """A serving copy of `model` with every BatchNormalization that follows a Dense,
    convolution or depthwise convolution folded into that layer's kernel and bias.

    Args:
        model: a Sequential or Functional model, plain or wrapped (wrappers are
            stripped first: pruned weights stay zero, a folded kernel's zeros too).

    Returns:
        A new plain model of the same kind, without the folded BatchNormalization
        layers (the others keep their names). Not compiled; for inference (its
        outputs equal `model`'s with ``training=False``).

    Raises:
        ModelError: `model` is subclassed or not built.

    Example:

    ```python
    small = keras_prune.shrink(pruned)
    served = keras_prune.fold_batchnorm(small)  # conv + BN -> one conv with a bias
    ```
    """
    graph_nodes(model)
    plain = rebuild(model, strip_layer)
    pairs = _foldable_pairs(plain)
    folded = {id(layer): bn for layer, bn in pairs}
    removed = {id(bn) for _, bn in pairs}

    def replace(layer):
        if id(layer) in removed:
            return None
        if id(layer) in folded:
            return type(layer).from_config({**layer.get_config(), "use_bias": True})
        if isinstance(layer, keras.layers.Layer) and not layer.weights and not isinstance(layer, keras.Model):
            return type(layer).from_config(layer.get_config())
        return layer

    def set_weights(old, new):
        if id(old) in folded:
            weights = _folded_weights(old, folded[id(old)])
            new.set_weights([w.astype(v.dtype) for w, v in zip(weights, new.weights)])

    return rebuild(plain, replace, set_weights)
