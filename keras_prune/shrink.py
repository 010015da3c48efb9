"""Shrink: turn a model whose units are pruned into a genuinely smaller dense model.

A unit (Dense neuron or convolution filter, see `keras_prune.structured`) is *dead*
when its whole kernel slice is zero (masked in a wrapped model, or zero in a plain
one). `shrink` removes dead units from their layer and the matching input weights
from every layer that consumes them, following the Keras graph through activations,
pooling, Dropout, BatchNormalization, Flatten (channels-last positions
``(h * W + w) * C + c``), arithmetic with a number (``x + 3``, ``x / 6``), a Reshape
that keeps the last axis, and the element-wise merges Add, Subtract, Multiply,
Average, Maximum, Minimum (broadcasting where a tensor has size 1, as in
squeeze-and-excitation) and Concatenate (on the channel axis).

Coupled units. Units joined by an element-wise merge form one class: the class is
removed only if every unit in it is dead (so a residual block and its shortcut lose
the same channels). A class is pinned, and kept, when it reaches the model's output
or a layer that shrink cannot see through (another Reshape, Softmax, the boundary of a nested model
(whose own units are followed inside it), a layer
called twice, ...); the report names the layer.

Attention heads. A MultiHeadAttention loses its dead heads (output-projection slice all
zero) and lowers ``num_heads``. A keras-hub TransformerEncoder/Decoder with a dead head
or FFN unit is first unfolded into standard layers (`keras_prune.unfold`), whose heads
and FFN units are then removed like any others.

Residual branches. A layer keeps at least one unit, unless its units all leave with a
residual branch removed whole (a MobileNetV2 block whose expansion is pruned whole):
the branch then adds a constant, which goes into the bias of the layer computing the
shortcut, or into a Rescaling where that layer's output has other readers (see `_Branches`).

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

from dataclasses import dataclass

import keras
import numpy as np

from keras_prune import _keras_compat, folding
from keras_prune.errors import ModelError
from keras_prune.flops import count_macs
from keras_prune.graph import (
    TensorUnits,
    UnitAnalysis,
    analyse_units,
    apply_per_unit,
    binary_merge,
    constant_fn,
    graph_nodes,
    is_channel_layer,
    kernel_and_bias,
    kernel_outputs,
    rebuild,
    walk,
)
from keras_prune.handlers import layer_units
from keras_prune.unfolding import unfold_blocks
from keras_prune.wrapper import inner_layer, strip_layer

__all__ = [
    "LayerShrink",
    "shrink",
    "shrink_with_report",
    "ShrinkReport",
]


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
        multiply_adds: multiply-adds per example before and after (`keras_prune.flops.count_macs`),
            or None when the model's input sizes are not fixed (a keras-hub backbone takes
            sequences of any length) and an attention layer's cost depends on them.
    """

    layers: tuple[LayerShrink, ...]
    parameters: tuple[int, int]
    multiply_adds: tuple[int, int] | None

    def __str__(self) -> str:
        lines = [f"{'layer':<16} {'type':<20} {'units':>13} {'inputs':>13}"]
        for row in self.layers:
            units = f"{row.units[0]} -> {row.units[1]}"
            inputs = f"{row.inputs[0]} -> {row.inputs[1]}"
            lines.append(f"{row.name:<16} {row.kind:<20} {units:>13} {inputs:>13}")
            lines.extend(f"  {note}" for note in row.notes)
        p0, p1 = self.parameters
        lines.append(f"Parameters: {p0:,} -> {p1:,} ({p0 / max(p1, 1):.2f}x fewer)")
        if self.multiply_adds is None:
            lines.append("Multiply-adds per example: not counted (the input sizes are not fixed)")
        else:
            m0, m1 = self.multiply_adds
            lines.append(f"Multiply-adds per example: {m0:,} -> {m1:,} ({m0 / max(m1, 1):.2f}x fewer)")
        return "\n".join(lines)


def _foldable(layer, ins: TensorUnits) -> bool:
    """Whether the constant inputs of a unit layer fold exactly into its bias: a Dense
    layer, or a convolution that sees every input position through every tap (``valid``
    padding, or a 1x1 kernel), unless the constants were zero-padded on their way."""
    layer = inner_layer(layer)
    if ins.bordered:
        return False
    if isinstance(layer, keras.layers.Dense):
        return True
    return layer.padding == "valid" or all(k == 1 for k in layer.kernel_size)


class _Branches:
    """Which layers may lose all their units: those of a residual branch removed whole.

    A unit layer whose input units are all removed (and fold into its bias, see
    `_foldable`) outputs the same vector at every position: a *constant layer*. A layer
    may lose all its units when everything its output reaches through removed units
    ends in constant layers, and each constant then reaches, through element-wise
    layers, only an Add, Subtract or Multiply with a computed tensor: the branch
    ``x + f(x)`` of a residual block becomes ``x + c``, a Rescaling, and the branch's
    layers leave the model. Anything else (a constant reaching the output, a
    convolution, a pooling layer) keeps one unit, as before.
    """

    def __init__(self, model: keras.Model, state: UnitAnalysis):
        self.state = state
        self.consumers: dict[int, list] = {}
        self.producer: dict[int, object] = {}
        self.tensors: dict[int, object] = {}
        self.output: dict[int, object] = {}  # id(layer) -> its output, for layers called once
        self.model_outputs: set[int] = set()  # ids of the tensors the model (or a nested one) outputs
        self._values: dict[int, np.ndarray | None] = {}  # `value`, for the current removals
        self._index(model)

    def _index(self, model: keras.Model) -> None:
        graph, nodes = graph_nodes(model)
        self.model_outputs.update(id(t) for t in keras.tree.flatten(graph.output))
        for node in nodes:
            if _keras_compat.is_graph_model(node.operation):
                self._index(node.operation)
            for t in node.arguments.keras_tensors:
                self.consumers.setdefault(id(t), []).append(node)
            for t in node.outputs:
                self.producer[id(t)] = node
                self.tensors[id(t)] = t
            if len(node.outputs) == 1:
                self.output[id(node.operation)] = None if id(node.operation) in self.output else node.outputs[0]

    def _all_removed(self, t) -> bool:
        units = self.state.units.get(id(t))
        return units is not None and bool(self.state.classes.removed(units.nodes).all())

    def constant_layer(self, layer) -> bool:
        ins = self.state.inputs.get(id(layer))
        return (
            id(layer) in self.state.outputs
            and not is_channel_layer(layer)
            and ins is not None
            and bool(self.state.classes.removed(ins.nodes).all())
            and _foldable(layer, ins)
        )

    def value(self, t) -> np.ndarray | None:
        """The vector tensor `t` holds at every position, if it is a constant."""
        if id(t) not in self._values:
            self._values[id(t)] = self._value(t)
        return self._values[id(t)]

    def _value(self, t) -> np.ndarray | None:
        node = self.producer.get(id(t))
        if node is None or len(node.outputs) != 1:
            return None
        op = node.operation
        if self.constant_layer(op):
            kernel, bias = kernel_and_bias(op)
            c = self.state.inputs[id(op)].const
            total = np.tensordot(kernel, c, axes=([-2], [0])).reshape(-1, kernel.shape[-1]).sum(axis=0)
            return apply_per_unit(inner_layer(op).activation, bias + total)
        fn, kind = constant_fn(op, node), binary_merge(op, node)
        if fn is None and kind is None:
            return None
        ins = [self.value(s) for s in node.arguments.keras_tensors]
        if any(v is None for v in ins):
            return None
        if fn is not None:
            return fn(ins[0])
        return {"add": np.add, "subtract": np.subtract, "multiply": np.multiply}[kind](*ins)

    def _used(self, t) -> bool:
        """Whether constant `t` reaches only merges with a computed tensor (see the class)."""
        nodes = self.consumers.get(id(t), [])
        if not nodes or id(t) in self.model_outputs:
            return False
        for node in nodes:
            op = node.operation
            if constant_fn(op, node) is not None:
                if not self._used(node.outputs[0]):
                    return False
            elif binary_merge(op, node) is not None:
                (other,) = [s for s in node.arguments.keras_tensors if s is not t] or [t]
                if self.value(other) is not None and not self._used(node.outputs[0]):
                    return False
            else:
                return False
        return True

    def absorbed(self, t) -> bool:
        """Whether tensor `t`, all its units removed, may leave the model (see the class)."""
        self._values = {}  # what is removed may have changed since the last call
        return self._absorbed(t)

    def _absorbed(self, t) -> bool:
        nodes = self.consumers.get(id(t), [])
        if not nodes or id(t) in self.model_outputs:
            return False
        for node in nodes:
            if len(node.outputs) != 1:
                return False
            (y,) = node.outputs
            if self.constant_layer(node.operation):
                if not self._used(y):
                    return False
            elif not (self._all_removed(y) and self._absorbed(y)):
                return False
        return True

    def left_out(self) -> dict[int, np.ndarray | None]:
        """For `keras_prune.graph.rebuild`: the tensors the shrunk model does not compute,
        each with its constant vector (kept units only) or None."""
        found: dict[int, np.ndarray | None] = {}
        self._values = {}
        for t_id, t in self.tensors.items():
            if self._all_removed(t):
                found[t_id] = None
                continue
            if self.state.units.get(t_id) is None:
                continue
            value = self.value(t)
            if value is not None:
                found[t_id] = value[~self.state.classes.removed(self.state.units[t_id].nodes)]
        return found

    def fold_offsets(self, left_out: dict[int, np.ndarray | None]) -> dict[int, np.ndarray]:
        """Moves the constants that merges add (``x + c``, ``x - c``) into the bias of the
        layer that computes ``x`` where nothing else reads it: a BatchNormalization's beta,
        or the bias of a unit layer without an activation, reached through Adds of two
        computed tensors and earlier folded merges. Sets each folded constant in
        `left_out` to zero (`keras_prune.graph.rebuild` then passes ``x`` on) and returns
        what to add to each layer's bias, by ``id`` of the layer (kept units only)."""
        offsets: dict[int, np.ndarray] = {}
        aliases: dict[int, object] = {}  # a folded merge's output -> the tensor it passes on

        def readers(t) -> list:
            return [n for n in self.consumers.get(id(t), []) if not all(id(y) in left_out for y in n.outputs)]

        def target(t):
            if id(t) in self.model_outputs or len(readers(t)) != 1:
                return None
            if id(t) in aliases:
                return target(aliases[id(t)])
            node = self.producer.get(id(t))
            if node is None or len(node.outputs) != 1:
                return None
            op = node.operation
            if isinstance(op, keras.layers.BatchNormalization) and id(op) in self.state.inputs and op.center:
                return op
            if (id(op) in self.state.outputs and not is_channel_layer(op) and inner_layer(op).use_bias
                    and getattr(inner_layer(op).activation, "__name__", "") == "linear"):
                return op
            ins = node.arguments.keras_tensors
            if binary_merge(op, node) == "add" and not any(id(s) in left_out for s in ins):
                return target(ins[0]) or target(ins[1])
            return None

        for t_id, t in self.tensors.items():
            node = self.producer[t_id]
            kind = binary_merge(node.operation, node)
            if kind not in ("add", "subtract") or t_id in left_out:
                continue
            a, b = node.arguments.keras_tensors
            if (id(a) in left_out) == (id(b) in left_out) or left_out.get(id(a), left_out.get(id(b))) is None:
                continue
            computed, constant = (a, b) if id(b) in left_out else (b, a)
            if kind == "subtract" and computed is b:
                continue
            layer = target(computed)
            if layer is None:
                continue
            sign = 1.0 if kind == "add" else -1.0
            offsets[id(layer)] = offsets.get(id(layer), 0.0) + sign * left_out[id(constant)]
            left_out[id(constant)] = np.zeros_like(left_out[id(constant)])
            aliases[t_id] = computed
        return offsets


def _removed_row(layer, state: UnitAnalysis) -> LayerShrink:
    """The report row of a layer removed with its residual branch (see `_Branches`)."""
    units = len(state.outputs[id(layer)].nodes) if id(layer) in state.outputs else len(state.inputs[id(layer)].nodes)
    ins = state.inputs.get(id(layer))
    inputs = units if ins is None else len(ins.nodes)
    return LayerShrink(layer.name, type(layer).__name__, (units, 0), (inputs, 0),
                       ("removed with its residual branch",))


def _settle(state: UnitAnalysis, branches: _Branches) -> None:
    """Keeps the dead units that exactness or a non-empty layer needs, until nothing changes."""
    classes = state.classes
    changed = True
    while changed:
        changed = False
        for layer in state.layers:
            out = state.outputs.get(id(layer))
            if out is not None and classes.removed(out.nodes).all():
                output = branches.output.get(id(layer))
                if output is None or not branches.absorbed(output):
                    classes.pin(out.nodes[0], "a layer keeps at least one unit")
                    changed = True
            ins = state.inputs.get(id(layer))
            if out is None or ins is None or is_channel_layer(layer) or _foldable(layer, ins):
                continue
            if classes.removed(out.nodes).all():  # it leaves the model with its branch
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
                    f"'{layer.name}' (padding '{inner_layer(layer).padding}')",
                )
                changed = True


def _shrunk_weights(layer, state: UnitAnalysis) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Kernel, bias (None if the layer needs none), kept input and kept output positions."""
    classes = state.classes
    kernel, bias = kernel_and_bias(layer)
    ins = state.inputs[id(layer)]
    keep_in = np.arange(kernel.shape[-2])
    if ins is not None:
        removed = classes.removed(ins.nodes)
        folded = removed & (ins.const != 0)
        if folded.any():
            c = ins.const[folded]
            contribution = np.tensordot(kernel[..., folded, :], c, axes=([-2], [0]))
            if _foldable(layer, ins):
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


def _notes(layer, state: UnitAnalysis) -> tuple[str, ...]:
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
            reason = "units coupled to them (by a merge or a depthwise convolution) are not pruned"
        counts[reason] = counts.get(reason, 0) + 1
    return tuple(f"kept {n} pruned unit(s): {reason}" for reason, n in counts.items())


def _live_heads(layer: keras.layers.MultiHeadAttention) -> np.ndarray:
    """Per head of a (plain) MultiHeadAttention, whether its output-projection slice has a
    non-zero weight: a head whose slice is all zero adds nothing to the output."""
    output_kernel = keras.ops.convert_to_numpy(layer.output_dense.kernel)
    return output_kernel.reshape(int(layer.num_heads), -1).any(axis=1)


def _fewer_heads(layer: keras.layers.MultiHeadAttention):
    """A MultiHeadAttention without its dead heads (output-projection slice all zero: such
    a head adds nothing to the output, whatever its query, key and value), its weights
    and its report row; the layer itself if no head is dead (or all are: one is kept)."""
    heads = int(layer.num_heads)
    output_kernel = keras.ops.convert_to_numpy(layer.output_dense.kernel)
    alive = _live_heads(layer)
    if alive.all():
        return layer, None, None
    keep = np.flatnonzero(alive) if alive.any() else np.array([0])
    weights = {}
    for dense, axis in ((layer.query_dense, 1), (layer.key_dense, 1), (layer.value_dense, 1)):
        weights[id(dense.kernel)] = np.take(keras.ops.convert_to_numpy(dense.kernel), keep, axis=axis)
        if dense.bias is not None:
            weights[id(dense.bias)] = keras.ops.convert_to_numpy(dense.bias)[keep]
    weights[id(layer.output_dense.kernel)] = output_kernel[keep]
    values = [weights.get(id(v), keras.ops.convert_to_numpy(v)) for v in layer.weights]
    config = {**layer.get_config(), "num_heads": len(keep)}
    row = LayerShrink(layer.name, type(layer).__name__, (heads, len(keep)), (heads, len(keep)))
    return type(layer).from_config(config), values, row


def _has_dead_units(block) -> bool:
    """Whether a keras-hub Transformer block (plain) has a dead head (output-projection
    slice all zero) or a dead FFN unit (intermediate kernel column all zero): then shrink
    unfolds it (`keras_prune.unfold`) to remove them."""
    parts = _keras_compat.transformer_block_parts(block)
    ffn = keras.ops.convert_to_numpy(parts["ffn_in"].kernel)
    return not _live_heads(parts["attention"]).all() or not ffn.any(axis=0).all()


def _replacement(layer, state: UnitAnalysis):
    """The layer to use in the shrunk model, the weights to give it (by variable name)
    once built, and its report row (None for layers shrink does not change)."""
    classes = state.classes
    if id(layer) in state.outputs and is_channel_layer(layer):
        # A removed channel leaves with its input unit (they are one class): nothing to fold.
        # With depth_multiplier m, channel c's outputs c * m .. c * m + m - 1 are one class.
        kernel, bias = kernel_and_bias(layer)
        channels, m = kernel_outputs(layer)
        keep = np.flatnonzero(~classes.removed(state.outputs[id(layer)].nodes[::m]))
        outputs = (keep[:, None] * m + np.arange(m)).ravel()
        weights = {"kernel": kernel[..., keep, :], "bias": bias[outputs] if layer.use_bias else None}
        row = LayerShrink(
            layer.name, type(layer).__name__, (channels * m, len(outputs)), (channels, len(keep)), _notes(layer, state)
        )
        return type(layer).from_config(layer.get_config()), weights, row
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
    if id(layer) in state.reshapes:  # a Reshape that keeps the units on its last axis
        config = layer.get_config()
        if config["target_shape"][-1] != -1:
            kept = int((~classes.removed(state.reshapes[id(layer)].nodes)).sum())
            config["target_shape"] = (*config["target_shape"][:-1], kept)
        return type(layer).from_config(config), None, None
    if type(layer) is keras.layers.MultiHeadAttention and layer_units(layer, "head") is not None:
        return _fewer_heads(layer)
    if isinstance(layer, keras.layers.Layer) and not layer.weights and not isinstance(layer, keras.Model):
        return type(layer).from_config(layer.get_config()), None, None
    return layer, None, None


def shrink_with_report(model: keras.Model, fold_batchnorm: bool = False) -> tuple[keras.Model, ShrinkReport]:
    """`shrink`, also returning what it did.

    Args:
        model: a Sequential or Functional model, wrapped (masked) or plain.
        fold_batchnorm: also fold BatchNormalization layers into the Dense and
            convolution layers they follow, for serving (`keras_prune.fold_batchnorm`).

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
    graph_nodes(model)
    plain = unfold_blocks(rebuild(model, strip_layer), _has_dead_units)
    state = analyse_units(plain)
    branches = _Branches(plain, state)
    _settle(state, branches)
    left_out = branches.left_out()
    offsets = branches.fold_offsets(left_out)
    rows: list[LayerShrink] = [_removed_row(layer, state) for layer in state.layers
                               if id(branches.output.get(id(layer))) in left_out]
    weights: dict[int, dict] = {}

    def replace(layer):
        new, new_weights, row = _replacement(layer, state)
        if row is not None:
            rows.append(row)
        if new_weights is not None:
            weights[id(layer)] = new_weights
        return new

    def set_weights(old, new):
        if isinstance(weights.get(id(old)), list):  # already in the order of `new.weights`
            new.set_weights(weights[id(old)])
        elif id(old) in weights:
            new.set_weights([np.asarray(weights[id(old)][v.name], dtype=v.dtype) for v in new.weights])
        if id(old) in offsets:  # a removed residual branch's constant (`_Branches.fold_offsets`)
            bias = new.beta if isinstance(new, keras.layers.BatchNormalization) else new.bias
            bias.assign(keras.ops.convert_to_numpy(bias) + offsets[id(old)].astype(bias.dtype))

    small = rebuild(plain, replace, set_weights, left_out)
    if fold_batchnorm:
        small = folding.fold_batchnorm(small)
    try:
        macs = (count_macs(plain), count_macs(small))
    except ModelError:  # sizes not fixed: an unfolded block's attention cost depends on them
        macs = None
    order = {layer.name: i for i, (_, layer) in enumerate(walk(plain))}
    rows.sort(key=lambda row: order.get(row.name, len(order)))  # removed layers in their place
    report = ShrinkReport(tuple(rows), (plain.count_params(), small.count_params()), macs)
    return small, report


def shrink(model: keras.Model, fold_batchnorm: bool = False) -> keras.Model:
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
        fold_batchnorm: also fold BatchNormalization layers into the Dense and
            convolution layers they follow, for serving (`keras_prune.fold_batchnorm`);
            the folded normalisation layers are gone from the result.

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
    return shrink_with_report(model, fold_batchnorm)[0]
