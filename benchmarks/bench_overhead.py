"""Training overhead of the pruning wrapper: one epoch of LeNet-5 on MNIST, plain vs wrapped.

Measures, side by side in one process and interleaved round by round (so machine
noise hits every configuration alike):

- Keras 3: the plain model, `keras_prune.prunable` with masks at 0% and at 90%;
- if tensorflow-model-optimization and tf_keras are installed (`pip install -e '.[bench]'`),
  the same LeNet-5 in tf_keras, plain and under `prune_low_magnitude` at 90%.

Each configuration trains one warm-up epoch (tracing), then one timed epoch per
round. Prints the median epoch time of each and its ratio to the plain model of
its own framework.

Usage:
    python benchmarks/bench_overhead.py [--rounds 3] [--batch-size 128]
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
    return {
        "keras3 plain": (compiled(plain), []),
        "keras3 keras-prune 0%": (wrapped0, []),
        "keras3 keras-prune 90%": (compiled(wrapped90), []),
    }


def tfmot_configs(lr: float):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args()

    data = kp.data.load_dataset()
    batches = data.train(args.batch_size, shuffle=True, seed=0)
    configs = {**keras3_configs(args.lr), **tfmot_configs(args.lr)}
    times: dict[str, list[float]] = {name: [] for name in configs}
    for name, (model, callbacks) in configs.items():
        model.fit(batches, epochs=1, verbose=0, callbacks=callbacks)  # warm-up: tracing
    for _ in range(args.rounds):
        for name, (model, callbacks) in configs.items():
            started = time.perf_counter()
            model.fit(batches, epochs=1, verbose=0, callbacks=callbacks)
            times[name].append(time.perf_counter() - started)

    sparsity90 = kp.sparsity_report(configs["keras3 keras-prune 90%"][0]).total_compression
    print(f"# wrapper overhead, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, TF {tf.__version__}, Keras {keras.__version__}")
    print(f"# {len(data.x_train)} images/epoch, batch {args.batch_size}, {args.rounds} timed epochs each, "
          f"measured sparsity of the 90% model after training: {sparsity90:.4f}")
    print(f"{'configuration':<26} {'median s/epoch':>15} {'ratio to plain':>15}")
    for name, values in times.items():
        baseline = times["tf_keras plain" if name.startswith("tf_keras") else "keras3 plain"]
        ratio = statistics.median(values) / statistics.median(baseline)
        print(f"{name:<26} {statistics.median(values):>15.2f} {ratio:>14.3f}x")
    if "tf_keras plain" not in times:
        print("# tensorflow-model-optimization / tf_keras not installed: toolkit rows skipped")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
