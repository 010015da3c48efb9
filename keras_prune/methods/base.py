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


ALIASES = {"mag": "magnitude"}
"""Other names of registered pruners (the original tool's ``mag``)."""


def available_pruners() -> list[str]:
    """The registered pruners: the criteria, then the methods."""
    return [*available_criteria(), *_METHODS]


def pruner_names() -> list[str]:
    """Every name `get_pruner` accepts: the aliases, then `available_pruners`."""
    return [*ALIASES, *available_pruners()]


def canonical_pruner(name: str) -> str:
    """The registered name `name` stands for (itself, or what an alias names).

    Raises:
        InputError: ``unknown pruner '<name>'; choose one of: ...`` (`pruner_names`).
    """
    name = ALIASES.get(name, name)
    if name not in available_pruners():
        raise InputError(f"unknown pruner '{name}'; choose one of: {', '.join(pruner_names())}")
    return name


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
    if isinstance(pruner, Criterion):
        return get_criterion(pruner, **options)
    pruner = canonical_pruner(pruner)
    if pruner in available_criteria():
        return get_criterion(pruner, **options)
    factory = _METHODS[pruner]
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InputError(
            f"pruner '{pruner}' takes no option {', '.join(repr(o) for o in unknown)}; "
            f"it takes: {', '.join(accepted) or 'no options'}"
        )
    return factory(**options)
