"""Timing shared by the benchmark scripts."""

from __future__ import annotations

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


def runners(model, batch: int, threads: int, xla: bool = False) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Callables that run one batch of `batch` images through `model`, keyed by runtime:
    ``"tf"`` (a concrete tf.function), ``"tflite"`` (an interpreter with `threads` threads)
    and, with `xla`, ``"tf-xla"`` (the same tf.function compiled by XLA, ``jit_compile=True``)."""
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
    return found
