"""Pruning criteria: how important each weight is (higher = keep).

Use `get_criterion(name)` for a registered criterion, `register_criterion` to add your
own, `available_criteria()` to list them.
"""

from keras_prune.criteria.base import (
    Criterion,
    Scores,
    available_criteria,
    get_criterion,
    register_criterion,
)
from keras_prune.criteria.magnitude import Magnitude

__all__ = [
    "Criterion",
    "Magnitude",
    "Scores",
    "available_criteria",
    "get_criterion",
    "register_criterion",
]
