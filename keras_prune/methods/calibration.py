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
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_prune.criteria.objective import Batch, fixed_batches, progress_bar
from keras_prune.methods.base import Method
from keras_prune.methods.linear import KernelView, kernel_view, linear_parts
from keras_prune.selection import Pattern


@contextmanager
def _catching_inputs(part: keras.layers.Layer, seen):
    original = part.call

    def call(inputs, *args, **kwargs):
        seen(inputs)
        return original(inputs, *args, **kwargs)

    part.call = call
    try:
        yield
    finally:
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
    gram = np.zeros((view.inputs, view.inputs))
    rows = 0

    def seen(inputs):
        nonlocal gram, rows
        features = tf.cast(view.features(inputs), tf.float32)
        gram += tf.matmul(features, features, transpose_a=True).numpy()
        rows += int(features.shape[0])

    with _catching_inputs(part, seen):
        for x, _ in batches:
            model(x, training=False)
    return gram, rows


class LayerwiseMethod(Method):
    """A method that prunes one linear part at a time from its input Gram matrix.

    For each wrapped layer in model order, for each of its linear parts (see
    `keras_prune.methods.linear.linear_parts`), it runs the calibration batches
    through the model as pruned so far, gathers the part's ``X^T X`` and calls
    `prune_matrix`, which returns the part's new kernel and mask as
    ``(inputs, outputs)`` matrices. Each part's kernel loses the layer's fraction;
    a layer's other prunable variables (a MultiHeadAttention's biases) are left as
    they are.
    """

    def prune(self, model, fractions, data, pattern=None) -> None:
        batches = fixed_batches(data, self.name, model)
        work = []
        for layer, fraction in fractions.items():
            for part in linear_parts(layer.layer):
                index = next(i for i, v in enumerate(layer.pruned_variables) if v is part.kernel)
                work.append((layer, fraction, part, index))
        bar = progress_bar(len(work), self.verbose, "kernel")
        for layer, fraction, part, index in work:
            view = kernel_view(part, part.kernel)
            gram, rows = input_gram(model, part, view, batches)
            weights = view.matrix(layer.effective_weights()[index]).astype(np.float64)
            masks = layer.mask_arrays()
            new_weights, new_mask = self.prune_matrix(
                weights, view.matrix(masks[index]), gram, rows, fraction, pattern
            )
            part.kernel.assign(view.kernel(new_weights).astype(part.kernel.dtype))
            masks[index] = view.kernel(new_mask)
            layer.set_mask(masks)
            if bar is not None:
                bar.add(1)

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
