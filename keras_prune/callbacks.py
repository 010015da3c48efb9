"""Iterative prune-retrain as a Keras callback, usable in anyone's `model.fit`.

`IterativePruning` prunes chosen layers of a wrapped model (see `keras_prune.prunable`)
with a criterion, following a `keras_prune.schedules.Schedule`, and lets `fit` retrain
between steps. `keras-prune run` drives the same callback.

Order of work. A *step* of the schedule is split into *events*: by default each
layer, in the order the `fractions` mapping lists them, is pruned to its fraction for
that step and then retrained on its own (the original tool's order, made explicit);
with ``together=True``, with global selection scope, and always with a ``"batch"``
schedule (cubic), all layers are pruned in one event per step. Epoch-timed schedules
(one-shot, linear) start an event at the beginning of an epoch and close it after
``epochs_per_step`` epochs of retraining; the cubic schedule starts step i at training
step `Schedule.start(i)` and closes it when the next one starts or training ends.

Closing an event measures the validation loss and error (decisions only ever use the
validation data; test data, when given, is only reported), applies the accuracy guard
and reports one `StepResult` per layer.

Accuracy guard (``acc_tradeoff=D``): if an event leaves the validation error more than
D percentage points above the error of the model before any pruning (measured at the
start of training), the event is reverted exactly - every model variable (weights,
masks, gates, statistics) and every optimizer variable (iteration count, momentum and
other slots) gets back the value it had before the event's pruning - and its layers
are pruned no further; the other layers go on.

Divergence: if the loss or a weight becomes NaN or Inf while retraining after an event,
the event is reverted the same way and its layers are pruned no further, whatever the
accuracy guard says (`StepResult.diverged`).

With ``reload=True`` every step starts again from the state at the start of training
(model and optimizer), so each step is a one-shot prune to the step's fraction followed
by retraining: sensitivity data. A stopped layer is then left unpruned in
later steps.

With ``epochs_per_step=0`` nothing is retrained: all events happen one after another in
`on_train_begin`; use `prune_without_training` rather than `fit` (which would still
train its epochs).

Under a tf.distribute strategy (several GPUs, several workers) the masks chosen at
each event and the validation figures are those of the first replica, sent to all
replicas and workers, so every worker holds identical masks and takes the same
decisions.

A custom training loop calls the hooks itself: ``set_model``, ``on_train_begin``, then
for each epoch ``on_epoch_begin``, ``on_train_batch_begin`` before each batch (needed
by the cubic schedule only), ``on_epoch_end``, and finally ``on_train_end``
(examples/custom_training_loop.py).

The callback holds the order of work only; it delegates the rest: each event prunes
with one `keras_prune.settings.PruneOptions` (the options `keras_prune.prune`
takes), the guard and divergence checks are `keras_prune.guard`, snapshots, replica
broadcasts, the schedule cursor and the resume state are `keras_prune.state`, and
results are `keras_prune.results.StepResult`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import keras
import numpy as np

from keras_prune.api import Selector, find_layers, layer_index
from keras_prune.criteria import Criterion
from keras_prune.criteria.objective import SCORE_BATCHES, ScoringBatches, fixed_batches
from keras_prune.devices import strategy_of
from keras_prune.errors import InputError
from keras_prune.guard import AccuracyGuard, loss_diverged, weights_diverged
from keras_prune.methods import Method
from keras_prune.results import StepResult, mask_digest
from keras_prune.schedules import Linear, Schedule
from keras_prune.selection import Pattern, check_fraction
from keras_prune.settings import PruneOptions, check_count
from keras_prune.state import (
    EventCursor,
    PruningState,
    TrainingState,
    measure_on_replicas,
    prune_on_replicas,
)
from keras_prune.training import Evaluation, evaluate as evaluate_classifier
from keras_prune.wrapper import PruneWrapper

_SEPARATE_OPTIONS = ("criterion", "scope", "normalization", "granularity", "unit_norm", "round_to", "pattern", "score_batches")
"""The keywords of `IterativePruning` that `options` gives as one object."""


def _batches(data, batch_size: int = 256):
    """`data` as an iterable of (x, y) batches: a tf.data dataset or an (x, y) pair."""
    if isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape"):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)
    return data


class IncompleteScheduleWarning(UserWarning):
    """`fit` ended before the pruning schedule's last step: the layers are pruned less
    than their targets (`IterativePruning.unfinished` says how far)."""


@dataclass
class _Event:
    """An event between its pruning and its close."""

    step: int
    layers: list[PruneWrapper]
    fractions: list[float]
    retained: list[float]
    started: float
    saved: list[np.ndarray]
    epochs: int = 0
    diverged: bool = False


class IterativePruning(keras.callbacks.Callback):
    """Prunes layers on a schedule during `fit`, retraining between steps.

    Args:
        fractions: selector (1-based layer index or name) -> final fraction of that
            layer's weights to prune. Layers are processed in this order.
        schedule: when and how far to prune (`keras_prune.schedules`); default
            `Linear(1)`, one-shot.
        criterion: a registered criterion or method name (``sparsegpt``, ``wanda``),
            or an instance of either.
        data: training data for criteria and methods that need it (never the test
            split), in any form `keras_prune.prune` takes; read once, at the start of
            training, so every event scores on the same batches.
        epochs_per_step: retraining epochs after each event of an epoch-timed
            schedule; 0 prunes everything at `on_train_begin` without retraining.
        together: prune all layers in one event per step instead of one after the
            other (implied by ``scope="global"`` and by cubic schedules).
        scope: ``"layer"`` or ``"global"`` selection (see `keras_prune.prune`).
        normalization: global-scope score normalisation; None: the criterion's own.
        granularity: ``"weight"``, or ``"neuron"``/``"filter"`` for whole units.
        unit_norm: ``"l1"`` or ``"l2"`` reduction of unit scores.
        round_to: at unit granularity, keep a multiple of this many units per layer.
        validation_data: (x, y) batches or an (x, y) pair of arrays, for the
            measures and decisions (accuracy guard).
        test_data: (x, y) batches or arrays, only reported in each `StepResult`.
        evaluate: ``model -> Evaluation`` used in place of the default measure
            (cross-entropy of logits and top-1 error on `validation_data`).
        acc_tradeoff: the accuracy guard, in percentage points; None: off.
        reload: start every step from the state at the start of training.
        stop_when_done: stop `fit` once the last event of an epoch-timed schedule
            has closed.
        optimizer: the optimizer whose slots a revert or reload restores; default
            the model's.
        on_prune: called right after each layer is pruned, before retraining, with
            (step, layer index or None, layer name, share retained).
        on_step: called with each `StepResult` when an event closes.
        score_batches: the most batches of `data` read (the CLI's default, 20).
        steps_per_epoch: training steps per epoch of your `fit`; needed by
            `planned_epochs` with a ``"batch"`` schedule (cubic) only.
        pattern: ``"N:M"`` or ``"RxC"`` sparsity pattern (see `keras_prune.prune`).
        options: the prune step's options as one `keras_prune.settings.PruneOptions`,
            in place of `criterion`, `scope`, `normalization`, `granularity`,
            `unit_norm`, `round_to`, `pattern` and `score_batches` (leave those at their defaults).

    Raises:
        InputError: a bad fraction or option, a pruner that needs data without
            `data`, the guard without validation data, `reload` with a cubic
            schedule, or both `options` and one of the keywords it replaces.

    Example:

    ```python
    model = keras_prune.prunable(trained)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    pruning = IterativePruning({"conv2": 0.7, "fc1": 0.95}, Linear(5),
                               validation_data=(x_val, y_val), acc_tradeoff=0.5)
    model.fit(x_train, y_train, epochs=pruning.planned_epochs, callbacks=[pruning])
    ```
    """

    def __init__(
        self,
        fractions: Mapping[Selector, float],
        schedule: Schedule | None = None,
        criterion: str | Criterion | Method = "magnitude",
        data: Any = None,
        epochs_per_step: int = 1,
        together: bool = False,
        scope: str = "layer",
        normalization: str | None = None,
        granularity: str = "weight",
        unit_norm: str = "l1",
        round_to: int = 1,
        validation_data: Any = None,
        test_data: Any = None,
        evaluate: Callable[[keras.Model], Evaluation] | None = None,
        acc_tradeoff: float | None = None,
        reload: bool = False,
        stop_when_done: bool = False,
        optimizer: keras.optimizers.Optimizer | None = None,
        on_prune: Callable[[int, int | None, str, float], None] | None = None,
        on_step: Callable[[StepResult], None] | None = None,
        score_batches: int = SCORE_BATCHES,
        steps_per_epoch: int | None = None,
        pattern: str | Pattern | None = None,
        options: PruneOptions | None = None,
    ):
        super().__init__()
        if not fractions:
            raise InputError("IterativePruning needs at least one layer to prune")
        self.fractions = {s: check_fraction(f, f"fraction for layer '{s}'") for s, f in fractions.items()}
        self.schedule = schedule or Linear(1)
        self.options = _prune_options(
            options,
            criterion=criterion,
            scope=scope,
            normalization=normalization,
            granularity=granularity,
            unit_norm=unit_norm,
            round_to=round_to,
            pattern=pattern,
            score_batches=score_batches,
        )
        self.criterion = self.options.pruner
        if self.criterion.needs_data and data is None:
            raise InputError(f"criterion '{self.criterion.name}' needs training data; none was given")
        self.epochs_per_step = check_count(epochs_per_step, "epochs_per_step", positive=False)
        batch_timed = self.schedule.timing == "batch"
        if reload and batch_timed:
            raise InputError("reload restarts the training step count; it works with epoch-timed schedules (linear, one-shot) only")
        self.guard = AccuracyGuard(acc_tradeoff)
        if evaluate is None and validation_data is not None:
            evaluate = functools.partial(evaluate_classifier, batches=_batches(validation_data))
        if acc_tradeoff is not None and evaluate is None:
            raise InputError("the accuracy guard (acc_tradeoff) needs validation_data or evaluate")
        self.data = data
        self._score_data: ScoringBatches | None = None
        self.together = together or self.options.scope == "global" or batch_timed
        self.evaluate = evaluate
        self.test_data = None if test_data is None else _batches(test_data)
        self.reload = reload
        self.stop_when_done = stop_when_done
        if steps_per_epoch is not None:
            steps_per_epoch = check_count(steps_per_epoch, "steps_per_epoch")
        self.steps_per_epoch = steps_per_epoch
        self.on_prune = on_prune
        self.on_step = on_step
        self._optimizer = optimizer
        self.results: list[StepResult] = []
        self.stopped: list[str] = []
        self._resume: PruningState | None = None
        self._reset()

    @property
    def baseline(self) -> Evaluation | None:
        """The validation measure of the model before any pruning (None before
        training or without validation data)."""
        return self.guard.baseline

    def _reset(self) -> None:
        self._layers: list[PruneWrapper] = []
        self._selectors: dict[int, Selector] = {}
        self._cursor = EventCursor(self.schedule.steps, [])
        self._current_step: int | None = None
        self._open: _Event | None = None
        self._initial: list[np.ndarray] | None = None
        self._state: TrainingState | None = None

    @property
    def planned_epochs(self) -> int:
        """Epochs of `fit` the whole schedule needs if no layer is stopped.

        Epoch-timed schedules: steps x events per step x `epochs_per_step` (layers
        count once when pruned together). ``"batch"`` schedules (cubic): the epochs
        that hold `planned_steps` training steps, which needs `steps_per_epoch`.

        Raises:
            InputError: a ``"batch"`` schedule without `steps_per_epoch`.
        """
        if self.schedule.timing == "batch":
            if self.steps_per_epoch is None:
                raise InputError(
                    f"{self.schedule!r} is timed by training steps: give IterativePruning "
                    f"steps_per_epoch to count its epochs, or train planned_steps ({self.planned_steps}) steps"
                )
            return -(-self.planned_steps // self.steps_per_epoch)
        events = self.schedule.steps * (1 if self.together else len(self.fractions))
        return events * self.epochs_per_step

    @property
    def planned_steps(self) -> int | None:
        """Training steps a ``"batch"`` schedule needs (`Schedule.end`); None for
        epoch-timed schedules, which count epochs (`planned_epochs`)."""
        return self.schedule.end() if self.schedule.timing == "batch" else None

    @property
    def done(self) -> bool:
        """Whether every event of the schedule has happened and closed."""
        return self._open is None and self._cursor.peek() is None

    def on_train_begin(self, logs=None):
        """Finds the layers, builds the optimizer, measures the unpruned model (and with
        `reload` keeps its state); with ``epochs_per_step=0``, runs every event."""
        self._reset()
        self.results, self.stopped = [], []
        layers = find_layers(self.model, list(self.fractions))
        for selector, layer in zip(self.fractions, layers):
            if not isinstance(layer, PruneWrapper):
                raise InputError(f"layer '{layer.name}' is not wrapped; call keras_prune.prunable(model) first")
            self._selectors[id(layer)] = selector
        self._layers = layers
        self._cursor = EventCursor(self.schedule.steps, [layers] if self.together else [[layer] for layer in layers])
        if self.criterion.needs_data and self._score_data is None:
            self._score_data = fixed_batches(
                self.data, self.criterion.name, self.model, self.options.score_batches, self.options.batch_size
            )
        optimizer = self._optimizer or getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            with strategy_of(self.model).scope():
                optimizer.build(self.model.trainable_variables)
        self._optimizer = optimizer
        self._state = TrainingState(self.model, optimizer)
        if self._resume is not None:
            self._apply_resume()
            return
        if self.reload:
            self._initial = self._state.save()
        self.guard.baseline = self._measure() if self.evaluate is not None else None
        if self.schedule.timing == "epoch" and self.epochs_per_step == 0:
            while self._cursor.peek() is not None:
                self._start(*self._cursor.advance())
                self._close()

    def on_epoch_begin(self, epoch, logs=None):
        """Epoch-timed schedules: starts the next event if none is open."""
        if self.schedule.timing == "epoch" and self.epochs_per_step > 0 and self._open is None:
            if self._cursor.peek() is not None:
                self._start(*self._cursor.advance())

    def on_epoch_end(self, epoch, logs=None):
        """Epoch-timed schedules: closes the open event after `epochs_per_step` epochs.

        A NaN or Inf epoch loss marks the open event as diverged (it is reverted when
        it closes); with no event open, it stops training. Checked per epoch, not per
        batch: a batch hook would stop Keras from dispatching batches asynchronously.
        """
        if loss_diverged(logs):
            if self._open is None:
                self.model.stop_training = True
            else:
                self._open.diverged = True
        if self.schedule.timing != "epoch" or self._open is None:
            return
        self._open.epochs += 1
        if self._open.epochs >= self.epochs_per_step:
            self._close()
            if self.stop_when_done and self._cursor.peek() is None:
                self.model.stop_training = True

    def on_train_batch_begin(self, batch, logs=None):
        """Batch-timed schedules: at training step `Schedule.start(i)`, closes the open
        event and starts step i."""
        if self.schedule.timing != "batch":
            return
        upcoming = self._cursor.peek()
        if upcoming is not None and int(self._optimizer.iterations) >= self.schedule.start(upcoming[0]):
            if self._open is not None:
                self._close()
            if self._cursor.peek() is not None:
                self._start(*self._cursor.advance())

    def on_train_end(self, logs=None):
        """Closes the open event, if any; warns if the schedule did not reach its end."""
        if self._open is not None:
            self._close()
        if not self.done:
            warnings.warn(self.unfinished(), IncompleteScheduleWarning, stacklevel=2)

    def unfinished(self) -> str:
        """What is left of the schedule, in one line ("" once it is done)."""
        if self.done:
            return ""
        step, layers = self._cursor.peek()
        reached = {}
        for result in self.results:
            if not result.reverted:
                reached[result.layer] = result.fraction
        short = ", ".join(
            f"{layer.name} at {reached.get(layer.name, 0.0):.4g} of {self.fractions[self._selectors[id(layer)]]:g}"
            for layer in self._layers if not self._cursor.is_stopped(layer)
        )
        fix = (
            f"train {self.planned_steps} steps" if self.schedule.timing == "batch"
            else f"train planned_epochs ({self.planned_epochs}) epochs"
        )
        return (
            f"training ended before pruning step {step} of {self.schedule.steps} "
            f"({', '.join(l.name for l in layers)}): pruned {short}; {fix}"
        )

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to continue this schedule later, as plain JSON data
        (`keras_prune.state.PruningState.to_json`).

        Only between events (none open), and not with `reload` (its starting state is
        the whole model, which a checkpoint does not keep twice).
        """
        if self._open is not None or self.reload:
            raise InputError("the pruning state can be saved only between events, and not with reload")
        return PruningState(
            cursor=self._cursor.position,
            current_step=self._current_step,
            stopped=tuple(self.stopped),
            baseline=self.baseline,
            results=tuple(self.results),
        ).to_json()

    def resume_from(self, state: Mapping[str, Any] | PruningState) -> None:
        """Continues from a `state()` (or the `PruningState` it encodes) at the next
        `on_train_begin`: the events already done are not redone, stopped layers stay
        stopped, results are kept, and the unpruned model's validation measure is not
        taken again."""
        self._resume = state if isinstance(state, PruningState) else PruningState.from_json(state)

    def _apply_resume(self) -> None:
        state, self._resume = self._resume, None
        by_name = {layer.name: layer for layer in self._layers}
        self._cursor.position = state.cursor
        self._cursor.stop([by_name[name] for name in state.stopped])
        self._current_step = state.current_step
        self.stopped = list(state.stopped)
        self.guard.baseline = state.baseline
        self.results = list(state.results)

    def prune_without_training(self, model: keras.Model) -> list[StepResult]:
        """Runs every event back to back on `model`, without retraining.

        Only for epoch-timed schedules with ``epochs_per_step=0``.

        Args:
            model: the wrapped model.

        Returns:
            The step results (also in `results`).
        """
        if self.schedule.timing != "epoch" or self.epochs_per_step != 0:
            raise InputError("prune_without_training needs an epoch-timed schedule and epochs_per_step=0")
        self.set_model(model)
        self.on_train_begin()
        self.on_train_end()
        return self.results

    def _start(self, step: int, layers: list[PruneWrapper]) -> None:
        started = time.perf_counter()
        if self.reload and self._current_step is not None and step != self._current_step:
            self._state.restore(self._initial)
        self._current_step = step
        saved = self._state.save()
        fractions = [self.schedule.fraction(self.fractions[self._selectors[id(l)]], step) for l in layers]
        targets = {self._selectors[id(l)]: f for l, f in zip(layers, fractions)}
        prune_on_replicas(self.model, targets, self.options, self._score_data)
        retained = [1.0 - layer.sparsity() for layer in layers]
        if self.on_prune is not None:
            for layer, share in zip(layers, retained):
                self.on_prune(step, layer_index(self.model, layer), layer.name, share)
        self._open = _Event(step, layers, fractions, retained, started, saved)

    def _measure(self) -> Evaluation:
        return measure_on_replicas(self.evaluate, self.model)

    def _close(self) -> None:
        event, self._open = self._open, None
        event.diverged = event.diverged or weights_diverged(self.model.trainable_variables)
        if event.diverged:  # what retraining did after the restore is discarded too
            self._state.restore(event.saved)
        validation = self._measure() if self.evaluate is not None else None
        test = evaluate_classifier(self.model, self.test_data) if self.test_data is not None else None
        cost = self.guard.cost(validation)
        reverted = event.diverged or self.guard.rejects(cost)
        if reverted:  # reverted, for either reason: its layers are pruned no further
            if not event.diverged:
                self._state.restore(event.saved)
            self._cursor.stop(event.layers)
            self.stopped.extend(layer.name for layer in event.layers)
        seconds = time.perf_counter() - event.started
        for layer, fraction, retained in zip(event.layers, event.fractions, event.retained):
            result = StepResult(
                step=event.step,
                index=layer_index(self.model, layer),
                layer=layer.name,
                fraction=fraction,
                retained=retained,
                validation=validation,
                test=test,
                seconds=seconds,
                cost=cost,
                reverted=reverted,
                diverged=event.diverged,
                mask_digest=mask_digest(layer),
            )
            self.results.append(result)
            if self.on_step is not None:
                self.on_step(result)


def _prune_options(options: PruneOptions | None, **separate: Any) -> PruneOptions:
    """`options`, or one made from the separate keywords; refuses both at once."""
    if options is None:
        return PruneOptions(**separate)
    defaults = {f.name: f.default for f in dataclasses.fields(PruneOptions) if f.name in _SEPARATE_OPTIONS}
    given = sorted(name for name, value in separate.items() if value != defaults[name])
    if given:
        raise InputError(
            f"give the prune options either as options= or as keywords, not both (also given: {', '.join(given)})"
        )
    return options
