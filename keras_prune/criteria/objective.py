"""What the data-driven criteria measure: the task loss on fixed training batches.

Shared by taylor1/taylor2/taylor12, the gate criteria (l1, l2) and emp:

- `TaskLoss`: the model's compiled loss (``model.loss``) or, for an uncompiled model,
  ``SparseCategoricalCrossentropy(from_logits=True)``, evaluated per image. Every
  criterion runs the model with ``training=False`` (dropout off, batch normalisation
  on its moving statistics), so scoring never updates a variable of the model.
- `fixed_batches`: the scoring batches, read once and bounded (`SCORE_BATCHES`), from
  any data form users have (tf.data batched or not, infinite or not, (x, y) arrays,
  PyDataset, generators); anything else is an `InputError`. A shuffled `tf.data`
  pipeline yields different images on every pass; reading it once makes every pass
  of a criterion (probes, gate epochs, emp blocks) see the same images.
- `progress_bar`: a `keras.utils.Progbar` when a criterion is verbose (plain in logs).
"""

from __future__ import annotations

import itertools
import sys
from typing import Any, Iterable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

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
            return sum(
                self._one(loss, self._pick(y_true, i), self._pick(y_pred, i))
                for i, loss in enumerate(self.loss)
            )
        return self._one(self.loss, y_true, y_pred)

    @staticmethod
    def _one(loss, y_true, y_pred) -> tf.Tensor:
        if "float" in keras.backend.standardize_dtype(y_true.dtype):
            y_true = ops.cast(y_true, y_pred.dtype)
        if isinstance(loss, keras.losses.Loss):
            losses = loss.call(y_true, y_pred)
        else:
            losses = loss(y_true, y_pred)
        rank = len(losses.shape)
        return ops.mean(losses, axis=list(range(1, rank))) if rank > 1 else losses

    def mean(self, y_true, y_pred) -> tf.Tensor:
        """The mean loss over the batch."""
        return ops.mean(self.per_sample(y_true, y_pred))

    def samples_labels(self) -> bool:
        """Whether labels can be sampled from the model's predictive distribution
        (`categorical_logits`): a single sparse categorical cross-entropy loss."""
        return self.sampling_problem() is None

    def sampling_problem(self) -> str | None:
        """Why labels cannot be sampled from the model's outputs (the one-line
        message of `categorical_logits`' InputError), or None if they can."""
        loss = self.loss
        if isinstance(loss, list):
            return (
                "the Gauss-Newton estimate samples labels from one softmax output; the model "
                "has one loss per output. Use hessian='hutchinson'."
            )
        if not (
            isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
            or loss is keras.losses.sparse_categorical_crossentropy
        ):
            return (
                "the Gauss-Newton estimate samples labels from the model's softmax and "
                "needs the loss SparseCategoricalCrossentropy; the model's loss is "
                f"{loss!r}. Use hessian='hutchinson'."
            )
        return None

    def categorical_logits(self, y_pred) -> tf.Tensor:
        """Logits of the model's predictive distribution, for sampling labels.

        Raises:
            InputError: the loss is not sparse categorical cross-entropy.
        """
        problem = self.sampling_problem()
        if problem is not None:
            raise InputError(problem)
        loss = self.loss
        from_logits = isinstance(loss, keras.losses.SparseCategoricalCrossentropy) and bool(
            loss.get_config().get("from_logits", False)
        )
        if from_logits:
            return y_pred
        return ops.log(ops.maximum(y_pred, ops.cast(1e-12, y_pred.dtype)))


SCORE_BATCHES = 20
"""How many batches a data-driven criterion scores on by default (API and CLI alike)."""

SCORE_BATCH_SIZE = 128
"""Images per scoring batch when keras-prune batches the data itself (the CLI's default)."""


class ScoringBatches(list):
    """Scoring batches already read by `fixed_batches`: a list of ``(x, y)`` tensors.

    `fixed_batches` returns such a list unchanged, so data read once (by `prune` or
    `IterativePruning`) is never cut or re-read by the criterion that receives it.
    """


def fixed_batches(
    data: Any,
    criterion: str,
    model: keras.Model | None = None,
    batches: int = SCORE_BATCHES,
    batch_size: int = SCORE_BATCH_SIZE,
) -> ScoringBatches:
    """Reads at most `batches` scoring batches once, as tensors: the one place where
    the data users give becomes what criteria score on.

    Accepted `data`:

    - a `tf.data.Dataset` of ``(x, y)`` or ``(x, y, sample_weight)`` elements,
      batched or not (unbatched elements, one rank below the model's input, are
      batched by `batch_size`); infinite ones (``dataset.repeat()``) too;
    - an ``(x, y)`` pair of arrays (numpy or tensors), cut into `batch_size` batches;
    - a `keras.utils.PyDataset`;
    - a generator, iterator or list yielding ``(x, y)`` batches, or single
      ``(x, y)`` samples (batched by `batch_size`);
    - a `ScoringBatches` list, returned as it is.

    Only the first `batches` batches are read, so an infinite source never hangs.
    Whether the data is batched is judged against the model's input rank; without
    `model` the data is taken as batched.

    Args:
        data: the training data (never the test split).
        criterion: the criterion's name, for the error messages.
        model: the model the batches are for, to tell samples from batches.
        batches: how many batches to keep at most.
        batch_size: images per batch when batching arrays or single samples.

    Returns:
        At most `batches` ``(x, y)`` tensor pairs.

    Raises:
        InputError: no data, data of any other form, or no batch in it.

    Example:

    ```python
    batches = fixed_batches((x_train, y_train), "taylor1", model)  # 20 batches of 128
    batches = fixed_batches(dataset.repeat(), "l1", model)        # 20 batches, then stops
    ```
    """
    what = f"criterion '{criterion}'"
    if data is None:
        raise InputError(f"{what} needs training data; none was given")
    if isinstance(data, ScoringBatches):
        return data
    for name, value in (("score batches", batches), ("batch size", batch_size)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise InputError(f"{name} must be a positive whole number, got {value}")
    rank = _input_rank(model)
    if isinstance(data, tf.data.Dataset):
        elements = _dataset_elements(data, rank, batch_size, what)
    elif isinstance(data, keras.utils.PyDataset):
        count = data.num_batches if data.num_batches is not None else batches
        elements = (data[i] for i in range(min(count, batches)))
    elif _is_array_pair(data):
        elements = _array_batches(data, batch_size, what)
    elif isinstance(data, (str, bytes, dict)) or not isinstance(data, Iterable):
        raise InputError(
            f"{what} cannot score on {type(data).__name__} data: give a tf.data.Dataset, an "
            "(x, y) pair of arrays, a keras.utils.PyDataset, or an iterable of (x, y) batches"
        )
    else:
        elements = _rebatched(iter(data), rank, batch_size)
    out = ScoringBatches()
    for number, element in enumerate(itertools.islice(elements, batches), start=1):
        out.append(_pair(element, number, what))
    if not out:
        raise InputError(f"{what} got no training batches to score on")
    return out


def _input_rank(model: keras.Model | None) -> int | None:
    """The rank of the model's (first) input, batch axis included; None if unknown."""
    try:
        return len(tf.nest.flatten(model.inputs)[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _is_array_pair(data) -> bool:
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and all(hasattr(part, "shape") and len(part.shape) >= 1 for part in data)
    )


def _array_batches(data, batch_size: int, what: str) -> Iterator:
    x, y = data
    if x.shape[0] != y.shape[0]:
        raise InputError(f"{what}: x has {x.shape[0]} samples but y has {y.shape[0]}; they must match")
    return ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, int(x.shape[0]), batch_size))


def _dataset_elements(data: tf.data.Dataset, rank: int | None, batch_size: int, what: str):
    spec = data.element_spec
    if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
        raise InputError(f"{what} needs a dataset of (x, y) elements; its elements are {spec}")
    x_rank = tf.nest.flatten(spec[0])[0].shape.rank
    if rank is not None and x_rank == rank - 1:
        data = data.batch(batch_size)
    return iter(data)


def _rebatched(elements: Iterator, rank: int | None, batch_size: int) -> Iterator:
    """Yields the elements as they are, or, if they are single samples (one rank below
    the model's input), stacked into batches of `batch_size`."""
    first = next(elements, None)
    if first is None:
        return
    x_rank = _rank_of(first)
    if rank is None or x_rank != rank - 1:
        yield first
        yield from elements
        return
    samples = [first]
    for sample in elements:
        samples.append(sample)
        if len(samples) == batch_size:
            yield _stack(samples)
            samples = []
    if samples:
        yield _stack(samples)


def _rank_of(element) -> int | None:
    """The rank of an ``(x, y)`` element's x (its first array); None if not such a pair."""
    if not isinstance(element, (tuple, list)) or not element:
        return None
    leaves = tf.nest.flatten(element[0])
    return np.ndim(leaves[0]) if leaves else None


def _stack(samples: list) -> tuple:
    """Single ``(x, y)`` samples stacked into one batch."""
    shapes = [tuple(np.shape(leaf) for leaf in tf.nest.flatten(tuple(s)[:2])) for s in samples]
    for shape in shapes[1:]:
        if shape != shapes[0]:
            raise InputError(
                f"the data's (x, y) samples cannot be stacked into a batch: one has shapes "
                f"{shapes[0]}, another {shape}"
            )
    return tuple(tf.nest.map_structure(lambda *parts: tf.stack(parts), *[tuple(s)[:2] for s in samples]))


def _pair(element, number: int, what: str) -> Batch:
    """An element as an ``(x, y)`` pair of tensors (a sample weight is dropped)."""
    if not isinstance(element, (tuple, list)) or len(element) not in (2, 3):
        raise InputError(
            f"{what}: batch {number} of the data is a {type(element).__name__}, not an "
            "(x, y) or (x, y, sample_weight) tuple"
        )
    try:
        x, y = (tf.nest.map_structure(tf.convert_to_tensor, part) for part in element[:2])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: batch {number} of the data is not numbers: {exc}".splitlines()[0]) from None
    for leaf in tf.nest.flatten((x, y)):
        if not (leaf.dtype.is_floating or leaf.dtype.is_integer or leaf.dtype.is_bool) or leaf.shape.rank == 0:
            raise InputError(
                f"{what}: batch {number} of the data is not numbers with a batch axis "
                f"(got {leaf.dtype.name} of shape {leaf.shape})"
            )
    if keras.backend.backend() != "tensorflow":  # other backends take numpy, not tf.Tensors
        x, y = tf.nest.map_structure(lambda t: t.numpy(), (x, y))
    return x, y


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
    """A progress bar of `target` steps when `verbose`, else None.

    On a terminal it redraws itself; elsewhere (a log file, a pipe) it writes one
    plain line when done, with no carriage returns or ANSI colour codes.
    """
    if not verbose:
        return None
    return keras.utils.Progbar(target, verbose=1 if sys.stdout.isatty() else 2, unit_name=unit)


def damp(
    scores: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    damping: float,
    power: int,
    scale: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Scores plus a prior proportional to ``|w|^power``: a damped estimate, in the prior's units.

    ``score_k / u + damping * |w_k|^power`` with ``u = mean(|score|) / mean(|w|^power)``,
    the means taken over each variable's kept (non-zero) weights. Within a variable
    this ranks as ``score_k + damping * u * |w_k|^power``; for a second-order score
    ``1/2 h_k w_k^2`` (power 2) that is ``1/2 (h_k + damping * h_avg) w_k^2``: the
    Levenberg-Marquardt damping of the curvature, with ``h_avg`` the variable's
    weighted average curvature. Local estimates (derivatives at the trained
    weights, or the loss change of one weight alone) say little about removing
    many weights at once -- a tanh that saturates on a weight's input gives it a
    near-zero curvature, yet removing half of its neighbours un-saturates it -- and
    the prior carries what the weight's size says. Dividing by ``u`` puts every
    variable's scores in the prior's units, so under global selection a layer's own
    score scale does not decide how much of it goes, and a large damping ranks as
    global magnitude does. ``damping=0`` leaves the scores unchanged (the plain
    formula, not rescaled either: under global selection it compares the raw scores). docs/criteria.md gives the measurements behind each criterion's default.

    Args:
        scores: one score array per variable.
        weights: the effective weights, same shapes.
        damping: the prior's weight, >= 0.
        power: 1 for first-order scores (``|g w|``), 2 for second-order ones.
        scale: arrays whose mean absolute value replaces ``mean(|score|)`` (emp
            passes its unshrunk changes, since its shrunk ones may all be 0).

    Returns:
        The damped scores (pruned weights keep score 0 plus nothing: their prior is 0).

    Example:

    ```python
    damp([np.array([0.0, 1.0])], [np.array([2.0, 1.0])], 1.0, 2)  # [array([4., 6.])]
    ```
    """
    if damping == 0:
        return list(scores)
    out = []
    for score, weight, sizes in zip(scores, weights, scores if scale is None else scale):
        kept = weight != 0
        prior = np.abs(weight) ** power
        unit = np.abs(sizes[kept]).mean() / prior[kept].mean() if kept.any() and prior[kept].mean() > 0 else 0.0
        out.append((score / unit if unit > 0 else np.zeros_like(score)) + damping * prior)
    return out


def check_damping(damping: float) -> float:
    """Returns `damping` as a float if it is a number >= 0, else raises InputError."""
    try:
        value = float(damping)
    except (TypeError, ValueError):
        raise InputError(f"damping must be a number >= 0, got {damping!r}") from None
    if not 0 <= value < float("inf"):
        raise InputError(f"damping must be a finite number >= 0, got {damping}")
    return value
