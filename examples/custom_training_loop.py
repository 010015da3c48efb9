"""Iterative prune-retrain in a custom training loop, without `model.fit`.

`keras_prune.callbacks.IterativePruning` is a Keras callback, and a custom loop drives
it by calling its hooks where `fit` would: `set_model` and `on_train_begin` once, then
for every epoch `on_epoch_begin`, `on_train_batch_begin` before each batch (only the
cubic schedule needs it) and `on_epoch_end`, and `on_train_end` at the end. Pass your
optimizer, so that the accuracy guard restores its slots when it reverts a step.

Run it from the repository root (about a minute per epoch on a 2-core CPU):

    python examples/custom_training_loop.py

It prunes the shipped LeNet-5 with the shipped conf in 5 steps, one epoch each.
"""

from __future__ import annotations

from typing import Mapping

import keras
import tensorflow as tf

import keras_prune as kp
from keras_prune.callbacks import IterativePruning
from keras_prune.data import Dataset
from keras_prune.results import StepResult
from keras_prune.schedules import Linear


def prune_in_custom_loop(
    model: keras.Model,
    data: Dataset,
    fractions: Mapping[int | str, float],
    steps: int = 5,
    epochs_per_step: int = 1,
    lr: float = 0.01,
    acc_tradeoff: float | None = None,
) -> tuple[keras.Model, list[StepResult]]:
    """Prunes `model` to `fractions` in `steps` linear steps, retraining in a plain loop.

    Args:
        model: a trained classifier returning logits.
        data: the dataset (training split to retrain, validation split to measure).
        fractions: selector -> final fraction pruned, processed in this order.
        steps: linear schedule steps.
        epochs_per_step: retraining epochs after each layer's step.
        lr: SGD learning rate.
        acc_tradeoff: accuracy guard in percentage points; None: off.

    Returns:
        The pruned (wrapped) model and the step results.
    """
    model = kp.prunable(model, list(fractions))
    optimizer = keras.optimizers.SGD(lr, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        # Keras optimizers apply each variable's constraint after the update: the
        # wrapper's mask constraint keeps pruned weights at exactly zero.
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    pruning = IterativePruning(
        fractions,
        Linear(steps),
        epochs_per_step=epochs_per_step,
        validation_data=data.validation(),
        acc_tradeoff=acc_tradeoff,
        optimizer=optimizer,
    )
    pruning.set_model(model)
    pruning.on_train_begin()
    for epoch in range(pruning.planned_epochs):
        if pruning.done:
            break  # layers stopped by the accuracy guard leave fewer steps
        pruning.on_epoch_begin(epoch)
        for batch, (x, y) in enumerate(data.train(128, shuffle=True, seed=epoch)):
            pruning.on_train_batch_begin(batch)
            train_step(x, y)
        pruning.on_epoch_end(epoch)
    pruning.on_train_end()
    return model, pruning.results


if __name__ == "__main__":
    from keras_prune.data import load_dataset
    from keras_prune.plan import read_conf
    from keras_prune.resources import DEFAULT_CONF, PRETRAINED_MODEL
    from keras_prune.training import evaluate

    dataset = load_dataset()
    plan = read_conf(DEFAULT_CONF)
    pruned, results = prune_in_custom_loop(kp.load_model(PRETRAINED_MODEL), dataset, dict(plan.items()))
    for result in results:
        print(f"step {result.step} {result.layer}: {100 * result.retained:.3g}% retained, validation {result.validation}")
    print(f"test: {evaluate(pruned, dataset.test())}")
    print(f"total compression: {kp.sparsity_report(pruned).total_compression:.4f}")
