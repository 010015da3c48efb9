"""Magnitude: |w| (Han et al. 2015)."""

from __future__ import annotations

import numpy as np

from keras_prune.criteria.base import Criterion, register_criterion


@register_criterion("magnitude")
class Magnitude(Criterion):
    """Importance = |w|: small weights go first. Needs no data."""

    def score(self, layers, model=None, data=None):
        return {layer: [np.abs(w) for w in layer.effective_weights()] for layer in layers}
