"""The prune -> retrain -> evaluate loop behind `keras-prune run`.

Order of work (the original tool's, made explicit): for step i = 1..N of the
schedule, each layer of the plan, in the order the plan lists them, is pruned to
``fraction * i / N`` of its weights and, with retraining on, the whole model is
retrained for `epochs` before the next layer. After each layer's step the validation
loss and error are measured. With `reload`, every step starts again from the
unpruned model, so each step is a one-shot prune to ``fraction * i / N``: the data
for sensitivity curves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import keras

from keras_prune.api import find_layers, layer_index, prunable, prune
from keras_prune.criteria import get_criterion
from keras_prune.data import Dataset
from keras_prune.errors import InputError
from keras_prune.plan import Plan
from keras_prune.training import Evaluation, check_epochs, check_input_shape, evaluate, train


@dataclass(frozen=True)
class RunSettings:
    """How `run_pruning` prunes and retrains.

    Attributes:
        criterion: registered criterion name.
        iterations: schedule steps N; step i prunes to fraction * i / N.
        retrain: retrain after each layer's step.
        epochs: retraining epochs per layer step.
        reload: start every step from the unpruned model (sensitivity analysis).
        lr, momentum: SGD settings for retraining.
        batch_size: images per retraining step.
        seed: shuffling seed.
        score_batches: training batches a data-driven criterion scores on.
    """

    criterion: str = "magnitude"
    iterations: int = 1
    retrain: bool = False
    epochs: int = 1
    reload: bool = False
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 128
    seed: int = 0
    score_batches: int = 20

    def __post_init__(self):
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise InputError(f"iterations must be a positive integer, got {self.iterations}")
        check_epochs(self.epochs)
        if self.score_batches < 1:
            raise InputError(f"score batches must be a positive integer, got {self.score_batches}")


@dataclass(frozen=True)
class StepResult:
    """One layer's pruning step, as logged.

    Attributes:
        step: schedule step, 1-based.
        index: the layer's 1-based index (None inside a nested model).
        layer: the layer's name.
        fraction: the target fraction of this step.
        retained: share of the layer's weights left non-zero afterwards.
        validation: validation loss and error after the step (and retraining).
        seconds: wall time of the step.
    """

    step: int
    index: int | None
    layer: str
    fraction: float
    retained: float
    validation: Evaluation
    seconds: float


def run_pruning(
    model: keras.Model,
    plan: Plan,
    data: Dataset,
    settings: RunSettings = RunSettings(),
    on_step: Callable[[StepResult], None] | None = None,
) -> tuple[keras.Model, list[StepResult]]:
    """Prunes `model` by `plan`, retraining as `settings` say.

    Args:
        model: the trained model (plain or already wrapped); it is not modified.
        plan: layers and target fractions, processed in the plan's order.
        data: the dataset; criteria score on training batches, decisions and
            logs use the validation split, the test split is not touched.
        settings: schedule, criterion and retraining settings.
        on_step: called after each layer's step, e.g. to print progress.

    Returns:
        The pruned (wrapped) model and one `StepResult` per layer step.
    """
    check_input_shape(model, data)
    criterion = get_criterion(settings.criterion)
    find_layers(model, plan.layers)  # validate selectors before any work
    score_data = (
        data.train(settings.batch_size, shuffle=True, seed=settings.seed).take(settings.score_batches)
        if criterion.needs_data
        else None
    )
    wrapped = prunable(model, plan.layers)
    results: list[StepResult] = []
    for step in range(1, settings.iterations + 1):
        if settings.reload and step > 1:
            wrapped = prunable(model, plan.layers)
        for selector, fraction in plan.items():
            started = time.perf_counter()
            target = fraction * step / settings.iterations
            layer = find_layers(wrapped, [selector])[0]
            prune(wrapped, {selector: target}, criterion, data=score_data)
            if settings.retrain and settings.epochs:
                train(
                    wrapped,
                    data,
                    settings.epochs,
                    lr=settings.lr,
                    momentum=settings.momentum,
                    batch_size=settings.batch_size,
                    seed=settings.seed,
                )
            result = StepResult(
                step=step,
                index=layer_index(wrapped, layer),
                layer=layer.name,
                fraction=target,
                retained=1.0 - layer.sparsity(),
                validation=evaluate(wrapped, data.validation()),
                seconds=time.perf_counter() - started,
            )
            results.append(result)
            if on_step is not None:
                on_step(result)
    return wrapped, results
