"""The model's structure: walk a Keras model, rebuild it with substitutions, and find
which units are coupled.

One module reads Keras 3 models for all of keras-prune: Sequential and Functional
models, nested models, shared layers, and the op and operator nodes (``x + y``,
``keras.ops.gelu``, an Embedding's mask, keras-hub's ``GetItem``) that Functional
graphs hold besides layers.

- `walk` and `top_layers` list layers, nested models included.
- `rebuild` builds a new model from an old one, each layer replaced by what a function
  returns; `keras_prune.prunable` (wrap), `keras_prune.strip` (unwrap) and
  `keras_prune.shrink` (smaller layers) all go through it. Op nodes are stateless and
  are reused as they are.
- `analyse_units` and `coupled_units` follow the units of Dense/Conv layers along the
  graph: units joined by an element-wise merge (a residual Add, ``x + y``) form one
  class and can only be pruned or removed together, and so do a depthwise
  convolution's channels and the units that feed them (each channel is filtered on its
  own, so it can only leave with its input).

Private Keras API is read through `keras_prune._keras_compat` only.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import keras
import numpy as np

from keras_prune import _keras_compat
from keras_prune.errors import ModelError
from keras_prune.wrapper import PruneWrapper, inner_layer

__all__ = [
    "analyse_units",
    "apply_per_unit",
    "binary_merge",
    "constant_fn",
    "check_graph_model",
    "coupled_units",
    "graph_nodes",
    "is_unit_layer",
    "kernel_and_bias",
    "rebuild",
    "TensorUnits",
    "top_layers",
    "UNIT_LAYERS",
    "UnitAnalysis",
    "UnitClasses",
    "walk",
]


def top_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's top-level layers that selectors index, input layers excluded."""
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def walk(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields (path, layer) for every layer, depth first, nested models included.

    Args:
        model: any Keras model.
        prefix: prepended to every path (a nested model's path and a slash).

    Example:

    ```python
    dict(walk(model))["encoder/fc1"]  # the layer fc1 inside the nested model encoder
    ```
    """
    for layer in top_layers(model):
        path = f"{prefix}{layer.name}"
        yield path, layer
        if isinstance(layer, keras.Model):
            yield from walk(layer, prefix=f"{path}/")


def check_graph_model(model: keras.Model) -> None:
    """Raises ModelError unless `model` is a Sequential or Functional model."""
    if not isinstance(model, keras.Model):
        raise ModelError(f"expected a Keras model, got {type(model).__name__}")
    if not _keras_compat.is_graph_model(model):
        raise ModelError(
            f"'{model.name}' is a subclassed model ({type(model).__name__}); keras-prune works on "
            "Sequential and Functional models only. Build the model with the Functional "
            "API, or wrap its layers yourself with keras_prune.PruneWrapper."
        )


def graph_nodes(model: keras.Model):
    """The Functional graph behind a built Sequential or Functional model, and its call
    nodes in execution order.

    Raises:
        ModelError: the model is subclassed, or a Sequential model without an input.
    """
    check_graph_model(model)
    graph = _keras_compat.graph_of(model)
    if graph is None:
        raise ModelError(f"model '{model.name}' is not built; build it (or give it an Input) first")
    return graph, _keras_compat.graph_nodes(graph)


Replace = Callable[[keras.layers.Layer], "keras.layers.Layer | None"]
AfterCall = Callable[[keras.layers.Layer, keras.layers.Layer], None]


def rebuild(
    model: keras.Model,
    replace: Replace,
    after_call: AfterCall | None = None,
    constants: Mapping[int, np.ndarray | None] | None = None,
) -> keras.Model:
    """A new model with the same graph, each layer replaced by ``replace(layer)``.

    Nested Sequential and Functional models are rebuilt the same way (recursively);
    a layer used at several places is replaced once and shared alike; op nodes
    (``x + y``, ``keras.ops`` calls) are reused. The new model is not compiled.

    With `constants`, the new model leaves out the nodes whose outputs are all listed
    there (by ``id`` of the old tensor): each is either a constant, the same vector of
    unit values at every position, or None (nothing in the new model reads it). A
    two-input Add, Subtract or Multiply (`binary_merge`) of a computed tensor and a
    constant becomes a ``keras.layers.Rescaling`` of the computed tensor, with the
    merge's name (adding or subtracting zero: the computed tensor itself); no other
    node may read a left-out tensor.

    Args:
        model: a Sequential or Functional model.
        replace: returns the layer to use for a given layer (may be the same one),
            or None to drop a layer that has one input: its output is its input.
        after_call: called as ``after_call(old, new)`` once the new layer has been
            called for the first time (built), e.g. to set its weights.
        constants: old tensors the new model does not compute (see above).

    Returns:
        The new model: Sequential stays Sequential, any Functional becomes a plain
        Functional model with the same name.

    Raises:
        ModelError: `model` (or a model nested in it) is subclassed.

    Example:

    ```python
    copy = rebuild(model, lambda layer: layer.__class__.from_config(layer.get_config()))
    ```
    """
    check_graph_model(model)
    cache: dict[int, keras.layers.Layer] = {}

    def substitute(layer):
        if id(layer) not in cache:
            if not isinstance(layer, keras.layers.Layer):
                cache[id(layer)] = layer
            elif _keras_compat.is_graph_model(layer):
                cache[id(layer)] = _rebuild(layer, substitute, after_call, constants or {})
            else:
                cache[id(layer)] = replace(layer)
        return cache[id(layer)]

    return _rebuild(model, substitute, after_call, constants or {})


def _rebuild(
    model: keras.Model, substitute: Replace, after_call: AfterCall | None, constants: Mapping[int, np.ndarray | None]
) -> keras.Model:
    graph = _keras_compat.graph_of(model)
    if isinstance(model, keras.Sequential):
        # Each layer is called once, by the new Sequential model itself, so that
        # `layer.input` and `layer.output` stay defined.
        layers = [substitute(layer) for layer in model.layers]
        kept = [layer for layer in layers if layer is not None]
        if graph is None:  # never given an input: nothing is built yet
            return keras.Sequential(kept, name=model.name, trainable=model.trainable)
        (first,) = keras.tree.flatten(graph.input)
        start = keras.Input(batch_shape=first.shape, dtype=first.dtype, name=_keras_compat.producer(first).name)
        new_model = keras.Sequential([start, *kept], name=model.name, trainable=model.trainable)
        if after_call is not None:
            for old, new in zip(model.layers, layers):
                if new is not None:
                    after_call(old, new)
        return new_model
    tensors: dict[int, object] = {}

    def new_input(t):
        x = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_keras_compat.producer(t).name)
        tensors[id(t)] = x
        return x

    inputs = keras.tree.map_structure(new_input, graph.input)
    called: set[int] = set()
    for node in _keras_compat.graph_nodes(graph):
        old = node.operation
        if node.outputs and all(id(t) in constants for t in node.outputs):
            continue
        if any(id(t) in constants for t in node.arguments.keras_tensors):
            (y,) = node.outputs
            tensors[id(y)] = _merge_with_constant(node, tensors, constants)
            continue
        new = substitute(old)
        args, kwargs = node.arguments.fill_in(tensors)
        if not args and isinstance(old, keras.layers.Layer):
            args, kwargs = _first_argument_positional(old, kwargs)
        outputs = args[0] if new is None else new(*args, **kwargs)
        if after_call is not None and new is not None and id(old) not in called and isinstance(old, keras.layers.Layer):
            after_call(old, new)
        called.add(id(old))
        for t, y in zip(node.outputs, keras.tree.flatten(outputs)):
            tensors[id(t)] = y
    outputs = keras.tree.map_structure(lambda t: tensors[id(t)], graph.output)
    return keras.Model(inputs, outputs, name=model.name, trainable=model.trainable)


def _merge_with_constant(node, tensors: dict, constants: Mapping[int, np.ndarray | None]):
    """A `binary_merge` of one computed tensor and one constant, as a Rescaling of the former."""
    kind = binary_merge(node.operation, node)
    a, b = node.arguments.keras_tensors
    if kind is None or (id(a) in constants) == (id(b) in constants) or constants.get(id(a), constants.get(id(b))) is None:
        raise ModelError(f"'{node.operation.name}' reads a tensor that the rebuilt model does not compute")
    computed, constant = (a, b) if id(b) in constants else (b, a)
    c = np.asarray(constants[id(constant)], dtype=np.float32)
    if not c.any() and (kind == "add" or (kind == "subtract" and computed is a)):
        return tensors[id(computed)]
    scale, offset = {
        "add": (1.0, c),
        "multiply": (c, 0.0),
        "subtract": (1.0, -c) if computed is a else (-1.0, c),
    }[kind]
    return keras.layers.Rescaling(scale, offset, name=node.operation.name)(tensors[id(computed)])


def _first_argument_positional(layer: keras.layers.Layer, kwargs: dict) -> tuple[tuple, dict]:
    """A layer called with keywords only (keras-hub's BART calls its decoder blocks as
    ``block(decoder_sequence=x, encoder_sequence=y)``), called with its first argument
    positional instead: the same call, which a `PruneWrapper` around it can forward."""
    first = next(iter(inspect.signature(layer.call).parameters), None)
    if first not in kwargs:
        return (), kwargs
    rest = dict(kwargs)
    return (rest.pop(first),), rest


UNIT_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
"""The layer types whose output units can be pruned and removed."""

CHANNEL_LAYERS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
"""The layer types whose channels are coupled one to one to their input's channels
(a depthwise convolution filters each channel on its own): pruning a channel masks
its kernel slice, and shrink removes it with the input unit that feeds it."""


def kernel_outputs(layer: keras.layers.Layer) -> tuple[int, int]:
    """A unit or channel layer's outputs (or those of the layer a `PruneWrapper` holds),
    as ``(groups, per group)``: a depthwise convolution's kernel ``(..., channels, m)``
    gives input channel ``c`` the outputs ``c * m`` to ``c * m + m - 1``, so
    ``(channels, m)``; any other kernel ``(..., units)`` gives ``(units, 1)``."""
    shape = inner_layer(layer).kernel.shape
    if isinstance(inner_layer(layer), CHANNEL_LAYERS):
        return int(shape[-2]), int(shape[-1])
    return int(shape[-1]), 1


_ELEMENTWISE_ACTIVATIONS = frozenset(
    {
        "celu", "elu", "exponential", "gelu", "hard_shrink", "hard_sigmoid", "hard_silu",
        "hard_swish", "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "mish", "relu",
        "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softplus", "softsign",
        "sparse_plus", "squareplus", "swish", "tanh", "tanh_shrink",
    }
)
_ACTIVATION_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)
_INFERENCE_IDENTITY = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)
_SPATIAL = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.AveragePooling3D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.UpSampling3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.Cropping3D,
)
_ZERO_PADDING = (keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)


class UnitClasses:
    """Union-find over units; a class is removable when all its units are dead and
    nothing pins it."""

    def __init__(self):
        self._parent: list[int] = []
        self._alive: list[bool] = []
        self._reason: dict[int, str] = {}

    def new(self, alive: bool, count: int = 1) -> np.ndarray:
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        self._alive.extend([alive] * count)
        return np.arange(start, start + count)

    def find(self, i: int) -> int:
        root = i
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[i] != root:
            self._parent[i], i = root, self._parent[i]
        return root

    def union(self, i: int, j: int) -> None:
        a, b = self.find(int(i)), self.find(int(j))
        if a == b:
            return
        self._parent[b] = a
        self._alive[a] = self._alive[a] or self._alive[b]
        if a not in self._reason and b in self._reason:
            self._reason[a] = self._reason[b]

    def pin(self, i: int, reason: str) -> None:
        self._reason.setdefault(self.find(int(i)), reason)

    def dead(self, i: int) -> bool:
        return not self._alive[self.find(int(i))]

    def reason(self, i: int) -> str | None:
        return self._reason.get(self.find(int(i)))

    def removed(self, nodes: np.ndarray) -> np.ndarray:
        return np.array([self.dead(i) and self.reason(i) is None for i in nodes], dtype=bool)


@dataclass
class TensorUnits:
    """The unit classes along a tensor's last axis and, for dead classes, their constant value.

    ``bordered``: the tensor was zero-padded since its dead units' constants were made,
    so a dead unit holds its constant inside and 0 on the border, not a constant.
    """

    nodes: np.ndarray
    const: np.ndarray
    bordered: bool = False


@dataclass
class UnitAnalysis:
    """What `analyse_units` found: unit classes, units per tensor and per unit layer."""

    classes: UnitClasses = field(default_factory=UnitClasses)
    units: dict[int, TensorUnits | None] = field(default_factory=dict)  # id(KerasTensor) -> units
    outputs: dict[int, TensorUnits] = field(default_factory=dict)  # id(unit layer) -> its units
    dead: dict[int, np.ndarray] = field(default_factory=dict)  # id(unit layer) -> dead units
    inputs: dict[int, TensorUnits | None] = field(default_factory=dict)  # id(layer) -> input units
    layers: list[keras.layers.Layer] = field(default_factory=list)  # unit layers and BN, graph order
    reshapes: dict[int, TensorUnits] = field(default_factory=dict)  # id(Reshape keeping units) -> units


def is_unit_layer(layer: keras.layers.Layer) -> bool:
    """Whether `layer` (or the layer a `PruneWrapper` holds) has removable output units.

    Dense and Conv1D/2D/3D layers with channels-last data, ``groups=1`` and no LoRA
    qualify; subclasses do not, as they may compute differently.

    Args:
        layer: any layer.

    Returns:
        True for a unit layer.
    """
    inner = inner_layer(layer)
    if type(inner) not in UNIT_LAYERS or getattr(inner, "lora_enabled", False):
        return False
    if isinstance(inner, keras.layers.Dense):
        return True
    return inner.data_format == "channels_last" and inner.groups == 1


def is_channel_layer(layer: keras.layers.Layer) -> bool:
    """Whether `layer` (or the layer a `PruneWrapper` holds) is a depthwise convolution
    whose channels shrink can remove together with the units that feed them.

    DepthwiseConv1D/2D with channels-last data qualify; subclasses do not. With
    ``depth_multiplier=m``, input channel ``c`` feeds outputs ``c * m`` to ``c * m + m - 1``:
    all of them leave with it.

    Args:
        layer: any layer.

    Returns:
        True for a channel layer.
    """
    inner = layer.layer if isinstance(layer, PruneWrapper) else layer
    return type(inner) in CHANNEL_LAYERS and inner.data_format == "channels_last"


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _as_float32(const: np.ndarray) -> np.ndarray:
    return const.astype(np.float32)[None, :]


def apply_per_unit(fn, const: np.ndarray) -> np.ndarray:
    """``fn`` (a layer, op or activation) applied to one vector of unit values."""
    return np.asarray(keras.ops.convert_to_numpy(fn(_as_float32(const))), dtype=np.float64)[0]


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _is_last_axis(axis, rank: int) -> bool:
    return isinstance(axis, int) and axis in (-1, rank - 1)


def kernel_and_bias(layer) -> tuple[np.ndarray, np.ndarray]:
    """The kernel the layer computes with (masked, for a wrapper) and its bias (or zeros)."""
    if isinstance(layer, PruneWrapper):
        baked = dict(zip((id(v) for v in layer.layer.weights), layer.baked_weights()))
        kernel = baked[id(layer.layer.kernel)].astype(np.float64)
        layer = layer.layer
    else:
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    if layer.use_bias:
        bias = keras.ops.convert_to_numpy(layer.bias).astype(np.float64)
    else:
        bias = np.zeros(np.prod(kernel_outputs(layer)))
    return kernel, bias


def _is_merge(op, node) -> bool:
    """An element-wise merge layer, or an element-wise binary op on two tensors (``x + y``)."""
    if type(op) in _MERGES:
        return True
    return (
        type(op) in _keras_compat.elementwise_op_classes()
        and len(node.arguments.keras_tensors) == 2
        and not node.arguments.kwargs
        and len(node.arguments.args) == 2
    )


def _broadcasts_on_units(tensors) -> bool:
    """Whether tensors of one rank share their (known) last axis and differ elsewhere only
    where a tensor has size 1 (a squeeze-and-excitation ``x * se``, se shaped (1, 1, C))."""
    shapes = [tuple(t.shape) for t in tensors]
    if len({len(s) for s in shapes}) != 1 or len({s[-1] for s in shapes}) != 1 or shapes[0][-1] is None:
        return False
    for dims in zip(*(s[1:-1] for s in shapes)):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            return False
    return True


def _scalar_operands(op, node) -> bool:
    """An element-wise arithmetic op between one tensor and Python numbers (``x + 3``, ``x / 6``)."""
    return (
        type(op) in _keras_compat.scalar_op_classes()
        and len(node.arguments.keras_tensors) == 1
        and not node.arguments.kwargs
        and all(
            isinstance(a, (int, float, np.number)) or a is node.arguments.keras_tensors[0]
            for a in node.arguments.args
        )
    )


def _keeps_last_axis(op, node) -> bool:
    """A Reshape whose output has its input's (known) last axis: channels-last units keep
    their place, only the positions are regrouped."""
    (t,) = node.arguments.keras_tensors
    (y,) = node.outputs
    return type(op) is keras.layers.Reshape and t.shape[-1] is not None and y.shape[-1] == t.shape[-1]


def binary_merge(op, node) -> str | None:
    """``"add"``, ``"subtract"`` or ``"multiply"`` for an element-wise Add, Subtract or
    Multiply (a merge layer or an op) of two tensors; None for anything else."""
    kinds = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply"}
    if not _is_merge(op, node) or len(node.arguments.keras_tensors) != 2 or len(node.outputs) != 1:
        return None
    return kinds.get(type(op).__name__)


def constant_fn(op, node) -> Callable[[np.ndarray], np.ndarray] | None:
    """What a one-input, one-output node does to a tensor that holds the same vector of
    unit values at every position: a function of that vector (BatchNormalization on the
    last axis, element-wise activations, arithmetic with a number, inference-time
    identities), or None if the node mixes units or positions."""
    tensors = node.arguments.keras_tensors
    if len(tensors) != 1 or len(node.outputs) != 1:
        return None
    if isinstance(op, keras.layers.BatchNormalization):
        if not _is_last_axis(op.axis, len(tensors[0].shape)):
            return None
        return lambda c: _batchnorm(op, c)
    if _elementwise_activation(op):
        return lambda c: apply_per_unit(op, c)
    if type(op) in _INFERENCE_IDENTITY:
        return lambda c: c
    if _scalar_operands(op, node):
        return lambda c: _with_numbers(op, node, c)
    return None


def _elementwise_activation(op) -> bool:
    """An activation layer or op that acts on each unit on its own (not softmax)."""
    return (
        isinstance(op, _ACTIVATION_LAYERS)
        or type(op) in _keras_compat.elementwise_activation_op_classes()
        or (isinstance(op, keras.layers.Activation) and _activation_name(op.activation) in _ELEMENTWISE_ACTIVATIONS)
    )


def _with_numbers(op, node, c: np.ndarray) -> np.ndarray:
    """An arithmetic op between one tensor and numbers (`_scalar_operands`), on unit values `c`."""
    (t,) = node.arguments.keras_tensors
    return apply_per_unit(lambda x: op(*(x if a is t else a for a in node.arguments.args)), c)


def _batchnorm(op: keras.layers.BatchNormalization, c: np.ndarray) -> np.ndarray:
    """Inference-time BatchNormalization of per-unit values `c`."""
    mean = keras.ops.convert_to_numpy(op.moving_mean).astype(np.float64)
    var = keras.ops.convert_to_numpy(op.moving_variance).astype(np.float64)
    gamma = keras.ops.convert_to_numpy(op.gamma).astype(np.float64) if op.scale else 1.0
    beta = keras.ops.convert_to_numpy(op.beta).astype(np.float64) if op.center else 0.0
    return (c - mean) / np.sqrt(var + op.epsilon) * gamma + beta


def analyse_units(model: keras.Model) -> UnitAnalysis:
    """Follows the units of the model's unit layers through its graph (see `coupled_units`).

    Returns:
        The unit classes (union-find), the units on every tensor, and per unit layer its
        input units, output units and dead units, with the constant each dead unit outputs.
    """
    graph, nodes = graph_nodes(model)
    state = UnitAnalysis()
    classes = state.classes
    calls: dict[int, int] = {}

    def count_calls(nodes) -> None:
        for node in nodes:
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
            if _keras_compat.is_graph_model(node.operation) and calls[id(node.operation)] == 1:
                count_calls(graph_nodes(node.operation)[1])

    count_calls(nodes)

    def pin_all(units: TensorUnits | None, reason: str) -> None:
        if units is not None:
            for i in units.nodes:
                classes.pin(i, reason)

    def visit(nodes) -> None:
        for node in nodes:
            visit_node(node)

    def visit_node(node) -> None:
        op = node.operation
        tensors = node.arguments.keras_tensors
        ins = [state.units.get(id(t)) for t in tensors]
        out: TensorUnits | None = None
        kind = type(op).__name__
        single = len(tensors) == 1 and len(node.outputs) == 1
        barrier = f"'{op.name}' ({kind}) uses them and shrink cannot see through it"
        bordered = any(u is not None and u.bordered for u in ins)
        if calls[id(op)] > 1:
            barrier = f"'{op.name}' uses them and is called more than once"
        elif _keras_compat.is_graph_model(op):
            # A nested model called once: its own units are followed inside it; units
            # crossing its boundary (its inputs and outputs) are kept, so that its
            # input and output shapes stay as they are.
            inner, inner_nodes = graph_nodes(op)
            visit(inner_nodes)
            for t in keras.tree.flatten(inner.output):
                pin_all(state.units.get(id(t)), f"they leave the nested model '{op.name}'")
            barrier = f"'{op.name}' (nested model) takes them as an input"
        elif bordered and not (
            is_unit_layer(op) or is_channel_layer(op) or type(op) in _INFERENCE_IDENTITY + _ZERO_PADDING
        ):
            barrier = f"'{op.name}' ({kind}) gets them zero-padded and shrink cannot follow that"
        elif single and (is_unit_layer(op) or is_channel_layer(op)):
            kernel, bias = kernel_and_bias(op)
            multiplier = kernel_outputs(op)[1]
            if is_channel_layer(op):  # kernel (..., channels, m): output c * m + j is slice (c, j)
                kernel = kernel.reshape(*kernel.shape[:-2], kernel.shape[-2] * multiplier)
            dead = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
            nodes_out = np.concatenate([classes.new(not d) for d in dead])
            if is_channel_layer(op):
                if ins[0] is None:
                    for i in nodes_out:
                        classes.pin(i, f"'{op.name}' filters channels that shrink cannot remove")
                else:
                    for i, j in zip(np.repeat(ins[0].nodes, multiplier), nodes_out):
                        classes.union(i, j)
            activation = _activation_name(inner_layer(op).activation)
            if activation in _ELEMENTWISE_ACTIVATIONS:
                const = np.where(dead, apply_per_unit(inner_layer(op).activation, bias), np.nan)
            else:
                const = np.full(bias.shape, np.nan)
                for i in nodes_out:
                    classes.pin(i, f"'{op.name}' applies {activation} across its units")
            out = TensorUnits(nodes_out, const)
            state.inputs[id(op)], state.outputs[id(op)], state.dead[id(op)] = ins[0], out, dead
            state.layers.append(op)
            barrier = None
        elif single and isinstance(op, keras.layers.BatchNormalization):
            if _is_last_axis(op.axis, len(tensors[0].shape)) and ins[0] is not None:
                out = TensorUnits(ins[0].nodes, _batchnorm(op, ins[0].const))
                state.inputs[id(op)] = ins[0]
                state.layers.append(op)
                barrier = None
        elif single and _elementwise_activation(op):
            out = None if ins[0] is None else TensorUnits(ins[0].nodes, apply_per_unit(op, ins[0].const))
            barrier = None
        elif single and (type(op) in _INFERENCE_IDENTITY or (type(op) in _SPATIAL and _channels_last(op))):
            out, barrier = ins[0], None
        elif single and _scalar_operands(op, node):
            if ins[0] is None:
                barrier = None
            else:
                const = _with_numbers(op, node, ins[0].const)
                if np.isfinite(const[np.isfinite(ins[0].const)]).all():
                    out, barrier = TensorUnits(ins[0].nodes, const, ins[0].bordered), None
        elif single and _keeps_last_axis(op, node):
            if ins[0] is not None:
                state.reshapes[id(op)] = ins[0]
            out, barrier = ins[0], None
        elif single and type(op) in _ZERO_PADDING and _channels_last(op):
            if ins[0] is not None:  # dead units with a non-zero constant now hold 0 on the border
                varies = ins[0].bordered or bool(np.any(np.nan_to_num(ins[0].const, nan=0.0) != 0))
                out = TensorUnits(ins[0].nodes, ins[0].const, bordered=varies)
            barrier = None
        elif single and type(op) is keras.layers.Flatten and _channels_last(op):
            shape = tensors[0].shape[1:]
            if ins[0] is None:
                barrier = None
            elif all(d is not None for d in shape):
                positions = int(np.prod(shape[:-1]))
                out = TensorUnits(np.tile(ins[0].nodes, positions), np.tile(ins[0].const, positions))
                barrier = None
        elif _is_merge(op, node) and len(node.outputs) == 1 and len(tensors) >= 2:
            if _broadcasts_on_units(tensors) and all(u is not None for u in ins):
                for u in ins[1:]:
                    for i, j in zip(ins[0].nodes, u.nodes):
                        classes.union(i, j)
                consts = [_as_float32(u.const) for u in ins]
                const = keras.ops.convert_to_numpy(op(consts) if type(op) in _MERGES else op(*consts))
                out = TensorUnits(ins[0].nodes, np.asarray(const, dtype=np.float64)[0])
                barrier = None
        elif type(op) is keras.layers.Concatenate and len(node.outputs) == 1:
            rank = len(tensors[0].shape)
            if _is_last_axis(op.axis, rank) and all(t.shape[-1] is not None for t in tensors):
                parts = []
                for t, u in zip(tensors, ins):
                    if u is None:
                        u = TensorUnits(classes.new(True, t.shape[-1]), np.full(t.shape[-1], np.nan))
                        pin_all(u, barrier)
                    parts.append(u)
                out = TensorUnits(
                    np.concatenate([u.nodes for u in parts]), np.concatenate([u.const for u in parts])
                )
                barrier = None
        if barrier is not None:
            for u in ins:
                pin_all(u, barrier)
            out = None
        for t in node.outputs:
            state.units[id(t)] = out
    visit(nodes)
    for t in keras.tree.flatten(graph.output):
        pin_all(state.units.get(id(t)), "they reach the model's output")
    return state


def coupled_units(model: keras.Model) -> dict[keras.layers.Layer, np.ndarray]:
    """Which output units of the model's unit layers are tied together by the graph.

    Units joined by an element-wise merge (Add, Subtract, Multiply, Average, Maximum,
    Minimum; broadcasting where a tensor has size 1, as in squeeze-and-excitation),
    directly or through activations, arithmetic with a number, pooling, zero padding,
    BatchNormalization, a Reshape keeping the last axis, Concatenate and the like, must be removed together: they share
    a class id. So must a depthwise convolution's channels and the units feeding them.

    Args:
        model: a Sequential or Functional model, wrapped or plain.

    Returns:
        For each unit layer and depthwise convolution of the model's own graph (see
        `is_unit_layer` and `is_channel_layer`; those of nested models called once are
        included, layers called more than once are not), one class id per output unit, or per channel of
        a depthwise convolution. Two units are coupled exactly when their ids are equal.

    Example:

    ```python
    classes = coupled_units(resnet)
    classes[resnet.get_layer("stem")]  # the same ids as the block convs added to it
    ```
    """
    state = analyse_units(model)
    found = {}
    for layer in state.layers:
        if id(layer) in state.outputs:
            nodes = state.outputs[id(layer)].nodes
            if is_channel_layer(layer):  # one id per channel: its m outputs share it
                nodes = nodes[:: kernel_outputs(layer)[1]]
            found[layer] = np.array([state.classes.find(int(i)) for i in nodes])
    return found

