"""SparseGPT: Optimal Brain Surgeon updates, one input column at a time (Frantar & Alistarh 2023).

For a kernel ``W`` (outputs x inputs here, as in the paper) and the input Gram
matrix ``H = X^T X`` of its calibration rows (plus damping ``lambda * mean(diag H)``
on the diagonal), removing weights and updating the rest to keep ``X W^T`` close is
solved column by column:

1. ``U``: the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``).
2. Columns are taken in blocks of `block_size`. At each block's start its mask is
   chosen from ``w^2 / U_ii^2`` (the OBS cost of removing ``w``), lowest first, the
   block losing its share of the kernel's target. With an N:M pattern, each group
   of M inputs instead loses its M - N lowest costs when the sweep reaches it,
   from the weights as updated so far (and weights beyond the pattern, for a
   fraction above (M - N) / M, are chosen at the block's start).
3. Within a block, column i is rounded to its mask and the error ``(w - q) / U_ii``
   is spread over the block's later columns through row i of ``U``; after the
   block, the accumulated errors update all later columns at once (lazy batch
   updates).

By default (``dense_targets=True``) ``W`` is first refitted so that, on the inputs
of the model as pruned so far, it reproduces the unpruned model's outputs
(`LayerwiseMethod.refit`); the paper reconstructs the outputs on the pruned inputs
(``dense_targets=False``).

The kept weights change: `SparseGPT` is a method, not a criterion.
"""

from __future__ import annotations

import numpy as np

from keras_prune.errors import InputError
from keras_prune.methods.base import register_method
from keras_prune.methods.calibration import LayerwiseMethod
from keras_prune.selection import pruned_target, select_matrix


@register_method("sparsegpt")
class SparseGPT(LayerwiseMethod):
    """SparseGPT, layer by layer on calibration batches, with OBS weight updates.

    Args:
        block_size: input columns whose mask is chosen together (128 in the paper);
            rounded up to a multiple of a pattern's group or block rows.
        damping: ``lambda``, the share of the mean Hessian diagonal added to the
            diagonal (0.01 in the paper).
        owl: spread ``lambda`` of outlier-weighted layerwise fractions (OWL,
            `calibration.outlier_fractions`): layers with more outlier weights lose
            up to ``lambda`` less than their fraction, others more, same total; 0
            prunes each layer to its own fraction.
        owl_threshold: OWL's ``M``: a score above M times its layer's mean is an
            outlier.
        dense_targets: refit each kernel to the unpruned model's outputs on the
            inputs of the model as pruned so far, before pruning it (docs/one-shot.md);
            False reconstructs the outputs on the pruned inputs, as the paper does.
        verbose: show a progress bar.

    Example:

    ```python
    keras_prune.prune(model, {"fc1": 0.95}, "sparsegpt", data=train_batches)
    ```
    """

    def __init__(
        self,
        block_size: int = 128,
        damping: float = 0.01,
        owl: float = 0.0,
        owl_threshold: float = 5.0,
        dense_targets: bool = True,
        verbose: bool = False,
    ):
        if int(block_size) != block_size or block_size < 1:
            raise InputError(f"sparsegpt block_size must be a positive integer, got {block_size}")
        if not damping > 0:
            raise InputError(f"sparsegpt damping must be > 0, got {damping}")
        self.block_size = int(block_size)
        self.damping = float(damping)
        self._set_owl(owl, owl_threshold)
        self.dense_targets = bool(dense_targets)
        self.verbose = verbose

    def prune_matrix(self, weights, mask, gram, rows, fraction, pattern):
        inputs = weights.shape[0]
        w = weights.T.copy()  # (outputs, inputs), the paper's layout
        pruned = (mask == 0).T
        hessian = gram / max(rows, 1)
        dead = np.diag(hessian) == 0  # inputs that are always zero: free to prune
        hessian[dead, dead] = 1.0
        hessian += self.damping * np.mean(np.diag(hessian)) * np.eye(inputs)
        upper = np.linalg.cholesky(np.linalg.inv(hessian)).T
        step = pattern.group if pattern is not None and pattern.is_n_of_m else (pattern.rows if pattern else 1)
        block = -(-self.block_size // step) * step
        target = pruned_target(w.size, fraction)
        lazy = pattern is not None and pattern.is_n_of_m
        new_pruned = np.zeros_like(pruned)
        for start in range(0, inputs, block):
            end = min(start + block, inputs)
            block_w = w[:, start:end].copy()
            block_u = upper[start:end, start:end]
            cost = block_w**2 / np.diag(block_u) ** 2
            cost[:, dead[start:end]] = 0.0
            count = target * end // inputs - target * start // inputs
            chosen = select_matrix(
                cost.T, ~pruned[:, start:end].T, count / cost.size, pattern
            ).T == 0
            if lazy:
                # N:M groups are chosen when reached, from the updated weights; what
                # the block-start choice pruned beyond its groups stays pruned.
                groups = select_matrix(cost.T, ~pruned[:, start:end].T, 0.0, pattern).T == 0
                extra = chosen & ~groups
                chosen = pruned[:, start:end] | extra
            errors = np.zeros_like(block_w)
            for i in range(end - start):
                if lazy and i % pattern.group == 0:
                    stop = min(i + pattern.group, end - start)
                    group_cost = block_w[:, i:stop] ** 2 / np.diag(block_u)[i:stop] ** 2
                    group_cost[:, dead[start + i : start + stop]] = 0.0
                    group_cost[extra[:, i:stop]] = np.inf  # pruned anyway, beyond the group's M - N
                    group_cost[pruned[:, start + i : start + stop]] = -np.inf
                    lowest = np.argsort(group_cost, axis=1, kind="stable")[:, : max(0, stop - i - pattern.kept)]
                    np.put_along_axis(chosen[:, i:stop], lowest, True, axis=1)
                column = block_w[:, i]
                kept = np.where(chosen[:, i], 0.0, column)
                errors[:, i] = (column - kept) / block_u[i, i]
                block_w[:, i:] -= np.outer(errors[:, i], block_u[i, i:])
                block_w[:, i] = kept
            w[:, start:end] = block_w
            w[:, end:] -= errors @ upper[start:end, end:]
            new_pruned[:, start:end] = chosen
        return w.T, (~new_pruned).T.astype(np.float32)
