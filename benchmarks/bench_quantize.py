"""Prune, then quantize: TFLite sizes, test error and latency, dense vs pruned (sparse storage).

For each model, every TFLite file is made by `keras_prune.export.tflite_bytes` (the
export `keras-prune export --format tflite` writes) in three precisions, float32,
float16 (weights) and int8 (full integer, calibrated on training images), and for the
pruned model also with TFLite's sparse weight storage
(``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``), which XNNPACK may run with its sparse
kernels (only in convolution networks of a narrow shape: a sparse subgraph starts
with a 3x3 stride-2 convolution padded by 1 on each side and holds 1x1 convolutions
with at least 2/3 zeros, see docs/export.md):

- ``lenet5``: the shipped dense LeNet-5 and the shipped pruned one (14.1x fewer
  weights); test error on the 10,000 MNIST test images; int8 calibrated on the first
  500 training images;
- ``mobilenetv2``: ``keras.applications.MobileNetV2(weights=None)`` at a small input
  (random weights: latency only), and the same with every Conv2D and Dense kernel
  magnitude-pruned to `--fraction` (depthwise kernels dense); int8 calibrated on random
  images;
- ``sparse_pattern_net``: a small network built to XNNPACK's sparse pattern (explicitly
  padded 3x3 stride-2 stem, 3x3 depthwise + 1x1 blocks, global average pool), pruned
  and timed as MobileNetV2 is, to see whether the sparse kernels engage at all.

For the random-weight models the script prints the largest difference between the
outputs of the sparse-storage and the dense-storage file of the pruned model: 0.0 means
the interpreter computed exactly as with dense weights.

Each file runs in two TFLite interpreters, one with XNNPACK (the default) and one
with TFLite's built-in kernels only (no default delegate), `--threads` threads, at
batch 1; all of a model's interpreters are timed interleaved, round after round, and
the table gives the fastest round's CPU time per call (`time.process_time`, all threads
of the process: on a machine shared with other work, wall time also counts the time the
process waits for a core), and each file's ratio to the dense model's file of the same
precision in the same interpreter.

Run from the repository root (about 6 minutes on 2 shared CPU cores):

    .venv/bin/python benchmarks/bench_quantize.py [--rounds 20] [--threads 1] [--size 96] [--fraction 0.9]

Results are recorded in docs/export.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_prune as kp  # noqa: E402
from keras_prune.data import load_dataset  # noqa: E402
from keras_prune.export import tflite_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = ("float32", "float16", "int8")


@dataclass
class Variant:
    """One TFLite file: which model, precision and weight storage, and what it gives."""

    model: str  # "dense" or "pruned"
    precision: str
    sparse: bool
    content: bytes
    error: float | None = None  # test error, where there is a test set
    seconds: float = float("inf")  # fastest round's CPU time per call, with XNNPACK
    builtin_seconds: float = float("inf")  # the same with TFLite's built-in kernels only

    @property
    def label(self) -> str:
        return f"{self.model}, {'sparse' if self.sparse else 'dense'} storage"


def interpreter(content: bytes, threads: int, xnnpack: bool = True) -> tf.lite.Interpreter:
    """An interpreter with XNNPACK (the default delegate) or with TFLite's built-in kernels only."""
    resolver = tf.lite.experimental.OpResolverType
    kernels = resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        result = tf.lite.Interpreter(
            model_content=content, num_threads=threads, experimental_op_resolver_type=kernels
        )
    result.allocate_tensors()
    return result


def logits(content: bytes, images: np.ndarray, threads: int) -> np.ndarray:
    runner = interpreter(content, threads).get_signature_runner("serving_default")
    output = next(iter(runner.get_output_details()))
    return np.concatenate([runner(images=images[i : i + 500])[output] for i in range(0, len(images), 500)])


def variants(models: dict[str, keras.Model], calibration: np.ndarray) -> list[Variant]:
    """Every TFLite file of the dense and the pruned model (sparse storage for the pruned one only)."""
    made = []
    for precision in PRECISIONS:
        for name, model in models.items():
            for sparse in (False, True) if name == "pruned" else (False,):
                content = tflite_bytes(
                    model, precision, sparse, calibration if precision == "int8" else None
                )
                made.append(Variant(name, precision, sparse, content))
    return made


def time_interleaved(made: list[Variant], image: np.ndarray, rounds: int, calls: int, threads: int) -> None:
    """Sets each variant's fastest round's CPU time per call, at batch 1, with and without XNNPACK."""
    runs = []
    for variant in made:
        for xnnpack in (True, False):
            tflite = interpreter(variant.content, threads, xnnpack)
            source = tflite.get_input_details()[0]["index"]
            tflite.resize_tensor_input(source, image.shape)
            tflite.allocate_tensors()
            runs.append((variant, xnnpack, tflite, source))
    for _ in range(rounds):
        for variant, xnnpack, tflite, source in runs:
            tflite.set_tensor(source, image)
            start = time.process_time()
            for _ in range(calls):
                tflite.invoke()
            seconds = (time.process_time() - start) / calls
            if xnnpack:
                variant.seconds = min(variant.seconds, seconds)
            else:
                variant.builtin_seconds = min(variant.builtin_seconds, seconds)


def table(title: str, made: list[Variant]) -> str:
    dense = {v.precision: v for v in made if v.model == "dense"}
    has_error = any(v.error is not None for v in made)
    lines = [
        f"{title}",
        f"| precision | model | bytes | bytes vs dense | CPU ms per image | speed-up vs dense "
        "| CPU ms, built-in kernels | speed-up vs dense, built-in |" + (" test error |" if has_error else ""),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if has_error else ""),
    ]
    for v in made:
        reference = dense[v.precision]
        line = (
            f"| {v.precision} | {v.label} | {len(v.content):,} | {len(reference.content) / len(v.content):.2f}x "
            f"| {v.seconds * 1e3:.3f} | {reference.seconds / v.seconds:.2f}x "
            f"| {v.builtin_seconds * 1e3:.3f} | {reference.builtin_seconds / v.builtin_seconds:.2f}x |"
        )
        lines.append(line + (f" {v.error:.2%} |" if has_error else ""))
    return "\n".join(lines)


def lenet5(args) -> list[Variant]:
    data = load_dataset()
    models = {
        "dense": kp.load_model(ROOT / "saved_models" / "lenet5.keras"),
        "pruned": kp.strip(kp.load_model(ROOT / "saved_models" / "lenet5_pruned.keras")),
    }
    calibration = next(iter(data.train(batch_size=500, shuffle=False)))[0].numpy()
    test = next(iter(data.test(batch_size=len(data.x_test))))[0].numpy()
    for name, model in models.items():
        error = np.mean(model.predict(test, verbose=0).argmax(1) != data.y_test)
        print(f"lenet5 {name}: Keras model test error {error:.2%}", flush=True)
    made = variants(models, calibration)
    for v in made:
        v.error = float(np.mean(logits(v.content, test, args.threads).argmax(1) != data.y_test))
    time_interleaved(made, test[:1], args.rounds, calls=200, threads=args.threads)
    return made


def magnitude_pruned(model: keras.Model, fraction: float) -> keras.Model:
    """Every Conv2D (not depthwise) and Dense kernel pruned to `fraction` by magnitude, stripped."""
    kinds = (keras.layers.Conv2D, keras.layers.Dense)
    names = [
        layer.name for layer in model.layers
        if isinstance(layer, kinds) and not isinstance(layer, keras.layers.DepthwiseConv2D)
    ]
    wrapped = kp.prunable(model, names)
    kp.prune(wrapped, {name: fraction for name in names})
    return kp.strip(wrapped)


def sparse_pattern_net(size: int, width: int = 128, blocks: int = 6) -> keras.Model:
    """A small network built to XNNPACK's sparse-inference pattern: a 3x3 stride-2 stem
    padded by 1 on each side (explicit ZeroPadding2D), 3 input channels, then blocks of a
    3x3 depthwise and a 1x1 convolution (ReLU6), a global average pool kept 4-D, a
    classifier."""
    layers = keras.layers
    inputs = keras.Input((size, size, 3))
    x = layers.Conv2D(32, 3, strides=2)(layers.ZeroPadding2D(1)(inputs))
    x = layers.ReLU(6.0)(layers.Conv2D(width, 1)(layers.ReLU(6.0)(x)))
    for _ in range(blocks):
        x = layers.ReLU(6.0)(layers.DepthwiseConv2D(3)(layers.ZeroPadding2D(1)(x)))
        x = layers.ReLU(6.0)(layers.Conv2D(width, 1)(x))
    x = layers.Flatten()(layers.GlobalAveragePooling2D(keepdims=True)(x))
    return keras.Model(inputs, layers.Dense(10)(x), name="sparse_pattern_net")


def random_weights(dense: keras.Model, args) -> list[Variant]:
    """`dense` and its magnitude-pruned copy, timed on random images (no accuracy)."""
    models = {"dense": dense, "pruned": magnitude_pruned(dense, args.fraction)}
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 1, (50, args.size, args.size, 3)).astype("float32")
    made = variants(models, calibration)
    image = rng.uniform(0, 1, (1, args.size, args.size, 3)).astype("float32")
    for v in made:  # does sparse storage compute what dense storage computes, bit for bit?
        if v.sparse:
            twin = next(w for w in made if w.model == "pruned" and w.precision == v.precision and not w.sparse)
            gap = np.max(np.abs(logits(v.content, image, 1) - logits(twin.content, image, 1)))
            print(f"{dense.name} {v.precision}: sparse vs dense storage, max |logit difference| {gap:.2e}", flush=True)
    time_interleaved(made, image, args.rounds, calls=10, threads=args.threads)
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=96, help="MobileNetV2 input size (pixels)")
    parser.add_argument("--fraction", type=float, default=0.9, help="MobileNetV2 pruned fraction")
    args = parser.parse_args()
    print(
        f"{datetime.date.today()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} thread(s), "
        f"batch 1, CPU time, fastest of {args.rounds} interleaved rounds",
        flush=True,
    )
    print(table("LeNet-5 (shipped dense vs shipped pruned, 14.1x fewer weights):", lenet5(args)), flush=True)
    keras.utils.set_random_seed(0)
    for dense in (
        keras.applications.MobileNetV2(weights=None, input_shape=(args.size, args.size, 3), classes=10),
        sparse_pattern_net(args.size),
    ):
        title = (
            f"{dense.name} {args.size}x{args.size}, random weights, Conv2D/Dense kernels pruned to "
            f"{args.fraction:.0%} by magnitude:"
        )
        print(table(title, random_weights(dense, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
