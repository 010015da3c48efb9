"""Selection: which weights to drop, given importance scores and a target fraction.

Pure numpy, no Keras. Scores are "higher = keep". A layer's `fraction` is the
cumulative share of *all* its prunable weights that ends up pruned, already-pruned
weights included (the original tool's semantics): exactly ``floor(N * fraction)``
weights are pruned, ties broken by position so the count is exact, and a weight that
is already pruned stays pruned.

Two scopes:

- `select_layer`: each layer loses its own lowest-scoring ``floor(N * fraction)``.
- `select_global`: the layers together lose as many weights as the per-layer
  fractions add up to, taken wherever the scores are lowest, after each layer's
  scores are rescaled by `normalize_scores` when their scale differs between layers.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from keras_prune.errors import InputError

NORMALIZATIONS = ("none", "mean", "l2")
"""Per-layer score normalisations for global selection (see `normalize_scores`)."""

SCOPES = ("layer", "global")
"""Selection scopes: each layer on its own, or all chosen layers together."""


def check_fraction(fraction: float, what: str = "fraction") -> float:
    """Returns `fraction` as a float if it lies in [0, 1].

    Raises:
        InputError: it is not a number or lies outside [0, 1].
    """
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number in [0, 1], got {fraction!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise InputError(f"{what} must be in [0, 1], got {fraction}")
    return value


def pruned_target(count: int, fraction: float) -> int:
    """``floor(count * fraction)``, robust to binary round-off (0.7 * 14400 is 10080)."""
    return int(math.floor(count * check_fraction(fraction) + 1e-9))


def select_layer(
    scores: Sequence[np.ndarray], masks: Sequence[np.ndarray], fraction: float
) -> list[np.ndarray]:
    """New masks for one layer: its `floor(N * fraction)` lowest-scoring weights pruned.

    Args:
        scores: one score array per prunable variable of the layer (higher = keep).
        masks: the current masks, same shapes (0 = already pruned).
        fraction: cumulative fraction of the layer's N weights to prune, in [0, 1].

    Returns:
        Masks (float32 0/1 arrays) shaped like `scores`. Already-pruned weights stay
        pruned, so if more than ``floor(N * fraction)`` are pruned already, the masks
        are returned unchanged.

    Example:

    ```python
    select_layer([np.array([3.0, 1.0, 2.0, 4.0])], [np.ones(4)], 0.5)
    # [array([1., 0., 0., 1.], dtype=float32)]
    ```
    """
    if len(scores) != len(masks):
        raise ValueError(f"got {len(scores)} score arrays for {len(masks)} masks")
    flat_scores = _flatten(scores)
    new_flat = _prune_lowest(flat_scores, _flatten(masks), pruned_target(flat_scores.size, fraction))
    return _unflatten(new_flat, scores)


def _prune_lowest(flat_scores: np.ndarray, flat_masks: np.ndarray, target: int) -> np.ndarray:
    """A flat float32 mask with the `target` lowest scores (and every pruned weight) at 0."""
    if np.isnan(flat_scores).any():
        raise ValueError("importance scores contain NaN")
    flat_scores = flat_scores.copy()
    already = flat_masks == 0
    flat_scores[already] = -np.inf
    k = max(target, int(already.sum()))
    new_flat = np.ones(flat_scores.size, dtype=np.float32)
    new_flat[np.argsort(flat_scores, kind="stable")[:k]] = 0.0
    return new_flat


def _flatten(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.ravel(a).astype(np.float64) for a in arrays])


def _unflatten(flat: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    out, start = [], 0
    for a in like:
        size = int(np.size(a))
        out.append(flat[start : start + size].reshape(np.shape(a)))
        start += size
    return out


def normalize_scores(
    scores: Sequence[np.ndarray], masks: Sequence[np.ndarray], normalization: str
) -> list[np.ndarray]:
    """One layer's scores rescaled so that layers can be compared.

    Args:
        scores: the layer's score arrays (higher = keep).
        masks: its current masks; already-pruned weights do not count in the scale.
        normalization: ``"none"`` (unchanged: for scores in the same units in every
            layer, such as a loss change), ``"mean"`` (divided by the mean absolute
            score of the layer's unpruned weights, so every layer's typical score is
            1) or ``"l2"`` (divided by the L2 norm of those scores, as Molchanov et
            al. 2017 do; larger layers then get smaller scores and lose more).

    Returns:
        The rescaled arrays (float64). A layer whose scale is 0 is left unchanged.

    Example:

    ```python
    normalize_scores([np.array([1.0, 3.0])], [np.ones(2)], "mean")
    # [array([0.5, 1.5])]
    ```
    """
    if normalization not in NORMALIZATIONS:
        raise InputError(
            f"unknown normalization '{normalization}'; choose one of: {', '.join(NORMALIZATIONS)}"
        )
    flat = _flatten(scores)
    if normalization == "none":
        return _unflatten(flat, scores)
    kept = np.abs(flat[_flatten(masks) != 0])
    if normalization == "mean":
        scale = kept.mean() if kept.size else 0.0
    else:
        scale = float(np.sqrt(np.sum(kept**2)))
    return _unflatten(flat / scale if scale > 0 else flat, scores)


def select_global(
    scores: Sequence[Sequence[np.ndarray]],
    masks: Sequence[Sequence[np.ndarray]],
    fractions: float | Sequence[float],
    normalization: str = "none",
) -> list[list[np.ndarray]]:
    """New masks for several layers chosen together: the lowest scores anywhere go.

    Args:
        scores: per layer, one score array per prunable variable (higher = keep).
        masks: per layer, the current masks (0 = already pruned).
        fractions: one fraction for all layers together (``floor(N_total *
            fraction)`` weights pruned), or one per layer (as many weights pruned in
            total as per-layer selection would, ``sum floor(N_l * fraction_l)``,
            wherever the scores are lowest).
        normalization: how each layer's scores are rescaled first (see
            `normalize_scores`).

    Returns:
        Per layer, masks (float32 0/1) shaped like its scores. Already-pruned
        weights stay pruned and count toward the total.

    Example:

    ```python
    select_global([[np.array([1.0, 2.0])], [np.array([0.5, 3.0])]],
                  [[np.ones(2)], [np.ones(2)]], 0.5)
    # [[array([0., 1.], dtype=float32)], [array([0., 1.], dtype=float32)]]
    ```
    """
    if len(scores) != len(masks):
        raise ValueError(f"got scores for {len(scores)} layers and masks for {len(masks)}")
    sizes = [int(sum(np.size(s) for s in layer)) for layer in scores]
    if np.ndim(fractions) == 0:
        target = pruned_target(sum(sizes), fractions)
    else:
        if len(fractions) != len(scores):
            raise ValueError(f"got {len(fractions)} fractions for {len(scores)} layers")
        target = sum(pruned_target(size, f) for size, f in zip(sizes, fractions))
    normalized = [
        _flatten(normalize_scores(s, m, normalization)) for s, m in zip(scores, masks)
    ]
    flat_scores = np.concatenate(normalized)
    flat_masks = np.concatenate([_flatten(m) for m in masks])
    chosen = _prune_lowest(flat_scores, flat_masks, target)
    out, start = [], 0
    for layer_scores, size in zip(scores, sizes):
        out.append(_unflatten(chosen[start : start + size], layer_scores))
        start += size
    return [[m.astype(np.float32) for m in layer] for layer in out]
