"""Schedules: how far each layer is pruned at each pruning step, and when.

A schedule has `steps` pruning steps, numbered 1..N. At step i every layer with a
target fraction ``p`` is pruned to `fraction(p, i)` of its weights (cumulative, the
share of the whole layer); the last step reaches ``p``. Three are provided:

- `OneShot`: one step, straight to ``p``.
- `Linear`: the original tool's schedule, step i prunes to ``p * i / N``.
- `Cubic`: Zhu & Gupta 2017, ``s_f + (s_i - s_f) * (1 - i / N) ** 3``, fast at first
  and slow near the target, timed by training step.

*When* a step happens is the schedule's `timing`: ``"epoch"`` schedules (one-shot,
linear) take a step every few epochs, layer after layer, as the `IterativePruning`
callback's ``epochs_per_step`` says; ``"batch"`` schedules (cubic) name the training
step (optimizer iteration) of each pruning step with `start`.
"""

from __future__ import annotations

import abc

from keras_prune.errors import InputError
from keras_prune.selection import check_fraction

__all__ = [
    "Cubic",
    "Linear",
    "OneShot",
    "Schedule",
    "SCHEDULES",
]


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise InputError(f"a schedule needs a positive whole number of steps, got {steps}")
    return int(steps)


class Schedule(abc.ABC):
    """The fraction each layer is pruned to at each of `steps` pruning steps.

    Attributes:
        steps: the number of pruning steps N.
        timing: ``"epoch"`` (steps follow each other every few epochs) or ``"batch"``
            (step i happens at training step `start(i)`).
    """

    steps: int = 1
    timing: str = "epoch"

    @abc.abstractmethod
    def fraction(self, target: float, step: int) -> float:
        """The cumulative fraction a layer with final fraction `target` has at `step`.

        Args:
            target: the layer's final fraction, in [0, 1].
            step: the pruning step, 1..`steps`.

        Returns:
            A fraction in [0, target]; `target` at the last step.
        """

    def start(self, step: int) -> int:
        """The training step (optimizer iteration) at which pruning step `step` happens.

        Only ``"batch"`` schedules define it.
        """
        raise NotImplementedError(f"{type(self).__name__} is timed by epochs, not training steps")

    def end(self) -> int:
        """The training steps a ``"batch"`` schedule needs: through its last pruning
        step and the retraining after it. Only ``"batch"`` schedules define it."""
        raise NotImplementedError(f"{type(self).__name__} is timed by epochs, not training steps")

    def _check_step(self, step: int) -> None:
        if not 1 <= step <= self.steps:
            raise InputError(f"step must be in 1..{self.steps}, got {step}")


class OneShot(Schedule):
    """Prunes every layer to its target in one step.

    Example:

    ```python
    OneShot().fraction(0.7, 1)  # 0.7
    ```
    """

    steps = 1

    def fraction(self, target: float, step: int) -> float:
        self._check_step(step)
        return check_fraction(target)

    def __repr__(self) -> str:
        return "OneShot()"


class Linear(Schedule):
    """The original tool's schedule: step i of N prunes each layer to ``target * i / N``.

    Args:
        steps: the number of steps N (the original's ``-iPruning``).

    Example:

    ```python
    Linear(4).fraction(0.8, 1)  # 0.2
    ```
    """

    def __init__(self, steps: int):
        self.steps = _check_steps(steps)

    def fraction(self, target: float, step: int) -> float:
        self._check_step(step)
        return check_fraction(target) * step / self.steps

    def __repr__(self) -> str:
        return f"Linear({self.steps})"


class Cubic(Schedule):
    """Zhu & Gupta 2017's gradual schedule, by training step.

    Step i (1..N) happens at training step ``begin + (i - 1) * frequency`` and prunes
    each layer to ``s_f + (s_i - s_f) * (1 - i / N) ** 3``, with ``s_f`` the layer's
    target and ``s_i = min(initial, s_f)``. This is the paper's ``s_t`` for
    ``t = t0 + i * dt`` with ``t0 = begin - frequency`` and ``dt = frequency``: the
    paper's first point (``s_i`` at ``t0``) prunes nothing new and is skipped, and the
    model trains `frequency` steps after the last pruning step before the paper's
    end ``t0 + N * dt``.

    Args:
        steps: the number of pruning steps N.
        frequency: training steps between pruning steps (the paper's dt).
        begin: the training step of the first pruning step.
        initial: the initial fraction ``s_i`` (the paper's initial sparsity).

    Example:

    ```python
    schedule = Cubic(steps=4, frequency=100)
    [round(schedule.fraction(0.8, i), 4) for i in range(1, 5)]  # [0.4625, 0.7, 0.7875, 0.8]
    schedule.start(2)  # 100
    schedule.end()     # 400: the last step at 300, then 100 steps of training
    ```
    """

    timing = "batch"

    def __init__(self, steps: int, frequency: int, begin: int = 0, initial: float = 0.0):
        self.steps = _check_steps(steps)
        if isinstance(frequency, bool) or int(frequency) != frequency or frequency < 1:
            raise InputError(f"frequency must be a positive whole number of training steps, got {frequency}")
        if isinstance(begin, bool) or int(begin) != begin or begin < 0:
            raise InputError(f"begin must be a training step >= 0, got {begin}")
        self.frequency = int(frequency)
        self.begin = int(begin)
        self.initial = check_fraction(initial, "initial fraction")

    def fraction(self, target: float, step: int) -> float:
        self._check_step(step)
        final = check_fraction(target)
        initial = min(self.initial, final)
        return final + (initial - final) * (1.0 - step / self.steps) ** 3

    def start(self, step: int) -> int:
        self._check_step(step)
        return self.begin + (step - 1) * self.frequency

    def end(self) -> int:
        return self.begin + self.steps * self.frequency

    def __repr__(self) -> str:
        return f"Cubic({self.steps}, frequency={self.frequency}, begin={self.begin}, initial={self.initial})"


SCHEDULES = ("linear", "cubic")
"""Schedule names the CLI accepts (one-shot is linear with one step)."""
