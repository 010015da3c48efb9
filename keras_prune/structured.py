"""Structured selection: prune whole output units (Dense neurons, convolution filters)
or whole attention heads.

A *unit* is one output of a Dense or convolution layer: the last axis of its kernel.
At ``weight`` granularity selection picks single weights (`keras_prune.selection`);
at ``neuron`` or ``filter`` granularity it picks whole units: the unit's per-weight
scores from any criterion are reduced to one score per unit, and a pruned unit gets
its whole kernel slice masked. ``neuron`` and ``filter`` are the same granularity,
named for the layers it applies to; either may be given for any Dense or Conv layer.
A depthwise convolution's unit is a channel: its kernel slice, coupled to the unit
that feeds the channel (`keras_prune.graph.is_channel_layer`).
At ``head`` granularity a unit is one head of a MultiHeadAttention layer: its slices of
the query, key, value and output kernels (`keras_prune.handlers.MultiHeadAttentionHandler`).
An Embedding's unit is a row (one token's vector); pruned rows are masked, and `shrink`
keeps the table's size (its rows are indexed by token).

A unit's score is the ``l1`` reduction (sum) of its weights' scores by default: with
the magnitude criterion that is the unit's L1 norm, with a Taylor criterion the sum of
its weights' Taylor terms, with gate criteria the sum of its weights' gate scores.
``l2`` takes the square root of the sum of squares (the L2 norm with magnitude).

A layer's `fraction` is the cumulative share of its units pruned: ``floor(U *
fraction)`` units, which is the same share of its kernel's weights. A unit already
fully masked stays pruned; kept units keep any weight-level masks they already have.

Coupled units are pruned together. Units that an element-wise merge (say the Add of a
residual block) joins must leave together or not at all, so the model's graph is read
(`keras_prune.graph.coupled_units`) and every wrapped layer holding units coupled to
a pruned layer's units loses the same units, ranked by their summed scores.

Only kernels are masked: the bias of a pruned unit stays, so the unit outputs a
constant (``activation(bias)``). `keras_prune.shrink` folds that constant into the
layers that consume it, so the shrunk model computes exactly what the masked one does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Iterable, Mapping, Sequence, TypeVar

import keras
import numpy as np

from keras_prune.criteria import Criterion
from keras_prune.errors import InputError
from keras_prune.selection import pruned_target
from keras_prune.graph import coupled_units, is_channel_layer, is_unit_layer
from keras_prune.handlers import Units, layer_units
from keras_prune.unfolding import is_transformer_block
from keras_prune.wrapper import PruneWrapper, inner_layer

__all__ = [
    "check_granularity",
    "check_unit_layer",
    "check_unit_norm",
    "GRANULARITIES",
    "is_structured",
    "prune_units",
    "pruned_units",
    "select_coupled_units",
    "select_units",
    "UNIT_NORMS",
    "unit_scores",
]

Key = TypeVar("Key", bound=Hashable)

GRANULARITIES = ("weight", "neuron", "filter", "head")
"""What selection removes: single weights, whole units (``neuron`` = ``filter``), or
whole attention heads of MultiHeadAttention layers (``head``)."""

UNIT_NORMS = ("l1", "l2")
"""How a unit's per-weight scores become one score: their sum, or their L2 norm."""


def check_granularity(granularity: str) -> str:
    """Returns `granularity` if it is one of `GRANULARITIES`.

    Raises:
        InputError: any other value.
    """
    if granularity not in GRANULARITIES:
        raise InputError(
            f"unknown granularity '{granularity}'; choose one of: {', '.join(GRANULARITIES)}"
        )
    return granularity


def is_structured(granularity: str) -> bool:
    """Whether `granularity` prunes whole units (``neuron``, ``filter`` or ``head``)."""
    return check_granularity(granularity) != "weight"


def check_unit_norm(norm: str) -> str:
    """Returns `norm` if it is one of `UNIT_NORMS`.

    Raises:
        InputError: any other value.
    """
    if norm not in UNIT_NORMS:
        raise InputError(f"unknown unit norm '{norm}'; choose one of: {', '.join(UNIT_NORMS)}")
    return norm


def check_round_to(round_to: int) -> int:
    """Returns `round_to` if it is a whole number >= 1.

    Raises:
        InputError: any other value.
    """
    if isinstance(round_to, bool) or not isinstance(round_to, (int, np.integer)) or round_to < 1:
        raise InputError(f"round_to must be a whole number >= 1 (1: no rounding), got {round_to!r}")
    return int(round_to)


def units_to_prune(units: int, fraction: float, already: int = 0, round_to: int = 1) -> int:
    """How many of a layer's units selection prunes.

    ``floor(units * fraction)``, or `already` if more are pruned already. With
    ``round_to`` k > 1 the count kept is a multiple of k: the multiple nearest to what
    the fraction keeps (ties: the larger), at least k and at most the units not yet
    pruned; a layer the fraction leaves whole stays whole, and one with fewer than k
    units left loses no more.

    Args:
        units: the layer's number of units.
        fraction: the cumulative fraction of them to prune.
        already: units pruned already (they stay pruned).
        round_to: keep a multiple of this many units (1: no rounding).

    Returns:
        The number of units pruned afterwards.

    Example:

    ```python
    units_to_prune(120, 0.5)               # 60
    units_to_prune(120, 0.5, round_to=16)  # 56: 64 kept
    ```
    """
    pruned = max(pruned_target(units, fraction), already)
    kept, most = units - pruned, units - already
    if check_round_to(round_to) == 1 or kept in (0, units) or most < round_to:
        return pruned
    nearest = int(np.floor(kept / round_to + 0.5)) * round_to
    return units - min(max(round_to, nearest), most // round_to * round_to)


def check_unit_layer(layer: keras.layers.Layer, granularity: str = "neuron") -> None:
    """Raises InputError unless `layer` is a wrapper whose units of `granularity` can be pruned."""
    inner = inner_layer(layer)
    if granularity == "head":
        if not (isinstance(layer, PruneWrapper) and layer_units(inner, "head") is not None):
            raise InputError(
                f"layer '{layer.name}' ({type(inner).__name__}) has no attention heads; head "
                "granularity applies to wrapped MultiHeadAttention layers and to wrapped "
                "blocks holding exactly one (keras-hub's TransformerEncoder/Decoder). Use "
                "granularity 'neuron' or 'weight' for it."
            )
        return
    if not (
        isinstance(layer, PruneWrapper)
        and (is_unit_layer(layer) or is_channel_layer(layer) or isinstance(inner, keras.layers.Embedding))
    ):
        hint = (
            " For a keras-hub Transformer block's FFN units, unfold the model first "
            "(keras_prune.unfold) and prune its '..._feedforward_intermediate_dense' layer."
            if is_transformer_block(inner)
            else ""
        )
        raise InputError(
            f"layer '{layer.name}' ({type(inner).__name__}) cannot be pruned by units; "
            "neuron/filter granularity applies to wrapped Dense and Conv1D/2D/3D layers "
            "(channels_last, groups=1), DepthwiseConv1D/2D layers (channels_last) and "
            f"Embedding rows. Use granularity 'weight' for it.{hint}"
        )


def unit_scores(scores: Sequence[np.ndarray], norm: str = "l1") -> np.ndarray:
    """One score per output unit from per-weight scores (higher = keep).

    Args:
        scores: per-weight scores of a unit layer's pruned variables; each array's
            last axis is the unit axis (a Dense or Conv kernel).
        norm: ``l1`` sums each unit's scores; ``l2`` takes the root of the sum of
            their squares.

    Returns:
        A float64 array with one score per unit.

    Example:

    ```python
    unit_scores([np.array([[1.0, -2.0], [3.0, 0.5]])])  # array([4. , -1.5])
    ```
    """
    norm = check_unit_norm(norm)
    units = {np.shape(s)[-1] for s in scores}
    if len(units) != 1:
        raise ValueError(f"score arrays disagree on the number of units: {sorted(units)}")
    total = np.zeros(units.pop(), dtype=np.float64)
    for s in scores:
        flat = np.asarray(s, dtype=np.float64).reshape(-1, np.shape(s)[-1])
        total += flat.sum(axis=0) if norm == "l1" else np.square(flat).sum(axis=0)
    if np.isnan(total).any():
        raise ValueError("importance scores contain NaN")
    return total if norm == "l1" else np.sqrt(total)


def pruned_units(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Which units are pruned: those whose weights are masked in every variable.

    Args:
        masks: the masks of a unit layer (last axis = units).

    Returns:
        A boolean array, True for a pruned unit.
    """
    alive = None
    for m in masks:
        unit_alive = np.asarray(m).reshape(-1, np.shape(m)[-1]).any(axis=0)
        alive = unit_alive if alive is None else alive | unit_alive
    return ~alive


def select_coupled_units(
    scores: Mapping[Key, Sequence[np.ndarray]],
    masks: Mapping[Key, Sequence[np.ndarray]],
    classes: Mapping[Key, np.ndarray],
    fractions: Mapping[Key, float],
    norm: str = "l1",
    round_to: int = 1,
) -> dict[Key, list[np.ndarray]]:
    """New masks for unit layers whose units may be coupled across layers.

    Coupled units (equal class ids, e.g. the channels of convolutions joined by an
    Add) are scored and pruned together: a class's score is the sum of its units'
    scores, each layer's unit scores first divided by their mean so that layers of
    different sizes weigh alike. Each layer of `fractions`, in order, gets its
    ``floor(U * fraction)`` lowest-scoring units pruned (already pruned units count
    and stay pruned; with `round_to`, see `units_to_prune`), and every unit coupled
    to a pruned unit is pruned with it, in whichever layer it lies. A layer therefore
    ends with at least the largest fraction given to any layer coupled to it.

    Args:
        scores: per layer, per-weight scores (higher = keep), last axis = units.
        masks: per layer, the current masks, same shapes.
        classes: per layer, one class id per unit.
        fractions: the layers to prune (a subset of the keys) and their fractions.
        norm: how a unit's weight scores are reduced (see `unit_scores`).
        round_to: each layer of `fractions` keeps a multiple of this many units
            (see `units_to_prune`; 1: no rounding).

    Returns:
        New float32 masks for every layer of `masks`.

    Example:

    ```python
    a, b = np.array([[1.0, 5.0, 3.0]]), np.array([[2.0, 1.0, 4.0]])
    new = select_coupled_units(
        {"a": [a], "b": [b]}, {"a": [np.ones((1, 3))], "b": [np.ones((1, 3))]},
        {"a": np.array([0, 1, 2]), "b": np.array([0, 1, 2])}, {"a": 1 / 3},
    )
    # unit 0 is the weakest pair: new["a"] == new["b"] == [array([[0., 1., 1.]])]
    ```
    """
    current = {k: [np.asarray(m, dtype=np.float32) for m in masks[k]] for k in masks}
    class_score: dict[int, float] = defaultdict(float)
    for key in scores:
        per_unit = unit_scores(scores[key], norm)
        mean = np.abs(per_unit).mean()
        for cls, value in zip(classes[key], per_unit / mean if mean > 0 else per_unit):
            class_score[int(cls)] += float(value)
    pruned: set[int] = set()
    for key, fraction in fractions.items():
        ids = np.asarray(classes[key])
        ranked = np.array([class_score[int(c)] for c in ids])
        already = pruned_units(current[key])
        ranked[already] = -np.inf
        k = units_to_prune(ids.size, fraction, int(already.sum()), round_to)
        pruned.update(int(c) for c in ids[np.argsort(ranked, kind="stable")[:k]])
        for other, ids_other in classes.items():
            if other in current:
                keep = ~np.isin(ids_other, list(pruned))
                current[other] = [m * keep for m in current[other]]
    return current


def select_units(
    scores: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    fraction: float,
    norm: str = "l1",
    round_to: int = 1,
) -> list[np.ndarray]:
    """New masks for one unit layer: its ``floor(U * fraction)`` lowest-scoring units pruned.

    Args:
        scores: per-weight scores (higher = keep), shaped like the masks.
        masks: the current masks (last axis = units; 0 = already pruned).
        fraction: cumulative fraction of the layer's U units to prune, in [0, 1].
        norm: how a unit's weight scores are reduced (see `unit_scores`).
        round_to: keep a multiple of this many units (see `units_to_prune`).

    Returns:
        Masks (float32) with every weight of a pruned unit at 0. Units already fully
        masked stay pruned (so more than ``floor(U * fraction)`` may be); kept units
        keep their existing weight-level masks.

    Example:

    ```python
    kernel_scores = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]])
    select_units([kernel_scores], [np.ones((2, 3))], 1 / 3)
    # [array([[1., 0., 1.], [1., 0., 1.]], dtype=float32)]
    ```
    """
    if len(scores) != len(masks):
        raise ValueError(f"got {len(scores)} score arrays for {len(masks)} masks")
    units = np.arange(np.shape(masks[0])[-1])
    return select_coupled_units({0: scores}, {0: masks}, {0: units}, {0: fraction}, norm, round_to)[0]


def prune_units(
    model: keras.Model,
    fractions: Mapping[PruneWrapper, float],
    criterion: Criterion,
    data: Iterable | None = None,
    norm: str = "l1",
    granularity: str = "neuron",
    round_to: int = 1,
) -> list[PruneWrapper]:
    """Prunes whole units of wrapped layers: Dense neurons and Conv filters, coupled
    units together, or the attention heads of MultiHeadAttention layers.

    At ``neuron``/``filter`` granularity the model's graph decides which units are
    coupled (`keras_prune.graph.coupled_units`); every wrapped layer holding units
    coupled to a chosen layer is scored with it and loses the coupled units too (see
    `select_coupled_units`). At ``head`` granularity a unit is one head: its slices of
    the query, key, value and output kernels (see `keras_prune.handlers.Units`); heads
    are coupled to nothing outside their layer.

    Args:
        model: a model made by `keras_prune.prunable`.
        fractions: the wrapped layers to prune and their cumulative unit fractions.
        criterion: scores the weights; unit scores reduce them with `norm`.
        data: training batches for criteria that need them.
        norm: ``l1`` or ``l2`` (see `unit_scores`).
        granularity: ``neuron``, ``filter`` or ``head``.
        round_to: each layer of `fractions` keeps a multiple of this many units or
            heads (see `units_to_prune`; 1: no rounding).

    Returns:
        The layers whose masks were set: the chosen ones and their coupled partners.

    Raises:
        InputError: a chosen layer has no units of that granularity, or `norm` is unknown.

    Example:

    ```python
    prune_units(model, {model.get_layer("conv2"): 0.75}, get_criterion("magnitude"))
    ```
    """
    check_unit_norm(norm)
    check_round_to(round_to)
    for layer in fractions:
        check_unit_layer(layer, granularity)
    graph_classes = {} if granularity == "head" else coupled_units(model)
    next_id = 1 + max((int(ids.max()) for ids in graph_classes.values() if ids.size), default=0)
    classes: dict[PruneWrapper, np.ndarray] = {}
    for layer in fractions:
        if layer in graph_classes:
            classes[layer] = graph_classes[layer]
        else:  # heads, or a unit layer called twice (or in a nested model called twice): coupled to none
            units = _units(layer, granularity).count
            classes[layer] = np.arange(next_id, next_id + units)
            next_id += units
    chosen = {int(c) for ids in classes.values() for c in ids}
    for layer, ids in graph_classes.items():
        if isinstance(layer, PruneWrapper) and layer not in classes and chosen & set(ids.tolist()):
            classes[layer] = ids
    layers = list(classes)
    scores = criterion.score(layers, model=model, data=data)
    views = {layer: _UnitView(layer, _units(layer, granularity)) for layer in layers}
    new = select_coupled_units(
        {layer: views[layer].along_units(scores[layer]) for layer in layers},
        {layer: views[layer].along_units(layer.mask_arrays()) for layer in layers},
        classes,
        dict(fractions),
        norm,
        round_to,
    )
    for layer in layers:
        layer.set_mask(views[layer].back(layer.mask_arrays(), new[layer]))
    return layers


def _units(layer: PruneWrapper, granularity: str) -> Units:
    return layer_units(layer.layer, "head" if granularity == "head" else "neuron")


class _UnitView:
    """A layer's unit-holding variables with their unit axis moved last, and back."""

    def __init__(self, layer: PruneWrapper, units: Units):
        targets = layer.pruned_variables
        self.indices = [next(i for i, t in enumerate(targets) if t is v) for v in units.variables]
        self.axes = units.axes

    def along_units(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [np.moveaxis(np.asarray(arrays[i]), a, -1) for i, a in zip(self.indices, self.axes)]

    def back(self, masks: Sequence[np.ndarray], moved: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = [np.asarray(m, dtype=np.float32) for m in masks]
        for i, a, m in zip(self.indices, self.axes, moved):
            out[i] = np.moveaxis(m, -1, a)
        return out
