"""Calibration statistics: each linear part's input Gram matrix ``X^T X``, layer by layer.

`input_gram` runs the calibration batches through the model as it is now (earlier
layers already pruned and updated) and accumulates, for one linear part (see
`keras_prune.methods.linear`), ``H = X^T X`` over all its input feature rows ``X``.
The inputs are caught by standing in for the part's ``call`` while the batches run:
the model is called eagerly, so any model whose layers Keras calls (Sequential,
Functional, nested, subclassed) works.
"""

from __future__ import annotations

import abc
from contextlib import contextmanager
from typing import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_prune import autodiff
from keras_prune.criteria.objective import Batch, fixed_batches, progress_bar
from keras_prune.errors import InputError
from keras_prune.methods.base import Method
from keras_prune.methods.linear import KernelView, kernel_view, linear_parts
from keras_prune.selection import Pattern
from keras_prune.wrapper import PruneWrapper


@contextmanager
def _catching_inputs(parts: Sequence[keras.layers.Layer], seen):
    """While active, calling ``parts[i]`` first calls ``seen(i, inputs)``."""

    def catching(index, original):
        def call(inputs, *args, **kwargs):
            seen(index, inputs)
            return original(inputs, *args, **kwargs)

        return call

    for index, part in enumerate(parts):
        part.call = catching(index, part.call)
    try:
        yield
    finally:
        for part in parts:
            del part.call  # the class's own call again


def input_gram(
    model: keras.Model, part: keras.layers.Layer, view: KernelView, batches: Sequence[Batch]
) -> tuple[np.ndarray, int]:
    """``X^T X`` of `part`'s input features over `batches`, and the number of rows.

    Args:
        model: the model, run with ``training=False``.
        part: a linear part (a layer computing with one kernel).
        view: the part's kernel view (its `features` turn an input into rows).
        batches: calibration batches ``(x, y)``.

    Returns:
        The float64 ``(inputs, inputs)`` Gram matrix and the number of feature rows.

    Example:

    ```python
    gram, rows = input_gram(model, layer.layer, kernel_view(layer.layer, layer.layer.kernel), batches)
    ```
    """
    (gram,), (rows,) = _input_grams(model, [part], [view], batches)
    return gram, rows


def _input_grams(model, parts, views, batches) -> tuple[list[np.ndarray], list[int]]:
    """`input_gram` of several parts from one pass of the batches."""
    grams = [np.zeros((view.inputs, view.inputs)) for view in views]
    rows = [0] * len(parts)

    def seen(index, inputs):
        features = tf.cast(views[index].features(inputs), tf.float32)
        grams[index] += tf.matmul(features, features, transpose_a=True).numpy()
        rows[index] += int(features.shape[0])

    with _catching_inputs(parts, seen), autodiff.forward_only():
        for x, _ in batches:
            model(x, training=False)
    return grams, rows


def dense_cross_gram(
    model: keras.Model,
    part: keras.layers.Layer,
    view: KernelView,
    batches: Sequence[Batch],
    reference: Sequence[tuple[keras.Variable, tf.Tensor]],
) -> np.ndarray:
    """``X^T X_ref``: `part`'s input features now against those of the reference model.

    Args:
        model: the model as pruned so far, run with ``training=False``.
        part: a linear part.
        view: its kernel view.
        batches: calibration batches ``(x, y)``.
        reference: ``(variable, value)`` pairs giving the reference model (the
            weights before pruning), as `keras.StatelessScope` takes them.

    Returns:
        The float64 ``(inputs, inputs)`` cross Gram matrix: rows index the current
        features, columns the reference ones, image by image (a part called more
        than once per pass pairs its calls in order).

    Example:

    ```python
    reference = [(v, tf.constant(v.value)) for v in model.weights]   # before pruning
    ...                                                               # prune earlier layers
    cross = dense_cross_gram(model, part, kernel_view(part, part.kernel), batches, reference)
    ```
    """
    cross = np.zeros((view.inputs, view.inputs))
    caught = []
    catching = _catching_inputs([part], lambda _, inputs: caught.append(tf.cast(view.features(inputs), tf.float32)))
    with catching, autodiff.forward_only():
        for x, _ in batches:
            with keras.StatelessScope(state_mapping=reference):
                model(x, training=False)
            calls = len(caught)
            model(x, training=False)
            for target, current in zip(caught[:calls], caught[calls:]):
                cross += tf.matmul(current, target, transpose_a=True).numpy()
            caught.clear()
    return cross


def outlier_fractions(
    model: keras.Model,
    fractions: Mapping[PruneWrapper, float],
    batches: Sequence[Batch],
    spread: float,
    threshold: float = 5.0,
) -> dict[PruneWrapper, float]:
    """OWL: per-layer fractions that spare the layers with more outlier weights.

    Outlier-weighted layerwise sparsity (Yin et al. 2024, "Outlier Weighed Layerwise
    Sparsity: A Missing Secret Sauce for Pruning LLMs to High Sparsity"). A layer's
    *outlier ratio* is the share of its kernels' Wanda scores ``|w_jk| * ||X_j||``
    (inputs from the model as it is now) above `threshold` times the layer's mean
    score. The ratios, rescaled linearly to ``[0, 2 * spread]``, are taken off the
    layers' fractions, and one shift for all layers restores the total: the layers
    together still prune ``sum_l N_l * fraction_l`` weights (up to rounding), each
    fraction kept in ``[0, 1]``.

    Args:
        model: the model, run with ``training=False``.
        fractions: wrapped layer -> fraction, as `Method.prune` takes them.
        batches: calibration batches ``(x, y)``.
        spread: ``lambda``, half the range of the fractions' changes (OWL's 0.08).
        threshold: ``M``, how many times the layer's mean score makes an outlier
            (OWL's 5).

    Returns:
        The new fractions, same keys. With fewer than two layers, or all ratios
        equal, the fractions unchanged.

    Example:

    ```python
    outlier_fractions(model, {attention: 0.5, ffn: 0.5}, batches, spread=0.08)
    # e.g. {attention: 0.47, ffn: 0.53}: ffn has fewer outliers, loses more
    ```
    """
    layers = list(fractions)
    parts = [(layer, part) for layer in layers for part in linear_parts(layer.layer)]
    views = [kernel_view(part, part.kernel) for _, part in parts]
    grams, _ = _input_grams(model, [part for _, part in parts], views, batches)
    scores: dict[PruneWrapper, list[np.ndarray]] = {layer: [] for layer in layers}
    for (layer, part), view, gram in zip(parts, views, grams):
        index = next(i for i, v in enumerate(layer.pruned_variables) if v is part.kernel)
        weights = view.matrix(layer.effective_weights()[index])
        scores[layer].append((np.abs(weights) * np.sqrt(np.maximum(np.diag(gram), 0.0))[:, None]).ravel())
    ratios = np.array([_outlier_ratio(np.concatenate(scores[layer]), threshold) for layer in layers])
    if len(layers) < 2 or np.ptp(ratios) == 0:
        return dict(fractions)
    sizes = np.array([sum(s.size for s in scores[layer]) for layer in layers], np.float64)
    base = np.array([fractions[layer] for layer in layers]) - (ratios - ratios.min()) / np.ptp(ratios) * 2 * spread
    goal = float(np.dot(sizes, [fractions[layer] for layer in layers]))
    low, high = -1.0 - 2 * spread, 1.0 + 2 * spread
    for _ in range(60):  # bisection for the shift that restores the total
        shift = (low + high) / 2
        if np.dot(sizes, np.clip(base + shift, 0.0, 1.0)) < goal:
            low = shift
        else:
            high = shift
    new = np.clip(base + high, 0.0, 1.0)
    return {layer: float(f) for layer, f in zip(layers, new)}


def _outlier_ratio(scores: np.ndarray, threshold: float) -> float:
    """The share of `scores` above `threshold` times their mean."""
    return float(np.mean(scores > threshold * scores.mean())) if scores.size else 0.0


class LayerwiseMethod(Method):
    """A method that prunes one linear part at a time from its input Gram matrix.

    For each wrapped layer in model order, for each of its linear parts (see
    `keras_prune.methods.linear.linear_parts`), it runs the calibration batches
    through the model as pruned so far, gathers the part's ``X^T X`` and calls
    `prune_matrix`, which returns the part's new kernel and mask as
    ``(inputs, outputs)`` matrices. Each part's kernel loses the layer's fraction;
    a layer's other prunable variables (a MultiHeadAttention's biases) are left as
    they are. With `owl` > 0 the layers' fractions are first redistributed by
    `outlier_fractions` (same total).

    Attributes:
        owl: OWL's spread ``lambda`` (0: every layer keeps its own fraction).
        owl_threshold: OWL's outlier threshold ``M``.
        dense_targets: refit each part to the outputs of the model as it was when
            `prune` was called (`refit`), before pruning it.
    """

    owl: float = 0.0
    owl_threshold: float = 5.0
    dense_targets: bool = False

    def _set_owl(self, owl: float, owl_threshold: float) -> None:
        """Validates and sets the OWL options (for subclasses' constructors)."""
        if not 0 <= owl <= 0.5:
            raise InputError(f"{self.name} owl (the spread of the layers' fractions) must be in [0, 0.5], got {owl}")
        if not owl_threshold > 0:
            raise InputError(f"{self.name} owl_threshold must be > 0, got {owl_threshold}")
        self.owl = float(owl)
        self.owl_threshold = float(owl_threshold)

    def prune(self, model, fractions, data, pattern=None) -> None:
        batches = fixed_batches(data, self.name, model)
        if self.owl > 0:
            fractions = outlier_fractions(model, fractions, batches, self.owl, self.owl_threshold)
        work = []
        for layer, fraction in fractions.items():
            for part in linear_parts(layer.layer):
                index = next(i for i, v in enumerate(layer.pruned_variables) if v is part.kernel)
                work.append((layer, fraction, part, index))
        reference = None
        if self.dense_targets:
            reference = [(variable, keras.ops.convert_to_tensor(keras.ops.convert_to_numpy(variable))) for variable in model.weights]
        bar = progress_bar(len(work), self.verbose, "kernel")
        for position, (layer, fraction, part, index) in enumerate(work):
            view = kernel_view(part, part.kernel)
            gram, rows = input_gram(model, part, view, batches)
            weights = view.matrix(layer.effective_weights()[index]).astype(np.float64)
            if reference is not None and position > 0:  # the first part's inputs are the reference's
                cross = dense_cross_gram(model, part, view, batches, reference)
                weights = self.refit(weights, gram, cross, rows)
            masks = layer.mask_arrays()
            new_weights, new_mask = self.prune_matrix(
                weights, view.matrix(masks[index]), gram, rows, fraction, pattern
            )
            part.kernel.assign(view.kernel(new_weights).astype(part.kernel.dtype))
            masks[index] = view.kernel(new_mask)
            layer.set_mask(masks)
            if bar is not None:
                bar.add(1)

    def refit(self, weights: np.ndarray, gram: np.ndarray, cross: np.ndarray, rows: int) -> np.ndarray:
        """The kernel that maps the current inputs closest to the reference outputs.

        ``argmin_W ||X W - X_ref W_ref||^2 + lambda ||W - W_ref||^2``: least squares,
        held towards the kernel as it is by ``lambda``, 1% of the mean of ``diag(X^T X)``
        per row. Where nothing before the part was pruned (``X = X_ref``) the kernel
        is returned unchanged.

        Args:
            weights: the kernel ``W_ref`` as an ``(inputs, outputs)`` matrix.
            gram: ``X^T X``.
            cross: ``X^T X_ref`` (`dense_cross_gram`).
            rows: the number of feature rows.

        Returns:
            The refitted ``(inputs, outputs)`` matrix.
        """
        hessian = gram / max(rows, 1)
        hessian = hessian + (0.01 * np.mean(np.diag(hessian)) + 1e-12) * np.eye(len(hessian))
        return weights + np.linalg.solve(hessian, (cross - gram) / max(rows, 1) @ weights)

    @abc.abstractmethod
    def prune_matrix(
        self,
        weights: np.ndarray,
        mask: np.ndarray,
        gram: np.ndarray,
        rows: int,
        fraction: float,
        pattern: Pattern | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One kernel's new ``(inputs, outputs)`` weights and mask.

        Args:
            weights: the kernel as a float64 ``(inputs, outputs)`` matrix.
            mask: its current mask, same shape (0 = pruned, stays pruned).
            gram: ``X^T X`` of its input features, ``(inputs, inputs)``.
            rows: the number of feature rows ``X`` has.
            fraction: cumulative fraction of the kernel's weights to prune.
            pattern: None or a `Pattern`.

        Returns:
            The new weights and the new float32 mask (0 where pruned).
        """
