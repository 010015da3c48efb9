"""Training and evaluation of classifiers: the base models and retraining after pruning."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import keras

from keras_prune.data import Dataset
from keras_prune.errors import InputError

__all__ = [
    "check_epochs",
    "check_input_shape",
    "compile_classifier",
    "evaluate",
    "Evaluation",
    "fit",
    "OPTIMIZERS",
    "train",
]


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


def _fit_verbosity() -> int:
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
    return fit(model, dataset, epochs, batch_size, seed or 0, augment=augment, validation=True, verbose=verbose)


def fit(
    model: keras.Model,
    dataset: Dataset,
    epochs: int,
    batch_size: int,
    seed: int,
    initial_epoch: int = 0,
    augment: bool = False,
    validation: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | None = None,
) -> keras.callbacks.History:
    """The one training loop: `model.fit` on `dataset.epochs`, with the model's compiled
    loss, metrics and optimizer, on whatever devices the model was built for.

    Under `tf.distribute.MultiWorkerMirroredStrategy`, which Keras 3's `fit` does not
    support (keras-team/keras#20585, still failing with Keras 3.15 and TensorFlow 2.21:
    its symbolic build cannot reduce the distributed batch), the same epochs run
    through Keras' own ``model.train_step`` (and ``test_step`` for validation) in
    ``strategy.run``, with the same callback hooks and logs as `fit`: the compiled loss
    (regularisation losses included) over the global batch, the compiled metrics, and
    gradients all-reduced across workers.

    Args:
        model: a compiled model, built under the strategy it is to train with.
        dataset: the data; training batches from `Dataset.epochs`.
        epochs: the epoch to stop at (as `fit`'s ``epochs``).
        batch_size: global images per step.
        seed: shuffling (and augmentation) seed; each epoch's batches depend on it
            and the epoch number only.
        initial_epoch: the epoch to start at (a resumed run).
        augment: shift training images by up to 2 pixels (see `Dataset.epochs`).
        validation: also measure the compiled loss and metrics on the validation
            split after each epoch (logs ``val_loss``, ``val_accuracy``, ...).
        callbacks: Keras callbacks.
        verbose: Keras verbosity; by default a progress bar on a terminal.

    Returns:
        The Keras history.

    Example:

    ```python
    compile_classifier(model)
    fit(model, load_dataset(), epochs=2, batch_size=128, seed=0, validation=True)
    ```
    """
    import tensorflow as tf

    steps = dataset.steps_per_epoch(batch_size)
    verbose = _fit_verbosity() if verbose is None else verbose
    validation_data = dataset.validation() if validation else None
    strategy = getattr(model, "distribute_strategy", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return _fit_multi_worker(
            model,
            lambda epoch: dataset.epochs(batch_size, seed, epoch, epoch + 1, augment=augment),
            steps,
            range(initial_epoch, epochs),
            validation_data,
            callbacks,
            verbose,
        )
    return model.fit(
        dataset.epochs(batch_size, seed, initial_epoch, epochs, augment=augment),
        validation_data=validation_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps,
        shuffle=False,  # the pipeline shuffles
        verbose=verbose,
        callbacks=list(callbacks),
    )


def _fit_multi_worker(
    model: keras.Model,
    epoch_batches: Callable[[int], Any],
    steps: int,
    epochs: range,
    validation_data: Any,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int,
) -> keras.callbacks.History:
    """`fit`'s epoch loop under MultiWorkerMirroredStrategy (see `fit`), each epoch's
    batches from ``epoch_batches(epoch)``."""
    import tensorflow as tf

    strategy = model.distribute_strategy

    def distributed(step):
        @tf.function
        def run(batch):
            logs = strategy.run(step, args=(batch,))
            return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

        return run

    train_step, test_step = distributed(model.train_step), distributed(model.test_step)

    def run_epoch(step, batches, on_batch_begin=None, on_batch_end=None) -> dict[str, float]:
        model.reset_metrics()  # the compiled metrics accumulate over one pass, as in `fit`
        logs: dict[str, float] = {}
        for index, batch in enumerate(strategy.experimental_distribute_dataset(batches)):
            if on_batch_begin is not None:
                on_batch_begin(index)
            logs = {name: float(value) for name, value in step(batch).items()}
            if on_batch_end is not None:
                on_batch_end(index, logs)
        return logs

    hooks = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs.stop,
        steps=steps,
    )
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in epochs:
        hooks.on_epoch_begin(epoch)
        logs = run_epoch(train_step, epoch_batches(epoch), hooks.on_train_batch_begin, hooks.on_train_batch_end)
        if validation_data is not None:
            logs.update({f"val_{name}": value for name, value in run_epoch(test_step, validation_data).items()})
        hooks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    hooks.on_train_end()
    return model.history

