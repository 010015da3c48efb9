"""The seven criteria on the shipped LeNet-5: scoring cost, emp's speed-up, pruned error.

Three tables, one run, same scoring batches throughout (the first 20 batches of 128
training images, shuffled with seed 0, as `keras-prune run` scores by default):

1. cost: for each criterion (taylor2 and taylor12 with both Hessian estimates), the
   wall time of scoring all five weight layers, as a ratio to one training pass over
   the same 20 batches (`fit`, SGD, warm: the fastest of three passes). Criterion
   times are first calls, tracing included, as a user pays them.
2. emp against a brute-force loop that zeroes each weight, re-evaluates the loss
   batch by batch (eager model calls) and restores it, on conv1 (all 150 weights) and
   fc3 (timed on its first `--fc3-weights` of 840 weights, scaled up); the scores of
   both are compared.
3. error: every criterion prunes the model one-shot with the original's conf
   (conv1 0.5, conv2 0.7, fc1 0.95, fc2 0.7, fc3 0.5; all layers scored once on the
   unpruned model, per-layer selection), then test error without retraining and
   after 1 epoch of retraining (SGD lr 0.01, momentum 0.9, batch 128: the original's).

Run from the repository root (about 9 minutes on 2 shared CPU cores):

    .venv/bin/python benchmarks/bench_criteria.py [--model saved_models/lenet5.keras]

Results and the command are recorded in docs/criteria.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_prune as kp  # noqa: E402
from keras_prune.criteria import get_criterion  # noqa: E402
from keras_prune.data import load_dataset  # noqa: E402
from keras_prune.selection import select_layer  # noqa: E402
from keras_prune.training import compile_classifier, evaluate, train  # noqa: E402

CONF = {"conv1": 0.5, "conv2": 0.7, "fc1": 0.95, "fc2": 0.7, "fc3": 0.5}
CRITERIA = [
    ("magnitude", {}),
    ("taylor1", {}),
    ("taylor2", {"hessian": "hutchinson"}),
    ("taylor2", {"hessian": "gauss-newton"}),
    ("taylor12", {"hessian": "hutchinson"}),
    ("taylor12", {"hessian": "gauss-newton"}),
    ("l1", {}),
    ("l2", {}),
    ("emp", {}),
]
"""Criteria with their default options, except the Hessian estimate, named explicitly."""


def label(name: str, options: dict) -> str:
    return name + (f" ({options['hessian']})" if "hessian" in options else "")


def training_pass_seconds(base: keras.Model, batches: tf.data.Dataset) -> float:
    """Fastest of three `fit` epochs over `batches` (after a first, tracing, epoch)."""
    model = kp.prunable(base)
    compile_classifier(model)
    model.fit(batches, epochs=1, verbose=0)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        model.fit(batches, epochs=1, verbose=0)
        times.append(time.perf_counter() - started)
    return min(times)


def brute_force_emp(model: keras.Model, layer: kp.PruneWrapper, batches, count: int) -> np.ndarray:
    """The naive emp for the first `count` weights (flat order): zero the weight,
    re-evaluate the loss batch by batch, restore it."""
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    images = sum(int(y.shape[0]) for _, y in batches)

    def mean_loss() -> float:
        return sum(float(loss(y, model(x, training=False))) for x, y in batches) / images

    var = layer.pruned_variables[0]
    original = var.numpy()
    base = mean_loss()
    changes = np.zeros(count)
    for k in range(count):
        modified = original.copy()
        modified.flat[k] = 0.0
        var.assign(modified)
        changes[k] = mean_loss() - base
    var.assign(original)
    return changes


def compare_emp(base: keras.Model, name: str, batched: np.ndarray, seconds: float, batches, count: int) -> None:
    """Prints batched emp against the brute-force loop on one layer."""
    model = kp.prunable(base)
    layer = model.get_layer(name)
    total = layer.weight_count()
    started = time.perf_counter()
    brute = brute_force_emp(model, layer, batches, count)
    brute_seconds = (time.perf_counter() - started) * total / count
    measured = "measured" if count == total else f"{count} weights timed, x{total / count:g}"
    difference = np.abs(batched.ravel()[:count] - brute).max()
    print(f"{name:<6}{total:>8,}{seconds:>10.1f}{brute_seconds:>12.1f} ({measured}){'':<4}"
          f"{brute_seconds / seconds:>6.1f}x   {difference:.1e} (scores up to {np.abs(brute).max():.1e})",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="saved_models/lenet5.keras", help="trained LeNet-5 (.keras)")
    parser.add_argument("--score-batches", type=int, default=20, help="scoring batches of 128")
    parser.add_argument("--fc3-weights", type=int, default=60, help="fc3 weights the brute-force loop is timed on")
    args = parser.parse_args()

    print(f"date: {datetime.datetime.now():%Y-%m-%d %H:%M}  machine: {platform.machine()}, "
          f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    data = load_dataset()
    base = kp.load_model(args.model)
    batches = data.train(128, shuffle=True, seed=0).take(args.score_batches).cache()
    fixed = list(batches)
    print(f"model: {args.model}; scoring on {args.score_batches} training batches of 128")

    train_pass = training_pass_seconds(base, batches)
    print(f"\n1. Scoring all 5 weight layers (313,470 weights); one training pass over the "
          f"same batches: {train_pass:.2f} s")
    print(f"{'criterion':<26}{'seconds':>9}{'x training pass':>17}")
    scores, emp_seconds = {}, {}
    for name, options in CRITERIA:
        model = kp.prunable(base)
        layers = kp.wrapped_layers(model)
        criterion = get_criterion(name, **options)
        # emp scores each layer on its own anyway: it is timed layer by layer (the
        # sum is the time for all layers), for table 2.
        groups = [[layer] for layer in layers] if name == "emp" else [layers]
        found, seconds = {}, 0.0
        for group in groups:
            started = time.perf_counter()
            found.update(criterion.score(group, model, fixed))
            elapsed = time.perf_counter() - started
            seconds += elapsed
            if name == "emp":
                emp_seconds[group[0].name] = elapsed
        scores[label(name, options)] = {layer.name: found[layer] for layer in layers}
        print(f"{label(name, options):<26}{seconds:>9.2f}{seconds / train_pass:>17.1f}", flush=True)
    print("emp per layer (s): " + ", ".join(f"{k} {v:.1f}" for k, v in emp_seconds.items()))

    print("\n2. Batched emp against the brute-force loop (same batches, all 2,560 images)")
    print(f"{'layer':<6}{'weights':>8}{'emp (s)':>10}{'loop (s)':>12}{'':<26}{'speed-up':>8}   largest score difference")
    compare_emp(base, "conv1", scores["emp"]["conv1"][0], emp_seconds["conv1"], fixed, 150)
    compare_emp(base, "fc3", scores["emp"]["fc3"][0], emp_seconds["fc3"], fixed, args.fc3_weights)

    print("\n3. Test error (%) after pruning with the original's conf, one-shot "
          f"(dense: {evaluate(kp.prunable(base), data.test()).error:.2f}%)")
    print(f"{'criterion':<26}{'no retraining':>15}{'1 epoch retrained':>19}")
    for key, by_name in scores.items():
        model = kp.prunable(base)
        for name, fraction in CONF.items():
            layer = model.get_layer(name)
            layer.set_mask(select_layer(by_name[name], layer.mask_arrays(), fraction))
        before = evaluate(model, data.test()).error
        keras.utils.set_random_seed(0)
        train(model, data, 1, lr=0.01, momentum=0.9, batch_size=128, seed=0, verbose=0)
        after = evaluate(model, data.test()).error
        print(f"{key:<26}{before:>14.2f}%{after:>18.2f}%", flush=True)


if __name__ == "__main__":
    main()
