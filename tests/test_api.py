"""prunable / prune / strip / layer lookup / sparsity report."""

from __future__ import annotations

import json

import numpy as np
import pytest

import keras
import keras_prune as kp
from keras_prune.errors import InputError, ModelError
from keras_prune.models import lenet5

CONF = {1: 0.5, 4: 0.7, 8: 0.95, 10: 0.7, 12: 0.5}


@pytest.fixture
def model():
    keras.utils.set_random_seed(0)
    return lenet5()


@pytest.fixture
def images():
    return np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")


def test_prunable_wraps_every_weight_layer_and_keeps_outputs(model, images):
    wrapped = kp.prunable(model)
    names = [w.name for w in kp.wrapped_layers(wrapped)]
    assert names == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    np.testing.assert_allclose(wrapped(images).numpy(), model(images).numpy(), atol=1e-6)
    assert not any(isinstance(l, kp.PruneWrapper) for l in model.layers)  # original untouched


def test_prunable_by_index_and_name(model):
    wrapped = kp.prunable(model, layers=[1, "fc1"])
    assert [w.name for w in kp.wrapped_layers(wrapped)] == ["conv1", "fc1"]


@pytest.mark.parametrize(
    "selector, message",
    [(13, "out of range"), (0, "out of range"), (2, "no prunable weights"), ("nope", "no layer named 'nope'")],
)
def test_bad_selectors_give_clear_errors(model, selector, message):
    with pytest.raises(InputError, match=message):
        kp.prunable(model, layers=[selector])


def test_duplicate_selectors_are_refused(model):
    with pytest.raises(InputError, match="more than once"):
        kp.prunable(model, layers=[8, "fc1"])


def test_subclassed_models_get_a_clear_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ModelError, match="subclassed"):
        kp.prunable(net)


def _nested_functional():
    keras.utils.set_random_seed(0)
    block = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(6, activation="relu", name="inner1"), keras.layers.Dense(5, name="inner2")],
        name="block",
    )
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu", name="stem")(inputs)
    x = block(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs, name="outer")


def test_nested_models_are_wrapped_inside_and_addressable_by_path():
    model = _nested_functional()
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    wrapped = kp.prunable(model)
    assert [w.name for w in kp.wrapped_layers(wrapped)] == ["stem", "inner1", "inner2", "head"]
    np.testing.assert_allclose(wrapped(x).numpy(), model(x).numpy(), atol=1e-6)
    only_inner = kp.prunable(model, layers=["block/inner2"])
    assert [w.name for w in kp.wrapped_layers(only_inner)] == ["inner2"]
    kp.prune(only_inner, {"block/inner2": 0.5})
    report = kp.sparsity_report(only_inner)
    assert {r.name: r.zeros for r in report.layers}["block/inner2"] == 15


def _two_encoders() -> keras.Model:
    """Two nested models, each with a layer named "fc", and a layer used twice."""

    def encoder(name):
        x = keras.Input((4,))
        return keras.Model(x, keras.layers.Dense(4, name=f"{name}_out")(keras.layers.Dense(4, name="fc")(x)), name=name)

    x = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    return keras.Model(x, shared(encoder("dec")(shared(encoder("enc")(x)))), name="two")


def test_a_name_that_nested_layers_share_is_refused_naming_their_paths():
    model = _two_encoders()
    with pytest.raises(InputError) as error:
        kp.find_layers(model, ["fc"])
    message = str(error.value)
    assert "\n" not in message
    assert "layer name 'fc' is ambiguous in 'two': 2 layers have it (enc/fc, dec/fc)" in message
    with pytest.raises(InputError, match="ambiguous"):
        kp.prunable(model, layers=["fc"])
    # A path names one layer; a name only one layer has is found wherever it is nested;
    # a layer used twice is one layer.
    enc_fc, dec_out, shared = kp.find_layers(model, ["enc/fc", "dec_out", "shared"])
    assert enc_fc is model.get_layer("enc").get_layer("fc")
    assert dec_out is model.get_layer("dec").get_layer("dec_out")
    assert shared is model.get_layer("shared")


def test_prune_cuts_exactly_floor_n_times_fraction_per_layer(model):
    wrapped = kp.prunable(model)
    kp.prune(wrapped, CONF)
    counts = {w.name: w.pruned_count() for w in kp.wrapped_layers(wrapped)}
    assert counts == {"conv1": 75, "conv2": 10080, "fc1": 273600, "fc2": 7056, "fc3": 420}
    report = kp.sparsity_report(wrapped)
    assert report.weights == 313470
    assert report.total_compression == pytest.approx(0.92905541200115, abs=1e-13)


def test_the_originals_single_layer_example_gives_its_total_compression(model):
    wrapped = kp.prunable(model)
    kp.prune(wrapped, {8: 0.7})
    assert kp.sparsity_report(wrapped).total_compression == pytest.approx(0.64312374389894, abs=1e-13)


def test_magnitude_prunes_the_smallest_weights(model):
    wrapped = kp.prunable(model, layers=["fc2"])
    kernel = wrapped.get_layer("fc2").layer.kernel.numpy().copy()
    kp.prune(wrapped, {"fc2": 0.3})
    mask = wrapped.get_layer("fc2").mask_arrays()[0]
    assert np.abs(kernel[mask == 0]).max() <= np.abs(kernel[mask == 1]).min()


def test_already_pruned_weights_stay_pruned(model):
    wrapped = kp.prunable(model, layers=["fc2"])
    layer = wrapped.get_layer("fc2")
    kp.prune(wrapped, {"fc2": 0.5})
    first = layer.mask_arrays()[0]
    # Make the pruned weights look important: they must still stay pruned.
    layer.layer.kernel.assign(np.where(first == 0, 100.0, layer.layer.kernel.numpy()))
    kp.prune(wrapped, {"fc2": 0.7})
    second = layer.mask_arrays()[0]
    assert np.all(second[first == 0] == 0)
    assert layer.pruned_count() == int(0.7 * 10080)
    kp.prune(wrapped, {"fc2": 0.2})  # a lower target never revives weights
    assert layer.pruned_count() == int(0.7 * 10080)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), "abc"])
def test_fractions_outside_zero_one_are_refused(model, fraction):
    wrapped = kp.prunable(model)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        kp.prune(wrapped, {8: fraction})


def test_pruning_an_unwrapped_layer_is_refused(model):
    wrapped = kp.prunable(model, layers=[1])
    with pytest.raises(InputError, match="not wrapped"):
        kp.prune(wrapped, {8: 0.5})


def test_strip_gives_a_plain_model_with_identical_outputs_and_baked_zeros(model, images, tmp_path):
    wrapped = kp.prunable(model)
    kp.prune(wrapped, CONF)
    plain = kp.strip(wrapped)
    assert not any(isinstance(l, kp.PruneWrapper) for l in plain.layers)
    assert "keras_prune" not in json.dumps(plain.get_config())
    np.testing.assert_allclose(plain(images).numpy(), wrapped(images).numpy(), atol=1e-6)
    assert kp.sparsity_report(plain).zeros == kp.sparsity_report(wrapped).zeros == 291231
    assert np.count_nonzero(plain.get_layer("fc1").kernel.numpy()) == 288000 - 273600
    path = tmp_path / "plain.keras"
    plain.save(path)
    assert kp.sparsity_report(keras.models.load_model(path)).zeros == 291231


def test_strip_bakes_gates_into_weights(model, images):
    wrapped = kp.prunable(model, layers=["fc3"], gated=True)
    layer = wrapped.get_layer("fc3")
    layer.gates[0].assign(np.full(layer.gates[0].shape, 0.5, "float32"))
    plain = kp.strip(wrapped)
    np.testing.assert_allclose(plain.get_layer("fc3").kernel.numpy(), 0.5 * layer.layer.kernel.numpy())
    np.testing.assert_allclose(plain(images).numpy(), wrapped(images).numpy(), atol=1e-6)


def test_prunable_on_a_wrapped_model_keeps_its_masks(model):
    wrapped = kp.prunable(model)
    kp.prune(wrapped, {8: 0.9})
    again = kp.prunable(wrapped)
    np.testing.assert_array_equal(again.get_layer("fc1").mask_arrays()[0], wrapped.get_layer("fc1").mask_arrays()[0])
