"""The criterion interface and its registry.

A criterion answers one question: how important is each prunable weight? It takes
the wrapped layers to score (and, where it needs them, the model and training
batches) and returns one score array per prunable variable, higher = keep. It never
changes masks; selection (`keras_prune.selection`) does that.
"""

from __future__ import annotations

import abc
import inspect
from typing import Callable, Iterable, Mapping, Sequence

import keras
import numpy as np

from keras_prune.errors import InputError
from keras_prune.wrapper import PruneWrapper

Scores = Mapping[PruneWrapper, list[np.ndarray]]
"""Scores per wrapped layer: one array per variable of `PruneWrapper.pruned_variables`."""


class Criterion(abc.ABC):
    """Scores prunable weights; higher = keep.

    Subclasses set `name` and `needs_data` and implement `score`.

    Attributes:
        name: the name it is registered and chosen under (`--pruner NAME`).
        needs_data: whether `score` needs the model and training batches.
        normalization: how global selection rescales this criterion's scores per
            layer before comparing layers (see `keras_prune.selection.NORMALIZATIONS`):
            ``"none"`` for scores in the same units in every layer (a loss change),
            ``"mean"`` for scores whose scale differs between layers (|w|).
        verbose: whether `score` shows a progress bar (criteria that take long).
    """

    name: str = ""
    needs_data: bool = False
    normalization: str = "mean"
    verbose: bool = False

    @abc.abstractmethod
    def score(
        self,
        layers: Sequence[PruneWrapper],
        model: keras.Model | None = None,
        data: Iterable | None = None,
    ) -> Scores:
        """Importance of every prunable weight of `layers`.

        Args:
            layers: the wrapped layers to score.
            model: the whole model (criteria that need the loss use it, compiled).
            data: training batches ``(x, y)`` (never the test split).

        Returns:
            For each layer, one float array per prunable variable, same shapes.
        """


_REGISTRY: dict[str, Callable[..., Criterion]] = {}


def register_criterion(name: str):
    """Class decorator that makes a criterion available as `get_criterion(name)`.

    Example:

    ```python
    @register_criterion("random")
    class Random(Criterion):
        def score(self, layers, model=None, data=None):
            return {l: [np.random.rand(*v.shape) for v in l.pruned_variables] for l in layers}
    ```
    """

    def decorate(cls):
        if name in _REGISTRY:
            raise ValueError(f"a criterion named '{name}' is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_criteria() -> list[str]:
    """The names of all registered criteria, in registration order."""
    return list(_REGISTRY)


def get_criterion(criterion: str | Criterion, **options) -> Criterion:
    """A criterion instance from a name (with constructor options) or an instance.

    Raises:
        InputError: the name is not registered, or it takes no such option.
    """
    if isinstance(criterion, Criterion):
        if options:
            raise InputError("criterion options go with a criterion name, not an instance")
        return criterion
    try:
        factory = _REGISTRY[criterion]
    except KeyError:
        raise InputError(
            f"unknown pruner '{criterion}'; choose one of: {', '.join(_REGISTRY)}"
        ) from None
    accepted = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise InputError(
            f"criterion '{criterion}' takes no option {', '.join(repr(o) for o in unknown)}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )
    return factory(**options)
