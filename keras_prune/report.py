"""Sparsity reports: how many of a model's prunable weights are zero.

Works on wrapped and plain (stripped) models alike: it counts exact zeros in the
weights the forward pass uses (``w * mask * gate`` for wrapped layers). Biases and
other rank-1 weights are not prunable and not counted, as in the original tool.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from keras_prune.api import layer_index
from keras_prune.graph import walk
from keras_prune.wrapper import PruneWrapper, prunable_variables

__all__ = [
    "LayerSparsity",
    "sparsity_report",
    "SparsityReport",
]


@dataclass(frozen=True)
class LayerSparsity:
    """One prunable layer's line of the report.

    Attributes:
        index: 1-based selector index, or None for a layer inside a nested model.
        name: the layer's name (path for nested layers).
        kind: the class name of the layer (of the inner layer for wrapped ones).
        weights: number of prunable weights.
        zeros: how many of them are exactly zero.
    """

    index: int | None
    name: str
    kind: str
    weights: int
    zeros: int

    @property
    def sparsity(self) -> float:
        """Fraction of the layer's prunable weights that are zero."""
        return self.zeros / self.weights if self.weights else 0.0

    @property
    def retained(self) -> float:
        """Fraction of the layer's prunable weights that are non-zero."""
        return 1.0 - self.sparsity


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer sparsity and the totals the original tool printed.

    ``str(report)`` (and so ``print(report)``) is a table, one prunable layer a row,
    and the original's ``Total Compression`` line.

    Attributes:
        layers: one `LayerSparsity` per prunable layer, in the model's order.

    Example:

    ```python
    print(sparsity_report(model))
    #  idx  layer            type                weights      zeros  retained
    #    1  conv1            Conv2D                  150         75    50.00%
    # ...
    # Total Compression: 0.92905541200115 (291,231 of 313,470 weights pruned, 14.10x fewer)
    ```
    """

    layers: tuple[LayerSparsity, ...]

    def __str__(self) -> str:
        name_width = max([16, *(len(row.name) for row in self.layers)])
        kind_width = max([16, *(len(row.kind) for row in self.layers)])
        lines = [
            f"{'idx':>4}  {'layer':<{name_width}} {'type':<{kind_width}} {'weights':>10} {'zeros':>10} {'retained':>9}"
        ]
        for row in self.layers:
            index = "" if row.index is None else str(row.index)
            lines.append(
                f"{index:>4}  {row.name:<{name_width}} {row.kind:<{kind_width}} {row.weights:>10,} "
                f"{row.zeros:>10,} {100 * row.retained:>8.2f}%"
            )
        lines.append(
            f"Total Compression: {self.total_compression:.14g} "
            f"({self.zeros:,} of {self.weights:,} weights pruned, {self.ratio:.2f}x fewer)"
        )
        return "\n".join(lines)

    @property
    def weights(self) -> int:
        """All prunable weights of the model."""
        return sum(l.weights for l in self.layers)

    @property
    def zeros(self) -> int:
        """All zero prunable weights of the model."""
        return sum(l.zeros for l in self.layers)

    @property
    def total_compression(self) -> float:
        """Pruned / all prunable weights: the original's "Total Compression" (0..1)."""
        return self.zeros / self.weights if self.weights else 0.0

    @property
    def ratio(self) -> float:
        """All prunable weights / non-zero ones: the "Nx fewer weights" figure."""
        nonzero = self.weights - self.zeros
        return self.weights / nonzero if nonzero else float("inf")


def _layer_weights(layer: keras.layers.Layer) -> tuple[str, list[np.ndarray]]:
    if isinstance(layer, PruneWrapper):
        return type(layer.layer).__name__, layer.effective_weights()
    return type(layer).__name__, [keras.ops.convert_to_numpy(v) for v in prunable_variables(layer)]


def sparsity_report(model: keras.Model) -> SparsityReport:
    """The sparsity of every prunable layer of `model`, nested models included."""
    rows = []
    for path, layer in walk(model):
        if isinstance(layer, keras.Model):
            continue
        kind, weights = _layer_weights(layer)
        if not weights:
            continue
        rows.append(
            LayerSparsity(
                index=layer_index(model, layer),
                name=path,
                kind=kind,
                weights=int(sum(w.size for w in weights)),
                zeros=int(sum(np.count_nonzero(w == 0) for w in weights)),
            )
        )
    return SparsityReport(tuple(rows))
