"""The public entry points: `prunable`, `prune`, `strip` and layer lookup.

Layers are chosen by *selector*: a 1-based index into the model's top-level layers
(input layers not counted, so the original tool's LeNet-5 indices 1, 4, 8, 10, 12
name its weight layers), or a layer name. A name may name a layer inside a nested
model, directly (``"fc1"``) or by path (``"encoder/fc1"``); a bare name that layers
of several nested models share is refused, with their paths to choose from.
"""

from __future__ import annotations

import re

from typing import Any, Iterable, Mapping, Sequence, Union

import keras

from keras_prune.criteria import Criterion
from keras_prune.criteria.objective import SCORE_BATCH_SIZE, SCORE_BATCHES, fixed_batches
from keras_prune.errors import InputError
from keras_prune.graph import check_graph_model, rebuild, top_layers, walk
from keras_prune.methods import Method, kernel_view
from keras_prune.selection import Pattern, check_fraction, select_global, select_layer, select_matrix
from keras_prune.settings import PruneOptions
from keras_prune.structured import is_structured, prune_units
from keras_prune.wrapper import PruneWrapper, copy_layer, prunable_variables, strip_layer

__all__ = [
    "find_layers",
    "has_prunable_weights",
    "layer_index",
    "prunable",
    "prune",
    "Selector",
    "strip",
    "wrapped_layers",
]

Selector = Union[int, str]


def has_prunable_weights(layer: keras.layers.Layer) -> bool:
    """Whether the layer (or, for a nested model, any layer in it) can be pruned."""
    if isinstance(layer, PruneWrapper):
        return True
    if isinstance(layer, keras.Model):
        return any(has_prunable_weights(inner) for inner in top_layers(layer))
    return bool(prunable_variables(layer))


def layer_index(model: keras.Model, layer: keras.layers.Layer) -> int | None:
    """The 1-based selector index of a top-level layer, or None for a nested one."""
    for i, candidate in enumerate(top_layers(model), start=1):
        if candidate is layer:
            return i
    return None


def _prunable_summary(model: keras.Model) -> str:
    entries = [
        f"{i} {layer.name}"
        for i, layer in enumerate(top_layers(model), start=1)
        if has_prunable_weights(layer)
    ]
    return ", ".join(entries) or "none"


def _layer_named(model: keras.Model, by_path: Mapping[str, keras.layers.Layer], text: str) -> keras.layers.Layer:
    """The layer whose path is `text` or, failing that, the one layer named `text`."""
    if text in by_path:
        return by_path[text]
    paths: dict[int, list[str]] = {}
    for path, layer in by_path.items():
        if layer.name == text:
            paths.setdefault(id(layer), []).append(path)
    if not paths:
        raise InputError(f"no layer named '{text}' in '{model.name}' (prunable: {_prunable_summary(model)})")
    if len(paths) > 1:
        candidates = ", ".join(found[0] for found in paths.values())
        raise InputError(
            f"layer name '{text}' is ambiguous in '{model.name}': {len(paths)} layers have it "
            f"({candidates}); give the path of the one you mean"
        )
    (found,) = paths.values()
    return by_path[found[0]]


def find_layers(model: keras.Model, selectors: Iterable[Selector]) -> list[keras.layers.Layer]:
    """The layers named by `selectors`, in the order given.

    Args:
        model: a Sequential or Functional model.
        selectors: 1-based indices (ints or digit strings) or layer names/paths. A
            path (``"encoder/fc1"``) names one layer; a bare name (``"fc1"``) must
            belong to a single layer of the model, nested models included.

    Returns:
        The layers, in the order of `selectors`.

    Raises:
        InputError: an index out of range, an unknown name, a name that several
            nested layers share (the message lists their paths), a duplicate, or a
            layer without prunable weights.

    Example:

    ```python
    conv1, fc1 = find_layers(model, [1, "fc1"])
    ```
    """
    layers = top_layers(model)
    by_path = dict(walk(model))
    chosen: list[keras.layers.Layer] = []
    for selector in selectors:
        text = str(selector).strip()
        if re.fullmatch(r"-?\d+", text):
            index = int(text)
            if not 1 <= index <= len(layers):
                raise InputError(
                    f"layer index {index} is out of range: '{model.name}' has layers "
                    f"1..{len(layers)} (prunable: {_prunable_summary(model)})"
                )
            layer = layers[index - 1]
        else:
            layer = _layer_named(model, by_path, text)
        if not has_prunable_weights(layer):
            raise InputError(
                f"layer '{text}' ({layer.name}, {type(layer).__name__}) has no prunable "
                f"weights (prunable: {_prunable_summary(model)})"
            )
        if any(layer is c for c in chosen):
            raise InputError(f"layer '{text}' ({layer.name}) is chosen more than once")
        chosen.append(layer)
    return chosen


def wrapped_layers(model: keras.Model) -> list[PruneWrapper]:
    """Every `PruneWrapper` in the model, nested models included, in layer order."""
    return [layer for _, layer in walk(model) if isinstance(layer, PruneWrapper)]


def prunable(
    model: keras.Model, layers: Sequence[Selector] | None = None, gated: bool = False
) -> keras.Model:
    """A copy of `model` whose chosen layers are wrapped in `PruneWrapper`.

    The copy has the same weights (and the masks of layers that were already
    wrapped); the original model is left untouched. Like any clone it is not
    compiled: compile it before `fit`.

    Args:
        model: a Sequential or Functional model, nested models included.
        layers: selectors (1-based indices or names) of the layers to wrap; a
            selector naming a nested model wraps every prunable layer inside it.
            None wraps every layer that has prunable weights.
        gated: give the new wrappers gates as well as masks (see `PruneWrapper`);
            layers that were already wrapped keep what they had.

    Returns:
        The new model, same class, with the wrappers.

    Raises:
        ModelError: `model` is a subclassed model.
        InputError: a selector is invalid (see `find_layers`).

    Example:

    ```python
    model = keras_prune.prunable(keras_prune.models.lenet5(), layers=[1, 4, "fc1"])
    ```
    """
    check_graph_model(model)
    if layers is None:
        targets = None
    else:
        targets = set()
        for layer in find_layers(model, layers):
            nested = [l for _, l in walk(layer)] if isinstance(layer, keras.Model) else []
            targets.update(id(l) for l in [layer, *nested])

    def wrap(layer):
        new = copy_layer(layer)
        chosen = targets is None or id(layer) in targets
        if not chosen or isinstance(layer, PruneWrapper) or not prunable_variables(layer):
            return new
        wrapper = PruneWrapper(new, gated=gated)
        if new.built:
            wrapper.build_from_config(new.get_build_config())
        return wrapper

    return rebuild(model, wrap)


def strip(model: keras.Model) -> keras.Model:
    """A plain Keras model with no keras_prune classes: each wrapper replaced by its
    inner layer, holding ``w * mask`` (times the gate, if gated; pruned weights
    exactly 0.0).

    The result computes the same outputs as `model`.
    """
    return rebuild(model, strip_layer)


def prune(
    model: keras.Model,
    fractions: Mapping[Selector, float],
    criterion: str | Criterion | Method = "magnitude",
    data: Any = None,
    scope: str = "layer",
    normalization: str | None = None,
    criterion_options: Mapping[str, Any] | None = None,
    granularity: str = "weight",
    unit_norm: str = "l1",
    score_batches: int = SCORE_BATCHES,
    batch_size: int = SCORE_BATCH_SIZE,
    pattern: str | Pattern | None = None,
    round_to: int = 1,
) -> dict[PruneWrapper, float]:
    """Prunes the chosen layers to their fractions, ranking weights with a criterion
    (or pruning them with a method such as ``sparsegpt``, which also updates the
    kept weights; see `keras_prune.methods`).

    Args:
        model: a model made by `prunable` (the chosen layers must be wrapped).
        fractions: selector -> cumulative fraction of that layer's weights to prune; a
            selector naming a nested model gives its fraction to every wrapped layer in it.
        criterion: a registered criterion or method name, or an instance of either.
        data: training data for criteria that need it, calibration data for methods
            (never the test split): a tf.data.Dataset (batched or not, finite or
            infinite), an ``(x, y)`` pair of arrays, a `keras.utils.PyDataset`, or a
            generator or list of ``(x, y)`` batches
            (`keras_prune.criteria.objective.fixed_batches`).
        scope: ``"layer"``: each layer loses exactly its fraction of its weights;
            ``"global"``: the layers together lose as many weights as their
            fractions add up to, wherever the (normalised) scores are lowest.
        normalization: for global scope, how each layer's scores are rescaled
            (`keras_prune.selection.NORMALIZATIONS`); None uses the criterion's
            own (``"none"`` for loss-change criteria, ``"mean"`` for magnitude).
        criterion_options: constructor options when `criterion` is a name, such
            as ``{"probes": 8}`` for taylor2.
        granularity: ``weight`` prunes single weights; ``neuron`` or ``filter``
            prunes whole output units of Dense/Conv layers (layer scope only), and
            with them the units coupled to them in other wrapped layers; ``head``
            prunes whole heads of MultiHeadAttention layers (see
            `keras_prune.structured`).
        unit_norm: at unit granularity, ``l1`` (sum) or ``l2`` reduction of each
            unit's weight scores.
        score_batches: the most batches of `data` read and scored on (the CLI's
            ``--score-batches`` default is the same, 20).
        batch_size: images per batch when `data` is arrays or single samples.
        pattern: ``"N:M"`` (at most N kept in each M consecutive inputs) or
            ``"RxC"`` blocks, per kernel seen as an (inputs, outputs) matrix (see
            `keras_prune.selection.Pattern` for how it meets the fraction); layer
            scope and weight granularity only.
        round_to: at unit or head granularity, each chosen layer keeps a multiple
            of this many units (e.g. 8 or 16, for hardware-friendly shapes; see
            `keras_prune.structured.units_to_prune`); 1: no rounding.

    Returns:
        The sparsity of each pruned layer afterwards (coupled layers included).

    Raises:
        InputError: a bad selector, fraction, scope, normalization or option, an
            unwrapped layer, or a criterion that needs data and got none, or data
            in a form it cannot read.

    Example:

    ```python
    keras_prune.prune(model, {"conv2": 0.7, "fc1": 0.95}, "taylor12",
                      data=(x_train, y_train), scope="global")
    ```
    """
    options = PruneOptions(
        criterion=criterion,
        criterion_options=criterion_options or {},
        scope=scope,
        normalization=normalization,
        granularity=granularity,
        unit_norm=unit_norm,
        pattern=pattern,
        score_batches=score_batches,
        batch_size=batch_size,
        round_to=round_to,
    )
    return prune_with(model, fractions, options, data)


def prune_with(
    model: keras.Model, fractions: Mapping[Selector, float], options: PruneOptions, data: Any = None
) -> dict[PruneWrapper, float]:
    """`prune` with its options given as one `keras_prune.settings.PruneOptions`,
    checked when it was made (`IterativePruning` makes it once and prunes with it at
    every event).

    Args:
        model: a model made by `prunable`.
        fractions: selector -> cumulative fraction, as `prune` takes them.
        options: pruner, scope, granularity, pattern and the other options of `prune`.
        data: as `prune` takes it.

    Returns:
        The sparsity of each pruned layer afterwards (coupled layers included).

    Raises:
        InputError: a bad selector or fraction, an unwrapped layer, or data the
            pruner needs and did not get.

    Example:

    ```python
    options = PruneOptions("taylor1", scope="global")
    keras_prune.api.prune_with(model, {"conv2": 0.7, "fc1": 0.95}, options, data=(x, y))
    ```
    """
    criterion, pattern, scope = options.pruner, options.pattern, options.scope
    layers = find_layers(model, list(fractions))
    checked = {}
    for layer, fraction in zip(layers, fractions.values()):
        fraction = check_fraction(fraction, f"fraction for layer '{layer.name}'")
        # A nested model stands for every wrapped layer inside it, as in `prunable`.
        targets = wrapped_layers(layer) if isinstance(layer, keras.Model) else [layer]
        if not targets or not isinstance(targets[0], PruneWrapper):
            raise InputError(
                f"layer '{layer.name}' is not wrapped; call keras_prune.prunable(model) first"
            )
        checked.update((target, fraction) for target in targets)
    if criterion.needs_data:
        data = fixed_batches(data, criterion.name, model, options.score_batches, options.batch_size)
    if is_structured(options.granularity):
        pruned = prune_units(model, checked, criterion, data, options.unit_norm, options.granularity, options.round_to)
        return {layer: layer.sparsity() for layer in pruned}
    if isinstance(criterion, Method):
        in_order = {layer: checked[layer] for layer in wrapped_layers(model) if layer in checked}
        criterion.prune(model, in_order, data, pattern)
        return {layer: layer.sparsity() for layer in checked}
    scores = criterion.score(list(checked), model=model, data=data)
    if pattern is not None:
        for layer, fraction in checked.items():
            layer.set_mask(_select_pattern(layer, scores[layer], fraction, pattern))
    elif scope == "global":
        new_masks = select_global(
            [scores[layer] for layer in checked],
            [layer.mask_arrays() for layer in checked],
            list(checked.values()),
            options.normalization or criterion.normalization,
        )
        for layer, masks in zip(checked, new_masks):
            layer.set_mask(masks)
    else:
        for layer, fraction in checked.items():
            layer.set_mask(select_layer(scores[layer], layer.mask_arrays(), fraction))
    return {layer: layer.sparsity() for layer in checked}


def _select_pattern(
    layer: PruneWrapper, scores: Sequence, fraction: float, pattern: Pattern
) -> list:
    """One layer's masks under `pattern`, each variable seen as an (inputs, outputs) matrix."""
    masks = []
    for variable, score, mask in zip(layer.pruned_variables, scores, layer.mask_arrays()):
        view = kernel_view(layer.layer, variable)
        masks.append(view.kernel(select_matrix(view.matrix(score), view.matrix(mask), fraction, pattern)))
    return masks
