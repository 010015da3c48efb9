"""Per-layer sensitivity: how accuracy falls as each layer alone is pruned further.

For each chosen layer, on its own, `sensitivity` runs the `--reload` schedule of
`keras_prune.experiment.run_pruning`: step i of N starts again from the trained model
and prunes only that layer to ``fraction * i / N`` (optionally retraining), then
measures validation loss and error. The curves (Han et al. 2015, figure 5) show which
layers tolerate pruning and guide the fractions of a conf file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import keras

from keras_prune.api import Selector, find_layers, has_prunable_weights, layer_index, top_layers
from keras_prune.data import Dataset
from keras_prune.errors import InputError
from keras_prune.experiment import run_pruning
from keras_prune.plan import Plan
from keras_prune.results import StepResult
from keras_prune.selection import check_fraction
from keras_prune.settings import RunSettings
from keras_prune.training import Evaluation, check_input_shape, evaluate


@dataclass(frozen=True)
class SensitivityResult:
    """The outcome of a sensitivity sweep.

    Attributes:
        baseline: validation loss and error of the unpruned model.
        results: for each layer, in sweep order, a step-0 row for the unpruned model
            (fraction 0, everything retained) followed by one row per step.
    """

    baseline: Evaluation
    results: tuple[StepResult, ...]

    def curve(self, layer: str) -> list[tuple[float, float]]:
        """(fraction pruned, validation error %) points of one layer, step 0 first."""
        return [(r.fraction, r.validation.error) for r in self.results if r.layer == layer]


def default_layers(model: keras.Model) -> list[int]:
    """1-based indices of the model's top-level layers that have prunable weights."""
    return [i for i, layer in enumerate(top_layers(model), start=1) if has_prunable_weights(layer)]


def sensitivity(
    model: keras.Model,
    data: Dataset,
    layers: Sequence[Selector] | None = None,
    steps: int = 9,
    fraction: float | Sequence[float] = 0.9,
    settings: RunSettings = RunSettings(),
    on_step: Callable[[StepResult], None] | None = None,
    strategy: Any = None,
) -> SensitivityResult:
    """Sweeps each layer alone from 0 to `fraction` pruned in `steps` one-shot steps.

    Args:
        model: the trained model; it is not modified.
        data: the dataset (decisions and curves use its validation split; the test
            split is measured only with ``settings.log_test``).
        layers: selectors of the layers to sweep; None: every prunable top-level layer.
        steps: points per layer (besides the unpruned model).
        fraction: the largest fraction, reached at the last step: one for every
            layer, or one per layer of `layers`.
        settings: criterion and retraining settings (`iterations` and `reload` are
            set here: ``steps`` and True).
        on_step: called with each row as it is measured (step-0 rows included).
        strategy: the tf.distribute strategy to retrain under; None: the current one.

    Returns:
        The baseline and the rows of every layer.

    Example:

    ```python
    result = sensitivity(model, load_dataset(), layers=[1, 4, 8], steps=5)
    print(result.curve("conv1"))  # [(0.0, 0.5), (0.18, 0.52), ...]
    ```
    """
    check_input_shape(model, data)
    selectors = list(layers) if layers is not None else default_layers(model)
    fractions = [check_fraction(f) for f in (fraction if isinstance(fraction, Sequence) else [fraction] * len(selectors))]
    if len(fractions) != len(selectors):
        raise InputError(f"{len(selectors)} layers but {len(fractions)} fractions: give one fraction, or one per layer")
    chosen = find_layers(model, selectors)
    sweep = dataclasses.replace(settings, iterations=steps, reload=True, acc_tradeoff=None)
    baseline = evaluate(model, data.validation())
    baseline_test = evaluate(model, data.test()) if settings.log_test else None
    results: list[StepResult] = []

    def record(result: StepResult) -> None:
        results.append(result)
        if on_step is not None:
            on_step(result)

    for selector, layer, top in zip(selectors, chosen, fractions):
        record(
            StepResult(
                step=0,
                index=layer_index(model, layer),
                layer=layer.name,
                fraction=0.0,
                retained=1.0,
                validation=baseline,
                test=baseline_test,
                seconds=0.0,
                cost=0.0,
            )
        )
        run_pruning(model, Plan((selector,), (top,)), data, sweep, on_step=record, strategy=strategy)
    return SensitivityResult(baseline, tuple(results))
