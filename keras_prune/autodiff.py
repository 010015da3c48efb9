"""Derivatives on the active Keras backend: gradients and Hessian-vector products.

The data-driven criteria differentiate a scalar (a loss) with respect to some values
(weights, gates). They write that scalar as a pure function of the values,

    fn(values, *args) -> scalar

substituting the values for the model's variables through a `keras.StatelessScope`
(see `substituted`), and ask this module for a compiled function of its derivatives:

- `gradient(fn)`: ``(values, *args) -> grads``;
- `hessian_vector(fn)`: ``(values, vectors, *args) -> (grads, H @ vectors)``, a
  forward-over-backward Hessian-vector product (about three gradients' cost).

`compiled(fn)` compiles a function without differentiating it (emp's batched
removals): `tf.function` on TensorFlow, `jax.jit` on JAX, ``fn`` itself (eager) on
any other backend.

Fisher (Gauss-Newton) products need only gradients at labels sampled from the
model's own predictive distribution: `sample_categorical` draws them inside ``fn``.

Three implementations, chosen by ``keras.backend.backend()``:

- TensorFlow: `tf.GradientTape` (and `tf.autodiff.ForwardAccumulator` for the
  Hessian-vector product) inside a `tf.function`;
- JAX: `jax.grad` and `jax.jvp` inside `jax.jit`;
- PyTorch: `torch.autograd.grad`, eager; the Hessian-vector product by double
  backward (the gradient's graph kept, then differentiated against `vectors`).

Other backends raise `BackendError`. Values and results are backend tensors; convert
with ``keras.ops.convert_to_numpy``.
"""

from __future__ import annotations

import contextlib

from typing import Callable, Sequence

import keras

from keras_prune.errors import BackendError

__all__ = ["backend", "compiled", "forward_only", "gradient", "hessian_vector", "sample_categorical", "substituted"]

Function = Callable[..., object]


def backend() -> str:
    """The active Keras backend, if keras-prune can differentiate on it.

    Returns:
        ``"tensorflow"``, ``"jax"`` or ``"torch"``.

    Raises:
        BackendError: any other backend.
    """
    name = keras.backend.backend()
    if name not in ("tensorflow", "jax", "torch"):
        raise BackendError(
            f"the data-driven criteria need derivatives, which keras-prune computes on the "
            f"tensorflow, jax and torch backends; KERAS_BACKEND is '{name}'"
        )
    return name


def substituted(variables: Sequence[keras.Variable], values: Sequence) -> keras.StatelessScope:
    """A scope in which each of `variables` reads as the matching entry of `values`.

    Example:

    ```python
    with substituted(layer.pruned_variables, values):
        outputs = model(x, training=False)
    ```
    """
    return keras.StatelessScope(state_mapping=list(zip(variables, values)))


def compiled(fn: Function) -> Function:
    """``fn`` compiled by the active backend: `tf.function` on TensorFlow (retracing
    reduced), `jax.jit` on JAX, ``fn`` itself, run eagerly, on any other backend.

    ``fn`` must be written with `keras.ops` and take tensors (not Python values that
    change between calls, which would recompile). It never raises `BackendError`.

    Example:

    ```python
    total = compiled(lambda x, y: keras.ops.sum(x * y))(x, y)
    ```
    """
    name = keras.backend.backend()
    if name == "jax":
        import jax

        return jax.jit(fn)
    if name == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    return fn


def forward_only():
    """A context in which the model runs without recording gradients: `torch.no_grad`
    on PyTorch (whose activations otherwise hold a graph and refuse numpy conversion),
    nothing on TensorFlow and JAX, which record nothing outside a tape or transform.

    Example:

    ```python
    with forward_only():
        activations = model(x, training=False)
    ```
    """
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def gradient(fn: Function) -> Function:
    """A compiled ``(values, *args) -> grads``: the gradient of ``fn`` in `values`.

    Args:
        fn: ``fn(values, *args)`` returns a scalar; `values` is a list of tensors.

    Returns:
        A function returning one dense gradient per value (zeros where ``fn`` does not
        depend on it).

    Example:

    ```python
    grads = gradient(lambda v, x: keras.ops.sum(v[0] * x))([w], x)   # [x]
    ```
    """
    if backend() == "jax":
        import jax

        return jax.jit(jax.grad(fn))
    if backend() == "torch":
        import torch

        def eager(values, *args):
            values = _torch_leaves(values)
            grads = torch.autograd.grad(fn(values, *_torch_args(args)), values, allow_unused=True)
            return _torch_results(grads, values)

        return eager
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def compiled(values, *args):
        with tf.GradientTape() as tape:
            tape.watch(values)
            value = fn(values, *args)
        return _dense(tape.gradient(value, values, unconnected_gradients=tf.UnconnectedGradients.ZERO))

    return compiled


def hessian_vector(fn: Function) -> Function:
    """A compiled ``(values, vectors, *args) -> (grads, products)``.

    ``products`` is the Hessian of ``fn`` in `values` times `vectors`, computed
    forward-over-backward.

    Args:
        fn: ``fn(values, *args)`` returns a scalar.

    Returns:
        A function returning the gradient and the Hessian-vector product, each a list
        aligned with `values`.

    Example:

    ```python
    grads, products = hessian_vector(loss)(values, probes, x, y)
    diagonal_estimate = [z * hz for z, hz in zip(probes, products)]
    ```
    """
    if backend() == "jax":
        import jax

        def both(values, vectors, *args):
            return jax.jvp(lambda v: jax.grad(fn)(v, *args), (values,), (vectors,))

        return jax.jit(both)
    if backend() == "torch":
        import torch

        def double_backward(values, vectors, *args):
            values = _torch_leaves(values)
            # CPU flash attention has no second derivative; the plain (math) kernel has.
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
                value = fn(values, *_torch_args(args))
            grads = torch.autograd.grad(value, values, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, values)]
            vectors = [keras.ops.convert_to_tensor(u, dtype=v.dtype) for u, v in zip(vectors, values)]
            connected = [i for i, g in enumerate(grads) if g.requires_grad]
            products = [None] * len(values)
            if connected:
                found = torch.autograd.grad(
                    [grads[i] for i in connected], values,
                    grad_outputs=[vectors[i] for i in connected], allow_unused=True,
                )
                products = list(found)
            return _torch_results(grads, values), _torch_results(products, values)

        return double_backward
    import tensorflow as tf

    zero = tf.UnconnectedGradients.ZERO

    @tf.function(reduce_retracing=True)
    def compiled(values, vectors, *args):
        with tf.autodiff.ForwardAccumulator(values, vectors) as accumulator:
            with tf.GradientTape() as tape:
                tape.watch(values)
                value = fn(values, *args)
            grads = _dense(tape.gradient(value, values, unconnected_gradients=zero))
        return grads, _dense(accumulator.jvp(grads, unconnected_gradients=zero))

    return compiled


def sample_categorical(logits, seed):
    """One label per row of `logits`, drawn from their softmax, inside ``fn``.

    Args:
        logits: ``(batch, classes)``.
        seed: an int32 pair (a tensor argument of the compiled function), so each
            call draws afresh without recompiling.

    Returns:
        Integer labels, shape ``(batch,)``.
    """
    if backend() == "jax":
        import jax

        return jax.random.categorical(jax.random.wrap_key_data(seed.astype("uint32")), logits)
    if backend() == "torch":
        import numpy as np
        import torch

        first, second = (int(s) for s in np.asarray(keras.ops.convert_to_numpy(seed)).ravel()[:2])
        generator = torch.Generator(device=logits.device).manual_seed(first * 2**32 + (second % 2**32))
        probabilities = torch.softmax(keras.ops.convert_to_tensor(logits).detach(), dim=-1)
        return torch.multinomial(probabilities, 1, generator=generator)[:, 0]
    import tensorflow as tf

    return tf.random.stateless_categorical(logits, 1, seed)[:, 0]


def _torch_leaves(values):
    """Fresh leaf tensors that record gradients, one per value (torch)."""
    return [keras.ops.convert_to_tensor(v).detach().requires_grad_(True) for v in values]


def _torch_args(args):
    """The arguments with arrays (numpy, TensorFlow) as torch tensors, as `tf.function`
    and `jax.jit` convert theirs; anything else (torch tensors, Python values) as it is."""
    import torch

    def convert(arg):
        if isinstance(arg, torch.Tensor) or not hasattr(arg, "__array__"):
            return arg
        return keras.ops.convert_to_tensor(keras.ops.convert_to_numpy(arg))

    return keras.tree.map_structure(convert, args)


def _torch_results(grads, values):
    """Detached results, zeros where the function does not depend on a value (torch)."""
    import torch

    return [torch.zeros_like(v).detach() if g is None else g.detach() for g, v in zip(grads, values)]


def _dense(grads):
    """Gradients as dense tensors: an Embedding's gradient is an IndexedSlices."""
    import tensorflow as tf

    return [tf.convert_to_tensor(g) for g in grads]
