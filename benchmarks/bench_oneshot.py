"""One-shot pruning without retraining: curves from 50% to 95%, and 2:4, per pruner.

For each net (the cached dense Caffe LeNet-5 and LeNet-300-100 of benchmarks/models/,
trained by bench_han.py), every weight layer is pruned to the same fraction, one
shot, per-layer selection, and the test error is measured with no retraining:

- the seven criteria score the dense model once on the calibration batches (20
  training batches of 128, shuffled with seed 0, as `keras-prune run` scores);
  each fraction and the 2:4 pattern are selected from those scores;
- the methods (wanda, sparsegpt) run once per fraction, layer by layer on the same
  batches, each layer's inputs taken from the already-pruned layers before it.

With ``--shipped``, it prints instead the criteria's formula variants (undamped,
signed) on the shipped LeNet-5 (saved_models/lenet5.keras), pruned as
`keras-prune run --pruner P` prunes it without retraining: the conf's layers one
after the other, each scored on the model as pruned so far.

Run from the repository root:

    .venv/bin/python benchmarks/bench_oneshot.py [--nets lenet5_caffe,lenet_300_100]
    .venv/bin/python benchmarks/bench_oneshot.py --shipped
    .venv/bin/python benchmarks/bench_oneshot.py --int8     # prune, then quantize

Results and the command are recorded in docs/one-shot.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_prune as kp  # noqa: E402
from keras_prune.data import load_dataset  # noqa: E402
from keras_prune.methods import Method, get_pruner, kernel_view  # noqa: E402
from keras_prune.models import build_model  # noqa: E402
from keras_prune.selection import parse_pattern, select_layer, select_matrix  # noqa: E402
from keras_prune.training import evaluate  # noqa: E402

MODELS_DIR = Path(__file__).parent / "models"
WEIGHTS = {"lenet5_caffe": "lenet5_caffe_e20.weights.h5", "lenet_300_100": "lenet_300_100_e30.weights.h5"}
PRUNERS = ["magnitude", "taylor1", "taylor2", "taylor12", "l1", "l2", "emp", "wanda", "sparsegpt"]
FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def dense(net: str) -> keras.Model:
    model = build_model(net)
    model.load_weights(MODELS_DIR / WEIGHTS[net])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def apply_scores(model: keras.Model, scores, fraction: float, pattern) -> None:
    """Masks from fixed scores: per layer, or per kernel matrix under `pattern`."""
    for layer in kp.wrapped_layers(model):
        found = scores[layer.name]
        if pattern is None:
            layer.set_mask(select_layer(found, layer.mask_arrays(), fraction))
            continue
        masks = []
        for variable, score, mask in zip(layer.pruned_variables, found, layer.mask_arrays()):
            view = kernel_view(layer.layer, variable)
            masks.append(view.kernel(select_matrix(view.matrix(score), view.matrix(mask), fraction, pattern)))
        layer.set_mask(masks)


def run_net(net: str, pruners: list[str], fractions, batches, data) -> None:
    base = dense(net)
    test = data.test()
    dense_error = evaluate(base, test).error
    names = [layer.name for layer in kp.wrapped_layers(kp.prunable(base))]
    print(f"\n{net}: dense test error {dense_error:.2f}%; every layer ({', '.join(names)}) pruned to the fraction")
    header = "".join(f"{f:>8.0%}" for f in fractions) + f"{'2:4':>8}{'seconds':>9}"
    print(f"{'pruner':<11}{header}")
    pattern = parse_pattern("2:4")
    for name in pruners:
        started = time.perf_counter()
        pruner = get_pruner(name)
        row = []
        if isinstance(pruner, Method):
            for fraction, pat in [(f, None) for f in fractions] + [(0.5, pattern)]:
                model = kp.prunable(base)
                kp.prune(model, {n: fraction for n in names}, pruner, data=batches, pattern=pat)
                row.append(evaluate(model, test).error)
        else:
            model = kp.prunable(base)
            model.compile(loss=base.loss)
            found = pruner.score(kp.wrapped_layers(model), model, batches) if pruner.needs_data else pruner.score(kp.wrapped_layers(model))
            scores = {layer.name: s for layer, s in found.items()}
            for fraction, pat in [(f, None) for f in fractions] + [(0.5, pattern)]:
                pruned = kp.prunable(base)
                apply_scores(pruned, scores, fraction, pat)
                row.append(evaluate(pruned, test).error)
        seconds = time.perf_counter() - started
        print(f"{name:<11}" + "".join(f"{e:>7.2f}%" for e in row) + f"{seconds:>9.0f}", flush=True)


SHIPPED_PLANS = {
    "conf": {"conv1": 0.5, "conv2": 0.7, "fc1": 0.95, "fc2": 0.7, "fc3": 0.5},
    "-l 8 -p 0.7": {"fc1": 0.7},
    "-l 1 -p 0.5": {"conv1": 0.5},
}
VARIANTS = [
    ("taylor1", {"damping": 0}),
    ("taylor2", {"damping": 0}),
    ("taylor2", {"hessian": "gauss-newton"}),
    ("taylor2", {"hessian": "gauss-newton", "damping": 0}),
    ("taylor12", {"signed": True}),
    ("taylor12", {"signed": True, "damping": 0}),
    ("emp", {"significance": 0, "damping": 0}),
    ("emp", {"significance": 0}),
    ("emp", {"absolute": True, "significance": 0}),
    ("emp", {"per_sample": True}),
]
"""The formula variants; the defaults are measured with `keras-prune run --pruner P`."""


def shipped(batches, data) -> None:
    """Formula variants on the shipped LeNet-5, pruned as `keras-prune run` prunes it."""
    from keras_prune.resources import PRETRAINED_MODEL

    base = kp.load_model(PRETRAINED_MODEL)
    print(f"\nshipped LeNet-5: dense test error {evaluate(base, data.test()).error:.2f}%; "
          "no retraining, layers pruned one after the other")
    print(f"{'pruner':<50}" + "".join(f"{k:>14}" for k in SHIPPED_PLANS) + f"{'seconds':>9}")
    for name, options in VARIANTS:
        started = time.perf_counter()
        errors = []
        for plan in SHIPPED_PLANS.values():
            model = kp.prunable(base)
            model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            for layer, fraction in plan.items():
                kp.prune(model, {layer: fraction}, name, data=batches, criterion_options=options)
            errors.append(evaluate(model, data.test()).error)
        label = f"{name} {options}"
        print(f"{label:<50}" + "".join(f"{e:>13.2f}%" for e in errors)
              + f"{time.perf_counter() - started:>9.0f}", flush=True)


def int8(batches, data) -> None:
    """The shipped LeNet-5, conf pruned by sparsegpt, stripped, then Keras int8-quantized."""
    import warnings

    from keras_prune.resources import PRETRAINED_MODEL

    model = kp.prunable(kp.load_model(PRETRAINED_MODEL))
    kp.prune(model, SHIPPED_PLANS["conf"], "sparsegpt", data=batches)
    plain = kp.strip(model)
    zeros = {l.name: float(np.mean(l.kernel.numpy() == 0)) for l in plain.layers if hasattr(l, "kernel")}
    print(f"\nshipped LeNet-5, conf, sparsegpt: float32 test error {evaluate(plain, data.test()).error:.2f}%")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layers without int8 support are left as they are
        plain.quantize("int8")
    print(f"after model.quantize('int8'): test error {evaluate(plain, data.test()).error:.2f}%")
    for layer in plain.layers:
        for weight in layer.weights:
            if weight.name == "kernel":
                value = keras.ops.convert_to_numpy(weight)
                print(f"  {layer.name}: {value.dtype} kernel, zeros {np.mean(value == 0):.4f} "
                      f"(before quantizing {zeros[layer.name]:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="lenet5_caffe,lenet_300_100")
    parser.add_argument("--pruners", default=",".join(PRUNERS))
    parser.add_argument("--fractions", default=",".join(str(f) for f in FRACTIONS))
    parser.add_argument("--batches", type=int, default=20, help="calibration batches of 128")
    parser.add_argument("--shipped", action="store_true", help="the criteria table on the shipped LeNet-5")
    parser.add_argument("--int8", action="store_true", help="prune (sparsegpt), then Keras int8-quantize the shipped LeNet-5")
    args = parser.parse_args()
    print(f"bench_oneshot {datetime.datetime.now():%Y-%m-%d %H:%M}: {platform.machine()}, "
          f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    data = load_dataset()
    batches = list(data.scoring(128, args.batches, 0))
    if args.shipped:
        shipped(batches, data)
        return
    if args.int8:
        int8(batches, data)
        return
    fractions = [float(f) for f in args.fractions.split(",")]
    for net in args.nets.split(","):
        run_net(net, args.pruners.split(","), fractions, batches, data)


if __name__ == "__main__":
    main()
