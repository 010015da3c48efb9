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
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from keras_prune.errors import InputError

__all__ = [
    "check_fraction",
    "NORMALIZATIONS",
    "normalize_scores",
    "parse_pattern",
    "Pattern",
    "PATTERN_HELP",
    "pruned_target",
    "SCOPES",
    "select_global",
    "select_layer",
    "select_matrix",
]

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


PATTERN_HELP = "N:M (at most N kept in each M consecutive inputs, e.g. 2:4) or RxC (blocks of R inputs by C outputs, e.g. 4x1)"


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern over a kernel seen as an ``(inputs, outputs)`` matrix.

    Two kinds, parsed from text by `parse_pattern`:

    - ``N:M`` (``kept=N, group=M``): in every group of M consecutive inputs of each
      output, at most N weights are kept (2:4 and 4:8 are what GPU sparse tensor
      cores run). The M - N lowest-scoring weights of each group are pruned; a
      layer's fraction is then reached by pruning more, lowest scores first, so a
      layer ends at ``max(fraction, (M - N) / M)``. A last group shorter than M
      (inputs not a multiple of M) keeps at most N too.
    - ``RxC`` (``rows=R, cols=C``): whole blocks of R consecutive inputs by C
      consecutive outputs are pruned, lowest summed score first, until at least
      ``floor(N * fraction)`` weights are pruned (so at most one block more).

    Attributes:
        kept, group: N and M of an N:M pattern (0 for blocks).
        rows, cols: R and C of a block pattern (0 for N:M).
    """

    kept: int = 0
    group: int = 0
    rows: int = 0
    cols: int = 0

    @property
    def is_n_of_m(self) -> bool:
        """Whether this is an N:M pattern."""
        return self.group > 0

    def __str__(self) -> str:
        return f"{self.kept}:{self.group}" if self.is_n_of_m else f"{self.rows}x{self.cols}"


def parse_pattern(text: str | Pattern | None) -> Pattern | None:
    """A `Pattern` from ``"N:M"`` or ``"RxC"`` text (None stays None).

    Raises:
        InputError: the text is neither, or N >= M, or a number below 1.

    Example:

    ```python
    parse_pattern("2:4")   # Pattern(kept=2, group=4, rows=0, cols=0)
    parse_pattern("4x1")   # Pattern(kept=0, group=0, rows=4, cols=1)
    ```
    """
    if text is None or isinstance(text, Pattern):
        return text
    found = re.fullmatch(r"\s*(\d+)\s*([:xX])\s*(\d+)\s*", str(text))
    if found is None:
        raise InputError(f"unknown pattern '{text}'; give {PATTERN_HELP}")
    first, kind, second = int(found[1]), found[2], int(found[3])
    if kind == ":":
        if not 1 <= first < second:
            raise InputError(f"pattern '{text}': N:M needs 1 <= N < M; give {PATTERN_HELP}")
        return Pattern(kept=first, group=second)
    if first < 1 or second < 1 or first * second < 2:
        raise InputError(f"pattern '{text}': a block needs R, C >= 1 and more than one weight; give {PATTERN_HELP}")
    return Pattern(rows=first, cols=second)


def _target_per_output(target: int, outputs: int) -> np.ndarray:
    """`target` spread over `outputs` columns as evenly as possible, summing exactly."""
    edges = (target * np.arange(outputs + 1)) // max(outputs, 1)
    return np.diff(edges)


def _n_of_m(scores: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Boolean (inputs, outputs): the M - N lowest of each M consecutive inputs."""
    inputs, outputs = scores.shape
    m = pattern.group
    padded = -(-inputs // m) * m
    # Padding scores -inf: a short last group of r inputs then loses max(0, r - N).
    full = np.full((padded, outputs), -np.inf)
    full[:inputs] = scores
    groups = full.reshape(padded // m, m, outputs)
    order = np.argsort(groups, axis=1, kind="stable")
    lowest = np.zeros(groups.shape, bool)
    np.put_along_axis(lowest, order[:, : m - pattern.kept], True, axis=1)
    return lowest.reshape(padded, outputs)[:inputs] | np.isneginf(scores)


def _blocks(scores: np.ndarray, pruned: np.ndarray, target: int, pattern: Pattern) -> np.ndarray:
    """Boolean (inputs, outputs): whole blocks, lowest summed score first, until `target`."""
    inputs, outputs = scores.shape
    r, c = pattern.rows, pattern.cols
    rows, cols = -(-inputs // r), -(-outputs // c)
    padded = np.zeros((rows * r, cols * c))
    padded[:inputs, :outputs] = np.where(pruned, 0.0, scores)
    live = np.zeros_like(padded)
    live[:inputs, :outputs] = ~pruned
    block_sum = padded.reshape(rows, r, cols, c).sum(axis=(1, 3)).ravel()
    block_live = live.reshape(rows, r, cols, c).sum(axis=(1, 3)).ravel()
    block_sum[block_live == 0] = -np.inf  # fully pruned blocks count first
    order = np.argsort(block_sum, kind="stable")
    done = pruned.sum()
    # Each block adds its live weights; take blocks until the target is met.
    gained = np.cumsum(block_live[order])
    take = int(np.searchsorted(gained, target - done, side="left")) + 1 if target > done else 0
    chosen = np.zeros(rows * cols, bool)
    chosen[order[: min(take, len(order))]] = True
    chosen |= block_live == 0
    grid = np.repeat(np.repeat(chosen.reshape(rows, cols), r, axis=0), c, axis=1)
    return grid[:inputs, :outputs] | pruned


def select_matrix(
    scores: np.ndarray,
    masks: np.ndarray,
    fraction: float,
    pattern: Pattern | None = None,
    per_output: bool = False,
) -> np.ndarray:
    """New mask of one kernel seen as an ``(inputs, outputs)`` matrix.

    Args:
        scores: (inputs, outputs) scores, higher = keep.
        masks: the current (inputs, outputs) mask, 0 = already pruned (stays pruned).
        fraction: cumulative fraction of the matrix's weights to prune.
        pattern: None, or an N:M or block `Pattern` (see its docstring for how it
            combines with the fraction).
        per_output: compare scores within each output (column) only, each column
            losing its share of ``floor(N * fraction)`` (Wanda's comparison group);
            not with a block pattern.

    Returns:
        The float32 (inputs, outputs) mask.

    Example:

    ```python
    select_matrix(np.array([[4.0], [1.0], [3.0], [2.0]]), np.ones((4, 1)), 0.5,
                  parse_pattern("1:2"))        # [[1.], [0.], [1.], [0.]]
    ```
    """
    scores = np.asarray(scores, np.float64)
    if np.isnan(scores).any():
        raise ValueError("importance scores contain NaN")
    pruned = np.asarray(masks) == 0
    ranked = np.where(pruned, -np.inf, scores)
    target = pruned_target(scores.size, fraction)
    if pattern is not None and not pattern.is_n_of_m:
        if per_output:
            raise InputError(f"a block pattern ({pattern}) cannot be combined with per-output selection")
        return (~_blocks(scores, pruned, target, pattern)).astype(np.float32)
    if pattern is not None:
        pruned = pruned | _n_of_m(ranked, pattern)
        ranked = np.where(pruned, -np.inf, scores)
    out = np.ones(scores.shape, np.float32)
    if per_output:
        for column, count in enumerate(_target_per_output(target, scores.shape[1])):
            out[:, column] = _prune_lowest(ranked[:, column], np.where(pruned[:, column], 0, 1), int(count))
        return out
    flat = _prune_lowest(ranked.ravel(), np.where(pruned, 0, 1).ravel(), target)
    return flat.reshape(scores.shape)
