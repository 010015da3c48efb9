"""Sparsity reports: how many of a model's prunable weights are zero.

Works on wrapped and plain (stripped) models alike: it counts exact zeros in the
weights the forward pass uses (``w * mask * gate`` for wrapped layers). Biases and
other rank-1 weights are not prunable and not counted, as in the original tool.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from keras_prune.api import walk_layers, layer_index
from keras_prune.wrapper import PruneWrapper, prunable_variables


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
    """Per-layer sparsity and the totals the original tool printed."""

    layers: tuple[LayerSparsity, ...]

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
    for path, layer in walk_layers(model):
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
