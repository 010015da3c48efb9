"""Every use of private Keras API in keras-prune, one named accessor each.

Keras 3 does not export some things keras-prune needs to read a model: the class of
Functional models, the nodes of a graph in call order, a layer's direct sublayers.
Each accessor below touches one private name; tests/test_graph.py tests each one, so a
Keras release that moves a name fails one clear test, and this module is the one place
to fix. No other module imports ``keras.src``.
"""

from __future__ import annotations

from typing import Any

import keras


def functional_class() -> type:
    """The class of models built with ``keras.Model(inputs, outputs)`` (not exported by Keras).

    Returns:
        ``keras.src.models.functional.Functional``.
    """
    from keras.src.models.functional import Functional

    return Functional


def is_graph_model(model: Any) -> bool:
    """Whether `model` is a Sequential or Functional model (subclasses included).

    Example:

    ```python
    is_graph_model(keras.applications.MobileNetV2(weights=None))  # True
    ```
    """
    return isinstance(model, (keras.Sequential, functional_class()))


def graph_of(model: keras.Model):
    """The Functional graph behind a Sequential or Functional model, or None if a
    Sequential model has no input yet (Keras keeps it in the private ``_functional``)."""
    if isinstance(model, keras.Sequential):
        return model._functional
    return model


def graph_nodes(graph) -> list:
    """The call nodes of a Functional graph in execution order, input nodes excluded.

    Keras keeps them in the private ``_nodes_by_depth`` (unchanged through Keras 3.x);
    ``Functional.call`` walks them the same way: deepest first.

    Returns:
        `keras` Node objects; each has ``operation``, ``arguments`` and ``outputs``.
    """
    nodes = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        nodes.extend(n for n in graph._nodes_by_depth[depth] if not n.is_input and n.operation)
    return nodes


def producer(tensor) -> Any:
    """The operation (layer or op) that produced a symbolic tensor (its ``_keras_history``)."""
    return tensor._keras_history.operation


def sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers a layer holds directly (not recursively), in creation order.

    Keras tracks them in the private ``_flatten_layers``; a model's ``layers`` is the
    public form for models only.
    """
    return list(layer._flatten_layers(include_self=False, recursive=False))


def elementwise_op_classes() -> tuple[type, ...]:
    """The op classes behind ``x + y``, ``x - y``, ``x * y``, ``keras.ops.maximum`` and
    ``keras.ops.minimum`` on two symbolic tensors (not exported by Keras)."""
    from keras.src.ops import numpy as numpy_ops

    return (numpy_ops.Add, numpy_ops.Subtract, numpy_ops.Multiply, numpy_ops.Maximum, numpy_ops.Minimum)


def scalar_op_classes() -> tuple[type, ...]:
    """The op classes behind arithmetic between a symbolic tensor and a Python number
    (``x + 3``, ``x * (1 / 6)``, ``x / 6``, ``keras.ops.maximum(x, 0)``; not exported by Keras)."""
    from keras.src.ops import numpy as numpy_ops

    return elementwise_op_classes() + (numpy_ops.TrueDivide, numpy_ops.Divide)


def elementwise_activation_op_classes() -> tuple[type, ...]:
    """The op classes behind element-wise activations called as ops on a symbolic
    tensor (``keras.ops.relu(x)``, ``keras.ops.gelu(x)``, ...; not exported by Keras)."""
    from keras.src.ops import nn, numpy as numpy_ops

    names = (
        "Relu", "Relu6", "Sigmoid", "Softplus", "Softsign", "Silu", "LeakyRelu", "HardSigmoid",
        "HardSilu", "Elu", "Selu", "Gelu", "Celu", "TanhShrink", "HardTanh", "SoftShrink",
        "HardShrink", "LogSigmoid", "SparsePlus", "Squareplus",
    )
    return tuple(getattr(nn, n) for n in names if hasattr(nn, n)) + (numpy_ops.Tanh,)


def stored_weight_matrix(layer: keras.layers.Layer) -> keras.Variable:
    """The variable a Dense, Conv or Embedding layer stores its weight matrix in
    (``_kernel`` or ``_embeddings``), not the ``kernel`` property, which may be a
    computed tensor (LoRA, quantization)."""
    return layer._embeddings if isinstance(layer, keras.layers.Embedding) else layer._kernel


def has_value(variable: keras.Variable) -> bool:
    """Whether `variable`'s value can be read now.

    Inside `model.fit` on JAX, Keras detaches every model variable's value (the
    private ``_value`` is None) and passes the values through its compiled step
    instead; a `keras.StatelessScope` that maps the variable makes it readable again.
    """
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    scope = get_stateless_scope()
    if scope is not None and scope.get_current_value(variable) is not None:
        return True
    return variable._value is not None


def keras_mask(tensor) -> Any:
    """The Keras mask a tensor carries (``_keras_mask``, set by an ``Embedding(mask_zero=True)``
    and the layers after it), or None."""
    from keras.src.backend import get_keras_mask

    return get_keras_mask(tensor)


def transformer_block_parts(block: keras.layers.Layer) -> dict[str, Any]:
    """The sublayers of a built keras-hub ``TransformerEncoder`` or ``TransformerDecoder``,
    which keras-hub keeps in private attributes (``_self_attention_layer``, ...), by role:
    ``attention``, ``attention_norm``, ``attention_dropout``, ``ffn_norm``, ``ffn_in``,
    ``ffn_out``, ``ffn_dropout``, and ``cross_attention`` (None for an encoder, or a
    decoder built without an encoder sequence)."""
    return {
        "attention": block._self_attention_layer,
        "attention_norm": block._self_attention_layer_norm,
        "attention_dropout": block._self_attention_dropout,
        "ffn_norm": block._feedforward_layer_norm,
        "ffn_in": block._feedforward_intermediate_dense,
        "ffn_out": block._feedforward_output_dense,
        "ffn_dropout": block._feedforward_dropout,
        "cross_attention": getattr(block, "_cross_attention_layer", None),
    }


def hub_gelu_approximate() -> Any:
    """keras-hub's ``gelu_approximate`` activation (``keras.activations.gelu(x,
    approximate=True)``, BERT's and GPT-2's FFN activation), which keras-hub does not export."""
    from keras_hub.src.utils.keras_utils import gelu_approximate

    return gelu_approximate
