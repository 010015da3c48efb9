"""The mechanism: a Keras layer wrapper that holds pruned weights at zero.

`PruneWrapper` wraps one layer. For every prunable variable of that layer (every
trainable weight of rank >= 2: the kernels of Dense and convolution layers, both
kernels of SeparableConv2D, an Embedding's table; never a bias or a normalisation
scale) it owns

- a ``mask`` (non-trainable, 1 = kept, 0 = pruned) and
- a ``gate`` (fixed at 1 unless a gate criterion is learning it).

The inner layer computes with ``w * mask * gate`` in place of ``w``: the substitution
is done with `keras.StatelessScope`, which works for any layer type, inside
`fit` and under `tf.function`, and passes gradients through. Gradients that reach
pruned weights are therefore exactly zero. Pruned weights are also zero *in the
variable*: `set_mask` zeroes them at once, and a constraint re-applies the mask after
every optimizer step (Keras optimizers apply variable constraints after each update,
so momentum, Adam moments or weight decay cannot revive a pruned weight).
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops


class MaskConstraint(keras.constraints.Constraint):
    """Multiplies a variable by its mask, then applies the layer's own constraint.

    The wrapper installs it on each prunable variable in `build`; it is not part of
    any saved config.

    Args:
        mask: the mask variable (same shape as the constrained variable).
        inner: the constraint the wrapped layer already had on that variable, or None.
    """

    def __init__(self, mask: keras.Variable, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return w * ops.cast(self.mask, w.dtype)


def prunable_variables(layer: keras.layers.Layer) -> list[keras.Variable]:
    """The variables of `layer` that pruning may zero: trainable weights of rank >= 2.

    Args:
        layer: a built Keras layer.

    Returns:
        The variables, in the layer's `trainable_weights` order.
    """
    return [v for v in layer.trainable_weights if len(v.shape) >= 2]


@keras.saving.register_keras_serializable(package="keras_prune")
class PruneWrapper(keras.layers.Wrapper):
    """Holds a mask and a gate for each prunable variable of the wrapped layer.

    The wrapper takes the inner layer's name, so a model reads the same before and
    after wrapping (`model.get_layer("fc1")` finds the wrapper).

    Args:
        layer: the layer to wrap. It must have at least one prunable variable once
            built (see `prunable_variables`).
        **kwargs: passed to `keras.layers.Layer`.

    Example:

    ```python
    dense = keras.layers.Dense(4)
    wrapped = PruneWrapper(dense)
    wrapped.build((None, 3))
    wrapped.set_mask([np.array([[1, 0, 1, 1]] * 3, "float32")])
    print(wrapped.sparsity())  # 0.25
    ```
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs):
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.masks: list[keras.Variable] = []
        self.gates: list[keras.Variable] = []
        self._targets: list[keras.Variable] = []

    def build(self, input_shape=None):
        super().build(input_shape)
        self._targets = prunable_variables(self.layer)
        if not self._targets:
            raise ValueError(
                f"Layer '{self.layer.name}' ({type(self.layer).__name__}) has no "
                "prunable weights (trainable weights of rank >= 2); only layers such as "
                "Dense, Conv, DepthwiseConv2D, SeparableConv2D or Embedding can be pruned."
            )
        for var in self._targets:
            short = var.name.split("/")[-1]
            mask = self.add_weight(
                name=f"{short}_mask",
                shape=var.shape,
                initializer="ones",
                trainable=False,
                dtype=var.dtype,
            )
            gate = self.add_weight(
                name=f"{short}_gate",
                shape=var.shape,
                initializer="ones",
                trainable=False,
                dtype=var.dtype,
            )
            var.constraint = MaskConstraint(mask, var.constraint)
            self.masks.append(mask)
            self.gates.append(gate)
        self.built = True

    @property
    def pruned_variables(self) -> list[keras.Variable]:
        """The wrapped layer's prunable variables, aligned with `masks` and `gates`."""
        return list(self._targets)

    def call(self, inputs, *args, **kwargs):
        mapping = [
            (var, var.value * mask.value * gate.value)
            for var, mask, gate in zip(self._targets, self.masks, self.gates)
        ]
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs, *args, **kwargs)
        for loss in scope.losses:
            self.add_loss(loss)
        for var in self.layer.non_trainable_variables:
            updated = scope.get_current_value(var)
            if updated is not None:
                var.assign(updated)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def set_mask(self, masks: Sequence[np.ndarray]) -> None:
        """Sets the masks (1 = keep, 0 = prune) and zeroes the pruned weights at once.

        Args:
            masks: one array per variable in `pruned_variables`, of the same shape.
        """
        if len(masks) != len(self.masks):
            raise ValueError(
                f"Layer '{self.name}' has {len(self.masks)} prunable variables; "
                f"got {len(masks)} masks."
            )
        for var, mask_var, mask in zip(self._targets, self.masks, masks):
            mask = np.asarray(mask, dtype=mask_var.dtype)
            if mask.shape != tuple(mask_var.shape):
                raise ValueError(
                    f"Mask for '{var.path}' has shape {mask.shape}; expected "
                    f"{tuple(mask_var.shape)}."
                )
            mask_var.assign(mask)
            var.assign(var.value * mask)

    def mask_arrays(self) -> list[np.ndarray]:
        """The current masks as numpy arrays, aligned with `pruned_variables`."""
        return [keras.ops.convert_to_numpy(m) for m in self.masks]

    def effective_weights(self) -> list[np.ndarray]:
        """``w * mask * gate`` for each prunable variable: what the forward pass uses."""
        return [
            keras.ops.convert_to_numpy(v.value * m.value * g.value)
            for v, m, g in zip(self._targets, self.masks, self.gates)
        ]

    def weight_count(self) -> int:
        """Number of prunable weights in the layer."""
        return int(sum(np.prod(v.shape) for v in self._targets))

    def pruned_count(self) -> int:
        """Number of prunable weights currently masked out."""
        return int(sum(np.sum(m == 0) for m in self.mask_arrays()))

    def sparsity(self) -> float:
        """Fraction of the layer's prunable weights that are masked out."""
        return self.pruned_count() / self.weight_count()
