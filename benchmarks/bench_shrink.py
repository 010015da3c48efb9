"""Dense vs structurally pruned and shrunk models: test error, FLOPs and CPU latency.

For LeNet-5 (the shipped dense model) and a small residual CNN with BatchNorm
(trained here), this script prunes whole filters and neurons with keras-prune,
retrains on full MNIST, shrinks the model with `keras_prune.shrink`, checks that the
shrunk model computes what the masked one does, and then times the dense and the
shrunk model side by side (interleaved rounds, medians) at batch 1 and batch 256, in
two runtimes: TensorFlow (the Keras model under `tf.function`) and TensorFlow Lite
(the XNNPACK CPU interpreter a served model would use).

Run from the repository root (5 to 9 minutes on 2 shared CPU cores):

    .venv/bin/python benchmarks/bench_shrink.py

Options: ``--help``. The figures and the command are recorded in docs/structured.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

import keras_prune  # noqa: E402
from keras_prune.data import Dataset, load_dataset  # noqa: E402
from keras_prune.flops import count_macs  # noqa: E402
from keras_prune.shrink import shrink_with_report  # noqa: E402
from keras_prune.training import evaluate, train  # noqa: E402
from timing import runners  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

LENET5_FRACTIONS = {"conv2": 0.75, "fc1": 0.5, "fc2": 0.5}
RESIDUAL_FRACTIONS = {"stem": 0.5, "b1_conv1": 0.5, "b2_conv1": 0.5}


@dataclass
class Row:
    """One model's figures."""

    name: str
    parameters: int
    flops: int
    error: float
    latency: dict[str, float]  # "tf/1" -> median seconds per batch


def residual_cnn() -> keras.Model:
    """A small residual CNN for MNIST: a stem and two residual blocks with BatchNorm,
    each followed by max-pooling."""
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for block in (1, 2):
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)
        y = layers.Conv2D(32, 3, padding="same", use_bias=False, name=f"b{block}_conv1")(x)
        y = layers.BatchNormalization(momentum=0.9, name=f"b{block}_bn1")(y)
        y = layers.ReLU(name=f"b{block}_relu1")(y)
        y = layers.Conv2D(16, 3, padding="same", use_bias=False, name=f"b{block}_conv2")(y)
        y = layers.BatchNormalization(momentum=0.9, name=f"b{block}_bn2")(y)
        x = layers.Add(name=f"b{block}_add")([x, y])
        x = layers.ReLU(name=f"b{block}_relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(10, name="head")(x), name="residual_cnn")


def prune_and_retrain(
    dense: keras.Model, fractions: dict, data: Dataset, steps: int, epochs: int, lr: float, augment: bool
) -> keras.Model:
    """Filter/neuron pruning in `steps` equal steps, one retraining epoch after each but
    the last, then `epochs` epochs with a cosine-decayed learning rate. Every layer is
    wrapped, so that layers coupled to the pruned ones lose the same units."""
    masked = keras_prune.prunable(dense)
    for step in range(1, steps + 1):
        keras_prune.prune(masked, {k: f * step / steps for k, f in fractions.items()}, granularity="filter")
        last = step == steps
        train(masked, data, epochs if last else 1, lr=lr, cosine=last, seed=step, augment=augment, verbose=0)
        print(f"  step {step}/{steps}: validation {evaluate(masked, data.validation())}", flush=True)
    return masked


def check_equal(masked: keras.Model, small: keras.Model, x: np.ndarray) -> tuple[float, float]:
    """Largest output difference of the masked and the shrunk model on `x`, and the
    largest output magnitude (float32 round-off grows with it)."""
    diff = magnitude = 0.0
    for start in range(0, len(x), 1000):
        batch = x[start : start + 1000]
        a, b = masked.predict_on_batch(batch), small.predict_on_batch(batch)
        diff = max(diff, float(np.max(np.abs(a - b))))
        magnitude = max(magnitude, float(np.max(np.abs(a))))
    return diff, magnitude


def time_side_by_side(models: dict[str, keras.Model], batch: int, rounds: int, calls: int, threads: int) -> dict[str, dict[str, float]]:
    """Median seconds per batch for each model and runtime, the models interleaved
    within every round so that machine load hits them alike."""
    x = np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32)
    run = {name: runners(model, batch, threads) for name, model in models.items()}
    samples: dict[tuple[str, str], list[float]] = {}
    for fns in run.values():
        for f in fns.values():
            for _ in range(10):
                f(x)
    for _ in range(rounds):
        for name, fns in run.items():
            for runtime, f in fns.items():
                started = time.perf_counter()
                for _ in range(calls):
                    f(x)
                samples.setdefault((name, runtime), []).append((time.perf_counter() - started) / calls)
    medians: dict[str, dict[str, float]] = {name: {} for name in models}
    for (name, runtime), values in samples.items():
        medians[name][f"{runtime}/{batch}"] = statistics.median(values)
    return medians


def figures(name: str, model: keras.Model, data: Dataset) -> Row:
    return Row(name, model.count_params(), 2 * count_macs(model), evaluate(model, data.test()).error, {})


def table(pairs: list[tuple[Row, Row]]) -> str:
    keys = ["tf/1", "tflite/1", "tf/256", "tflite/256"]
    head = ["model", "parameters", "MFLOPs", "test error"] + [
        f"{k.split('/')[0].replace('tflite', 'TFLite').replace('tf', 'TF')} batch {k.split('/')[1]}" for k in keys
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dense, small in pairs:
        for row in (dense, small):
            cells = [row.name, f"{row.parameters:,}", f"{row.flops / 1e6:.2f}", f"{row.error:.2f}%"]
            cells += [f"{row.latency[k] * 1e3:.3f} ms" for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
        ratio = [
            "**dense / shrunk**",
            f"{dense.parameters / small.parameters:.1f}x",
            f"{dense.flops / small.flops:.1f}x",
            f"{small.error - dense.error:+.2f} points",
        ]
        ratio += [f"**{dense.latency[k] / small.latency[k]:.2f}x**" for k in keys]
        lines.append("| " + " | ".join(ratio) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("saved_models/lenet5.keras"), help="the dense LeNet-5")
    parser.add_argument("--steps", type=int, default=2, help="pruning steps")
    parser.add_argument("--epochs", type=int, default=10, help="retraining epochs after the last step")
    parser.add_argument("--lr", type=float, default=0.02, help="initial retraining learning rate")
    parser.add_argument("--residual-epochs", type=int, default=2, help="dense training epochs of the residual CNN")
    parser.add_argument("--skip-residual", action="store_true", help="LeNet-5 only")
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds (medians over rounds)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for both runtimes")
    args = parser.parse_args()

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    data = load_dataset()
    started = time.perf_counter()
    print(f"# bench_shrink {datetime.datetime.now().isoformat(timespec='minutes')}")
    print(f"# {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{args.threads} thread(s)")

    models: list[tuple[str, keras.Model, keras.Model]] = []
    dense = keras_prune.load_model(args.model)
    print(f"LeNet-5: pruning {LENET5_FRACTIONS} by filters, {args.steps} steps, {args.epochs} final epochs")
    masked = prune_and_retrain(dense, LENET5_FRACTIONS, data, args.steps, args.epochs, args.lr, augment=True)
    models.append(("LeNet-5", dense, masked))

    if not args.skip_residual:
        print(f"Residual CNN: training {args.residual_epochs} epochs, then pruning {RESIDUAL_FRACTIONS}")
        residual = residual_cnn()
        train(residual, data, args.residual_epochs, lr=0.05, cosine=True, seed=0, verbose=0)
        masked_residual = prune_and_retrain(residual, RESIDUAL_FRACTIONS, data, 1, 2, args.lr, augment=False)
        models.append(("residual CNN", residual, masked_residual))

    pairs = []
    for name, dense_model, masked_model in models:
        small, report = shrink_with_report(masked_model)
        print(f"\n{name} shrunk:\n{report}")
        diff, magnitude = check_equal(masked_model, small, data.x_test)
        print(f"largest output difference, masked vs shrunk, on the 10,000 test images: {diff:.2g} "
              f"(largest output {magnitude:.3g})")
        dense_row, small_row = figures(f"{name} dense", dense_model, data), figures(f"{name} shrunk", small, data)
        masked_error = evaluate(masked_model, data.test()).error
        assert abs(masked_error - small_row.error) < 1e-9, "shrunk and masked models disagree"
        for batch, calls in ((1, 200), (256, 4)):
            timed = time_side_by_side({"dense": dense_model, "small": small}, batch, args.rounds, calls, args.threads)
            dense_row.latency.update(timed["dense"])
            small_row.latency.update(timed["small"])
        pairs.append((dense_row, small_row))

    print("\nMedian latency per batch; ratios measured side by side in one run.\n")
    print(table(pairs))
    print(f"\n({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
