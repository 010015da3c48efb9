"""Selection: which weights to drop, given importance scores and a target fraction.

Pure numpy, no Keras. Scores are "higher = keep". A layer's `fraction` is the
cumulative share of *all* its prunable weights that ends up pruned, already-pruned
weights included (the original tool's semantics): exactly ``floor(N * fraction)``
weights are pruned, ties broken by position so the count is exact, and a weight that
is already pruned stays pruned.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from keras_prune.errors import InputError


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
    flat_scores = np.concatenate([np.ravel(s).astype(np.float64) for s in scores])
    flat_masks = np.concatenate([np.ravel(m) for m in masks])
    if np.isnan(flat_scores).any():
        raise ValueError("importance scores contain NaN")
    already = flat_masks == 0
    flat_scores[already] = -np.inf
    k = max(pruned_target(flat_scores.size, fraction), int(already.sum()))
    new_flat = np.ones(flat_scores.size, dtype=np.float32)
    new_flat[np.argsort(flat_scores, kind="stable")[:k]] = 0.0
    out, start = [], 0
    for s in scores:
        size = int(np.size(s))
        out.append(new_flat[start : start + size].reshape(np.shape(s)))
        start += size
    return out
