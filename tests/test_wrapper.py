"""The mechanism's invariants: pruned weights stay exactly zero, kept weights train as the sparse network."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

import keras
import keras_prune as kp
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


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_kept_weights_train_exactly_as_the_sparse_network(momentum):
    """Oracle: a hand-written SGD loop whose forward pass multiplies by the mask."""
    model = _regression_model(keras.optimizers.SGD(0.05, momentum=momentum))
    masks = [_half_mask(model.get_layer(n).layer.kernel.shape, seed=s) for n, s in (("fc1", 3), ("fc2", 4))]
    for name, mask in zip(("fc1", "fc2"), masks):
        model.get_layer(name).set_mask([mask])
    start = [v.numpy() for v in model.trainable_variables]  # k1, b1, k2, b2
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")

    variables = [tf.Variable(v) for v in start]
    velocity = [tf.Variable(tf.zeros_like(v)) for v in start]
    kernel_masks = {0: masks[0], 2: masks[1]}
    for _ in range(3):
        for i in range(0, 64, 16):
            with tf.GradientTape() as tape:
                k1, b1, k2, b2 = (v * kernel_masks.get(j, 1.0) for j, v in enumerate(variables))
                out = tf.tanh(x[i : i + 16] @ k1 + b1) @ k2 + b2
                loss = tf.reduce_mean(tf.square(y[i : i + 16] - out))
            for v, m, g in zip(variables, velocity, tape.gradient(loss, variables)):
                m.assign(momentum * m - 0.05 * g)
                v.assign_add(m)

    model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    for trained, expected in zip(model.trainable_variables, variables):
        np.testing.assert_allclose(trained.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    for name, mask in zip(("fc1", "fc2"), masks):
        assert np.all(model.get_layer(name).layer.kernel.numpy()[mask == 0] == 0.0)


def _op_types(model, shape):
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec(shape, tf.float32)
    ).graph
    return Counter(op.type for op in graph.get_operations())


def test_the_forward_pass_of_a_wrapped_model_adds_no_operation():
    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)])
    wrapped = kp.prunable(plain)
    kp.prune(wrapped, {1: 0.5, 3: 0.5, 4: 0.5})
    shape = (None, 8, 8, 1)
    assert _op_types(wrapped, shape) == _op_types(plain, shape)
    gated = kp.prunable(plain, gated=True)
    assert _op_types(gated, shape)["Mul"] == _op_types(plain, shape)["Mul"] + 3  # w * gate


def test_a_gated_wrapper_computes_with_its_gates_and_a_plain_one_has_none():
    keras.utils.set_random_seed(0)
    plain = PruneWrapper(keras.layers.Dense(3))
    gated = PruneWrapper(keras.layers.Dense(3), gated=True)
    x = np.random.default_rng(0).normal(size=(4, 2)).astype("float32")
    plain(x), gated(x)
    assert plain.gates == [] and len(gated.gates) == 1
    gated.layer.set_weights(plain.layer.get_weights())
    np.testing.assert_allclose(gated(x).numpy(), plain(x).numpy(), atol=1e-6)
    gate = np.array([[0.5, 0.0, 2.0]] * 2, "float32")
    gated.gates[0].assign(gate)
    kernel, bias = plain.layer.get_weights()
    np.testing.assert_allclose(gated(x).numpy(), x @ (kernel * gate) + bias, atol=1e-5)
    np.testing.assert_allclose(gated.effective_weights()[0], kernel * gate)


def test_files_written_before_gates_were_optional_load_as_gated():
    wrapper = PruneWrapper(keras.layers.Dense(3), gated=False)
    config = wrapper.get_config()
    assert config["gated"] is False
    assert PruneWrapper.from_config(config).gated is False
    del config["gated"]
    assert PruneWrapper.from_config(config).gated is True


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


def test_masks_round_trip_through_keras_files_without_custom_objects(tmp_path):
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


def test_stripped_weights_hold_positive_zeros_after_training():
    # The constraint's multiply leaves -0.0 where a pruned weight's update was negative;
    # exports must hold +0.0 (runs of which compress well).
    model = _regression_model(keras.optimizers.SGD(0.05, momentum=0.9))
    mask = _half_mask((6, 8), seed=9)
    model.get_layer("fc1").set_mask([mask])
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    model.fit(x, np.ones((64, 3), "float32"), epochs=2, verbose=0)
    assert np.all(model.get_layer("fc1").layer.kernel.numpy()[mask == 0] == 0.0)
    kernel = kp.strip(model).get_layer("fc1").kernel.numpy()
    assert not np.any(np.signbit(kernel[mask == 0]))
