"""The settings of a prune step and of a run, each validated once, in one place.

- `PruneOptions`: how one prune step chooses weights (pruner, scope, granularity,
  pattern, ...). `keras_prune.prune`, `IterativePruning` and `RunSettings` all build
  one, so an option is checked by the same code, with the same message, whether it
  comes from the API, the callback or the CLI.
- `RunSettings`: a whole `keras-prune run` (schedule, retraining, guard,
  checkpoints), holding its `PruneOptions`.
- `choices` / `check_choice`: the values each named choice accepts, read from the
  library's registries; the CLI lists and checks its choices with them.

Example:

```python
options = PruneOptions("taylor2", {"probes": 8}, scope="global")
keras_prune.prune(model, {"fc1": 0.9}, options.criterion, data=batches, scope=options.scope)
RunSettings(criterion="mag", scope="sideways")  # InputError: unknown scope 'sideways'; ...
```
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

from keras_prune.criteria import HESSIAN_ESTIMATES, Criterion
from keras_prune.criteria.objective import SCORE_BATCH_SIZE, SCORE_BATCHES
from keras_prune.errors import InputError
from keras_prune.guard import check_tradeoff
from keras_prune.methods import Method, canonical_pruner, get_pruner, pruner_names
from keras_prune.schedules import SCHEDULES
from keras_prune.selection import NORMALIZATIONS, SCOPES, Pattern, parse_pattern
from keras_prune.structured import GRANULARITIES, UNIT_NORMS, check_round_to, is_structured
from keras_prune.training import check_epochs

__all__ = ["CHECKPOINT_RULE", "PruneOptions", "RunSettings", "check_choice", "check_count", "choices", "pruner_option_default"]

_FIXED_CHOICES: dict[str, tuple[str, ...]] = {
    "scope": SCOPES,
    "normalization": NORMALIZATIONS,
    "granularity": GRANULARITIES,
    "unit norm": UNIT_NORMS,
    "schedule": SCHEDULES,
    "hessian estimate": HESSIAN_ESTIMATES,
}

CHECKPOINT_RULE = (
    "checkpoints are written when retraining with the linear schedule, without "
    "--reload or --multi-worker; --checkpoint-dir and --resume need such a run"
)
"""Which runs write checkpoints (`RunSettings.checkpointable`), as the error says it."""


def choices(setting: str) -> tuple[str, ...]:
    """The values a choice-valued setting accepts.

    Args:
        setting: ``"pruner"`` (every registered criterion and method, with their
            aliases), ``"scope"``, ``"normalization"``, ``"granularity"``,
            ``"unit norm"``, ``"schedule"`` or ``"hessian estimate"``.

    Returns:
        The accepted values, in the library's order.

    Example:

    ```python
    choices("scope")  # ('layer', 'global')
    ```
    """
    if setting == "pruner":
        return tuple(pruner_names())
    return _FIXED_CHOICES[setting]


def check_choice(setting: str, value: str) -> str:
    """`value` if `setting` accepts it (a pruner alias becomes the pruner's name).

    Args:
        setting: one of the settings `choices` knows.
        value: the value given.

    Returns:
        The value, canonical.

    Raises:
        InputError: ``unknown <setting> '<value>'; choose one of: ...``.
    """
    if setting == "pruner":
        return canonical_pruner(value)
    if value not in choices(setting):
        raise InputError(f"unknown {setting} '{value}'; choose one of: {', '.join(choices(setting))}")
    return value


def pruner_option_default(pruner: str, option: str) -> Any:
    """The value a pruner uses for a constructor option that is not given.

    Args:
        pruner: a registered pruner name.
        option: one of its constructor options.

    Returns:
        The constructor's default, or, where that is None (a per-class default, as
        the criteria's `damping`), the value a default-built pruner holds.

    Example:

    ```python
    pruner_option_default("taylor2", "probes")  # 4
    ```
    """
    built = get_pruner(pruner)
    default = inspect.signature(type(built)).parameters[option].default
    return getattr(built, option, None) if default is None else default


def check_count(value: int, what: str, positive: bool = True) -> int:
    """`value` as an int if it is a whole number, > 0 (or >= 0 when not `positive`).

    Args:
        value: the number given (bools are refused).
        what: its name, for the message.
        positive: refuse 0 too.

    Returns:
        The number, as an int.

    Raises:
        InputError: ``<what> must be a positive whole number, got <value>`` (or
            ``a whole number >= 0``).
    """
    least = 1 if positive else 0
    whole = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and int(value) == value
    if not whole or value < least:
        kind = "a positive whole number" if positive else "a whole number >= 0"
        raise InputError(f"{what} must be {kind}, got {value}")
    return int(value)


@dataclass(frozen=True)
class PruneOptions:
    """How one prune step chooses weights: what `keras_prune.prune` takes besides the
    model, the fractions and the data. Validated when made.

    Attributes:
        criterion: a registered criterion or method name (aliases such as ``mag``
            become the name), or an instance of either.
        criterion_options: constructor options when `criterion` is a name.
        scope: ``"layer"`` or ``"global"`` (`keras_prune.selection.SCOPES`).
        normalization: global-scope score normalisation; None: the criterion's own.
        granularity: ``"weight"``, or ``"neuron"``/``"filter"``/``"head"`` units.
        unit_norm: ``"l1"`` or ``"l2"`` reduction of unit scores.
        round_to: at unit granularity, each chosen layer keeps a multiple of this
            many units (e.g. 8 or 16, hardware-friendly shapes); 1: no rounding.
        pattern: ``"N:M"`` or ``"RxC"`` (kept as a `Pattern`), or None.
        score_batches: the most batches of data a data-driven pruner reads.
        batch_size: images per batch when data comes as arrays or single samples.

    Raises:
        InputError: an unknown value, an option the pruner does not take, or a
            combination `prune` cannot do (unit granularity, a pattern or a method
            with global scope; a pattern or a method at unit granularity).

    Example:

    ```python
    options = PruneOptions("taylor2", {"probes": 8}, scope="global")
    options.pruner.needs_data  # True
    ```
    """

    criterion: str | Criterion | Method = "magnitude"
    criterion_options: Mapping[str, Any] = field(default_factory=dict)
    scope: str = "layer"
    normalization: str | None = None
    granularity: str = "weight"
    unit_norm: str = "l1"
    pattern: str | Pattern | None = None
    score_batches: int = SCORE_BATCHES
    batch_size: int = SCORE_BATCH_SIZE
    round_to: int = 1

    def __post_init__(self):
        if isinstance(self.criterion, str):
            object.__setattr__(self, "criterion", check_choice("pruner", self.criterion))
        object.__setattr__(self, "criterion_options", dict(self.criterion_options or {}))
        check_choice("scope", self.scope)
        if self.normalization is not None:
            check_choice("normalization", self.normalization)
        check_choice("granularity", self.granularity)
        check_choice("unit norm", self.unit_norm)
        object.__setattr__(self, "pattern", parse_pattern(self.pattern))
        check_count(self.score_batches, "score batches")
        check_count(self.batch_size, "batch size")
        structured = is_structured(self.granularity)
        if structured and self.scope != "layer":
            raise InputError(f"granularity '{self.granularity}' works with scope 'layer', not '{self.scope}'")
        if check_round_to(self.round_to) != 1 and not structured:
            raise InputError(f"round_to works with granularity neuron, filter or head, not '{self.granularity}'")
        if (self.pattern is not None or isinstance(self.pruner, Method)) and (self.scope != "layer" or structured):
            what = f"pattern {self.pattern}" if self.pattern is not None else f"pruner '{self.pruner.name}'"
            raise InputError(f"{what} works with scope 'layer' and granularity 'weight' only")

    @functools.cached_property
    def pruner(self) -> Criterion | Method:
        """The criterion or method instance (made once, with `criterion_options`)."""
        return get_pruner(self.criterion, **self.criterion_options)


@dataclass(frozen=True)
class RunSettings:
    """How `keras_prune.experiment.run_pruning` prunes and retrains. Validated when made.

    Attributes:
        criterion: registered criterion or method name (an alias such as ``mag``
            becomes the name).
        iterations: schedule steps N; step i prunes to fraction * i / N.
        retrain: retrain after each layer's step.
        epochs: retraining epochs per layer step.
        reload: start every step from the unpruned model (sensitivity analysis).
        lr, momentum: SGD settings for retraining.
        batch_size: images per retraining step (and per scoring batch).
        augment: shift retraining images by up to 2 pixels.
        seed: shuffling seed.
        score_batches: training batches a data-driven criterion scores on.
        granularity: ``weight``, or ``neuron``/``filter`` to prune whole units
            (see `keras_prune.structured`).
        unit_norm: at unit granularity, ``l1`` or ``l2`` reduction of a unit's scores.
        round_to: at unit granularity, keep a multiple of this many units per layer.
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
            accuracy (see `keras_prune.guard.AccuracyGuard`); None: off.
        log_test: also measure the test split after each step (reported only).
        checkpoint_dir: write a checkpoint there after every step that closes
            (`keras_prune.checkpoint`); None: no checkpoints. Only where
            `checkpointable`.
        resume: continue from the checkpoint in `checkpoint_dir`.
        multi_worker: train under MultiWorkerMirroredStrategy (no checkpoints).

    Example:

    ```python
    settings = RunSettings(iterations=10, retrain=True, epochs=1, acc_tradeoff=0.2)
    settings.prune_options.scope  # 'layer'
    ```
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
    round_to: int = 1
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
    multi_worker: bool = False

    def __post_init__(self):
        check_count(self.iterations, "iterations")
        check_epochs(self.epochs)
        options = self.prune_options  # validates the prune step's options
        object.__setattr__(self, "criterion", options.criterion)
        object.__setattr__(self, "pattern", None if options.pattern is None else str(options.pattern))
        check_choice("schedule", self.schedule)
        if self.schedule == "cubic" and not (self.retrain and self.epochs):
            raise InputError("the cubic schedule prunes during retraining: give --retrain and --epochs >= 1")
        if self.schedule == "cubic" and self.reload:
            raise InputError("--reload works with the linear schedule only")
        if (self.resume or self.checkpoint_dir is not None) and not self.checkpointable:
            raise InputError(CHECKPOINT_RULE)
        if self.resume and self.checkpoint_dir is None:
            raise InputError("resuming needs the checkpoint folder (--checkpoint-dir)")
        check_tradeoff(self.acc_tradeoff)

    @property
    def prune_options(self) -> PruneOptions:
        """The options of each prune step of the run: a new `PruneOptions` each time,
        so each run prunes with a pruner instance of its own."""
        return PruneOptions(
            criterion=self.criterion,
            criterion_options=self.criterion_options,
            scope=self.scope,
            normalization=self.normalization,
            granularity=self.granularity,
            unit_norm=self.unit_norm,
            round_to=self.round_to,
            pattern=self.pattern,
            score_batches=self.score_batches,
            batch_size=self.batch_size,
        )

    @property
    def retraining(self) -> bool:
        """Whether the run retrains (``retrain`` with at least one epoch)."""
        return self.retrain and self.epochs > 0

    @property
    def checkpointable(self) -> bool:
        """Whether this run can write checkpoints and resume from them: it retrains,
        with the linear schedule, without `reload`, not under several workers
        (`CHECKPOINT_RULE`)."""
        return self.retraining and not self.reload and self.schedule == "linear" and not self.multi_worker
