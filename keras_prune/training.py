"""Training and evaluation of classifiers: the base models and retraining after pruning."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import keras

from keras_prune.data import Dataset
from keras_prune.errors import InputError


@dataclass(frozen=True)
class Evaluation:
    """Loss and error of a model on one split.

    Attributes:
        loss: mean cross-entropy.
        error: misclassified share, in percent (the original printed it so).
    """

    loss: float
    error: float

    def __str__(self) -> str:
        return f"loss {self.loss:.4f}, error {self.error:.2f}%"


def fit_verbosity() -> int:
    """Keras `fit` verbosity: a live progress bar on a terminal, a line per epoch otherwise."""
    return 1 if sys.stdout.isatty() else 2


OPTIMIZERS = ("sgd", "adamw")
"""Optimizer names: SGD with momentum, or AdamW with weight decay 0.05 (as DeiT trains ViTs)."""


def compile_classifier(
    model: keras.Model,
    lr: float = 0.01,
    momentum: float = 0.9,
    decay_steps: int | None = None,
    optimizer: str = "sgd",
) -> keras.Model:
    """Compiles `model` for classification from logits with SGD and momentum (or AdamW).

    Args:
        model: returns logits.
        lr: learning rate (the initial one when `decay_steps` is given).
        momentum: SGD momentum (unused by AdamW).
        decay_steps: if given, the learning rate follows a cosine decay to 0 over
            that many optimizer steps.
        optimizer: one of `OPTIMIZERS`; Transformers train far better with "adamw".

    Returns:
        The same model, compiled.
    """
    if lr <= 0:
        raise InputError(f"learning rate must be positive, got {lr}")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer '{optimizer}'; choose one of: {', '.join(OPTIMIZERS)}")
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps) if decay_steps else lr
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=momentum)
        if optimizer == "sgd"
        else keras.optimizers.AdamW(schedule, weight_decay=0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def check_input_shape(model: keras.Model, dataset: Dataset) -> None:
    """Raises InputError if the dataset's images do not fit the model's input."""
    expected = tuple(model.input_shape[1:])
    got = dataset.input_shape
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise InputError(
            f"data images have shape {got} but model '{model.name}' takes {expected}"
        )


def evaluate(model: keras.Model, batches) -> Evaluation:
    """Cross-entropy and error (%) of a logits model over `batches` of (x, y)."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    total_loss, wrong, count = 0.0, 0, 0
    for x, y in batches:
        logits = model(x, training=False)
        total_loss += float(loss_fn(y, logits))
        predicted = keras.ops.argmax(logits, axis=-1)
        wrong += int(keras.ops.sum(keras.ops.cast(predicted != keras.ops.cast(y, predicted.dtype), "int32")))
        count += int(y.shape[0])
    if count == 0:
        raise InputError("cannot evaluate on an empty split")
    return Evaluation(loss=total_loss / count, error=100.0 * wrong / count)


def check_epochs(epochs: int) -> int:
    """Returns `epochs` if it is a non-negative integer."""
    if int(epochs) != epochs or epochs < 0:
        raise InputError(f"epochs must be a non-negative integer, got {epochs}")
    return int(epochs)


def train(
    model: keras.Model,
    dataset: Dataset,
    epochs: int,
    lr: float = 0.01,
    momentum: float = 0.9,
    batch_size: int = 128,
    seed: int | None = None,
    cosine: bool = False,
    augment: bool = False,
    verbose: int | None = None,
    optimizer: str = "sgd",
) -> keras.callbacks.History:
    """Trains `model` on the training split, validating on the validation split.

    Args:
        model: a logits model (wrapped or plain); it is (re)compiled here.
        dataset: the data.
        epochs: passes over the training split.
        lr, momentum: SGD settings.
        batch_size: images per step.
        seed: shuffling seed (each epoch's order depends on it and the epoch only).
        cosine: decay the learning rate to 0 over the run (cosine).
        augment: shift training images by up to 2 pixels (see `Dataset.epochs`).
        verbose: Keras verbosity; by default a progress bar on a terminal.
        optimizer: one of `OPTIMIZERS`.

    Returns:
        The Keras history.
    """
    epochs = check_epochs(epochs)
    check_input_shape(model, dataset)
    steps = dataset.steps_per_epoch(batch_size)
    compile_classifier(
        model, lr, momentum, decay_steps=steps * epochs if cosine and epochs else None, optimizer=optimizer
    )
    return model.fit(
        dataset.epochs(batch_size, seed or 0, 0, epochs, augment=augment),
        validation_data=dataset.validation(),
        epochs=epochs,
        steps_per_epoch=steps,
        shuffle=False,  # the pipeline shuffles
        verbose=fit_verbosity() if verbose is None else verbose,
    )
