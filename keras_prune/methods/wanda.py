"""Wanda: prune by ``|w| * ||x_j||``, compared within each output (Sun et al. 2023).

Pruning by Weights and activations: weight ``w_jk`` (input j, output k) scores
``|w_jk| * ||X_j||_2``, the magnitude of the weight times the norm of its input
feature over the calibration rows; each output loses its own share of the lowest
scores. It is the output error of removing ``w_jk`` alone when inputs are
uncorrelated, ``w_jk^2 ||X_j||^2``, in a cheap form. The paper changes no weight;
here, by default (``dense_targets=True``), each kernel is first refitted to the
unpruned model's outputs (`LayerwiseMethod.refit`), then scored and masked.
"""

from __future__ import annotations

import numpy as np

from keras_prune.methods.base import register_method
from keras_prune.methods.calibration import LayerwiseMethod
from keras_prune.selection import select_matrix


@register_method("wanda")
class Wanda(LayerwiseMethod):
    """Wanda, layer by layer on calibration batches: ``|w_jk| * ||X_j||``, per output.

    Args:
        per_output: compare scores within each output (the paper's choice); False
            compares them over the whole kernel.
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
    keras_prune.prune(model, {"fc1": 0.9, "fc2": 0.5}, "wanda", data=train_batches)
    ```
    """

    def __init__(
        self,
        per_output: bool = True,
        owl: float = 0.0,
        owl_threshold: float = 5.0,
        dense_targets: bool = True,
        verbose: bool = False,
    ):
        self.per_output = bool(per_output)
        self._set_owl(owl, owl_threshold)
        self.dense_targets = bool(dense_targets)
        self.verbose = verbose

    def prune_matrix(self, weights, mask, gram, rows, fraction, pattern):
        norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
        scores = np.abs(weights) * norms[:, None]
        per_output = self.per_output and (pattern is None or pattern.is_n_of_m)
        return weights, select_matrix(scores, mask, fraction, pattern, per_output)
