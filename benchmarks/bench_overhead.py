"""Training overhead of the pruning wrapper: one epoch of LeNet-5 on MNIST, plain vs wrapped.

Measures, side by side in one process:

- Keras 3: the plain model, and a second copy of it (a control: the two differ only
  by measurement noise); `keras_prune.prunable` with masks at 0% and at 90%; and a
  gated wrapper (`prunable(..., gated=True)`) at 90%, to show what the opt-in gates cost;
- if tensorflow-model-optimization and tf_keras are installed (`pip install -e '.[bench]'`),
  the same LeNet-5 in tf_keras, plain and under `prune_low_magnitude` at 90%.

Each configuration trains one warm-up epoch (tracing), then one timed epoch per
round. The configurations are interleaved round by round, in alternating order, so
that drift in the machine's load hits every configuration alike. Printed per
configuration:

- ``epoch ratio``: the median over rounds of (its epoch time / the plain model's
  epoch time in the same round), against the plain model of its own framework (for
  Keras 3, the geometric mean of the two plain copies);
- ``step ratio``: the same for the median time of one training step (batch), which
  a burst of other work on the machine disturbs far less than a whole epoch;
- the work the wrapper adds to a step (re-applying the masks), timed on its own.

On a backend other than TensorFlow (``KERAS_BACKEND=jax``) it measures the Keras 3
rows by epoch and step times only: the toolkit rows, the cached-batch blocks and the
timing of the masks alone call TensorFlow directly.

Usage:
    python benchmarks/bench_overhead.py [--rounds 7] [--batch-size 128] [--steps N]
    KERAS_BACKEND=jax python benchmarks/bench_overhead.py --rounds 5 --steps 100
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_prune as kp  # noqa: E402
from keras_prune.models import lenet5  # noqa: E402

FRACTIONS = {1: 0.9, 4: 0.9, 8: 0.9, 10: 0.9, 12: 0.9}
BACKEND = keras.backend.backend()


def keras3_configs(lr: float):
    def compiled(model):
        model.compile(
            optimizer=keras.optimizers.SGD(lr, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    keras.utils.set_random_seed(0)
    plain = compiled(lenet5())
    wrapped0 = compiled(kp.prunable(lenet5()))
    wrapped90 = kp.prunable(lenet5())
    kp.prune(wrapped90, FRACTIONS)
    gated90 = kp.prunable(lenet5(), gated=True)
    kp.prune(gated90, FRACTIONS)
    return {
        "keras3 plain": (plain, []),
        "keras3 plain, second copy": (compiled(lenet5()), []),
        "keras3 keras-prune 0%": (wrapped0, []),
        "keras3 keras-prune 90%": (compiled(wrapped90), []),
        "keras3 keras-prune gated 90%": (compiled(gated90), []),
    }


def tfmot_configs(lr: float):
    if BACKEND != "tensorflow":
        return {}
    try:
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError:
        return {}
    layers = tf_keras.layers

    def lenet():
        return tf_keras.Sequential(
            [
                layers.Conv2D(6, 5, padding="same", input_shape=(28, 28, 1)),
                layers.Activation("tanh"),
                layers.MaxPooling2D(2),
                layers.Conv2D(96, 5),
                layers.Activation("tanh"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dense(120),
                layers.Activation("tanh"),
                layers.Dense(84),
                layers.Activation("tanh"),
                layers.Dense(10),
            ]
        )

    def compiled(model):
        model.compile(
            optimizer=tf_keras.optimizers.SGD(lr, momentum=0.9),
            loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    schedule = tfmot.sparsity.keras.ConstantSparsity(0.9, begin_step=0, frequency=100)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(lenet(), pruning_schedule=schedule)
    return {
        "tf_keras plain": (compiled(lenet()), []),
        "tf_keras tfmot 90%": (compiled(pruned), [tfmot.sparsity.keras.UpdatePruningStep()]),
    }


def step_timer(callback_class):
    """A callback (subclass of `callback_class`, Keras 3's or tf_keras') that records
    the wall time of every training step after the first of each epoch in ``.times``."""

    class StepTimes(callback_class):
        def __init__(self):
            super().__init__()
            self.times: list[float] = []
            self._last = None

        def on_epoch_begin(self, epoch, logs=None):
            self._last = None

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if self._last is not None:
                self.times.append(now - self._last)
            self._last = now

    return StepTimes()


def constraint_ms(model: keras.Model, repeats: int = 20, calls: int = 100) -> float:
    """Median ms of the only work the wrapper adds to a training step: re-applying
    every kernel's mask, exactly as the optimizer does after its update (timed as
    `repeats` passes per call, so the call's own overhead is spread out)."""
    variables = [v for layer in kp.wrapped_layers(model) for v in layer.pruned_variables]

    @tf.function(autograph=False)
    def reapply():
        for _ in range(repeats):
            for v in variables:
                v.assign(v.constraint(v))

    reapply()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        reapply()
        times.append((time.perf_counter() - started) / repeats)
    return 1e3 * statistics.median(times)


def step_blocks(configs: dict, batches, blocks: int, steps: int) -> dict[str, list[float]]:
    """Per-step seconds of each Keras 3 configuration's own training step (the
    `train_function` that `fit` calls), on the same `steps` cached batches, in
    `blocks` interleaved blocks of `steps` steps: no epoch bookkeeping, no input
    pipeline, so the least noisy view of what one step costs."""
    cached = batches.take(steps).cache().repeat()
    runs = {}
    for name, (model, _) in configs.items():
        model.make_train_function()
        iterator = iter(cached)
        for _ in range(steps):
            model.train_function(iterator)
        runs[name] = (model, iterator)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for block in range(blocks):
        for name in runs if block % 2 == 0 else reversed(list(runs)):
            model, iterator = runs[name]
            started = time.perf_counter()
            for _ in range(steps):
                logs = model.train_function(iterator)
            keras.tree.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, logs)
            times[name].append((time.perf_counter() - started) / steps)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--blocks", type=int, default=100,
                        help="interleaved blocks of 20 training steps per Keras 3 configuration")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per timed epoch (default: the whole training split)")
    args = parser.parse_args()

    data = kp.data.load_dataset()
    # One epoch in the order keras-prune's own training uses (a stateless per-epoch
    # shuffle); unlike a shuffle buffer, its iterator stops at once when fit ends.
    batches = data.epochs(args.batch_size, seed=0, first=0, last=1)
    steps_per_epoch = min(data.steps_per_epoch(args.batch_size), args.steps or 10**9)
    configs = {**keras3_configs(args.lr), **tfmot_configs(args.lr)}
    epochs: dict[str, list[float]] = {name: [] for name in configs}
    steps: dict[str, list[float]] = {name: [] for name in configs}
    fit_args = dict(epochs=1, steps_per_epoch=steps_per_epoch, shuffle=False, verbose=0)
    for name, (model, callbacks) in configs.items():
        model.fit(batches, callbacks=callbacks, **fit_args)  # warm-up: tracing
    for round_ in range(args.rounds):
        names = list(configs) if round_ % 2 == 0 else list(reversed(configs))
        for name in names:
            model, callbacks = configs[name]
            if name.startswith("tf_keras"):
                import tf_keras

                timer = step_timer(tf_keras.callbacks.Callback)
            else:
                timer = step_timer(keras.callbacks.Callback)
            started = time.perf_counter()
            model.fit(batches, callbacks=[*callbacks, timer], **fit_args)
            epochs[name].append(time.perf_counter() - started)
            steps[name].append(statistics.median(timer.times))

    sparsity90 = kp.sparsity_report(configs["keras3 keras-prune 90%"][0]).total_compression
    versions = f"TF {tf.__version__}"
    if BACKEND == "jax":
        import jax

        versions = f"JAX {jax.__version__} ({jax.default_backend()})"
    print(f"# wrapper overhead, {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, backend {BACKEND}, {versions}, Keras {keras.__version__}")
    print(f"# {min(len(data.x_train), steps_per_epoch * args.batch_size)} images/epoch, batch {args.batch_size}, {args.rounds} timed epochs each, "
          f"measured sparsity of the 90% model after training: {sparsity90:.4f}")
    print(f"{'configuration':<28} {'median s/epoch':>14} {'epoch ratio':>12} {'ms/step':>8} {'step ratio':>11}")
    # Keras 3 rows are compared with the geometric mean of the two plain copies in the
    # same round, so that neither copy's luck sets the baseline; the copies' ratio to
    # each other (the "second copy" row) shows what noise alone does.
    def baseline(times, name):
        if name.startswith("tf_keras"):
            return times["tf_keras plain"]
        if name.startswith("keras3 plain"):
            return times["keras3 plain"]
        return [(a * b) ** 0.5 for a, b in zip(times["keras3 plain"], times["keras3 plain, second copy"])]

    for name in configs:
        epoch_ratio = statistics.median(a / b for a, b in zip(epochs[name], baseline(epochs, name)))
        step_ratio = statistics.median(a / b for a, b in zip(steps[name], baseline(steps, name)))
        print(f"{name:<28} {statistics.median(epochs[name]):>14.2f} {epoch_ratio:>11.3f}x "
              f"{1e3 * statistics.median(steps[name]):>8.2f} {step_ratio:>10.3f}x")
    if BACKEND != "tensorflow":
        print("# the cached-batch blocks and the masks timed alone call TensorFlow: skipped")
        return
    keras3 = {name: config for name, config in configs.items() if name.startswith("keras3")}
    blocks = step_blocks(keras3, batches, args.blocks, 20)
    print(f"# {args.blocks} interleaved blocks of 20 training steps each (train_function on 20 cached batches):")
    print(f"{'configuration':<28} {'ms/step':>8} {'step ratio':>11}")
    for name in keras3:
        ratio = statistics.median(a / b for a, b in zip(blocks[name], baseline(blocks, name)))
        print(f"{name:<28} {1e3 * statistics.median(blocks[name]):>8.2f} {ratio:>10.3f}x")
    added = constraint_ms(configs["keras3 keras-prune 90%"][0])
    plain_step = 1e3 * statistics.median(steps["keras3 plain"])
    print(f"# the wrapper's added work, timed alone: {added:.3f} ms per step "
          f"= {added / plain_step:.1%} of a plain step ({plain_step:.2f} ms)")
    if "tf_keras plain" not in configs:
        print("# tensorflow-model-optimization / tf_keras not installed: toolkit rows skipped")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
