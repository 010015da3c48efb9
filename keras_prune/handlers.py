"""Per-layer knowledge: which variables of a layer pruning may zero, and what a unit is.

Each layer family has a *handler* in a registry. A handler says

- which of the layer's variables are prunable (`LayerHandler.prunable_variables`):
  kernels, recurrent kernels, depthwise and pointwise kernels, embedding tables,
  EinsumDense kernels; never a bias, a normalisation parameter or PReLU's alpha;
- what a *unit* is for structured pruning (`LayerHandler.units`): which variables hold
  it and along which axis (a Dense neuron, a convolution filter, a depthwise
  convolution's channel, an attention head).

A layer type is looked up along its class's method resolution order, so a subclass of
Dense uses the Dense handler unless it has one of its own. A layer with no handler is
read as a *container*: its prunable variables are those of the layers it holds (so a
Bidirectional LSTM, a TimeDistributed Dense, a keras-hub TransformerEncoder or any
custom block made of Keras layers is prunable through its sublayers). Weights that no
handler accounts for are left intact, with a warning naming the layer class.

Register a handler for your own layer with `register_handler`; see docs/layers.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import keras

from keras_prune import _keras_compat
from keras_prune.errors import InputError

__all__ = [
    "handler_for",
    "KernelHandler",
    "layer_units",
    "LayerHandler",
    "MultiHeadAttentionHandler",
    "prunable_variables",
    "register_handler",
    "Units",
]


@dataclass(frozen=True)
class Units:
    """The units of a layer for structured pruning: slices of its prunable variables.

    Unit ``i`` is slice ``i`` along ``axes[j]`` of ``variables[j]``, for every ``j``: a
    pruned unit has all those slices masked.

    Attributes:
        kind: ``"neuron"`` (a Dense neuron, a convolution filter, an Embedding row) or
            ``"head"`` (an attention head).
        count: number of units.
        variables: the variables that hold the units (a subset of the prunable ones).
        axes: for each variable, the axis along which its units lie.
    """

    kind: str
    count: int
    variables: tuple[keras.Variable, ...]
    axes: tuple[int, ...]


class LayerHandler:
    """What keras-prune knows about one layer family. Subclass it for a custom layer.

    The base handler prunes nothing and has no units: registering it for a layer
    type says "known, nothing to prune" (as for normalisation layers).

    Example:

    ```python
    class ScaledDenseHandler(keras_prune.LayerHandler):
        def prunable_variables(self, layer):
            return [layer.w]

    keras_prune.register_handler(ScaledDense, ScaledDenseHandler())
    ```
    """

    def prunable_variables(self, layer: keras.layers.Layer) -> list[keras.Variable]:
        """The layer's variables that pruning may zero (built layer).

        Args:
            layer: a built layer of the handled family.

        Returns:
            The variables, in a fixed order.
        """
        return []

    def units(self, layer: keras.layers.Layer, kind: str) -> Units | None:
        """The layer's units of the given kind, or None if it has none of that kind.

        Args:
            layer: a built layer of the handled family.
            kind: ``"neuron"`` (= ``"filter"``) or ``"head"``.

        Returns:
            The `Units`, or None.
        """
        return None


class KernelHandler(LayerHandler):
    """Layers whose prunable variables are named attributes (``kernel`` and the like);
    a unit is an output neuron/filter on the last axis of the first one.

    A layer with LoRA enabled is left alone: its kernel is a sum with the LoRA factors.

    Args:
        names: the attribute names of the prunable variables.
        unit_kind: the unit kind this layer offers (None: no structured pruning).
        unit_axis: the axis of the units in the first variable.
    """

    def __init__(self, *names: str, unit_kind: str | None = "neuron", unit_axis: int = -1):
        self.names = names
        self.unit_kind = unit_kind
        self.unit_axis = unit_axis

    def prunable_variables(self, layer):
        if getattr(layer, "lora_enabled", False):  # the kernel is a sum with the LoRA factors
            return []
        found = [getattr(layer, n, None) for n in self.names]
        return [v for v in found if isinstance(v, keras.Variable) and v.trainable]

    def units(self, layer, kind):
        variables = self.prunable_variables(layer)
        if self.unit_kind is None or kind != self.unit_kind or not variables:
            return None
        first = variables[0]
        return Units(kind, int(first.shape[self.unit_axis]), (first,), (self.unit_axis % len(first.shape),))


class MultiHeadAttentionHandler(LayerHandler):
    """MultiHeadAttention: the query, key, value and output projection kernels.

    A unit of kind ``"head"`` is one attention head: its slice on axis 1 of the query,
    key and value kernels, shaped ``(features, heads, head_dim)``, and on axis 0 of the
    output kernel, shaped ``(heads, head_dim, features)``. A gated layer
    (``use_gate=True``) keeps its gate kernel and has no head units.
    """

    def prunable_variables(self, layer):
        dense = [layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense]
        return [d.kernel for d in dense if d.kernel.trainable]

    def units(self, layer, kind):
        if kind != "head" or layer.get_config().get("use_gate"):
            return None
        variables = tuple(
            d.kernel for d in (layer.query_dense, layer.key_dense, layer.value_dense, layer.output_dense)
        )
        if any(len(v.shape) != 3 for v in variables):
            return None
        return Units("head", int(layer.num_heads), variables, (1, 1, 1, 0))


_HANDLERS: dict[type, LayerHandler] = {}
_warned: set[type] = set()


def register_handler(layer_class: type, handler: LayerHandler) -> None:
    """Registers `handler` for `layer_class` and its subclasses (without their own).

    A later registration for the same class replaces the earlier one.

    Args:
        layer_class: a `keras.layers.Layer` subclass.
        handler: a `LayerHandler` instance.

    Raises:
        InputError: `layer_class` is not a Layer class, or `handler` not a LayerHandler.

    Example:

    ```python
    keras_prune.register_handler(MyLayer, keras_prune.handlers.KernelHandler("w"))
    ```
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)):
        raise InputError(f"register_handler needs a keras Layer class, got {layer_class!r}")
    if not isinstance(handler, LayerHandler):
        raise InputError(
            f"register_handler needs a keras_prune.LayerHandler instance, got {type(handler).__name__}"
        )
    _HANDLERS[layer_class] = handler


def handler_for(layer: keras.layers.Layer) -> LayerHandler | None:
    """The handler registered for the layer's class or its nearest registered base class."""
    for cls in type(layer).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return None


def _own_variables(layer, inner: Sequence[keras.layers.Layer]) -> list[keras.Variable]:
    held = {id(v) for sub in inner for v in sub.weights}
    return [v for v in layer.trainable_weights if id(v) not in held]


def prunable_variables(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The variables of `layer` that pruning may zero, from its handler or its sublayers'.

    A layer without a handler contributes the prunable variables of the layers it
    holds; trainable weights of its own are left intact, with a warning (once per
    layer class) saying so where one of them is a matrix or larger (vectors are biases
    and scales, which are never pruned).

    Args:
        layer: a built Keras layer.

    Returns:
        The variables, each once.

    Example:

    ```python
    prunable_variables(keras.layers.Bidirectional(keras.layers.LSTM(8)))  # 4 kernels
    ```
    """
    handler = handler_for(layer)
    if handler is not None:
        return list(handler.prunable_variables(layer))
    if isinstance(layer, keras.Model) and not _keras_compat.is_graph_model(layer):
        inner = list(layer.layers)
    else:
        inner = _keras_compat.sublayers(layer)
    found: list[keras.Variable] = []
    for sub in inner:
        found.extend(v for v in prunable_variables(sub) if all(v is not f for f in found))
    # vectors (biases, normalisation scales such as keras-hub's RMSNormalization) are never
    # pruned anyway: only a matrix or larger left intact is worth a warning
    own = [v for v in _own_variables(layer, inner) if len(v.shape) >= 2]
    if own and type(layer) not in _warned:
        _warned.add(type(layer))
        warnings.warn(
            f"keras-prune has no handler for {type(layer).__name__} (layer '{layer.name}'); "
            f"its own weights ({', '.join(v.name for v in own)}) are left intact. "
            "Register one with keras_prune.register_handler (see docs/layers.md).",
            stacklevel=2,
        )
    return found


def layer_units(layer: keras.layers.Layer, kind: str) -> Units | None:
    """The layer's units of `kind` (``neuron``/``filter`` or ``head``) from its handler, or None.

    A layer without a handler that holds exactly one layer with attention heads (a
    keras-hub TransformerEncoder or TransformerDecoder block, your own block) has that
    layer's heads as its ``head`` units.
    """
    handler = handler_for(layer)
    if handler is None:
        if kind != "head":
            return None
        found = [u for sub in _keras_compat.sublayers(layer) if (u := layer_units(sub, "head")) is not None]
        return found[0] if len(found) == 1 else None
    return handler.units(layer, "neuron" if kind == "filter" else kind)


def _register_builtin(factories: Sequence[tuple[tuple[type, ...], Callable[[], LayerHandler]]]) -> None:
    for classes, factory in factories:
        for cls in classes:
            register_handler(cls, factory())


_L = keras.layers
_register_builtin(
    [
        ((_L.Dense,), lambda: KernelHandler("kernel")),
        ((_L.Conv1D, _L.Conv2D, _L.Conv3D), lambda: KernelHandler("kernel")),
        ((_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose), lambda: KernelHandler("kernel", unit_kind=None)),
        # a depthwise kernel is (..., channels, multiplier): a unit is an input channel
        ((_L.DepthwiseConv1D, _L.DepthwiseConv2D), lambda: KernelHandler("kernel", unit_axis=-2)),
        ((_L.SeparableConv1D, _L.SeparableConv2D),
         lambda: KernelHandler("depthwise_kernel", "pointwise_kernel", unit_kind=None)),
        ((_L.Embedding,), lambda: KernelHandler("embeddings", unit_axis=0)),  # a unit is a row
        ((_L.EinsumDense,), lambda: KernelHandler("kernel", unit_kind=None)),
        ((_L.LSTMCell, _L.GRUCell, _L.SimpleRNNCell), lambda: KernelHandler("kernel", "recurrent_kernel", unit_kind=None)),
        ((_L.MultiHeadAttention,), MultiHeadAttentionHandler),
        (
            (
                _L.BatchNormalization, _L.LayerNormalization, _L.GroupNormalization,
                _L.UnitNormalization, _L.PReLU,
            ),
            LayerHandler,
        ),
    ]
)
for _name in ("RMSNormalization", "SpectralNormalization"):
    if hasattr(_L, _name):
        register_handler(getattr(_L, _name), LayerHandler())
