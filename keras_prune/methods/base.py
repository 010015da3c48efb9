"""The method interface: pruners that choose masks *and* update the kept weights.

A criterion only scores weights and selection turns scores into masks. A method
does both and more: it works layer by layer on calibration data, choosing each
layer's mask and changing the weights it keeps to make up for the ones it removes
(SparseGPT). `keras_prune.prune`, the `IterativePruning` callback and
`keras-prune run --pruner NAME` accept a method's name wherever they accept a
criterion's; `get_pruner` resolves either.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, Callable, Iterable, Mapping

import keras

from keras_prune.criteria import Criterion, available_criteria, get_criterion
from keras_prune.errors import InputError
from keras_prune.selection import Pattern
from keras_prune.wrapper import PruneWrapper


class Method(abc.ABC):
    """Prunes layers to their fractions on calibration data, updating kept weights.

    Subclasses set `name` (by `register_method`) and implement `prune`.

    Attributes:
        name: the name it is chosen under (`--pruner NAME`).
        needs_data: methods always need calibration batches.
        verbose: show a progress bar.
    """

    name: str = ""
    needs_data: bool = True
    verbose: bool = False

    @abc.abstractmethod
    def prune(
        self,
        model: keras.Model,
        fractions: Mapping[PruneWrapper, float],
        data: Iterable,
        pattern: Pattern | None = None,
    ) -> None:
        """Sets the masks of `fractions`' layers (and, for some methods, their weights).

        Args:
            model: the whole model, with the layers wrapped.
            fractions: wrapped layer -> cumulative fraction of its weights to prune.
            data: calibration batches ``(x, y)`` from the training split.
            pattern: an optional N:M or block pattern (`keras_prune.selection.Pattern`).
        """


_METHODS: dict[str, Callable[..., Method]] = {}


def register_method(name: str):
    """Class decorator that makes a method available by name to `get_pruner`."""

    def decorate(cls):
        if name in _METHODS or name in available_criteria():
            raise ValueError(f"a pruner named '{name}' is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorate


def available_methods() -> list[str]:
    """The names of the registered methods."""
    return list(_METHODS)


def available_pruners() -> list[str]:
    """Every name `get_pruner` accepts: the criteria, then the methods."""
    return [*available_criteria(), *_METHODS]


def get_pruner(pruner: str | Criterion | Method, **options: Any) -> Criterion | Method:
    """A criterion or a method from its name (with constructor options) or an instance.

    Raises:
        InputError: an unknown name, or an option the pruner does not take.

    Example:

    ```python
    get_pruner("sparsegpt", block_size=64)
    get_pruner("taylor2", probes=8)
    ```
    """
    if isinstance(pruner, Method):
        if options:
            raise InputError("pruner options go with a pruner name, not an instance")
        return pruner
    if isinstance(pruner, Criterion) or pruner in available_criteria():
        return get_criterion(pruner, **options)
    if pruner not in _METHODS:
        raise InputError(f"unknown pruner '{pruner}'; choose one of: {', '.join(available_pruners())}")
    factory = _METHODS[pruner]
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"pruner '{pruner}' takes no option {', '.join(repr(o) for o in unknown)}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )
    return factory(**options)
