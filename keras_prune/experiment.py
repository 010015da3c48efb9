"""The prune -> retrain -> evaluate loop behind `keras-prune run`, on top of the callback.

`run_pruning` wraps the plan's layers, compiles the model for SGD retraining and runs
one `fit` with a `keras_prune.callbacks.IterativePruning` callback, which owns the
order of work: for step i = 1..N, each layer of the plan, in the order the plan lists
them, is pruned to ``fraction * i / N`` of its weights and the whole model is
retrained for `epochs` epochs before the next layer (global scope and the cubic
schedule prune all layers together). After each layer's step the validation loss and
error are measured; the accuracy guard, if set, reverts a step that costs too much.
With `reload`, every step starts again from the unpruned model, so each step is a
one-shot prune to ``fraction * i / N``: the data for sensitivity curves. Without
retraining the same callback runs every step back to back, without `fit`.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any, Callable, Sequence

import keras

from keras_prune.api import find_layers, prunable
from keras_prune.callbacks import IncompleteScheduleWarning, IterativePruning
from keras_prune.checkpoint import Checkpoint, RunCheckpoint, read_checkpoint
from keras_prune.data import Dataset
from keras_prune.errors import InputError, ScheduleError
from keras_prune.plan import Plan
from keras_prune.results import StepResult
from keras_prune.schedules import Cubic, Linear, Schedule
from keras_prune.settings import RunSettings
from keras_prune.state import PruningState
from keras_prune.storage import load_model
from keras_prune.training import check_input_shape, compile_classifier, fit

__all__ = ["RunSettings", "StepResult", "run_pruning"]


def _schedule(settings: RunSettings, data: Dataset) -> Schedule:
    if settings.schedule == "cubic":
        return Cubic(settings.iterations, frequency=settings.epochs * data.steps_per_epoch(settings.batch_size))
    return Linear(settings.iterations)


def run_pruning(
    model: keras.Model,
    plan: Plan,
    data: Dataset,
    settings: RunSettings = RunSettings(),
    on_step: Callable[[StepResult], None] | None = None,
    on_prune: Callable[[int, int | None, str, float], None] | None = None,
    strategy: Any = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[keras.Model, list[StepResult]]:
    """Prunes `model` by `plan`, retraining as `settings` say.

    Args:
        model: the trained model (plain or already wrapped); it is not modified.
        plan: layers and target fractions, processed in the plan's order.
        data: the dataset; criteria score on training batches, decisions and
            logs use the validation split, the test split is measured only with
            `settings.log_test` (and then only reported).
        settings: schedule, criterion, guard and retraining settings.
        on_step: called after each layer's step (after retraining), e.g. to print
            or log it.
        on_prune: called right after a layer is pruned, before retraining, with
            (step, layer index or None, layer name, fraction retained).
        strategy: the tf.distribute strategy to build and retrain the model under
            (`keras_prune.devices.select_devices`); None: the current one.
        callbacks: more Keras callbacks for the retraining `fit` (e.g. TensorBoard).

    Returns:
        The pruned (wrapped) model and one `StepResult` per layer step.

    Raises:
        ScheduleError: retraining ended before the schedule's last step (a callback
            in `callbacks` stopped `fit`, or the loss became NaN between events);
            the message says how far each layer got.

    Example:

    ```python
    settings = RunSettings(iterations=10, retrain=True, epochs=1, acc_tradeoff=0.2)
    pruned, results = run_pruning(model, read_conf("lenet5.conf"), load_dataset(), settings)
    ```
    """
    import tensorflow as tf

    check_input_shape(model, data)
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and not settings.multi_worker:
        settings = dataclasses.replace(settings, multi_worker=True)  # refuses checkpoints, as the settings say
    options = settings.prune_options
    criterion = options.pruner
    if settings.progress:
        criterion.verbose = True
    find_layers(model, plan.layers)  # validate selectors before any work
    score_data = data.scoring(settings.batch_size, settings.score_batches, settings.seed) if criterion.needs_data else None
    run_options = _run_options(plan, settings)
    checkpoint = _checkpoint_to_resume(settings, run_options)
    resumed = None if checkpoint is None else _pruning_state(checkpoint, settings)
    with strategy.scope():
        if checkpoint is None:
            wrapped = prunable(model, plan.layers)
            compile_classifier(wrapped, settings.lr, settings.momentum)
        else:
            wrapped = load_model(checkpoint.model_path, compile=True)
    retraining = settings.retraining
    pruning = IterativePruning(
        dict(plan.items()),
        _schedule(settings, data),
        options=options,
        data=score_data,
        epochs_per_step=settings.epochs if retraining else 0,
        validation_data=data.validation(),
        test_data=data.test() if settings.log_test else None,
        acc_tradeoff=settings.acc_tradeoff,
        reload=settings.reload,
        stop_when_done=True,
        steps_per_epoch=data.steps_per_epoch(settings.batch_size),
        on_prune=on_prune,
        on_step=on_step,
    )
    if not retraining:
        pruning.prune_without_training(wrapped)
        return wrapped, pruning.results
    epochs = pruning.planned_epochs
    first = 0
    if checkpoint is not None:
        pruning.resume_from(resumed)
        first = checkpoint.epoch
        for result in resumed.results:  # report (and log) the steps done before
            if on_step is not None:
                on_step(result)
    # The progress bar first, so each epoch's line prints before the step it closes.
    every = [keras.callbacks.ProgbarLogger(), pruning, *callbacks]
    if settings.checkpoint_dir is not None:
        every.append(RunCheckpoint(settings.checkpoint_dir, pruning, run_options))
    with warnings.catch_warnings():  # said once, as the error below
        warnings.simplefilter("ignore", IncompleteScheduleWarning)
        fit(wrapped, data, epochs, settings.batch_size, settings.seed, first, settings.augment, callbacks=every)
    if not pruning.done:
        raise ScheduleError(pruning.unfinished())
    return wrapped, pruning.results


def _run_options(plan: Plan, settings: RunSettings) -> dict[str, Any]:
    """The options a checkpoint must match to be resumed: all but where it lives."""
    options = dataclasses.asdict(settings)
    for key in ("checkpoint_dir", "resume", "progress", "multi_worker"):
        options.pop(key)
    options["criterion_options"] = dict(options["criterion_options"])
    return json.loads(json.dumps({"layers": list(plan.layers), "fractions": list(plan.fractions), **options}))


def _checkpoint_to_resume(settings: RunSettings, run_options: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint to continue from, checked against this run's options; None if not resuming."""
    if not settings.resume:
        return None
    checkpoint = read_checkpoint(settings.checkpoint_dir)
    if checkpoint.run != run_options:
        differing = sorted(k for k in {**run_options, **checkpoint.run} if run_options.get(k) != checkpoint.run.get(k))
        raise InputError(
            f"the checkpoint in {settings.checkpoint_dir} is of a run with other options "
            f"({', '.join(differing)}); give the same options to resume it"
        )
    return checkpoint


def _pruning_state(checkpoint: Checkpoint, settings: RunSettings) -> PruningState:
    """The checkpoint's schedule state; an InputError if it cannot be read (a checkpoint
    of another keras-prune version)."""
    try:
        return PruningState.from_json(checkpoint.pruning)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"cannot read the pruning state of the checkpoint in {settings.checkpoint_dir} "
            f"(missing or bad {exc}); remove the folder to start again"
        ) from None

