"""emp: the measured loss change of removing each weight alone.

``score_k = L(w with w_k = 0) - L(w)``, the mean task loss over a fixed subset of the
scoring (training) images, measured, not estimated. Weights whose removal raises the
loss least, or lowers it, have the lowest scores and go first.

Naively this is one evaluation of the model per weight. Here it is batched:

1. The model is split at the scored layer: the images go through the layers before
   it once (the layer's input ``x``), and the layer's output ``z`` is computed once.
2. Removing a weight changes only the layer's output; the rest of the model (the
   suffix) is run on many candidate outputs stacked into one large batch.
3. For Dense, Conv1D/2D/3D (channels last) and Embedding layers, output channel
   ``c`` depends only on ``kernel[..., c]``. So one call of the layer with one weight
   zeroed in *every* output channel yields the changed outputs of all those weights
   at once: candidate ``(r, c)`` is ``z`` with channel ``c`` taken from that call.
   A layer of N weights and C output channels needs N / C layer calls. Other layer
   types get one call per weight (still batched through the suffix).

Cost is then about N x n evaluations of the suffix alone for n images, with no
per-weight Python or eager overhead: the batched removals are written with
`keras.ops` and compiled by the backend (`autodiff.compiled`: `tf.function` on
TensorFlow, `jax.jit` on JAX; eager on PyTorch). A weight that is already zero has score 0
exactly and costs nothing.

Score: by default the signed change shrunk towards 0 by two standard errors of its
mean (from the per-image changes), damped; see `Empirical`.

Sample budget: a layer with N non-zero weights is scored on its first
``min(n, max(1, budget // N))`` scoring images, so large layers (LeNet-5's fc1:
288,000 weights) use fewer images and stay practical.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_prune import autodiff
from keras_prune._keras_compat import stored_weight_matrix
from keras_prune.criteria.base import Criterion, Scores, register_criterion
from keras_prune.criteria.objective import (
    TaskLoss,
    check_damping,
    check_model,
    damp,
    fixed_batches,
    progress_bar,
)
from keras_prune.errors import InputError, ModelError
from keras_prune.graph import graph_nodes
from keras_prune.wrapper import PruneWrapper

_BLOCK_ELEMENTS = 2**23
"""Most elements of one stacked batch of candidate layer outputs (32 MB in float32)."""

_CHANNEL_SEPARABLE = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Embedding,
)


def _channel_separable(layer: keras.layers.Layer, variable: keras.Variable) -> bool:
    """Whether output channel c of `layer` depends on `variable[..., c]` alone."""
    if not isinstance(layer, _CHANNEL_SEPARABLE):
        return False
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return False
    if getattr(layer, "lora_enabled", False):
        return False
    return stored_weight_matrix(layer) is variable


@dataclass
class _Split:
    """The model cut at one wrapped layer: prefix -> layer -> suffix."""

    prefix: keras.Model
    suffix: keras.Model | None  # None: the layer's output is the model's output


def _split(model: keras.Model, layer: PruneWrapper) -> _Split:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(f"emp scores single-input, single-output models; '{model.name}' is not")
    cannot = InputError(
        f"emp cannot cut '{model.name}' at layer '{layer.name}': it scores layers at the "
        "top level of a Sequential or Functional model whose later layers depend on "
        "the input only through that layer"
    )
    # The layer's call in this model's graph: `layer.input` is its first call, which for
    # a Sequential loaded from a .keras file belongs to a graph Keras built while loading.
    try:
        graph, nodes = graph_nodes(model)
    except ModelError:
        raise cannot from None
    calls = [node for node in nodes if node.operation is layer]
    if len(calls) != 1 or len(calls[0].input_tensors) != 1 or len(calls[0].outputs) != 1:
        raise cannot
    (inputs,), (output,) = calls[0].input_tensors, calls[0].outputs
    try:
        prefix = keras.Model(graph.inputs, inputs)
        if output is graph.outputs[0]:
            return _Split(prefix, None)
        return _Split(prefix, keras.Model(output, graph.outputs))
    except (ValueError, AttributeError):
        raise cannot from None


@dataclass
class _Plan:
    """How one variable is scored: groups of weights zeroed together, and blocks."""

    rows: np.ndarray  # (groups, C) row index of each group's weight per channel, -1 = none
    images: int  # scoring images used
    block: int  # images per block
    groups_per_call: int

    @property
    def steps(self) -> int:
        calls = -(-len(self.rows) // self.groups_per_call)
        return calls * -(-self.images // self.block)


def _plan(weight: np.ndarray, separable: bool, total_images: int, budget: int, feature_size: int) -> _Plan:
    matrix = weight.reshape(-1, weight.shape[-1]) if separable else weight.reshape(-1, 1)
    nonzero = matrix != 0
    counts = nonzero.sum(axis=0)
    order = np.argsort(~nonzero, axis=0, kind="stable")
    groups = int(counts.max()) if counts.size else 0
    rows = np.where(np.arange(groups)[:, None] < counts[None, :], order[:groups], -1)
    candidates = int(nonzero.sum())
    images = min(total_images, max(1, budget // max(candidates, 1)))
    channels = matrix.shape[1]
    row_limit = max(channels, _BLOCK_ELEMENTS // max(feature_size, 1))
    block = min(images, max(1, row_limit // channels))
    groups_per_call = max(1, min(max(groups, 1), row_limit // (channels * block)))
    return _Plan(rows.astype(np.int32), images, block, groups_per_call)


class _LayerRemoval:
    """Measures the loss change of zeroing each weight of one wrapped layer."""

    def __init__(self, model: keras.Model, layer: PruneWrapper, loss: TaskLoss):
        self.layer = layer
        self.split = _split(model, layer)
        self.loss = loss
        self.effective = [ops.convert_to_tensor(w) for w in layer.effective_weights()]

    def _suffix(self, outputs):
        if self.split.suffix is None:
            return outputs
        return self.split.suffix(outputs, training=False)

    def _call_with(self, x, index: int, weight):
        values = list(self.effective)
        values[index] = weight
        with autodiff.substituted(self.layer.pruned_variables, values):
            return self.layer.layer(x, training=False)

    def base(self, x, y) -> tuple:
        """The layer's input and output on `x`, and the unchanged model's loss per image."""
        inputs = self.split.prefix(x, training=False)
        outputs = self._call_with(inputs, 0, self.effective[0])
        return inputs, outputs, self.loss.per_sample(y, self._suffix(outputs))

    def changes_function(self, index: int, separable: bool, groups: int):
        """A compiled function (`autodiff.compiled`): summed loss changes, and summed
        squared changes, of `groups` groups on one block of images."""
        weight = self.effective[index]
        shape = tuple(weight.shape)
        matrix = ops.reshape(weight, (-1, shape[-1]) if separable else (-1, 1))
        length, channels = (int(n) for n in matrix.shape)
        positions = ops.arange(length, dtype="int32")[:, None]

        def changes(inputs, base_outputs, base_losses, y, rows):
            candidates = []
            for g in range(groups):
                drop = ops.cast(ops.equal(positions, rows[g][None, :]), matrix.dtype)  # -1: none
                outputs = self._call_with(inputs, index, ops.reshape(matrix * (1 - drop), shape))
                if separable:
                    rank = len(outputs.shape)
                    own_channel = ops.reshape(ops.eye(channels, dtype="bool"), (channels,) + (1,) * (rank - 1) + (channels,))
                    outputs = ops.where(own_channel, outputs[None], base_outputs[None])
                else:
                    outputs = outputs[None]
                candidates.append(outputs)
            stacked = ops.concatenate(candidates, axis=0)
            flat = ops.reshape(stacked, (-1,) + tuple(base_outputs.shape[1:]))
            tiled = ops.tile(y, (groups * channels,) + (1,) * (len(y.shape) - 1))
            per_image = self.loss.per_sample(tiled, self._suffix(flat))
            per_image = ops.reshape(per_image, (groups, channels, -1))
            change = per_image - ops.cast(base_losses, per_image.dtype)
            return ops.sum(change, axis=-1), ops.sum(ops.square(change), axis=-1)

        return autodiff.compiled(changes)

    def measure(
        self, index: int, separable: bool, plan: _Plan, x_all, y_all, bar
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean loss change of zeroing each weight of variable `index`, and the mean of
        its per-image squares, both shaped like the variable."""
        weight = ops.convert_to_numpy(self.effective[index])
        matrix_shape = (-1, weight.shape[-1]) if separable else (-1, 1)
        totals = np.zeros(np.reshape(weight, matrix_shape).shape, np.float64)
        squares = np.zeros_like(totals)
        if not len(plan.rows):
            return totals.reshape(weight.shape), squares.reshape(weight.shape)
        changes = self.changes_function(index, separable, plan.groups_per_call)
        padding = -len(plan.rows) % plan.groups_per_call
        rows = np.concatenate([plan.rows, np.full((padding, plan.rows.shape[1]), -1, np.int32)])
        channels = np.arange(rows.shape[1])
        for start in range(0, plan.images, plan.block):
            x = ops.convert_to_tensor(x_all[start : start + plan.block])
            y = ops.convert_to_tensor(y_all[start : start + plan.block])
            inputs, base_outputs, base_losses = self.base(x, y)
            for first in range(0, len(rows), plan.groups_per_call):
                chunk = rows[first : first + plan.groups_per_call]
                summed, summed_squares = changes(inputs, base_outputs, base_losses, y, ops.convert_to_tensor(chunk))
                valid = chunk >= 0
                where = (chunk[valid], np.broadcast_to(channels, chunk.shape)[valid])
                np.add.at(totals, where, ops.convert_to_numpy(summed)[valid])
                np.add.at(squares, where, ops.convert_to_numpy(summed_squares)[valid])
                if bar is not None:
                    bar.add(1)
        return tuple(
            (sums / plan.images).reshape(weight.shape).astype(weight.dtype) for sums in (totals, squares)
        )


@register_criterion("emp")
class Empirical(Criterion):
    """emp: the measured loss change of removing each weight alone (higher = keep).

    The change ``dL_k`` is the mean task loss over the scoring images with weight k
    set to zero, minus the mean loss of the unchanged model, computed in batches
    (see the module docstring); equal, up to float round-off, to zeroing each weight
    in turn and re-evaluating the model. The loss is the model's compiled loss
    (`objective.TaskLoss`), with its own labels: integer, one-hot or regression
    targets.

    The default score is the signed change ``dL_k`` shrunk towards 0 by its noise:
    ``sign(dL_k) * max(|dL_k| - significance * se_k, 0)``, with ``se_k`` the standard
    error of the mean over the images it was measured on (from the per-image
    changes), then damped (`objective.damp`, power 2). A change within
    `significance` standard errors of 0 counts as 0, so the weight's size decides;
    a significant negative change (removing the weight lowers the loss, as on a
    model already damaged by pruning) sends the weight first. Signed, unshrunk and
    undamped, emp prunes the shipped LeNet-5 to 90% test error with its conf,
    one-shot: a change measured on a few images is mostly noise, and the signed
    score sends first the weights whose noise points down (docs/criteria.md has the
    measurements behind each default).

    Args:
        budget: weight-image evaluations per prunable variable: one with N non-zero
            weights is scored on its first ``min(all, max(1, budget // N))`` scoring
            images. The default, 2**22, scores LeNet-5's conv1 on 2,560 images
            (20 batches of 128), conv2 on 291 and fc1 on 14.
        absolute: score the size of the (shrunk) change, ``|dL_k|``, not its sign.
        per_sample: score ``sqrt(mean_i dL_ik^2)``, the root mean square of the
            per-image changes, instead (`absolute` and `significance` then do not apply).
        significance: standard errors by which each change is shrunk towards 0,
            >= 0 (0: the measured mean change as it is).
        damping: weight of the ``w^2`` prior, >= 0 (0: the measured change alone).
        verbose: show a progress bar.

    Raises:
        InputError: (from `score`) a layer not at the top level of a single-input,
            single-output Sequential or Functional model.

    Example:

    ```python
    keras_prune.prune(model, {"conv1": 0.5}, "emp", data=train_batches)
    ```
    """

    needs_data = True
    normalization = "none"

    def __init__(
        self,
        budget: int = 2**22,
        absolute: bool = False,
        per_sample: bool = False,
        significance: float = 2.0,
        damping: float = 10.0,
        verbose: bool = False,
    ):
        if int(budget) != budget or budget < 1:
            raise InputError(f"emp budget must be a positive integer, got {budget}")
        self.budget = int(budget)
        self.absolute = bool(absolute)
        self.per_sample = bool(per_sample)
        if not significance >= 0:
            raise InputError(f"emp significance must be >= 0, got {significance}")
        self.significance = float(significance)
        self.damping = check_damping(damping)
        self.verbose = verbose

    def score(self, layers, model=None, data=None) -> Scores:
        model = check_model(model, self.name)
        batches = fixed_batches(data, self.name)
        x_all = np.concatenate([ops.convert_to_numpy(x) for x, _ in batches], axis=0)
        y_all = np.concatenate([ops.convert_to_numpy(y) for _, y in batches], axis=0)
        loss = TaskLoss(model)
        work = []
        for layer in layers:
            removal = _LayerRemoval(model, layer, loss)
            feature_size = int(np.prod(layer.output.shape[1:]))
            for index, variable in enumerate(layer.pruned_variables):
                weight = layer.effective_weights()[index]
                separable = _channel_separable(layer.layer, variable)
                plan = _plan(weight, separable, int(x_all.shape[0]), self.budget, feature_size)
                work.append((layer, removal, index, separable, plan))
        bar = progress_bar(sum(item[4].steps for item in work), self.verbose, "call")
        scores: dict[PruneWrapper, list[np.ndarray]] = {layer: [] for layer in layers}
        measured: dict[PruneWrapper, list[np.ndarray]] = {layer: [] for layer in layers}
        for layer, removal, index, separable, plan in work:
            change, square = removal.measure(index, separable, plan, x_all, y_all, bar)
            if self.per_sample:
                measured[layer].append(np.sqrt(square))
                scores[layer].append(measured[layer][-1])
                continue
            measured[layer].append(change)
            if self.significance > 0 and plan.images > 1:
                n = plan.images
                error = np.sqrt(np.maximum(square - change**2, 0.0) / (n - 1))
                change = np.sign(change) * np.maximum(np.abs(change) - self.significance * error, 0.0)
            scores[layer].append(np.abs(change) if self.absolute else change)
        return {
            layer: damp(found, layer.effective_weights(), self.damping, 2, scale=measured[layer])
            for layer, found in scores.items()
        }
