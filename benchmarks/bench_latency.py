"""Inference latency of the shipped pruned LeNet-5 in every export format, against the dense one.

The shipped pruned model (saved_models/lenet5_pruned.keras, 14.1x fewer weights,
still wrapped) and the dense model (saved_models/lenet5.keras) are each exported with
keras-prune's exporters to a temporary folder and loaded back as a deployment would:

- ``.keras``: the file as shipped, loaded with `keras_prune.load_model` (the pruned
  one still computes ``w * mask * gate`` in every call);
- ``stripped``: `keras_prune.export_keras` (plain Keras layers, zeros baked in),
  loaded with plain `keras.models.load_model`;
- ``SavedModel``: `keras_prune.export_savedmodel`, run through its ``serving_default``
  signature (`tf.saved_model.load`);
- ``TFLite``: `keras_prune.export_tflite` (float32), run by the TFLite interpreter
  (XNNPACK); for the pruned model also with ``sparse=True`` (TFLite's sparse weight
  format, which the interpreter densifies when it loads the model).

Keras models run under one `tf.function` each (no per-call Python overhead of
``model.predict``). All configurations are timed interleaved, round after round, at
batch 1 and batch 256 with the same thread count, so machine load hits them alike; the
table gives medians and each pruned configuration's ratio to the dense model in the
same format. Before timing, every configuration's test error is measured and the
pruned exports' logits are compared with the shipped pruned model's.

Run from the repository root (about 2 minutes on 2 CPU cores):

    .venv/bin/python benchmarks/bench_latency.py [--rounds 50] [--threads 1]

Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_prune as kp  # noqa: E402
from keras_prune.data import load_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"dense": ROOT / "saved_models" / "lenet5.keras", "pruned": ROOT / "saved_models" / "lenet5_pruned.keras"}
BATCHES = {1: 200, 256: 20}  # batch size -> calls per round

Runner = Callable[[np.ndarray], np.ndarray]


def keras_runner(model: keras.Model) -> Runner:
    """Logits of a Keras model, through one `tf.function`."""
    fn = tf.function(lambda x: model(x, training=False))
    return lambda x: fn(tf.constant(x)).numpy()


def savedmodel_runner(folder: Path) -> Runner:
    """Logits from a SavedModel's ``serving_default`` signature."""
    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    return lambda x: serve(images=tf.constant(x))["logits"].numpy()


def tflite_runner(path: Path, threads: int) -> Runner:
    """Logits from a TFLite file, the input resized to each new batch size."""
    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=threads)
    runner = interpreter.get_signature_runner("serving_default")
    source = interpreter.get_input_details()[0]["index"]
    logits = runner.get_output_details()["logits"]["index"]
    shape = [None]

    def run(x: np.ndarray) -> np.ndarray:
        if shape[0] != x.shape:
            interpreter.resize_tensor_input(source, x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(logits)

    return run


def exports(folder: Path, threads: int) -> tuple[dict[str, Runner], dict[str, int]]:
    """Runners for every (model, format) configuration, and the size of its file(s)."""
    runners, sizes = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, path in MODELS.items():
            runners[f"{name} .keras"] = keras_runner(kp.load_model(path))
            sizes[f"{name} .keras"] = path.stat().st_size
            plain = kp.export_keras(path, folder / f"{name}_plain.keras")
            runners[f"{name} stripped .keras"] = keras_runner(keras.models.load_model(plain))
            sizes[f"{name} stripped .keras"] = plain.stat().st_size
            saved = kp.export_savedmodel(path, folder / "serving", name=name)
            runners[f"{name} SavedModel"] = savedmodel_runner(saved)
            sizes[f"{name} SavedModel"] = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file())
            variants = {"TFLite": False, "TFLite sparse": True} if name == "pruned" else {"TFLite": False}
            for label, sparse in variants.items():
                lite = kp.export_tflite(path, folder / f"{name}{'_sparse' if sparse else ''}.tflite", sparse=sparse)
                runners[f"{name} {label}"] = tflite_runner(lite, threads)
                sizes[f"{name} {label}"] = lite.stat().st_size
    return runners, sizes


def check(runners: dict[str, Runner], x: np.ndarray, y: np.ndarray) -> dict[str, tuple[float, float]]:
    """Test error (%) of each configuration, and its largest logit difference from the
    same model's .keras file (batches of 500)."""
    logits = {name: np.concatenate([run(x[i : i + 500]) for i in range(0, len(x), 500)]) for name, run in runners.items()}
    out = {}
    for name, values in logits.items():
        reference = logits[f"{name.split()[0]} .keras"]
        out[name] = (100.0 * float(np.mean(values.argmax(-1) != y)), float(np.max(np.abs(values - reference))))
    return out


def time_all(runners: dict[str, Runner], batch: int, calls: int, rounds: int) -> dict[str, float]:
    """Median seconds per call of each runner at `batch`, interleaved round by round."""
    x = np.random.default_rng(0).random((batch, 28, 28, 1), dtype=np.float32)
    for run in runners.values():
        for _ in range(5):
            run(x)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            started = time.perf_counter()
            for _ in range(calls):
                run(x)
            samples[name].append((time.perf_counter() - started) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def table(checks: dict[str, tuple[float, float]], sizes: dict[str, int], timings: dict[int, dict[str, float]]) -> str:
    """One row per format: dense and pruned side by side, and pruned / dense latency."""
    head = ["format", "file size dense / pruned", "test error dense / pruned", "max logit diff pruned vs .keras"]
    for batch in timings:
        head += [f"batch {batch}: dense", "pruned", "pruned / dense"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, (error, diff) in checks.items():
        if not name.startswith("pruned "):
            continue
        fmt = name.removeprefix("pruned ")
        dense = "dense " + fmt.removesuffix(" sparse")
        cells = [fmt, f"{sizes[dense] / 1024:.0f} / {sizes[name] / 1024:.0f} KiB",
                 f"{checks[dense][0]:.2f}% / {error:.2f}%", f"{diff:.1e}"]
        for medians in timings.values():
            cells += [f"{medians[dense] * 1e3:.3f} ms", f"{medians[name] * 1e3:.3f} ms",
                      f"**{medians[name] / medians[dense]:.2f}x**"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50, help="timing rounds (medians over rounds)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for every runtime")
    args = parser.parse_args()

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    print(f"# bench_latency {datetime.datetime.now().isoformat(timespec='minutes')}: python {' '.join(sys.argv)}")
    print(f"# {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{args.threads} thread(s)")
    started = time.perf_counter()
    data = load_dataset()
    x_test = (data.x_test.astype(np.float32) / 255.0)
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as folder:
        runners, sizes = exports(Path(folder), args.threads)
        checks = check(runners, x_test, data.y_test)
        timings = {batch: time_all(runners, batch, calls, args.rounds) for batch, calls in BATCHES.items()}
    print(f"\nMedian latency per call ({args.rounds} rounds; batch 1: {BATCHES[1]} calls per round, "
          f"batch 256: {BATCHES[256]}); ratio = pruned / dense in the same format.\n")
    print(table(checks, sizes, timings))
    print(f"\n({time.perf_counter() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
