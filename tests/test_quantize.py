"""Prune, then quantize: Keras 3's int8 quantization keeps pruned weights at zero."""

from __future__ import annotations

import warnings

import keras
import numpy as np

import keras_prune as kp


def test_int8_quantization_of_a_stripped_pruned_model_keeps_its_zeros():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((20,))
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    model = kp.prunable(keras.Model(inputs, keras.layers.Dense(5, name="fc2")(x)))
    x = np.random.default_rng(0).normal(size=(64, 20)).astype("float32")
    kp.prune(model, {"fc1": 0.7, "fc2": 0.5}, "sparsegpt", data=[(x, np.zeros(64))], pattern=None)
    plain = kp.strip(model)
    pruned = {name: plain.get_layer(name).kernel.numpy() == 0 for name in ("fc1", "fc2")}
    before = plain(x).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "InputLayer does not have a quantize method"
        plain.quantize("int8")
    for name, zeros in pruned.items():
        layer = plain.get_layer(name)
        quantized = keras.ops.convert_to_numpy(next(w for w in layer.weights if w.name == "kernel"))
        assert quantized.dtype == np.int8
        assert (quantized[zeros] == 0).all(), name
        assert (quantized == 0).mean() >= zeros.mean()
    after = plain(x).numpy()
    assert np.abs(after - before).max() < 0.05 * np.abs(before).max()
