"""Cost at scale: wrap, score (magnitude, taylor1), prune and strip models of growing size.

Each model runs in its own subprocess so that its peak resident memory (ru_maxrss)
is its own. Models: the original's LeNet-5 (0.3M weights), keras.applications
MobileNetV2 (2.3M) and ResNet50 (23.6M), the latter two with weights=None on 64x64x3
inputs and 10 classes (random images and labels: this measures cost, not accuracy).

Prints, per model: parameters, seconds for each phase, and peak memory in MiB.

Usage:
    python benchmarks/bench_scale.py [--batches 2] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

MODELS = ("lenet5", "mobilenet_v2", "resnet50")


def build(name: str):
    import keras

    from keras_prune.models import lenet5

    if name == "lenet5":
        return lenet5(), (28, 28, 1)
    shape = (64, 64, 3)
    factory = {"mobilenet_v2": keras.applications.MobileNetV2, "resnet50": keras.applications.ResNet50}[name]
    return factory(weights=None, input_shape=shape, classes=10), shape


def measure(name: str, batches: int, batch_size: int) -> dict:
    """Runs every phase on one model in this process and returns the timings."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    import keras_prune as kp
    from keras_prune.criteria import get_criterion

    timings: dict[str, float] = {}

    def timed(phase, fn):
        started = time.perf_counter()
        result = fn()
        timings[phase] = time.perf_counter() - started
        return result

    model, shape = build(name)
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (rng.random((batches * batch_size, *shape), dtype=np.float32), rng.integers(0, 10, batches * batch_size))
    ).batch(batch_size)
    wrapped = timed("wrap", lambda: kp.prunable(model))
    layers = kp.wrapped_layers(wrapped)
    timed("magnitude", lambda: get_criterion("magnitude").score(layers, wrapped, data))
    timed("taylor1", lambda: get_criterion("taylor1").score(layers, wrapped, data))
    timed("prune 50%", lambda: kp.prune(wrapped, {layer.name: 0.5 for layer in layers}))
    plain = timed("strip", lambda: kp.strip(wrapped))
    report = kp.sparsity_report(plain)
    return {
        "model": name,
        "params": int(model.count_params()),
        "prunable": report.weights,
        "sparsity": report.total_compression,
        **timings,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2, help="training batches taylor1 scores on")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--one", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batches, args.batch_size)))
        return
    rows = []
    for name in MODELS:
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--batches", str(args.batches), "--batch-size", str(args.batch_size)],
            capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"# scale, {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"taylor1 over {args.batches} batches of {args.batch_size}")
    phases = ["wrap", "magnitude", "taylor1", "prune 50%", "strip"]
    print(f"{'model':<14} {'params':>12} {'prunable':>12} " + " ".join(f"{p + ' s':>12}" for p in phases) + f" {'peak MiB':>10}")
    for row in rows:
        print(f"{row['model']:<14} {row['params']:>12,} {row['prunable']:>12,} "
              + " ".join(f"{row[p]:>12.2f}" for p in phases) + f" {row['peak_mib']:>10.0f}")


if __name__ == "__main__":
    main()
