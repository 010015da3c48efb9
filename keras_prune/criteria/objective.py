"""What the data-driven criteria measure: the task loss on fixed training batches.

Shared by taylor1/taylor2/taylor12, the gate criteria (l1, l2) and emp:

- `TaskLoss`: the model's compiled loss (``model.loss``) or, for an uncompiled model,
  ``SparseCategoricalCrossentropy(from_logits=True)``, evaluated per image. Every
  criterion runs the model with ``training=False`` (dropout off, batch normalisation
  on its moving statistics), so scoring never updates a variable of the model.
- `fixed_batches`: the scoring batches, read once. A shuffled `tf.data` pipeline
  yields different images on every pass; reading it once makes every pass of a
  criterion (probes, gate epochs, emp blocks) see the same images.
- `progress_bar`: a `keras.utils.Progbar` when a criterion is verbose.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_prune.errors import InputError
from keras_prune.wrapper import PruneWrapper

Batch = tuple[tf.Tensor, tf.Tensor]


class TaskLoss:
    """The loss a criterion measures: the model's compiled loss, per image.

    Args:
        model: the model being scored. If it is compiled with a single loss
            (a `keras.losses.Loss`, a loss function or a loss name), that loss is
            used; one loss per output (a list, or a dict by output name) scores the sum
            of the outputs' losses; otherwise ``SparseCategoricalCrossentropy(from_logits=True)``
            (keras-prune's models output logits).

    Raises:
        InputError: a loss keras-prune cannot call.

    Example:

    ```python
    loss = TaskLoss(model)
    per_image = loss.per_sample(y, model(x))   # shape (batch,)
    ```
    """

    def __init__(self, model: keras.Model):
        loss = getattr(model, "loss", None)
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.output_names: list[str] | None = None
        if isinstance(loss, dict):  # one loss per named output; outputs without one are not scored
            self.output_names = [n for n in model.output_names if loss.get(n) is not None]
            loss = [loss[n] for n in self.output_names]
        if isinstance(loss, (list, tuple)):
            self.loss = [self._callable(model, one) for one in loss]
        else:
            self.loss = self._callable(model, loss)

    @staticmethod
    def _callable(model: keras.Model, loss):
        if isinstance(loss, str):
            loss = keras.losses.get(loss)
        if not callable(loss):
            raise InputError(f"model '{model.name}' has a loss keras-prune cannot call: {loss!r}")
        return loss

    def _pick(self, values, index: int):
        if isinstance(values, dict):
            return values[self.output_names[index]] if self.output_names else list(values.values())[index]
        return values[index]

    def per_sample(self, y_true, y_pred) -> tf.Tensor:
        """The loss of each image (unreduced), shape ``(batch,)``; for a model compiled
        with one loss per output, the sum of the outputs' losses."""
        if isinstance(self.loss, list):
            return tf.add_n(
                [
                    self._one(loss, self._pick(y_true, i), self._pick(y_pred, i))
                    for i, loss in enumerate(self.loss)
                ]
            )
        return self._one(self.loss, y_true, y_pred)

    @staticmethod
    def _one(loss, y_true, y_pred) -> tf.Tensor:
        if y_true.dtype.is_floating:
            y_true = tf.cast(y_true, y_pred.dtype)
        if isinstance(loss, keras.losses.Loss):
            losses = loss.call(y_true, y_pred)
        else:
            losses = loss(y_true, y_pred)
        rank = len(losses.shape)
        return tf.reduce_mean(losses, axis=list(range(1, rank))) if rank > 1 else losses

    def mean(self, y_true, y_pred) -> tf.Tensor:
        """The mean loss over the batch."""
        return tf.reduce_mean(self.per_sample(y_true, y_pred))

    def categorical_logits(self, y_pred) -> tf.Tensor:
        """Logits of the model's predictive distribution, for sampling labels.

        Raises:
            InputError: the loss is not sparse categorical cross-entropy.
        """
        loss = self.loss
        if isinstance(loss, list):
            raise InputError(
                "the Gauss-Newton estimate samples labels from one softmax output; the model "
                "has one loss per output. Use hessian='hutchinson'."
            )
        if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
            from_logits = bool(loss.get_config().get("from_logits", False))
        elif loss is keras.losses.sparse_categorical_crossentropy:
            from_logits = False
        else:
            raise InputError(
                "the Gauss-Newton estimate samples labels from the model's softmax and "
                "needs the loss SparseCategoricalCrossentropy; the model's loss is "
                f"{loss!r}. Use hessian='hutchinson'."
            )
        if from_logits:
            return y_pred
        return tf.math.log(tf.maximum(y_pred, tf.cast(1e-12, y_pred.dtype)))


def fixed_batches(data: Iterable | None, criterion: str) -> list[Batch]:
    """Reads the scoring batches once, as tensors.

    Args:
        data: training batches ``(x, y)`` (a `tf.data.Dataset` or any iterable).
        criterion: the criterion's name, for the error message.

    Returns:
        The batches as a list of ``(x, y)`` tensors.

    Raises:
        InputError: no data, or no batch in it.

    Example:

    ```python
    batches = fixed_batches(dataset.train(128, seed=0).take(20), "taylor1")
    ```
    """
    if data is None:
        raise InputError(f"criterion '{criterion}' needs training batches; none were given")
    batches = []
    for batch in data:
        x, y = batch[0], batch[1]
        batches.append(tuple(tf.nest.map_structure(tf.convert_to_tensor, part) for part in (x, y)))
    if not batches:
        raise InputError(f"criterion '{criterion}' got no training batches to score on")
    return batches


def check_model(model: keras.Model | None, criterion: str) -> keras.Model:
    """Returns `model`, or raises InputError if a data-driven criterion got none."""
    if model is None:
        raise InputError(f"criterion '{criterion}' needs the model to compute the loss")
    return model


def batch_weights(batches: Sequence[Batch]) -> list[float]:
    """Each batch's share of the scoring images (batches may differ in size)."""
    sizes = np.array([int(tf.shape(tf.nest.flatten(x)[0])[0]) for x, _ in batches], dtype=np.float64)
    return list(sizes / sizes.sum())


def scored_variables(layers: Sequence[PruneWrapper]) -> list[keras.Variable]:
    """The prunable variables of `layers`, flattened in layer order."""
    return [v for layer in layers for v in layer.pruned_variables]


def by_layer(layers: Sequence[PruneWrapper], flat: Sequence[np.ndarray]) -> dict:
    """Splits a flat list aligned with `scored_variables(layers)` back into layers."""
    out, start = {}, 0
    for layer in layers:
        count = len(layer.pruned_variables)
        out[layer] = list(flat[start : start + count])
        start += count
    return out


def progress_bar(target: int, verbose: bool, unit: str) -> keras.utils.Progbar | None:
    """A progress bar of `target` steps when `verbose`, else None."""
    return keras.utils.Progbar(target, unit_name=unit) if verbose else None
