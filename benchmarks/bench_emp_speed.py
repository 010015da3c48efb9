"""emp's scoring time on the shipped LeNet-5, on the active backend.

Times `emp` scoring conv2 and fc2 of the shipped LeNet-5 on 4 batches of 128 MNIST
training images, fastest of `--repeats` runs (each run builds and compiles its
functions afresh, as `prune` does). With `--against MODULE.py`, a second emp
implementation (registered under another name) is timed in the same process,
alternating with this one, so the two are compared side by side.

    python benchmarks/bench_emp_speed.py --repeats 3
    KERAS_BACKEND=jax python benchmarks/bench_emp_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import numpy as np

import keras
import keras_prune as kp
from keras_prune.criteria import get_criterion
from keras_prune.data import load_dataset
from keras_prune.resources import PRETRAINED_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", help="a module registering another emp, timed alternately")
    parser.add_argument("--against-name", default="emp_old", help="the name it registers")
    args = parser.parse_args()
    names = ["emp"]
    if args.against:
        spec = importlib.util.spec_from_file_location("against", args.against)
        module = importlib.util.module_from_spec(spec)
        sys.modules["against"] = module
        spec.loader.exec_module(module)
        names.append(args.against_name)
    data = load_dataset()
    batches = [(np.asarray(x), np.asarray(y)) for x, y in data.scoring(128, 4, 0)]
    model = kp.prunable(kp.load_model(PRETRAINED_MODEL))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    layers = [model.get_layer("conv2"), model.get_layer("fc2")]
    best = {name: float("inf") for name in names}
    results = {}
    for _ in range(args.repeats):
        for name in names:
            start = time.perf_counter()
            results[name] = get_criterion(name).score(layers, model, batches)
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"backend {keras.backend.backend()}; fastest of {args.repeats}:")
    for name in names:
        print(f"  {name}: {best[name]:.2f} s")
    if args.against:
        print(f"  ratio {names[0]} / {names[1]}: {best[names[0]] / best[names[1]]:.2f}")
        difference = max(
            float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
            for layer in layers
            for a, b in zip(results[names[0]][layer], results[names[1]][layer])
        )
        print(f"  largest score difference / largest score: {difference:.1e}")


if __name__ == "__main__":
    main()
