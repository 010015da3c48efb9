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
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import keras
import numpy as np

from keras_prune.api import Selector, find_layers, layer_index, prune, wrapped_layers
from keras_prune.criteria import Criterion
from keras_prune.criteria.objective import SCORE_BATCHES, ScoringBatches, fixed_batches
from keras_prune.methods import get_pruner
from keras_prune.devices import broadcast_first, is_distributed
from keras_prune.errors import InputError
from keras_prune.schedules import Linear, Schedule
from keras_prune.selection import SCOPES, check_fraction
from keras_prune.training import Evaluation, evaluate as evaluate_classifier
from keras_prune.wrapper import PruneWrapper


@dataclass(frozen=True)
class StepResult:
    """One layer's pruning event, as reported and logged.

    Attributes:
        step: the schedule step, 1-based.
        index: the layer's 1-based index in the model (None inside a nested model).
        layer: the layer's name.
        fraction: the fraction this step pruned the layer to.
        retained: share of the layer's weights left after this step's pruning.
        validation: validation loss and error when the event closed (after
            retraining); None without validation data.
        test: test loss and error, only when test data was given (reporting only).
        seconds: wall time from the pruning to the close of the event.
        cost: validation error after the event minus that of the model before any
            pruning, in percentage points; None without validation data.
        reverted: the event was reverted (by the accuracy guard, or because the
            loss became NaN or Inf); the layer is pruned no further and holds the
            masks it had before.
        diverged: the loss or a weight became NaN or Inf while retraining after
            this event.
        mask_digest: SHA-1 of the layer's masks after the event (after a revert, the
            restored masks): equal digests mean identical masks.
    """

    step: int
    index: int | None
    layer: str
    fraction: float
    retained: float
    validation: Evaluation | None
    test: Evaluation | None
    seconds: float
    cost: float | None = None
    reverted: bool = False
    mask_digest: str = ""
    diverged: bool = False

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "StepResult":
        """The inverse of ``dataclasses.asdict(result)``."""
        evaluations = {k: None if record[k] is None else Evaluation(**record[k]) for k in ("validation", "test")}
        return cls(**{**record, **evaluations})


def mask_digest(layer: PruneWrapper) -> str:
    """SHA-1 of a wrapped layer's masks (as 0/1 bytes), to compare masks cheaply.

    Args:
        layer: a built `PruneWrapper`.

    Returns:
        40 hex digits.

    Example:

    ```python
    assert mask_digest(model_a.get_layer("fc1")) == mask_digest(model_b.get_layer("fc1"))
    ```
    """
    digest = hashlib.sha1()
    for mask in layer.mask_arrays():
        digest.update(np.asarray(mask != 0, np.uint8).tobytes())
    return digest.hexdigest()


def snapshot(variables: Sequence[keras.Variable]) -> list[np.ndarray]:
    """Copies of the variables' values, for `restore`.

    Args:
        variables: Keras variables (model and optimizer variables).

    Returns:
        One numpy array per variable.
    """
    return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in variables]


def restore(variables: Sequence[keras.Variable], values: Sequence[np.ndarray]) -> None:
    """Assigns values taken by `snapshot` back to the same variables, bit for bit.

    Args:
        variables: the variables `snapshot` was taken of, in the same order.
        values: what `snapshot` returned.
    """
    if len(variables) != len(values):
        raise ValueError(f"snapshot of {len(values)} variables cannot restore {len(variables)}")
    for variable, value in zip(variables, values):
        variable.assign(value)


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
        criterion: str | Criterion = "magnitude",
        data: Any = None,
        epochs_per_step: int = 1,
        together: bool = False,
        scope: str = "layer",
        normalization: str | None = None,
        granularity: str = "weight",
        unit_norm: str = "l1",
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
        pattern: str | None = None,
    ):
        super().__init__()
        if not fractions:
            raise InputError("IterativePruning needs at least one layer to prune")
        self.fractions = {s: check_fraction(f, f"fraction for layer '{s}'") for s, f in fractions.items()}
        self.schedule = schedule or Linear(1)
        self.criterion = get_pruner(criterion)
        if self.criterion.needs_data and data is None:
            raise InputError(f"criterion '{self.criterion.name}' needs training data; none was given")
        if isinstance(epochs_per_step, bool) or int(epochs_per_step) != epochs_per_step or epochs_per_step < 0:
            raise InputError(f"epochs_per_step must be a whole number >= 0, got {epochs_per_step}")
        if scope not in SCOPES:
            raise InputError(f"unknown scope '{scope}'; choose one of: {', '.join(SCOPES)}")
        batch_timed = self.schedule.timing == "batch"
        if reload and batch_timed:
            raise InputError("reload restarts the training step count; it works with epoch-timed schedules (linear, one-shot) only")
        if acc_tradeoff is not None and not acc_tradeoff >= 0:
            raise InputError(f"the accuracy trade-off must be >= 0 percentage points, got {acc_tradeoff}")
        if evaluate is None and validation_data is not None:
            evaluate = functools.partial(evaluate_classifier, batches=_batches(validation_data))
        if acc_tradeoff is not None and evaluate is None:
            raise InputError("the accuracy guard (acc_tradeoff) needs validation_data or evaluate")
        self.data = data
        self.score_batches = score_batches
        self._score_data: ScoringBatches | None = None
        self.epochs_per_step = int(epochs_per_step)
        self.together = together or scope == "global" or batch_timed
        self.prune_options = dict(scope=scope, normalization=normalization, granularity=granularity, unit_norm=unit_norm, pattern=pattern)
        self.evaluate = evaluate
        self.test_data = None if test_data is None else _batches(test_data)
        self.acc_tradeoff = acc_tradeoff
        self.reload = reload
        self.stop_when_done = stop_when_done
        if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1):
            raise InputError(f"steps_per_epoch must be a positive whole number, got {steps_per_epoch}")
        self.steps_per_epoch = steps_per_epoch
        self.on_prune = on_prune
        self.on_step = on_step
        self._optimizer = optimizer
        self.results: list[StepResult] = []
        self.baseline: Evaluation | None = None
        self.stopped: list[str] = []
        self._resume: dict[str, Any] | None = None
        self._reset()

    def _reset(self) -> None:
        self._layers: list[PruneWrapper] = []
        self._selectors: dict[int, Selector] = {}
        self._cursor = (1, 0)
        self._current_step: int | None = None
        self._open: _Event | None = None
        self._initial: list[np.ndarray] | None = None
        self._stopped_ids: set[int] = set()

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
        return self._open is None and self._peek() is None

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
        if self.criterion.needs_data and self._score_data is None:
            self._score_data = fixed_batches(self.data, self.criterion.name, self.model, self.score_batches)
        optimizer = self._optimizer or getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            with self.model.distribute_strategy.scope():
                optimizer.build(self.model.trainable_variables)
        self._optimizer = optimizer
        if self._resume is not None:
            self._apply_resume()
            return
        if self.reload:
            self._initial = snapshot(self._state_variables())
        self.baseline = self._measure() if self.evaluate is not None else None
        if self.schedule.timing == "epoch" and self.epochs_per_step == 0:
            while self._peek() is not None:
                self._start(*self._advance())
                self._close()

    def on_epoch_begin(self, epoch, logs=None):
        """Epoch-timed schedules: starts the next event if none is open."""
        if self.schedule.timing == "epoch" and self.epochs_per_step > 0 and self._open is None:
            if self._peek() is not None:
                self._start(*self._advance())

    def on_epoch_end(self, epoch, logs=None):
        """Epoch-timed schedules: closes the open event after `epochs_per_step` epochs.

        A NaN or Inf epoch loss marks the open event as diverged (it is reverted when
        it closes); with no event open, it stops training. Checked per epoch, not per
        batch: a batch hook would stop Keras from dispatching batches asynchronously.
        """
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            if self._open is None:
                self.model.stop_training = True
            else:
                self._open.diverged = True
        if self.schedule.timing != "epoch" or self._open is None:
            return
        self._open.epochs += 1
        if self._open.epochs >= self.epochs_per_step:
            self._close()
            if self.stop_when_done and self._peek() is None:
                self.model.stop_training = True

    def on_train_batch_begin(self, batch, logs=None):
        """Batch-timed schedules: at training step `Schedule.start(i)`, closes the open
        event and starts step i."""
        if self.schedule.timing != "batch":
            return
        upcoming = self._peek()
        if upcoming is not None and int(self._optimizer.iterations) >= self.schedule.start(upcoming[0]):
            if self._open is not None:
                self._close()
            upcoming = self._peek()
            if upcoming is not None:
                self._start(*self._advance())

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
        step, layers = self._peek()
        reached = {}
        for result in self.results:
            if not result.reverted:
                reached[result.layer] = result.fraction
        short = ", ".join(
            f"{layer.name} at {reached.get(layer.name, 0.0):.4g} of {self.fractions[self._selectors[id(layer)]]:g}"
            for layer in self._layers if id(layer) not in self._stopped_ids
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
        """What a checkpoint needs to continue this schedule later, as plain JSON data.

        Only between events (none open), and not with `reload` (its starting state is
        the whole model, which a checkpoint does not keep twice).
        """
        if self._open is not None or self.reload:
            raise InputError("the pruning state can be saved only between events, and not with reload")
        return {
            "cursor": list(self._cursor),
            "current_step": self._current_step,
            "stopped": list(self.stopped),
            "baseline": None if self.baseline is None else dataclasses.asdict(self.baseline),
            "results": [dataclasses.asdict(result) for result in self.results],
        }

    def resume_from(self, state: Mapping[str, Any]) -> None:
        """Continues from a `state()` at the next `on_train_begin`: the events already
        done are not redone, stopped layers stay stopped, results are kept, and the
        unpruned model's validation measure is not taken again."""
        self._resume = dict(state)

    def _apply_resume(self) -> None:
        state, self._resume = self._resume, None
        self._cursor = tuple(state["cursor"])
        self._current_step = state["current_step"]
        by_name = {layer.name: layer for layer in self._layers}
        self.stopped = list(state["stopped"])
        self._stopped_ids = {id(by_name[name]) for name in self.stopped}
        self.baseline = None if state["baseline"] is None else Evaluation(**state["baseline"])
        self.results = [StepResult.from_dict(record) for record in state["results"]]

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

    def _groups(self) -> list[list[PruneWrapper]]:
        return [list(self._layers)] if self.together else [[layer] for layer in self._layers]

    def _find(self) -> tuple[int, int, list[PruneWrapper]] | None:
        """The next event from the cursor on: (step, group number, active layers)."""
        step, group = self._cursor
        groups = self._groups()
        while step <= self.schedule.steps:
            while group < len(groups):
                active = [l for l in groups[group] if id(l) not in self._stopped_ids]
                if active:
                    return step, group, active
                group += 1
            step, group = step + 1, 0
        return None

    def _peek(self) -> tuple[int, list[PruneWrapper]] | None:
        """The next event (step, active layers), or None when there is none."""
        found = self._find()
        return None if found is None else (found[0], found[2])

    def _advance(self) -> tuple[int, list[PruneWrapper]]:
        """The next event (step, active layers); moves the cursor past it."""
        step, group, active = self._find()
        self._cursor = (step, group + 1)
        return step, active

    def _state_variables(self) -> list[keras.Variable]:
        optimizer_variables = list(self._optimizer.variables) if self._optimizer is not None else []
        return list(self.model.variables) + optimizer_variables

    def _start(self, step: int, layers: list[PruneWrapper]) -> None:
        started = time.perf_counter()
        if self.reload and self._current_step is not None and step != self._current_step:
            restore(self._state_variables(), self._initial)
        self._current_step = step
        saved = snapshot(self._state_variables())
        fractions = [self.schedule.fraction(self.fractions[self._selectors[id(l)]], step) for l in layers]
        targets = {self._selectors[id(l)]: f for l, f in zip(layers, fractions)}
        strategy = self.model.distribute_strategy
        if is_distributed(strategy):
            # Each worker may choose other masks (a criterion scoring on its own
            # batches); set_mask zeroes weights at once, so go back to the weights
            # before pruning, identical everywhere, and apply the first replica's masks.
            held = [v for layer in wrapped_layers(self.model) for v in [*layer.pruned_variables, *layer.masks]]
            before = snapshot(held)
            pruned = prune(self.model, targets, self.criterion, data=self._score_data, **self.prune_options)
            chosen = {id(layer): broadcast_first(strategy, layer.mask_arrays()) for layer in pruned}
            restore(held, before)
            for layer in pruned:
                layer.set_mask(chosen[id(layer)])
        else:
            prune(self.model, targets, self.criterion, data=self._score_data, **self.prune_options)
        retained = [1.0 - layer.sparsity() for layer in layers]
        if self.on_prune is not None:
            for layer, share in zip(layers, retained):
                self.on_prune(step, layer_index(self.model, layer), layer.name, share)
        self._open = _Event(step, layers, fractions, retained, started, saved)

    def _measure(self) -> Evaluation:
        result = self.evaluate(self.model)
        strategy = self.model.distribute_strategy
        if is_distributed(strategy):
            loss, error = broadcast_first(strategy, [np.array([result.loss, result.error], np.float64)])[0]
            result = Evaluation(loss=float(loss), error=float(error))
        return result

    def _close(self) -> None:
        event, self._open = self._open, None
        # Max-pooling can hide NaN weights from the loss (oneDNN drops NaN), so check both.
        event.diverged = event.diverged or not all(
            np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in self.model.trainable_variables
        )
        if event.diverged:  # what retraining did after the restore is discarded too
            restore(self._state_variables(), event.saved)
        validation = self._measure() if self.evaluate is not None else None
        test = evaluate_classifier(self.model, self.test_data) if self.test_data is not None else None
        cost = None if validation is None else validation.error - self.baseline.error
        reverted = event.diverged or (self.acc_tradeoff is not None and cost > self.acc_tradeoff)
        if reverted:  # reverted, for either reason: its layers are pruned no further
            if not event.diverged:
                restore(self._state_variables(), event.saved)
            for layer in event.layers:
                self._stopped_ids.add(id(layer))
                self.stopped.append(layer.name)
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

