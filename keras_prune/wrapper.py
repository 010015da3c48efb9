"""The mechanism: a Keras layer wrapper that holds pruned weights at zero.

`PruneWrapper` wraps one layer. For every prunable variable of that layer (as its
handler says, see `keras_prune.handlers`: the kernels of Dense, convolution, EinsumDense
and attention layers, both kernels of SeparableConv2D, an Embedding's table, an RNN's
kernel and recurrent kernel, those of the sublayers of a composite layer; never a bias,
a normalisation parameter or PReLU's alpha) it owns

- a ``mask`` (non-trainable, 1 = kept, 0 = pruned), and,
- in a wrapper built with ``gated=True``, a ``gate`` (non-trainable, 1 unless set).

The pruned weights are zero *in the variable*, always: `set_mask` zeroes them at
once, and a constraint re-applies the mask after every optimizer step (Keras
optimizers apply variable constraints after each update, so momentum, Adam moments,
weight decay or any other update rule cannot revive a pruned weight). Because the
variable already equals ``w * mask``, the forward pass runs the inner layer on its own
variables: no extra operation per step, so the wrapper's training cost is one
elementwise pass per prunable variable per step (the constraint) -- see
docs/benchmarks.md, section 3.

A gated wrapper computes with ``w * gate`` in place of ``w`` (substituted through
`keras.StatelessScope`, which works for any layer type, inside `fit` and under
`tf.function`, and passes gradients through). That costs a multiply per weight in
both passes, so gates are opt-in: `keras_prune.strip` bakes them into the weights; the
gate criteria (l1, l2) learn their gates in variables of their own and need no gated
wrapper.

What the gradient of a pruned weight is: the loss does depend on a pruned weight's
variable (the layer computes with it; it is zero), so `tf.GradientTape` reports a
gradient for it; the optimizer's update of it is undone by the constraint in the same
step. Kept weights receive exactly the gradients of the sparse network. The one place
the difference shows is gradient clipping by norm (``clipnorm``, ``global_clipnorm``),
whose norm includes the pruned positions, as in the TensorFlow Model Optimization
Toolkit.

On JAX, Keras' compiled train step holds every variable's value outside the
variables; the constraint then multiplies by the mask value that the same step's
forward pass read (docs/backends.md).

Anything that assigns a pruned variable directly (``variable.assign``,
``model.set_weights`` with other weights, a hand-written update rule without a Keras
optimizer) must re-apply the masks afterwards: ``layer.set_mask(layer.mask_arrays())``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from keras_prune._keras_compat import has_value
from keras_prune.errors import ModelError
from keras_prune.handlers import prunable_variables

__all__ = [
    "copy_layer",
    "inner_layer",
    "PruneWrapper",
    "strip_layer",
]


class _MaskConstraint(keras.constraints.Constraint):
    """Multiplies a variable by its mask, then applies the layer's own constraint.

    The wrapper installs it on each prunable variable in `build`; it is not part of
    any saved config.

    Args:
        mask: the mask variable (same shape as the constrained variable).
        inner: the constraint the wrapped layer already had on that variable, or None.

    Attributes:
        seen: on JAX, the mask's value as the wrapper's last forward pass read it:
            inside ``fit`` the mask variable itself cannot be read where the optimizer
            applies constraints (see `PruneWrapper.call`).
    """

    def __init__(self, mask: keras.Variable, inner=None):
        self.mask = mask
        self.inner = inner
        self.seen = None

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        mask = self.mask.value if has_value(self.mask) or self.seen is None else self.seen
        return w * ops.cast(mask, w.dtype)


@keras.saving.register_keras_serializable(package="keras_prune")
class PruneWrapper(keras.layers.Wrapper):
    """Holds a mask (and, if gated, a gate) for each prunable variable of the wrapped layer.

    The wrapper takes the inner layer's name, so a model reads the same before and
    after wrapping (`model.get_layer("fc1")` finds the wrapper).

    Args:
        layer: the layer to wrap. It must have at least one prunable variable once
            built (see `prunable_variables`).
        gated: also hold a gate per prunable weight and compute with ``w * gate``.
            Costs a multiply per weight in both passes of every step; off by default.
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

    def __init__(self, layer: keras.layers.Layer, gated: bool = False, **kwargs):
        kwargs.setdefault("name", layer.name)
        super().__init__(layer, **kwargs)
        self.gated = bool(gated)
        self.masks: list[keras.Variable] = []
        self.gates: list[keras.Variable] = []
        self._targets: list[keras.Variable] = []
        # The inner layer reads and sets Keras masks on the tensors it sees (an
        # Embedding's mask_zero, padding masks); the wrapper passes them on.
        self.supports_masking = layer.supports_masking

    def build(self, input_shape=None, **shapes):
        # Layers such as MultiHeadAttention build from several shapes (query_shape=...,
        # value_shape=...); the wrapper passes whatever it gets to the inner layer.
        if not self.layer.built:
            if shapes:
                self.layer.build(**shapes)
            else:
                self.layer.build(input_shape)
        self._targets = prunable_variables(self.layer)
        if not self._targets:
            raise ValueError(
                f"Layer '{self.layer.name}' ({type(self.layer).__name__}) has no "
                "prunable weights; layers such as Dense, Conv, DepthwiseConv2D, "
                "SeparableConv2D, Embedding, EinsumDense, MultiHeadAttention and RNNs can be "
                "pruned (see keras_prune.handlers)."
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
            var.constraint = _MaskConstraint(mask, var.constraint)
            self.masks.append(mask)
            if self.gated:
                gate = self.add_weight(
                    name=f"{short}_gate",
                    shape=var.shape,
                    initializer="ones",
                    trainable=False,
                    dtype=var.dtype,
                )
                self.gates.append(gate)
        self.built = True

    def get_config(self):
        return {**super().get_config(), "gated": self.gated}

    def get_build_config(self):
        return self.layer.get_build_config()

    def build_from_config(self, config):
        if config and "shapes_dict" in config:
            self.build(**config["shapes_dict"])
        elif config:
            self.build(config["input_shape"])

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Files written before ``gated`` existed always held gates.
        config = {**config, "gated": config.get("gated", True)}
        return super().from_config(config, custom_objects)

    @property
    def pruned_variables(self) -> list[keras.Variable]:
        """The wrapped layer's prunable variables, aligned with `masks` (and `gates`, if gated)."""
        return list(self._targets)

    def call(self, inputs, *args, **kwargs):
        if keras.backend.backend() == "jax":
            # Keras' JAX train step applies the optimizer (and so the constraints) in a
            # scope that maps only trainable and optimizer variables: the masks' values
            # are those this forward pass read, in the same compiled step.
            for var in self._targets:
                var.constraint.seen = var.constraint.mask.value
        if not self.gated:
            return self.layer(inputs, *args, **kwargs)
        mapping = [(var, var.value * gate.value) for var, gate in zip(self._targets, self.gates)]
        if keras.backend.backend() == "jax":
            # A scope does not see an enclosing one, and in JAX's fit every variable's
            # value lives only in the enclosing scope: map the layer's others too.
            gated = {id(var) for var in self._targets}
            mapping += [(var, var.value) for var in self.layer.variables if id(var) not in gated]
        given = {id(var): value for var, value in mapping}
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            outputs = self.layer(inputs, *args, **kwargs)
        for loss in scope.losses:
            self.add_loss(loss)
        for var in self.layer.non_trainable_variables:
            updated = scope.get_current_value(var)
            if updated is not None and updated is not given.get(id(var)):
                var.assign(updated)
        return outputs

    def compute_mask(self, inputs, previous_mask=None):
        return self.layer.compute_mask(inputs, previous_mask)

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
            var.assign(var.value * keras.ops.convert_to_tensor(mask))

    def mask_arrays(self) -> list[np.ndarray]:
        """The current masks as numpy arrays, aligned with `pruned_variables`."""
        return [keras.ops.convert_to_numpy(m) for m in self.masks]

    def effective_weights(self) -> list[np.ndarray]:
        """``w * mask`` (times the gate, if gated) for each prunable variable: what
        the forward pass uses."""
        weights = [np.array(keras.ops.convert_to_numpy(v.value)) for v in self._targets]
        if self.gated:
            weights = [w * keras.ops.convert_to_numpy(g.value) for w, g in zip(weights, self.gates)]
        for w, mask in zip(weights, self.mask_arrays()):
            # +0.0: the constraint's multiply leaves -0.0 where a pruned weight's update
            # was negative, and a run of +0.0 compresses far better.
            w[mask == 0] = 0.0
        return weights

    def baked_weights(self) -> list[np.ndarray]:
        """The wrapped layer's weights as the forward pass uses them, in the order of
        ``self.layer.weights``: `effective_weights` for the pruned variables, the others
        (biases, normalisation parameters) as they are. `strip_layer` gives these to
        the plain copy of the layer.

        Example:

        ```python
        kernel, bias = wrapped.baked_weights()  # a wrapped Dense: masked kernel, bias
        ```
        """
        effective = {id(v): w for v, w in zip(self._targets, self.effective_weights())}
        return [effective.get(id(v), keras.ops.convert_to_numpy(v)) for v in self.layer.weights]

    def weight_count(self) -> int:
        """Number of prunable weights in the layer."""
        return int(sum(np.prod(v.shape) for v in self._targets))

    def pruned_count(self) -> int:
        """Number of prunable weights currently masked out."""
        return int(sum(np.sum(m == 0) for m in self.mask_arrays()))

    def sparsity(self) -> float:
        """Fraction of the layer's prunable weights that are masked out."""
        return self.pruned_count() / self.weight_count()


def strip_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A copy of `layer` without keras_prune classes: a wrapper becomes a copy of its inner
    layer holding ``w * mask`` (times the gate, if gated), any other layer a plain copy.

    Args:
        layer: a built layer, wrapped or not.

    Returns:
        A new, built layer with the same config and (baked) weights.

    Example:

    ```python
    plain = strip_layer(model.get_layer("fc1"))  # a Dense with pruned weights at 0.0
    ```
    """
    if not isinstance(layer, PruneWrapper):
        return copy_layer(layer)
    return copy_layer(layer.layer, layer.baked_weights())


def inner_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer a `PruneWrapper` holds, or `layer` itself if it is not wrapped.

    Example:

    ```python
    isinstance(inner_layer(model.get_layer("fc1")), keras.layers.Dense)  # wrapped or not
    ```
    """
    return layer.layer if isinstance(layer, PruneWrapper) else layer


def copy_layer(layer: keras.layers.Layer, weights: Sequence | None = None) -> keras.layers.Layer:
    """A new layer from `layer`'s config, built like it, holding `weights` (default: its own).

    A layer that was never built (nothing to copy yet) is copied unbuilt.

    Args:
        layer: a Keras layer.
        weights: values for the new layer's ``weights``, in order; None copies the layer's.

    Returns:
        The new layer.

    Raises:
        ModelError: the layer cannot be re-created from its config, or the re-created
            layer, built from its build config, does not hold the same weights.
    """
    try:
        new = layer.__class__.from_config(layer.get_config())
    except Exception as error:  # a layer whose config does not round-trip (a bug of its own)
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ModelError(
            f"layer '{layer.name}' ({type(layer).__name__}) cannot be re-created from its own "
            f"config ({type(error).__name__}: {first_line}); keras-prune copies layers that way, "
            "as saving to .keras does. The layer's get_config needs a fix in its library."
        ) from None
    build_config = layer.get_build_config()
    if build_config is not None:
        if not new.built:  # some layers (keras-hub's) build themselves from their config
            new.build_from_config(build_config)
        values = layer.weights if weights is None else weights
        if len(new.weights) != len(values):  # e.g. keras-hub's T5 layers build sublayers only when called
            raise ModelError(
                f"layer '{layer.name}' ({type(layer).__name__}) re-created from its config and built "
                f"has {len(new.weights)} weights, not {len(values)}: it creates some only when called "
                "(its build does not build its sublayers), so keras-prune cannot copy it"
            )
        new.set_weights([keras.ops.convert_to_numpy(w) for w in values])
    return new
