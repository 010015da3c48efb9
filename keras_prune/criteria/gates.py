"""Gate criteria (l1, l2): learned per-weight gates rank the weights.

Every prunable weight ``w`` of the scored layers is multiplied by a gate ``a`` that
starts at 1. The gates are trained, everything else held fixed, to minimise

    task loss + penalty * sum_k |a_k|      (l1, network slimming: Liu et al. 2017)
    task loss + penalty * sum_k a_k^2      (l2)

and the learned gates rank the weights: the score is the gated weight ``|a_k * w_k|``.
A gate the penalty could pull down without the task loss pushing back belongs to a
weight the model does not need; one the loss holds up keeps its weight's full size.
Why the gated weight and not ``|a_k|`` alone: gates start equal, and in a few
epochs they move by amounts that say little about weights of very different sizes;
ranking ``|a_k|`` alone left LeNet-5 at 41% validation error after the original's
conf, ``|a_k * w_k|`` at 1.6% (magnitude alone: 4.3%; docs/criteria.md).

How the model is left untouched: the gates are separate variables of the criterion;
while the model runs (``training=False``) each scored weight variable is replaced by
``w * a`` through a `keras.StatelessScope`, and no variable of the model is ever
assigned. So after scoring every variable of the model (weights, masks, a gated
wrapper's own gates, batch-norm statistics, the model's optimizer state) is
bit-identical: only the masks that selection then sets change the model. The gates
need no gated wrapper; in a gated one they multiply its own gates.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras
import numpy as np
from keras import ops

from keras_prune import autodiff
from keras_prune.criteria.base import Criterion, Scores, register_criterion
from keras_prune.criteria.objective import (
    TaskLoss,
    by_layer,
    check_damping,
    check_model,
    damp,
    fixed_batches,
    progress_bar,
    scored_variables,
)
from keras_prune.errors import InputError
from keras_prune.wrapper import PruneWrapper


class GateCriterion(Criterion):
    """Learns the gates of the scored layers under a penalty; scores are ``|gate * w|``.

    Gates are trained with Adam (its own optimizer, not the model's) for `epochs`
    passes over the scoring batches, one step per batch.

    Args:
        penalty: coefficient of the penalty on the gates (summed over all gates of
            the scored layers). It sets how small a weight's effect on the loss must
            be for its gate to shrink: per gate, the task-loss gradient is
            ``dL/da = g * w``, of order 1e-5 to 1e-3 on a trained LeNet-5.
        epochs: passes over the scoring batches.
        learning_rate: Adam's learning rate for the gates (a gate moves at most
            about this much per step).
        damping: weight of a ``|w|`` prior added to the scores (`objective.damp`),
            >= 0. Undamped, l1 prunes the shipped LeNet-5's fc1 to 0.7 (one-shot) to
            1.30% test error, magnitude to 0.62%; with the default 3, to 0.55%.
        verbose: show a progress bar.

    Attributes:
        norm: ``"l1"`` or ``"l2"``: the penalty ``sum |a|`` or ``sum a^2``.
    """

    needs_data = True
    normalization = "none"
    norm: str = ""

    def __init__(
        self,
        penalty: float = 1e-4,
        epochs: int = 5,
        learning_rate: float = 0.01,
        damping: float = 3.0,
        verbose: bool = False,
    ):
        if not penalty >= 0:
            raise InputError(f"gate penalty must be a number >= 0, got {penalty}")
        if int(epochs) != epochs or epochs < 1:
            raise InputError(f"gate epochs must be a positive integer, got {epochs}")
        if not learning_rate > 0:
            raise InputError(f"gate learning rate must be positive, got {learning_rate}")
        self.penalty = float(penalty)
        self.epochs = int(epochs)
        self.learning_rate = float(learning_rate)
        self.damping = check_damping(damping)
        self.verbose = verbose

    def _penalty(self, gates: Sequence) -> object:
        if self.norm == "l1":
            return sum(ops.sum(ops.abs(a)) for a in gates)
        return sum(ops.sum(ops.square(a)) for a in gates)

    def learn_gates(
        self,
        layers: Sequence[PruneWrapper],
        model: keras.Model | None,
        data: Iterable | None,
    ) -> list[np.ndarray]:
        """Trains the gates of `layers` and returns them, aligned with their variables.

        Args:
            layers: the wrapped layers whose gates are learned.
            model: the model (not modified).
            data: training batches ``(x, y)``.

        Returns:
            The learned gates, one array per prunable variable of `layers`, flattened
            in layer order.

        Example:

        ```python
        gates = L1Gates(penalty=3e-4).learn_gates([model.get_layer("fc1")], model, batches)
        ```
        """
        model = check_model(model, self.name)
        batches = fixed_batches(data, self.name)
        loss = TaskLoss(model)
        weights = scored_variables(layers)
        learned = [
            keras.Variable(np.ones(w.shape), dtype=w.dtype, name=f"learned_{i}")
            for i, w in enumerate(weights)
        ]
        optimizer = keras.optimizers.Adam(self.learning_rate)
        optimizer.build(learned)

        def objective(gates, x, y):
            gated = [w.value * a for w, a in zip(weights, gates)]
            with autodiff.substituted(weights, gated):
                outputs = model(x, training=False)
            task = loss.mean(y, outputs)
            return task + ops.cast(self.penalty * self._penalty(gates), task.dtype)

        gradient = autodiff.gradient(objective)
        bar = progress_bar(self.epochs * len(batches), self.verbose, "step")
        for _ in range(self.epochs):
            for x, y in batches:
                grads = gradient([a.value for a in learned], x, y)
                optimizer.apply_gradients(zip(grads, learned))
                if bar is not None:
                    bar.add(1)
        return [keras.ops.convert_to_numpy(a.value) for a in learned]

    def score(self, layers, model=None, data=None) -> Scores:
        weights = [w for layer in layers for w in layer.effective_weights()]
        gates = self.learn_gates(layers, model, data)
        gated = [np.abs(a * w) for a, w in zip(gates, weights)]
        return by_layer(layers, damp(gated, weights, self.damping, 1))


@register_criterion("l1")
class L1Gates(GateCriterion):
    """Learned gates under an L1 penalty ``penalty * sum |a|`` (network slimming).

    See `GateCriterion` for the options and how the model is left untouched.

    Example:

    ```python
    criterion = keras_prune.criteria.get_criterion("l1", penalty=1e-4, epochs=2)
    keras_prune.prune(model, {"fc1": 0.9}, criterion, data=train_batches)
    ```
    """

    norm = "l1"


@register_criterion("l2")
class L2Gates(GateCriterion):
    """Learned gates under a squared-L2 penalty ``penalty * sum a^2``.

    See `GateCriterion` for the options and how the model is left untouched.

    Example:

    ```python
    keras_prune.prune(model, {"fc1": 0.9}, "l2", data=train_batches)
    ```
    """

    norm = "l2"
