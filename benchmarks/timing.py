"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class Clock:
    """CPU (all threads of this process) and wall seconds since it was started."""

    cpu: float = field(default_factory=time.process_time)
    wall: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) so far."""
        return time.process_time() - self.cpu, time.perf_counter() - self.wall


def fastest_interleaved(
    calls: dict, x: np.ndarray, rounds: int, burst: int = 5, seed: int = 0
) -> dict:
    """The fastest call of each runner in `calls` (any keys), in seconds.

    Every round runs each runner `burst` times in a row, the runners in a new random
    order each round, so that a burst of load on a shared machine falls on all of them
    alike. Within a burst the second and later calls find the caches, the allocator and
    the thread pool as that runner's previous call left them: the steady state of a
    server answering a stream of requests with one model. With ``burst=1`` every call
    follows another runner's, whose weights and activations have just replaced its own
    in the caches: a model served beside others. (A fixed order, as the benchmarks used
    until 2026-12-05, also lets each runner always follow the same other one.)
    """
    for f in calls.values():  # warm-up: graph building, XNNPACK packing, caches
        f(x)
        f(x)
    order = list(calls)
    shuffle = random.Random(seed).shuffle
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        shuffle(order)
        for key in order:
            for _ in range(burst):
                started = time.perf_counter()
                calls[key](x)
                best[key] = min(best[key], time.perf_counter() - started)
    return best


def runners(
    model, batch: int, threads: int, xla: bool = False, serving: bool = False
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Callables that run one batch of `batch` images through `model`, keyed by runtime:
    ``"tf"`` (a concrete tf.function), ``"tflite"`` (an interpreter with `threads` threads),
    with `xla` ``"tf-xla"`` (the same tf.function compiled by XLA, ``jit_compile=True``) and,
    with `serving`, ``"tf-serving"``: the model written by `keras_prune.export_savedmodel`
    and run as TensorFlow Serving runs it, its signature in a TF1 `Session` (Grappler
    optimises the whole graph once; `threads` intra- and inter-op threads)."""
    import tensorflow as tf

    spec = tf.TensorSpec((batch, *model.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The converter reads the weights from the tf.Variables behind the Keras variables: a
        # Keras 3 model does not track them for TensorFlow, and converting with the model
        # itself as the trackable gives a TFLite model with garbage weights.
        holder = tf.Module()
        holder.variables_ = [v.value for v in model.variables]
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
        interpreter = tf.lite.Interpreter(model_content=converter.convert(), num_threads=threads)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]

    def run_tflite(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target)

    found = {"tf": lambda x: concrete(tf.constant(x)).numpy(), "tflite": run_tflite}
    if xla:
        compiled = tf.function(lambda x: model(x, training=False), jit_compile=True).get_concrete_function(spec)
        found["tf-xla"] = lambda x: compiled(tf.constant(x)).numpy()
    if serving:
        found["tf-serving"] = _serving_session(model, threads)
    return found


def _serving_session(model, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    import tempfile

    import tensorflow as tf

    import keras_prune

    folder = keras_prune.export_savedmodel(model, tempfile.mkdtemp(prefix="bench-serving-"), name="model")
    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
    session = tf.compat.v1.Session(graph=graph, config=config)
    with graph.as_default():
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(folder)).signature_def["serving_default"]
    (source,) = [t.name for t in signature.inputs.values()]
    (target,) = [t.name for t in signature.outputs.values()]
    return lambda x: session.run(target, {source: x})
