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
    graph_nodes,
    is_channel_layer,
    kernel_and_bias,
    kernel_outputs,
    rebuild,
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


def _settle(state: UnitAnalysis) -> None:
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
            if out is None or ins is None or is_channel_layer(layer) or _foldable(layer, ins):
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
    _settle(state)
    rows: list[LayerShrink] = []
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

    small = rebuild(plain, replace, set_weights)
    if fold_batchnorm:
        small = folding.fold_batchnorm(small)
    try:
        macs = (count_macs(plain), count_macs(small))
    except ModelError:  # sizes not fixed: an unfolded block's attention cost depends on them
        macs = None
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
