"""The mechanism's invariants: pruned weights get zero gradient and stay exactly zero."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import keras
from keras_prune import PruneWrapper


def _half_mask(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) < 0.5).astype("float32")


def _regression_model(optimizer):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    hidden = PruneWrapper(keras.layers.Dense(8, activation="tanh", name="fc1"))(inputs)
    outputs = PruneWrapper(keras.layers.Dense(3, name="fc2"))(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=optimizer, loss="mse")
    return model


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
        lambda: keras.optimizers.Adam(0.01),
        lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
        lambda: keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=0.01),
    ],
    ids=["sgd-momentum", "adam", "adamw", "sgd-weight-decay"],
)
def test_pruned_weights_stay_exactly_zero_after_optimizer_steps(optimizer):
    model = _regression_model(optimizer())
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")
    # Train unpruned first so momentum / Adam moments are non-zero for every weight.
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    wrapper = model.get_layer("fc1")
    mask = _half_mask(wrapper.layer.kernel.shape)
    wrapper.set_mask([mask])
    assert np.all(wrapper.layer.kernel.numpy()[mask == 0] == 0.0)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    kernel = wrapper.layer.kernel.numpy()
    assert np.all(kernel[mask == 0] == 0.0)
    assert np.count_nonzero(kernel[mask == 1]) == int(mask.sum())  # the rest still learn


def test_gradients_reaching_pruned_weights_are_exactly_zero():
    model = _regression_model("sgd")
    wrapper = model.get_layer("fc1")
    mask = _half_mask(wrapper.layer.kernel.shape, seed=3)
    wrapper.set_mask([mask])
    x = tf.random.normal((16, 6))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    grad = tape.gradient(loss, wrapper.layer.kernel).numpy()
    assert np.all(grad[mask == 0] == 0.0)
    assert np.count_nonzero(grad[mask == 1]) > 0


LAYERS = {
    "dense": (lambda: keras.layers.Dense(5), (4, 7)),
    "conv1d": (lambda: keras.layers.Conv1D(3, 3), (2, 9, 4)),
    "conv2d": (lambda: keras.layers.Conv2D(3, 3), (2, 8, 8, 2)),
    "conv3d": (lambda: keras.layers.Conv3D(2, 2), (2, 4, 4, 4, 2)),
    "depthwise": (lambda: keras.layers.DepthwiseConv2D(3), (2, 8, 8, 3)),
    "separable": (lambda: keras.layers.SeparableConv2D(4, 3), (2, 8, 8, 3)),
    "embedding": (lambda: keras.layers.Embedding(20, 6), (3, 5)),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_wrapper_computes_with_masked_weights_for_every_layer_type(kind):
    make, shape = LAYERS[kind]
    keras.utils.set_random_seed(2)
    if kind == "embedding":
        x = np.random.default_rng(0).integers(0, 20, size=shape)
    else:
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
    wrapper = PruneWrapper(make())
    dense_out = wrapper(x).numpy()
    masks = [_half_mask(v.shape, seed=i) for i, v in enumerate(wrapper.pruned_variables)]
    originals = [v.numpy().copy() for v in wrapper.pruned_variables]
    wrapper.set_mask(masks)
    # Reference: a plain copy of the layer holding w * mask.
    reference = make()
    reference.build(wrapper.layer.get_build_config()["input_shape"])
    by_id = {id(v): o * m for v, o, m in zip(wrapper.pruned_variables, originals, masks)}
    reference.set_weights([by_id.get(id(v), v.numpy()) for v in wrapper.layer.weights])
    np.testing.assert_allclose(wrapper(x).numpy(), reference(x).numpy(), atol=1e-6)
    assert not np.allclose(dense_out, wrapper(x).numpy())
    assert len(wrapper.pruned_variables) == (2 if kind == "separable" else 1)


def test_wrapping_a_layer_without_prunable_weights_is_refused():
    with pytest.raises(ValueError, match="no prunable weights"):
        PruneWrapper(keras.layers.Activation("tanh")).build((None, 4))


def test_a_layers_own_kernel_constraint_still_applies():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    outputs = PruneWrapper(keras.layers.Dense(4, kernel_constraint=keras.constraints.NonNeg(), name="fc"))(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    mask = _half_mask((4, 4), seed=5)
    model.get_layer("fc").set_mask([mask])
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model.fit(x, -np.abs(x) * 5, epochs=3, verbose=0)
    kernel = model.get_layer("fc").layer.kernel.numpy()
    assert np.all(kernel >= 0)
    assert np.all(kernel[mask == 0] == 0)


def test_masks_and_gates_round_trip_through_keras_files_without_custom_objects(tmp_path):
    model = _regression_model(keras.optimizers.SGD(0.05, momentum=0.9))
    mask = _half_mask((6, 8), seed=7)
    model.get_layer("fc1").set_mask([mask])
    x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    path = tmp_path / "wrapped.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.get_layer("fc1")
    assert isinstance(restored, PruneWrapper)
    np.testing.assert_array_equal(restored.mask_arrays()[0], mask)
    np.testing.assert_array_equal(restored.layer.kernel.numpy()[mask == 0], 0.0)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    # The loaded model keeps holding the mask while it trains.
    loaded.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    loaded.fit(x, np.ones((8, 3), "float32"), epochs=2, verbose=0)
    assert np.all(restored.layer.kernel.numpy()[mask == 0] == 0.0)


def test_set_mask_rejects_wrong_shapes():
    wrapper = PruneWrapper(keras.layers.Dense(3))
    wrapper.build((None, 2))
    with pytest.raises(ValueError, match="shape"):
        wrapper.set_mask([np.ones((3, 2))])
    with pytest.raises(ValueError, match="1 prunable variables"):
        wrapper.set_mask([np.ones((2, 3)), np.ones((2, 3))])
