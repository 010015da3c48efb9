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
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import keras

from keras_prune.api import find_layers, prunable
from keras_prune.callbacks import IncompleteScheduleWarning, IterativePruning, StepResult
from keras_prune.checkpoint import Checkpoint, RunCheckpoint, load_checkpoint_model, read_checkpoint
from keras_prune.criteria.objective import SCORE_BATCHES
from keras_prune.methods import get_pruner
from keras_prune.data import Dataset
from keras_prune.errors import InputError, ScheduleError
from keras_prune.plan import Plan
from keras_prune.schedules import SCHEDULES, Cubic, Linear, Schedule
from keras_prune.selection import SCOPES, parse_pattern
from keras_prune.structured import check_granularity, check_unit_norm
from keras_prune.training import check_epochs, check_input_shape, compile_classifier, fit_verbosity

__all__ = ["RunSettings", "StepResult", "run_pruning"]


@dataclass(frozen=True)
class RunSettings:
    """How `run_pruning` prunes and retrains.

    Attributes:
        criterion: registered criterion or method name.
        iterations: schedule steps N; step i prunes to fraction * i / N.
        retrain: retrain after each layer's step.
        epochs: retraining epochs per layer step.
        reload: start every step from the unpruned model (sensitivity analysis).
        lr, momentum: SGD settings for retraining.
        batch_size: images per retraining step.
        augment: shift retraining images by up to 2 pixels.
        seed: shuffling seed.
        score_batches: training batches a data-driven criterion scores on.
        granularity: ``weight``, or ``neuron``/``filter`` to prune whole units
            (see `keras_prune.structured`).
        unit_norm: at unit granularity, ``l1`` or ``l2`` reduction of a unit's scores.
        pattern: ``N:M`` or ``RxC`` sparsity pattern, or None (see `keras_prune.prune`).
        scope: ``layer`` prunes each layer of the plan in turn to its fraction;
            ``global`` prunes all of them together in one step per schedule step
            (as many weights in total, wherever the scores are lowest), then retrains.
        normalization: with global scope, the per-layer score normalisation
            (`keras_prune.selection.NORMALIZATIONS`); None: the criterion's own.
        criterion_options: constructor options of the criterion (e.g. ``probes``).
        progress: show progress bars while a criterion scores.
        schedule: ``linear`` (step i of N prunes to fraction * i / N, layer after
            layer) or ``cubic`` (Zhu & Gupta, all layers together, one step every
            `epochs` epochs of retraining; needs `retrain`).
        acc_tradeoff: the accuracy guard, in percentage points of validation
            accuracy (see `keras_prune.callbacks.IterativePruning`); None: off.
        log_test: also measure the test split after each step (reported only).
        checkpoint_dir: write a checkpoint there after every step that closes
            (`keras_prune.checkpoint`); None: no checkpoints.
        resume: continue from the checkpoint in `checkpoint_dir`.
    """

    criterion: str = "magnitude"
    iterations: int = 1
    retrain: bool = False
    epochs: int = 1
    reload: bool = False
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 128
    augment: bool = False
    seed: int = 0
    score_batches: int = SCORE_BATCHES
    granularity: str = "weight"
    unit_norm: str = "l1"
    pattern: str | None = None
    scope: str = "layer"
    normalization: str | None = None
    criterion_options: Mapping[str, Any] = field(default_factory=dict)
    progress: bool = False
    schedule: str = "linear"
    acc_tradeoff: float | None = None
    log_test: bool = False
    checkpoint_dir: str | None = None
    resume: bool = False

    def __post_init__(self):
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise InputError(f"iterations must be a positive integer, got {self.iterations}")
        check_epochs(self.epochs)
        if self.score_batches < 1:
            raise InputError(f"score batches must be a positive integer, got {self.score_batches}")
        check_granularity(self.granularity)
        check_unit_norm(self.unit_norm)
        parse_pattern(self.pattern)
        if self.scope not in SCOPES:
            raise InputError(f"unknown scope '{self.scope}'; choose one of: {', '.join(SCOPES)}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"unknown schedule '{self.schedule}'; choose one of: {', '.join(SCHEDULES)}")
        if self.schedule == "cubic" and not (self.retrain and self.epochs):
            raise InputError("the cubic schedule prunes during retraining: give --retrain and --epochs >= 1")
        if self.schedule == "cubic" and self.reload:
            raise InputError("--reload works with the linear schedule only")
        if self.resume and self.checkpoint_dir is None:
            raise InputError("resuming needs the checkpoint folder (--checkpoint-dir)")
        if self.checkpoint_dir is not None and (self.reload or self.schedule != "linear"):
            raise InputError("checkpoints and --resume work with the linear schedule without --reload")
        if self.acc_tradeoff is not None and not self.acc_tradeoff >= 0:
            raise InputError(f"the accuracy trade-off must be >= 0 percentage points, got {self.acc_tradeoff}")


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
    criterion = get_pruner(settings.criterion, **settings.criterion_options)
    if settings.progress:
        criterion.verbose = True
    find_layers(model, plan.layers)  # validate selectors before any work
    score_data = data.scoring(settings.batch_size, settings.score_batches, settings.seed) if criterion.needs_data else None
    strategy = strategy or tf.distribute.get_strategy()
    run_options = _run_options(plan, settings)
    checkpoint = _checkpoint_to_resume(settings, run_options, strategy)
    with strategy.scope():
        if checkpoint is None:
            wrapped = prunable(model, plan.layers)
            compile_classifier(wrapped, settings.lr, settings.momentum)
        else:
            wrapped = load_checkpoint_model(checkpoint)
    retraining = settings.retrain and settings.epochs > 0
    pruning = IterativePruning(
        dict(plan.items()),
        _schedule(settings, data),
        criterion=criterion,
        data=score_data,
        score_batches=settings.score_batches,
        epochs_per_step=settings.epochs if retraining else 0,
        scope=settings.scope,
        normalization=settings.normalization,
        granularity=settings.granularity,
        unit_norm=settings.unit_norm,
        pattern=settings.pattern,
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
        pruning.resume_from(checkpoint.pruning)
        first = checkpoint.epoch
        for record in checkpoint.pruning["results"]:  # report (and log) the steps done before
            if on_step is not None:
                on_step(StepResult.from_dict(record))
    # The progress bar first, so each epoch's line prints before the step it closes.
    every = [keras.callbacks.ProgbarLogger(), pruning, *callbacks]
    if settings.checkpoint_dir is not None:
        every.append(RunCheckpoint(settings.checkpoint_dir, pruning, run_options))
    with warnings.catch_warnings():  # said once, as the error below
        warnings.simplefilter("ignore", IncompleteScheduleWarning)
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            _fit_multi_worker(wrapped, data, settings, epochs, every, strategy)
        else:
            wrapped.fit(
                data.epochs(settings.batch_size, settings.seed, first, epochs, augment=settings.augment),
                epochs=epochs,
                initial_epoch=first,
                steps_per_epoch=data.steps_per_epoch(settings.batch_size),
                shuffle=False,
                verbose=fit_verbosity(),
                callbacks=every,
            )
    if not pruning.done:
        raise ScheduleError(pruning.unfinished())
    return wrapped, pruning.results


def _run_options(plan: Plan, settings: RunSettings) -> dict[str, Any]:
    """The options a checkpoint must match to be resumed: all but where it lives."""
    options = dataclasses.asdict(settings)
    for key in ("checkpoint_dir", "resume", "progress"):
        options.pop(key)
    options["criterion_options"] = dict(options["criterion_options"])
    return json.loads(json.dumps({"layers": list(plan.layers), "fractions": list(plan.fractions), **options}))


def _checkpoint_to_resume(settings: RunSettings, run_options: dict[str, Any], strategy) -> Checkpoint | None:
    """The checkpoint to continue from, checked against this run's options; None if not resuming."""
    import tensorflow as tf

    if not settings.resume:
        return None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise InputError("--resume does not work with --multi-worker")
    checkpoint = read_checkpoint(settings.checkpoint_dir)
    if checkpoint.run != run_options:
        differing = sorted(k for k in {**run_options, **checkpoint.run} if run_options.get(k) != checkpoint.run.get(k))
        raise InputError(
            f"the checkpoint in {settings.checkpoint_dir} is of a run with other options "
            f"({', '.join(differing)}); give the same options to resume it"
        )
    return checkpoint


def _fit_multi_worker(model: keras.Model, data: Dataset, settings: RunSettings, epochs: int, callbacks: list, strategy) -> None:
    """`model.fit` for MultiWorkerMirroredStrategy, which Keras 3's own `fit` does not
    support (keras-team/keras#20585: its symbolic build fails on the distributed batch).

    Same epochs, SGD steps and callback hooks as `fit`; the loss is averaged over the
    global batch and the optimizer all-reduces the gradients across workers.
    """
    import tensorflow as tf

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    optimizer = model.optimizer
    with strategy.scope():
        if not optimizer.built:
            optimizer.build(model.trainable_variables)

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(loss_fn(y, model(x, training=True)))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def train_step(batch):
        return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

    hooks = keras.callbacks.CallbackList(callbacks, add_history=True, model=model, verbose=fit_verbosity(), epochs=epochs, steps=None)
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(epochs):
        hooks.on_epoch_begin(epoch)
        total, count = 0.0, 0
        batches = data.epochs(settings.batch_size, settings.seed, epoch, epoch + 1, augment=settings.augment)
        for index, batch in enumerate(strategy.experimental_distribute_dataset(batches)):
            hooks.on_train_batch_begin(index)
            loss = float(train_step(batch))
            total, count = total + loss, count + 1
            hooks.on_train_batch_end(index, {"loss": loss})
        hooks.on_epoch_end(epoch, {"loss": total / max(count, 1)})
        if model.stop_training:
            break
    hooks.on_train_end()
