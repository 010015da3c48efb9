"""Shrink: turn a model whose units are pruned into a genuinely smaller dense model.

A unit (Dense neuron or convolution filter, see `keras_prune.structured`) is *dead*
when its whole kernel slice is zero (masked in a wrapped model, or zero in a plain
one). `shrink` removes dead units from their layer and the matching input weights
from every layer that consumes them, following the Keras graph through activations,
pooling, Dropout, BatchNormalization, Flatten (channels-last positions
``(h * W + w) * C + c``) and the element-wise merges Add, Subtract, Multiply,
Average, Maximum, Minimum and Concatenate (on the channel axis).

Coupled units. Units joined by an element-wise merge form one class: the class is
removed only if every unit in it is dead (so a residual block and its shortcut lose
the same channels). A class is pinned, and kept, when it reaches the model's output
or a layer that shrink cannot see through (Reshape, Softmax, a nested model, a layer
called twice, ...); the report names the layer.

Exactness. A dead unit still outputs a constant: ``activation(bias)``, shifted by any
BatchNormalization on its way. Shrink propagates each dead unit's constant through
the graph and folds it into the consumer: into the bias of a Dense layer or a
``padding="valid"`` convolution (exact: every output sees the constant through every
kernel tap). A padded convolution sees the constant only through its in-bounds taps,
which no bias can represent; there shrink keeps one dead unit of the input, whose
value is its own constant, and folds the other constants into that unit's input
weights (scaled by the ratio of constants), so the shrunk model stays exact with one
extra channel. The shrunk model computes what the masked one does, up to float
round-off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import keras
import numpy as np

from keras_prune.errors import ModelError
from keras_prune.wrapper import PruneWrapper

UNIT_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
"""The layer types whose output units can be pruned and removed."""

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
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)


@dataclass(frozen=True)
class LayerShrink:
    """What `shrink` did to one Dense, Conv or BatchNormalization layer.

    Attributes:
        name: the layer's name (the same in the shrunk model).
        kind: the layer's class name.
        units: output units (channels for BatchNormalization) before and after.
        inputs: input features or channels before and after.
        notes: why dead units were kept, one line per reason with its count.
    """

    name: str
    kind: str
    units: tuple[int, int]
    inputs: tuple[int, int]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShrinkReport:
    """The outcome of `shrink`: per-layer changes and the model's size before and after.

    Attributes:
        layers: one row per Dense/Conv/BatchNormalization layer, in graph order.
        parameters: parameter count before (masked model, wrappers excluded) and after.
        multiply_adds: multiply-adds per example before and after (see `multiply_adds`).
    """

    layers: tuple[LayerShrink, ...]
    parameters: tuple[int, int]
    multiply_adds: tuple[int, int]

    def __str__(self) -> str:
        lines = [f"{'layer':<16} {'type':<20} {'units':>13} {'inputs':>13}"]
        for row in self.layers:
            units = f"{row.units[0]} -> {row.units[1]}"
            inputs = f"{row.inputs[0]} -> {row.inputs[1]}"
            lines.append(f"{row.name:<16} {row.kind:<20} {units:>13} {inputs:>13}")
            lines.extend(f"  {note}" for note in row.notes)
        (p0, p1), (m0, m1) = self.parameters, self.multiply_adds
        lines.append(f"Parameters: {p0:,} -> {p1:,} ({p0 / max(p1, 1):.2f}x fewer)")
        lines.append(f"Multiply-adds per example: {m0:,} -> {m1:,} ({m0 / max(m1, 1):.2f}x fewer)")
        return "\n".join(lines)


class _Classes:
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
class _Units:
    """The unit classes along a tensor's last axis and, for dead classes, their constant value."""

    nodes: np.ndarray
    const: np.ndarray


@dataclass
class _Analysis:
    classes: _Classes = field(default_factory=_Classes)
    units: dict[int, _Units | None] = field(default_factory=dict)  # id(KerasTensor) -> units
    outputs: dict[int, _Units] = field(default_factory=dict)  # id(unit layer) -> its units
    dead: dict[int, np.ndarray] = field(default_factory=dict)  # id(unit layer) -> dead units
    inputs: dict[int, _Units | None] = field(default_factory=dict)  # id(layer) -> input units
    layers: list[keras.layers.Layer] = field(default_factory=list)  # unit layers and BN, graph order


def is_unit_layer(layer: keras.layers.Layer) -> bool:
    """Whether `layer` (or the layer a `PruneWrapper` holds) has removable output units.

    Dense and Conv1D/2D/3D layers with channels-last data, ``groups=1`` and no LoRA
    qualify; subclasses do not, as they may compute differently.

    Args:
        layer: any layer.

    Returns:
        True for a unit layer.
    """
    inner = layer.layer if isinstance(layer, PruneWrapper) else layer
    if type(inner) not in UNIT_LAYERS or getattr(inner, "lora_enabled", False):
        return False
    if isinstance(inner, keras.layers.Dense):
        return True
    return inner.data_format == "channels_last" and inner.groups == 1


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _graph(model: keras.Model):
    """The Functional graph behind a Sequential or Functional model, and its nodes in
    topological order."""
    from keras.src.models.functional import Functional  # not exported by Keras

    if not isinstance(model, (keras.Sequential, Functional)):
        raise ModelError(
            f"'{model.name}' is a {type(model).__name__}; shrink works on Sequential and "
            "Functional models only"
        )
    # Keras keeps a Sequential's graph in `_functional` and every graph's nodes in
    # `_nodes_by_depth` (private, unchanged through Keras 3.x); `Functional.call` walks
    # them the same way.
    graph = model._functional if isinstance(model, keras.Sequential) else model
    if graph is None:
        raise ModelError(f"model '{model.name}' is not built; build it (or give it an Input) first")
    nodes = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        nodes.extend(n for n in graph._nodes_by_depth[depth] if not n.is_input and n.operation)
    return graph, nodes


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _as_float32(const: np.ndarray) -> np.ndarray:
    return const.astype(np.float32)[None, :]


def _apply(fn, const: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(fn(_as_float32(const))), dtype=np.float64)[0]


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _is_last_axis(axis, rank: int) -> bool:
    return isinstance(axis, int) and axis in (-1, rank - 1)


def _inner(layer):
    return layer.layer if isinstance(layer, PruneWrapper) else layer


def _kernel_and_bias(layer) -> tuple[np.ndarray, np.ndarray]:
    """The kernel the layer computes with (masked, for a wrapper) and its bias (or zeros)."""
    if isinstance(layer, PruneWrapper):
        baked = {id(v): w for v, w in zip(layer.pruned_variables, layer.effective_weights())}
        kernel = baked[id(layer.layer.kernel)].astype(np.float64)
        layer = layer.layer
    else:
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    if layer.use_bias:
        bias = keras.ops.convert_to_numpy(layer.bias).astype(np.float64)
    else:
        bias = np.zeros(kernel.shape[-1])
    return kernel, bias


def _foldable(layer) -> bool:
    """Whether constant inputs fold exactly into the layer's bias."""
    layer = _inner(layer)
    return isinstance(layer, keras.layers.Dense) or layer.padding == "valid"


def _analyse(graph, nodes) -> _Analysis:
    state = _Analysis()
    classes = state.classes
    calls: dict[int, int] = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1

    def pin_all(units: _Units | None, reason: str) -> None:
        if units is not None:
            for i in units.nodes:
                classes.pin(i, reason)

    for node in nodes:
        op = node.operation
        tensors = node.arguments.keras_tensors
        ins = [state.units.get(id(t)) for t in tensors]
        out: _Units | None = None
        kind = type(op).__name__
        single = len(tensors) == 1 and len(node.outputs) == 1
        barrier = f"'{op.name}' ({kind}) uses them and shrink cannot see through it"
        if calls[id(op)] > 1:
            barrier = f"'{op.name}' uses them and is called more than once"
        elif single and is_unit_layer(op):
            kernel, bias = _kernel_and_bias(op)
            dead = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
            nodes_out = np.concatenate([classes.new(not d) for d in dead])
            activation = _activation_name(_inner(op).activation)
            if activation in _ELEMENTWISE_ACTIVATIONS:
                const = np.where(dead, _apply(_inner(op).activation, bias), np.nan)
            else:
                const = np.full(bias.shape, np.nan)
                for i in nodes_out:
                    classes.pin(i, f"'{op.name}' applies {activation} across its units")
            out = _Units(nodes_out, const)
            state.inputs[id(op)], state.outputs[id(op)], state.dead[id(op)] = ins[0], out, dead
            state.layers.append(op)
            barrier = None
        elif single and isinstance(op, keras.layers.BatchNormalization):
            if _is_last_axis(op.axis, len(tensors[0].shape)) and ins[0] is not None:
                c = ins[0].const
                mean = keras.ops.convert_to_numpy(op.moving_mean).astype(np.float64)
                var = keras.ops.convert_to_numpy(op.moving_variance).astype(np.float64)
                gamma = keras.ops.convert_to_numpy(op.gamma).astype(np.float64) if op.scale else 1.0
                beta = keras.ops.convert_to_numpy(op.beta).astype(np.float64) if op.center else 0.0
                out = _Units(ins[0].nodes, (c - mean) / np.sqrt(var + op.epsilon) * gamma + beta)
                state.inputs[id(op)] = ins[0]
                state.layers.append(op)
                barrier = None
        elif single and (
            isinstance(op, _ACTIVATION_LAYERS)
            or (isinstance(op, keras.layers.Activation) and _activation_name(op.activation) in _ELEMENTWISE_ACTIVATIONS)
        ):
            out = None if ins[0] is None else _Units(ins[0].nodes, _apply(op, ins[0].const))
            barrier = None
        elif single and (type(op) in _INFERENCE_IDENTITY or (type(op) in _SPATIAL and _channels_last(op))):
            out, barrier = ins[0], None
        elif single and type(op) is keras.layers.Flatten and _channels_last(op):
            shape = tensors[0].shape[1:]
            if ins[0] is None:
                barrier = None
            elif all(d is not None for d in shape):
                positions = int(np.prod(shape[:-1]))
                out = _Units(np.tile(ins[0].nodes, positions), np.tile(ins[0].const, positions))
                barrier = None
        elif type(op) in _MERGES and len(node.outputs) == 1 and len(tensors) >= 2:
            shapes = {tuple(t.shape) for t in tensors}
            if len(shapes) == 1 and all(u is not None for u in ins):
                for u in ins[1:]:
                    for i, j in zip(ins[0].nodes, u.nodes):
                        classes.union(i, j)
                const = keras.ops.convert_to_numpy(op([_as_float32(u.const) for u in ins]))
                out = _Units(ins[0].nodes, np.asarray(const, dtype=np.float64)[0])
                barrier = None
        elif type(op) is keras.layers.Concatenate and len(node.outputs) == 1:
            rank = len(tensors[0].shape)
            if _is_last_axis(op.axis, rank) and all(t.shape[-1] is not None for t in tensors):
                parts = []
                for t, u in zip(tensors, ins):
                    if u is None:
                        u = _Units(classes.new(True, t.shape[-1]), np.full(t.shape[-1], np.nan))
                        pin_all(u, barrier)
                    parts.append(u)
                out = _Units(
                    np.concatenate([u.nodes for u in parts]), np.concatenate([u.const for u in parts])
                )
                barrier = None
        if barrier is not None:
            for u in ins:
                pin_all(u, barrier)
            out = None
        for t in node.outputs:
            state.units[id(t)] = out
    for t in keras.tree.flatten(graph.output):
        pin_all(state.units.get(id(t)), "they reach the model's output")
    return state


def _settle(state: _Analysis) -> None:
    """Keeps the dead units that exactness or a non-empty layer needs, until nothing changes."""
    classes = state.classes
    changed = True
    while changed:
        changed = False
        for layer in state.layers:
            out = state.outputs.get(id(layer))
            if out is not None and classes.removed(out.nodes).all():
                classes.pin(out.nodes[0], "a layer keeps at least one unit")
                changed = True
            ins = state.inputs.get(id(layer))
            if out is None or ins is None or _foldable(layer):
                continue
            removed = classes.removed(ins.nodes)
            if not (removed & (ins.const != 0)).any():
                continue
            dead = np.array([classes.dead(i) for i in ins.nodes])
            stand_in = dead & ~removed & np.isfinite(ins.const) & (ins.const != 0)
            if not stand_in.any():
                candidates = np.where(removed, np.abs(ins.const), -1.0)
                classes.pin(
                    ins.nodes[int(np.argmax(candidates))],
                    f"one stands in as a constant channel for the removed ones in "
                    f"'{layer.name}' (padding '{_inner(layer).padding}')",
                )
                changed = True


def _shrunk_weights(layer, state: _Analysis) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Kernel, bias (None if the layer needs none), kept input and kept output positions."""
    classes = state.classes
    kernel, bias = _kernel_and_bias(layer)
    ins = state.inputs[id(layer)]
    keep_in = np.arange(kernel.shape[-2])
    if ins is not None:
        removed = classes.removed(ins.nodes)
        folded = removed & (ins.const != 0)
        if folded.any():
            c = ins.const[folded]
            contribution = np.tensordot(kernel[..., folded, :], c, axes=([-2], [0]))
            if _foldable(layer):
                bias = bias + contribution.reshape(-1, kernel.shape[-1]).sum(axis=0)
            else:
                dead = np.array([classes.dead(i) for i in ins.nodes])
                stand_in = dead & ~removed & np.isfinite(ins.const) & (ins.const != 0)
                q = int(np.argmax(np.where(stand_in, np.abs(ins.const), -1.0)))
                kernel[..., q, :] += contribution / ins.const[q]
        keep_in = np.flatnonzero(~removed)
    keep_out = np.flatnonzero(~classes.removed(state.outputs[id(layer)].nodes))
    kernel = kernel[..., keep_in, :][..., keep_out]
    bias = bias[keep_out]
    if not layer.use_bias and not bias.any():
        return kernel, None, keep_in, keep_out
    return kernel, bias, keep_in, keep_out


def _notes(layer, state: _Analysis) -> tuple[str, ...]:
    """Why dead units of a unit layer were kept, one line per reason."""
    classes = state.classes
    out = state.outputs.get(id(layer))
    if out is None:
        return ()
    counts: dict[str, int] = {}
    for i, dead, removed in zip(out.nodes, state.dead[id(layer)], classes.removed(out.nodes)):
        if not dead or removed:
            continue
        if classes.dead(i):
            reason = classes.reason(i)
        else:
            reason = "an element-wise merge joins them to units that are not pruned"
        counts[reason] = counts.get(reason, 0) + 1
    return tuple(f"kept {n} pruned unit(s): {reason}" for reason, n in counts.items())


def coupled_units(model: keras.Model) -> dict[keras.layers.Layer, np.ndarray]:
    """Which output units of the model's unit layers are tied together by the graph.

    Units joined by an element-wise merge (Add, Subtract, Multiply, Average, Maximum,
    Minimum), directly or through activations, pooling, BatchNormalization,
    Concatenate and the like, must be removed together: they share a class id.

    Args:
        model: a Sequential or Functional model, wrapped or plain.

    Returns:
        For each unit layer of the model's own graph (see `is_unit_layer`; nested
        models and layers called more than once are not included), one class id per
        output unit. Two units are coupled exactly when their ids are equal.

    Example:

    ```python
    classes = coupled_units(resnet)
    classes[resnet.get_layer("stem")]  # the same ids as the block convs added to it
    ```
    """
    state = _analyse(*_graph(model))
    return {
        layer: np.array([state.classes.find(int(i)) for i in state.outputs[id(layer)].nodes])
        for layer in state.layers
        if id(layer) in state.outputs
    }


def _replacement(layer, state: _Analysis):
    """The layer to use in the shrunk model, the weights to give it (by variable name)
    once built, and its report row (None for layers shrink does not change)."""
    classes = state.classes
    if id(layer) in state.outputs:
        kernel, bias, keep_in, keep_out = _shrunk_weights(layer, state)
        config = layer.get_config()
        config["units" if isinstance(layer, keras.layers.Dense) else "filters"] = len(keep_out)
        config["use_bias"] = bias is not None
        weights = {"kernel": kernel, "bias": bias}
        row = LayerShrink(
            layer.name,
            type(layer).__name__,
            (int(layer.kernel.shape[-1]), len(keep_out)),
            (int(layer.kernel.shape[-2]), len(keep_in)),
            _notes(layer, state),
        )
        return type(layer).from_config(config), weights, row
    if id(layer) in state.inputs:  # BatchNormalization on units
        keep = np.flatnonzero(~classes.removed(state.inputs[id(layer)].nodes))
        weights = {v.name: keras.ops.convert_to_numpy(v)[keep] for v in layer.weights}
        channels = int(layer.moving_mean.shape[0])
        row = LayerShrink(layer.name, type(layer).__name__, (channels, len(keep)), (channels, len(keep)))
        return type(layer).from_config(layer.get_config()), weights, row
    if isinstance(layer, keras.layers.Layer) and not layer.weights and not isinstance(layer, keras.Model):
        return type(layer).from_config(layer.get_config()), None, None
    return layer, None, None


def _rebuild(model: keras.Model, graph, nodes, state: _Analysis) -> tuple[keras.Model, list[LayerShrink]]:
    tensors: dict[int, object] = {}

    def new_input(t):
        x = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name)
        tensors[id(t)] = x
        return x

    inputs = keras.tree.map_structure(new_input, graph.input)
    replaced: dict[int, object] = {}
    rows: list[LayerShrink] = []
    for node in nodes:
        old = node.operation
        weights = None
        if id(old) not in replaced:
            replaced[id(old)], weights, row = _replacement(old, state)
            if row is not None:
                rows.append(row)
        new = replaced[id(old)]
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = new(*args, **kwargs)
        if weights is not None:
            new.set_weights([np.asarray(weights[v.name], dtype=v.dtype) for v in new.weights])
        for t, y in zip(node.outputs, keras.tree.flatten(outputs)):
            tensors[id(t)] = y
    if isinstance(model, keras.Sequential):
        (first,) = keras.tree.flatten(inputs)
        layers = [replaced[id(layer)] for layer in model.layers]
        return keras.Sequential([keras.Input(batch_shape=first.shape, dtype=first.dtype), *layers], name=model.name), rows
    outputs = keras.tree.map_structure(lambda t: tensors[id(t)], graph.output)
    return keras.Model(inputs, outputs, name=model.name), rows


def multiply_adds(model: keras.Model) -> int:
    """Multiply-adds per example in the model's Dense and Conv1D/2D/3D layers.

    A Dense layer costs ``inputs * units`` per position, a convolution
    ``kernel size * input channels / groups * filters`` per output position; other
    layers (activations, pooling, normalisation) are not counted. FLOPs are about
    twice this number.

    Args:
        model: a built Sequential or Functional model, wrapped or plain.

    Returns:
        The count for one example.

    Example:

    ```python
    multiply_adds(keras_prune.models.lenet_300_100())  # 266200
    ```
    """
    total = 0
    for layer in _all_layers(model):
        inner = layer.layer if isinstance(layer, PruneWrapper) else layer
        if isinstance(inner, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += positions * int(np.prod(inner.kernel.shape))
    return total


def shrink_with_report(model: keras.Model) -> tuple[keras.Model, ShrinkReport]:
    """`shrink`, also returning what it did.

    Args:
        model: a Sequential or Functional model, wrapped (masked) or plain.

    Returns:
        The shrunk model and its `ShrinkReport`.

    Raises:
        ModelError: `model` is subclassed or not built.

    Example:

    ```python
    small, report = keras_prune.shrink_with_report(pruned)
    print(report)
    ```
    """
    from keras_prune.api import strip  # imported here: keras_prune.api imports this module

    _graph(model)
    plain = strip(model)
    graph, nodes = _graph(plain)
    state = _analyse(graph, nodes)
    _settle(state)
    small, rows = _rebuild(plain, graph, nodes, state)
    report = ShrinkReport(
        tuple(rows),
        (plain.count_params(), small.count_params()),
        (multiply_adds(plain), multiply_adds(small)),
    )
    return small, report


def shrink(model: keras.Model) -> keras.Model:
    """A smaller plain Keras model without the model's dead units, computing the same outputs.

    Dead units (whole kernel slices zero, as `prune(..., granularity="filter")` or
    ``"neuron"`` leaves them) are removed from their Dense/Conv layer, with the
    matching channels of BatchNormalization layers and the matching input weights
    of every Dense/Conv layer that consumes them; their constant outputs are folded
    into the consumers (see the module docstring). Dead units that cannot be removed
    safely are kept; `shrink_with_report` says which and why. The result contains no
    keras_prune classes and is not compiled.

    Args:
        model: a Sequential or Functional model, wrapped (masked) or plain.

    Returns:
        A new model of the same kind (Sequential stays Sequential), with the same
        layer names.

    Raises:
        ModelError: `model` is subclassed or not built.

    Example:

    ```python
    model = keras_prune.prunable(trained)
    keras_prune.prune(model, {"conv2": 0.75, "fc1": 0.75}, granularity="filter")
    small = keras_prune.shrink(model)  # conv2 has 24 filters, fc1 30 units
    ```
    """
    return shrink_with_report(model)[0]
