"""Shrink: pruned units leave the model, and the smaller model computes the same outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from keras import layers

import keras_prune
from keras_prune.errors import ModelError
from keras_prune.graph import coupled_units
from keras_prune.shrink import shrink_with_report
from keras_prune.wrapper import PruneWrapper
from keras_prune_cli.main import main

TOLERANCE = 1e-5


def _randomize(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random weights everywhere, biases and BatchNorm statistics included, so that
    removed units output non-zero constants that shrink must fold. Kernels are scaled
    by 1/sqrt(fan-in) to keep activations near 1, as in a trained model."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = []
        for v in layer.weights:
            if "variance" in v.name:
                weights.append(rng.uniform(0.5, 1.5, v.shape))
            elif len(v.shape) >= 2:
                weights.append(rng.normal(0.0, 1.0, v.shape) / np.sqrt(np.prod(v.shape[:-1])))
            else:
                weights.append(rng.normal(0.0, 0.3, v.shape))
        layer.set_weights(weights)
    return model


def _max_difference(a: keras.Model, b: keras.Model, x: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a(x, training=False)) - np.asarray(b(x, training=False)))))


def _images(n: int = 16, shape=(28, 28, 1), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def _residual_cnn() -> keras.Model:
    """A small residual CNN with BatchNormalization: a stem and two residual blocks
    whose sums couple the stem's filters with each block's second convolution."""
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(12, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    for block in (1, 2):
        y = layers.Conv2D(16, 3, padding="same", use_bias=False, name=f"b{block}_conv1")(x)
        y = layers.BatchNormalization(name=f"b{block}_bn1")(y)
        y = layers.Activation("relu", name=f"b{block}_relu1")(y)
        y = layers.Dropout(0.1, name=f"b{block}_drop")(y)
        y = layers.Conv2D(12, 3, padding="same", use_bias=False, name=f"b{block}_conv2")(y)
        y = layers.BatchNormalization(name=f"b{block}_bn2")(y)
        x = layers.Add(name=f"b{block}_add")([x, y])
        x = layers.ReLU(name=f"b{block}_relu2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(10, name="head")(x), name="residual_cnn")


def _units(model: keras.Model, name: str) -> int:
    layer = model.get_layer(name)
    layer = layer.layer if isinstance(layer, PruneWrapper) else layer
    return int(layer.kernel.shape[-1])


def test_shrunk_lenet5_is_smaller_and_equals_the_masked_model(trained_lenet5, small_data):
    masked = keras_prune.prunable(keras_prune.load_model(trained_lenet5))
    keras_prune.prune(
        masked, {"conv1": 0.5, "conv2": 0.75, "fc1": 0.5, "fc2": 0.5}, granularity="filter"
    )
    small, report = shrink_with_report(masked)
    assert [_units(small, n) for n in ("conv1", "conv2", "fc1", "fc2", "fc3")] == [3, 24, 60, 42, 10]
    assert small.get_layer("fc1").kernel.shape == (5 * 5 * 24, 60)
    assert not any(isinstance(layer, PruneWrapper) for layer in small.layers)
    assert isinstance(small, keras.Sequential)
    assert report.parameters[1] == small.count_params() < report.parameters[0] / 4
    assert report.multiply_adds[1] < report.multiply_adds[0] / 3
    x = small_data.x_test[:64]
    assert _max_difference(masked, small, x) <= TOLERANCE
    assert np.array_equal(
        np.argmax(masked(x, training=False), -1), np.argmax(small(x, training=False), -1)
    )


@pytest.mark.parametrize("build", [keras_prune.models.lenet5_caffe, keras_prune.models.lenet_300_100])
def test_shrink_equals_masked_model_on_the_other_lenets(build):
    masked = keras_prune.prunable(_randomize(build()))
    hidden = [layer.name for layer in keras_prune.wrapped_layers(masked)][:-1]
    keras_prune.prune(masked, {name: 0.6 for name in hidden}, granularity="neuron")
    small = keras_prune.shrink(masked)
    for name in hidden:
        assert _units(small, name) == _units(masked, name) - int(0.6 * _units(masked, name))
    assert _max_difference(masked, small, _images()) <= TOLERANCE


def test_flatten_keeps_the_channels_last_positions_of_kept_filters():
    model = _randomize(
        keras.Sequential(
            [keras.Input((4, 4, 1)), layers.Conv2D(3, 3, name="conv"), layers.Flatten(name="flat"),
             layers.Dense(2, name="fc")]
        )
    )
    masked = keras_prune.prunable(model, layers=["conv"])
    mask = np.ones((3, 3, 1, 3), dtype=np.float32)
    mask[..., 1] = 0.0
    masked.get_layer("conv").set_mask([mask])
    small = keras_prune.shrink(masked)
    # conv output is 2x2x3; flattened position (h * 2 + w) * 3 + c; channel 1 leaves
    kept_rows = [p for p in range(12) if p % 3 != 1]
    np.testing.assert_array_equal(
        small.get_layer("fc").kernel.numpy(), model.get_layer("fc").kernel.numpy()[kept_rows]
    )
    assert _max_difference(masked, small, _images(8, (4, 4, 1))) <= TOLERANCE


def test_constant_outputs_of_removed_units_are_folded_into_the_next_bias():
    model = _randomize(
        keras.Sequential(
            [keras.Input((6,)), layers.Dense(5, activation="sigmoid", name="fc1"),
             layers.Dense(3, use_bias=False, name="fc2")]
        )
    )
    masked = keras_prune.prunable(model, layers=["fc1"])
    keras_prune.prune(masked, {"fc1": 0.4}, granularity="neuron")
    small = keras_prune.shrink(masked)
    # a removed sigmoid unit outputs sigmoid(bias) != 0: fc2 gains a bias that carries it
    assert small.get_layer("fc2").use_bias
    assert np.abs(small.get_layer("fc2").bias.numpy()).min() > 0
    assert _max_difference(masked, small, _images(8, (6,))) <= TOLERANCE


def test_residual_cnn_with_batchnorm_shrinks_coupled_filters_exactly():
    model = _randomize(_residual_cnn())
    masked = keras_prune.prunable(model)
    keras_prune.prune(
        masked, {"stem": 0.5, "b1_conv1": 0.75, "b2_conv1": 0.5}, granularity="filter"
    )
    small, report = shrink_with_report(masked)
    # stem, b1_conv2 and b2_conv2 are summed: they keep the same filters
    coupled = {_units(small, n) for n in ("stem", "b1_conv2", "b2_conv2")}
    assert len(coupled) == 1 and coupled.pop() < 12
    assert _units(small, "b1_conv1") < 16 and _units(small, "b2_conv1") < 16
    assert small.get_layer("b1_bn1").moving_mean.shape[0] == _units(small, "b1_conv1")
    assert small.get_layer("head").kernel.shape[0] == _units(small, "stem")
    assert report.parameters[1] < report.parameters[0] / 2
    assert _max_difference(masked, small, _images()) <= TOLERANCE


def test_padded_convolution_after_batchnorm_keeps_one_constant_channel():
    model = _randomize(_residual_cnn())
    masked = keras_prune.prunable(model, layers=["b1_conv1"])
    keras_prune.prune(masked, {"b1_conv1": 0.75}, granularity="filter")
    small, report = shrink_with_report(masked)
    # BatchNorm turns the removed filters into non-zero constants that the padded
    # b1_conv2 sees only through in-bounds taps: one filter is kept to carry them
    assert _units(small, "b1_conv1") == 16 - 12 + 1
    (row,) = [r for r in report.layers if r.name == "b1_conv1"]
    assert any("constant channel" in note and "b1_conv2" in note for note in row.notes)
    assert _max_difference(masked, small, _images()) <= TOLERANCE


def test_units_joined_by_add_to_live_units_are_kept_and_reported():
    model = _randomize(_residual_cnn())
    masked = keras_prune.prunable(model, layers=["b1_conv2"])
    mask = np.ones((3, 3, 16, 12), dtype=np.float32)
    mask[..., :4] = 0.0  # only one side of the sum: the stem still uses these channels
    masked.get_layer("b1_conv2").set_mask([mask])
    small, report = shrink_with_report(masked)
    assert _units(small, "b1_conv2") == 12
    (row,) = [r for r in report.layers if r.name == "b1_conv2"]
    assert row.notes == ("kept 4 pruned unit(s): units coupled to them (by a merge or a depthwise convolution) are not pruned",)
    assert _max_difference(masked, small, _images()) <= TOLERANCE


def _inverted_residual(strided: bool) -> keras.Model:
    """A MobileNetV2-style block: 1x1 expand -> BN -> ReLU6 -> (ZeroPadding2D) ->
    DepthwiseConv2D -> BN -> ReLU6 -> 1x1 project -> BN, and a padded 3x3 convolution
    that reads the zero-padded expansion too."""
    inputs = keras.Input((12, 12, 4), name="image")
    x = layers.Conv2D(16, 1, padding="same", use_bias=False, name="expand")(inputs)
    x = layers.BatchNormalization(name="expand_bn")(x)
    x = layers.ReLU(6.0, name="expand_relu")(x)
    if strided:
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
    y = layers.DepthwiseConv2D(3, strides=2 if strided else 1, padding="valid" if strided else "same",
                               use_bias=False, name="depthwise")(x)
    y = layers.BatchNormalization(name="depthwise_bn")(y)
    y = layers.ReLU(6.0, name="depthwise_relu")(y)
    y = layers.Conv2D(8, 1, padding="same", use_bias=False, name="project")(y)
    y = layers.BatchNormalization(name="project_bn")(y)
    y = layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(inputs, layers.Dense(3, name="head")(y), name="inverted_residual")


@pytest.mark.parametrize("strided", [False, True])
def test_pruned_expansion_channels_leave_the_depthwise_convolution_and_its_batchnorms(strided):
    masked = keras_prune.prunable(_randomize(_inverted_residual(strided)))
    keras_prune.prune(masked, {"expand": 0.5}, granularity="filter")
    # the depthwise kernel's slices of the pruned channels are masked with them
    depthwise = masked.get_layer("depthwise")
    pruned = ~depthwise.mask_arrays()[0][:, :, :, 0].reshape(-1, 16).any(axis=0)
    expand_pruned = ~masked.get_layer("expand").mask_arrays()[0].reshape(-1, 16).any(axis=0)
    np.testing.assert_array_equal(pruned, expand_pruned)
    assert pruned.sum() == 8
    small, report = shrink_with_report(masked)
    assert _units(small, "expand") == 8
    assert small.get_layer("depthwise").kernel.shape == (3, 3, 8, 1)
    for name in ("expand_bn", "depthwise_bn"):
        assert small.get_layer(name).moving_mean.shape[0] == 8
    assert small.get_layer("project").kernel.shape == (1, 1, 8, 8)
    assert {r.name: r.units for r in report.layers}["depthwise"] == (16, 8)
    assert _max_difference(masked, small, _images(4, (12, 12, 4))) <= TOLERANCE


def test_pruning_a_depthwise_convolution_by_channel_prunes_the_units_that_feed_it():
    masked = keras_prune.prunable(_randomize(_inverted_residual(False)))
    keras_prune.prune(masked, {"depthwise": 0.25}, granularity="filter")
    assert _units(keras_prune.shrink(masked), "expand") == 12


def _depth_multiplied() -> keras.Model:
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(6, 1, name="expand")(inputs)
    x = layers.BatchNormalization(name="expand_bn")(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=3, padding="same", name="depthwise")(x)  # 18 outputs
    x = layers.BatchNormalization(name="depthwise_bn")(x)
    x = layers.ReLU(name="depthwise_relu")(x)
    x = layers.Conv2D(4, 1, name="project")(x)  # 1x1: removed outputs' constants fold into its bias
    return keras.Model(inputs, layers.Dense(2, name="head")(layers.GlobalAveragePooling2D()(x)))


@pytest.mark.parametrize("pruned", ["expand", "depthwise"])
def test_a_depth_multiplied_channel_leaves_with_its_outputs_and_its_input_unit(pruned):
    masked = keras_prune.prunable(_randomize(_depth_multiplied()))
    keras_prune.prune(masked, {pruned: 0.5}, granularity="filter")
    gone = ~masked.get_layer("expand").mask_arrays()[0].reshape(-1, 6).any(axis=0)
    # channel c's kernel slices, for its outputs 3c .. 3c + 2, are masked with the unit feeding it
    depthwise_mask = masked.get_layer("depthwise").mask_arrays()[0]
    np.testing.assert_array_equal(~depthwise_mask.reshape(9, 6, 3).any(axis=(0, 2)), gone)
    assert gone.sum() == 3
    small, report = shrink_with_report(masked)
    kept = np.flatnonzero(~gone)
    np.testing.assert_array_equal(
        small.get_layer("depthwise").kernel.numpy(), masked.get_layer("depthwise").layer.kernel.numpy()[:, :, kept, :]
    )
    outputs = (kept[:, None] * 3 + np.arange(3)).ravel()
    np.testing.assert_array_equal(
        small.get_layer("depthwise").bias.numpy(), masked.get_layer("depthwise").layer.bias.numpy()[outputs]
    )
    assert small.get_layer("depthwise_bn").moving_mean.shape[0] == 9
    assert small.get_layer("project").kernel.shape == (1, 1, 9, 4)
    assert {r.name: r.units for r in report.layers}["depthwise"] == (18, 9)
    assert _max_difference(masked, small, _images(4, (10, 10, 3))) <= TOLERANCE


def test_an_unmasked_depthwise_channel_keeps_its_input_unit():
    masked = keras_prune.prunable(_randomize(_inverted_residual(False)), layers=["expand"])
    keras_prune.prune(masked, {"expand": 0.5}, granularity="filter")  # the depthwise is not wrapped
    small, report = shrink_with_report(masked)
    assert _units(small, "expand") == 16
    (row,) = [r for r in report.layers if r.name == "expand"]
    assert row.notes == ("kept 8 pruned unit(s): units coupled to them (by a merge or a depthwise convolution) are not pruned",)
    assert _max_difference(masked, small, _images(4, (12, 12, 4))) <= TOLERANCE


def test_zero_padded_constants_reach_a_convolution_through_one_stand_in_channel():
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 1, name="a")(inputs)
    x = layers.BatchNormalization(name="a_bn")(x)  # removed filters become non-zero constants
    x = layers.ZeroPadding2D(1, name="pad")(x)  # ... and zeros on the border
    x = layers.Conv2D(4, 3, name="b")(x)  # valid padding, but it sees the border
    model = _randomize(keras.Model(inputs, layers.GlobalAveragePooling2D()(x)))
    masked = keras_prune.prunable(model)
    keras_prune.prune(masked, {"a": 0.5}, granularity="filter")
    small, report = shrink_with_report(masked)
    assert _units(small, "a") == 4 + 1
    assert _max_difference(masked, small, _images(4, (10, 10, 3))) <= TOLERANCE


def test_zero_padded_constants_stop_at_layers_that_do_not_map_zero_to_zero():
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(8, 1, name="a")(inputs)
    x = layers.BatchNormalization(name="a_bn")(x)
    x = layers.ZeroPadding2D(1, name="pad")(x)
    x = layers.BatchNormalization(name="pad_bn")(x)  # 0 on the border becomes a non-zero value
    model = _randomize(keras.Model(inputs, layers.Dense(2, name="out")(layers.GlobalAveragePooling2D()(x))))
    masked = keras_prune.prunable(model)
    keras_prune.prune(masked, {"a": 0.5}, granularity="filter")
    small, report = shrink_with_report(masked)
    assert _units(small, "a") == 8
    (row,) = [r for r in report.layers if r.name == "a"]
    assert row.notes == ("kept 4 pruned unit(s): 'pad_bn' (BatchNormalization) gets them zero-padded and shrink cannot follow that",)
    assert _max_difference(masked, small, _images(4, (10, 10, 3))) <= TOLERANCE


def test_concatenate_and_multiply_branches_shrink_exactly():
    inputs = keras.Input((10,))
    a = layers.Dense(6, activation="tanh", name="a")(inputs)
    b = layers.Dense(4, activation="relu", name="b")(inputs)
    joined = layers.Concatenate(name="cat")([a, b])
    gate = layers.Dense(10, activation="sigmoid", name="gate")(inputs)
    product = layers.Multiply(name="mul")([joined, gate])
    model = _randomize(keras.Model(inputs, layers.Dense(2, name="out")(product)))
    classes = coupled_units(model)
    np.testing.assert_array_equal(
        classes[model.get_layer("gate")], np.concatenate([classes[model.get_layer("a")], classes[model.get_layer("b")]])
    )
    masked = keras_prune.prunable(model)
    keras_prune.prune(masked, {"a": 0.5, "b": 0.5}, granularity="neuron")
    small = keras_prune.shrink(masked)
    assert (_units(small, "a"), _units(small, "b"), _units(small, "gate")) == (3, 2, 5)
    assert _max_difference(masked, small, _images(8, (10,))) <= TOLERANCE


def _squeeze_excite(style: str) -> keras.Model:
    """An inverted residual block with squeeze-and-excitation, as MobileNetV3 writes it
    (pooling with keepdims, hard sigmoid as ``ReLU6(x + 3) * (1 / 6)``) or as EfficientNet
    does (pooling, Reshape to (1, 1, C), a sigmoid convolution)."""
    inputs = keras.Input((12, 12, 4))
    x = layers.Conv2D(16, 1, use_bias=False, name="expand")(inputs)
    x = layers.BatchNormalization(name="expand_bn")(x)
    x = layers.Activation("hard_swish" if style == "v3" else "swish", name="expand_act")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(x)
    x = layers.BatchNormalization(name="depthwise_bn")(x)
    if style == "v3":
        se = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
        se = layers.Conv2D(4, 1, activation="relu", name="reduce")(se)
        se = layers.Conv2D(16, 1, name="excite")(se)
        se = layers.ReLU(6.0, name="excite_relu")(se + 3.0) * (1.0 / 6.0)
    else:
        se = layers.GlobalAveragePooling2D(name="squeeze")(x)
        se = layers.Reshape((1, 1, 16), name="se_reshape")(se)
        se = layers.Conv2D(4, 1, activation="swish", name="reduce")(se)
        se = layers.Conv2D(16, 1, activation="sigmoid", name="excite")(se)
    x = layers.Multiply(name="excite_mul")([x, se])
    x = layers.Conv2D(8, 1, use_bias=False, name="project")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(layers.BatchNormalization(name="project_bn")(x))
    return keras.Model(inputs, layers.Dense(3, name="head")(x), name=f"se_{style}")


@pytest.mark.parametrize("style", ["v3", "efficientnet"])
def test_expansion_channels_leave_through_a_squeeze_and_excitation_block(style):
    model = _randomize(_squeeze_excite(style))
    classes = coupled_units(model)  # x * se couples the expansion's channels to the excitation's
    np.testing.assert_array_equal(classes[model.get_layer("expand")], classes[model.get_layer("excite")])
    masked = keras_prune.prunable(model)
    keras_prune.prune(masked, {"expand": 0.5}, granularity="filter")
    small, report = shrink_with_report(masked)
    assert (_units(small, "expand"), _units(small, "excite")) == (8, 8)
    assert small.get_layer("depthwise").kernel.shape == (3, 3, 8, 1)
    assert small.get_layer("reduce").kernel.shape == (1, 1, 8, 4)
    assert small.get_layer("project").kernel.shape == (1, 1, 8, 8)
    if style == "efficientnet":
        assert small.get_layer("se_reshape").target_shape == (1, 1, 8)
    assert report.parameters[1] < report.parameters[0]
    assert _max_difference(masked, small, _images(4, (12, 12, 4))) <= TOLERANCE


def test_layers_shrink_cannot_see_through_keep_their_units():
    model = _randomize(
        keras.Sequential(
            [keras.Input((6,)), layers.Dense(8, activation="relu", name="fc1"),
             layers.Reshape((2, 4), name="reshape"), layers.Flatten(), layers.Dense(3, name="fc2")]
        )
    )
    masked = keras_prune.prunable(model)
    keras_prune.prune(masked, {"fc1": 0.5, "fc2": 1 / 3}, granularity="neuron")
    small, report = shrink_with_report(masked)
    assert _units(small, "fc1") == 8 and _units(small, "fc2") == 3
    notes = {r.name: r.notes for r in report.layers}
    assert notes["fc1"] == ("kept 4 pruned unit(s): 'reshape' (Reshape) uses them and shrink cannot see through it",)
    assert notes["fc2"] == ("kept 1 pruned unit(s): they reach the model's output",)
    assert _max_difference(masked, small, _images(8, (6,))) <= TOLERANCE


def test_shrunk_model_saves_and_loads_as_plain_keras(tmp_path):
    masked = keras_prune.prunable(_randomize(_residual_cnn()))
    keras_prune.prune(masked, {"stem": 0.5}, granularity="filter")
    small = keras_prune.shrink(masked)
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.models.load_model(path)  # no keras_prune classes needed
    assert _max_difference(small, loaded, _images(4)) == 0.0


def test_shrink_refuses_subclassed_models():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelError, match="Sequential and Functional"):
        keras_prune.shrink(Custom())


def test_cli_shrink_saves_a_smaller_model_with_the_same_outputs(trained_lenet5, tmp_path):
    masked = keras_prune.prunable(keras_prune.load_model(trained_lenet5))
    keras_prune.prune(masked, {"conv2": 0.75, "fc1": 0.5}, granularity="filter")
    pruned, out = tmp_path / "pruned.keras", tmp_path / "small.keras"
    keras_prune.save_model(masked, pruned)
    result = CliRunner().invoke(main, ["shrink", "-m", str(pruned), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "conv2" in result.output and "96 -> 24" in result.output
    difference = float(result.output.split("largest output difference ")[1].split()[0])
    assert difference <= TOLERANCE
    small = keras_prune.load_model(out)
    assert small.count_params() < masked.count_params() / 3
    assert _max_difference(masked, small, _images(8)) <= TOLERANCE
