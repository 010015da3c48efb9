"""Pruning plans: which layers to prune and to what fraction.

A plan comes from `--layers` / `--fraction` or from the original tool's conf file,
two CSV lines: layer selectors, then fractions::

    1,4,8,10,12
    0.5,0.7,0.95,0.7,0.5
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Sequence

from keras_prune.errors import InputError
from keras_prune.selection import check_fraction
from keras_prune.storage import read_text

__all__ = [
    "make_plan",
    "parse_selectors",
    "Plan",
    "read_conf",
]


@dataclass(frozen=True)
class Plan:
    """Layers to prune, in the order they are processed, with their target fractions.

    Attributes:
        layers: selectors (1-based index as int, or a layer name).
        fractions: cumulative fraction of each layer's weights to prune, in [0, 1].
    """

    layers: tuple[int | str, ...]
    fractions: tuple[float, ...]

    def items(self) -> list[tuple[int | str, float]]:
        """(selector, fraction) pairs in processing order."""
        return list(zip(self.layers, self.fractions))

    def pick(
        self,
        selectors: Sequence[int | str],
        identify: Callable[[int | str], Hashable] = lambda selector: selector,
        source: str = "the plan",
    ) -> "Plan":
        """The plan for `selectors` alone, each with the fraction this plan gives it.

        Args:
            selectors: the layers wanted, in the order to process them.
            identify: maps a selector to the layer it names, so that an index and a
                name of the same layer match (the CLI passes the layer in the model);
                default: selectors match only if equal.
            source: where this plan came from, for the error message.

        Returns:
            A plan of `selectors` with their fractions from this plan.

        Raises:
            InputError: a selector this plan gives no fraction (the message names it
                and says to give ``-p``).

        Example:

        ```python
        read_conf("lenet5.conf").pick([1, 8])  # Plan(layers=(1, 8), fractions=(0.5, 0.95))
        ```
        """
        fractions = {identify(layer): fraction for layer, fraction in self.items()}
        for selector in selectors:
            if identify(selector) not in fractions:
                raise InputError(
                    f"layer {selector} has no fraction in {source}: give -p FRACTION "
                    "(one, or one per layer)"
                )
        return Plan(tuple(selectors), tuple(fractions[identify(s)] for s in selectors))


def parse_selectors(text: str) -> tuple[int | str, ...]:
    """Parses "1,4,fc1" into (1, 4, "fc1").

    Raises:
        InputError: empty, an empty item, or a duplicate.
    """
    items = [item.strip() for item in str(text).split(",")]
    if not items or any(not item for item in items):
        raise InputError(
            f"layers must be comma-separated 1-based indices or names, got '{text}'"
        )
    selectors = tuple(int(i) if re.fullmatch(r"-?\d+", i) else i for i in items)
    duplicates = sorted({str(s) for s in selectors if selectors.count(s) > 1})
    if duplicates:
        raise InputError(f"layers are listed more than once: {', '.join(duplicates)}")
    return selectors


def _parse_fractions(text: str) -> tuple[float, ...]:
    """Parses "0.5,0.7" into (0.5, 0.7), each checked to lie in [0, 1]."""
    items = [item.strip() for item in str(text).split(",")]
    if any(not item for item in items):
        raise InputError(f"fractions must be comma-separated numbers in [0, 1], got '{text}'")
    return tuple(check_fraction(item) for item in items)


def make_plan(layers: str, fractions: str) -> Plan:
    """A plan from option strings; one fraction applies to every layer.

    Raises:
        InputError: malformed values, or counts that differ.
    """
    selectors = parse_selectors(layers)
    values = _parse_fractions(fractions)
    if len(values) == 1:
        values = values * len(selectors)
    if len(values) != len(selectors):
        raise InputError(
            f"{len(selectors)} layers but {len(values)} fractions: give one fraction, "
            "or one per layer"
        )
    return Plan(selectors, values)


def read_conf(path: str | Path) -> Plan:
    """Reads a conf file: layer selectors on the first line, fractions on the second.

    Blank lines and lines starting with '#' are ignored.

    Raises:
        InputError: a missing or unreadable file, or anything but two matching lines.
    """
    path = Path(path)
    text = read_text(path, "conf file")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) != 2:
        raise InputError(
            f"{path}: a conf file has exactly two lines (layers, then fractions), "
            f"found {len(lines)}"
        )
    try:
        return make_plan(lines[0], lines[1])
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None

