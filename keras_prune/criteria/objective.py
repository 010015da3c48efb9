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
            used; otherwise ``SparseCategoricalCrossentropy(from_logits=True)``
            (keras-prune's models output logits).

    Raises:
        InputError: the model is compiled with several losses (a list or dict).

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
        if isinstance(loss, (list, tuple, dict)):
            raise InputError(
                f"model '{model.name}' is compiled with several losses; the data-driven "
                "criteria need a single-output model with one loss"
            )
        if isinstance(loss, str):
            loss = keras.losses.get(loss)
        if not callable(loss):
            raise InputError(f"model '{model.name}' has a loss keras-prune cannot call: {loss!r}")
        self.loss = loss

    def per_sample(self, y_true, y_pred) -> tf.Tensor:
        """The loss of each image (unreduced), shape ``(batch,)``."""
        if y_true.dtype.is_floating:
            y_true = tf.cast(y_true, y_pred.dtype)
        if isinstance(self.loss, keras.losses.Loss):
            losses = self.loss.call(y_true, y_pred)
        else:
            losses = self.loss(y_true, y_pred)
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
        batches.append((tf.convert_to_tensor(x), tf.convert_to_tensor(y)))
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
    sizes = np.array([int(tf.shape(x)[0]) for x, _ in batches], dtype=np.float64)
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


def damp(
    scores: Sequence[np.ndarray], weights: Sequence[np.ndarray], damping: float, power: int
) -> list[np.ndarray]:
    """Scores plus a prior proportional to ``|w|^power``: a damped estimate.

    ``score_k + damping * mean(|score|) * |w_k|^power / mean(|w|^power)``, the means
    taken over each variable's kept (non-zero) weights. For a second-order score
    ``1/2 h_k w_k^2`` (power 2) this is ``1/2 (h_k + damping * h_avg) w_k^2``: the
    Levenberg-Marquardt damping of the curvature, with ``h_avg`` the variable's
    weighted average curvature. Local estimates (derivatives at the trained
    weights, or the loss change of one weight alone) say little about removing
    many weights at once -- a tanh that saturates on a weight's input gives it a
    near-zero curvature, yet removing half of its neighbours un-saturates it -- and
    the prior carries what the weight's size says. ``damping=0`` leaves the scores
    unchanged; a large damping ranks as magnitude does. docs/criteria.md gives the
    measurements behind each criterion's default.

    Args:
        scores: one score array per variable.
        weights: the effective weights, same shapes.
        damping: the prior's weight, >= 0.
        power: 1 for first-order scores (``|g w|``), 2 for second-order ones.

    Returns:
        The damped scores (pruned weights keep score 0 plus nothing: their prior is 0).

    Example:

    ```python
    damp([np.array([0.0, 1.0])], [np.array([2.0, 1.0])], 1.0, 2)  # [array([0.8, 1.2])]
    ```
    """
    out = []
    for score, weight in zip(scores, weights):
        kept = weight != 0
        prior = np.abs(weight) ** power
        scale = np.abs(score[kept]).mean() / prior[kept].mean() if kept.any() and prior[kept].mean() > 0 else 0.0
        out.append(score + damping * scale * prior)
    return out


def check_damping(damping: float) -> float:
    """Returns `damping` as a float if it is a number >= 0, else raises InputError."""
    try:
        value = float(damping)
    except (TypeError, ValueError):
        raise InputError(f"damping must be a number >= 0, got {damping!r}") from None
    if not value >= 0:
        raise InputError(f"damping must be a number >= 0, got {damping}")
    return value
