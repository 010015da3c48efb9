"""BatchNormalization folding: the serving model has no normalisation layers after
Dense/Conv/DepthwiseConv layers, and computes the same outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from keras import layers

import keras_prune
from keras_prune.errors import ModelError
from keras_prune_cli.main import main
from tests.test_shrink import _images, _inverted_residual, _max_difference, _randomize, _residual_cnn

TOLERANCE = 1e-5


def _batchnorms(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers if isinstance(layer, layers.BatchNormalization)}


def test_residual_cnn_folds_every_batchnorm_and_keeps_its_outputs():
    model = _randomize(_residual_cnn())
    folded = keras_prune.fold_batchnorm(model)
    assert _batchnorms(model) and not _batchnorms(folded)
    assert folded.get_layer("stem").use_bias  # stem had no bias: the fold gives it one
    assert folded.count_params() < model.count_params()
    assert _max_difference(model, folded, _images()) <= TOLERANCE


def test_depthwise_convolutions_of_mobilenetv2_fold_too():
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=4, classifier_activation=None
    )
    model = _randomize(model)
    folded = keras_prune.fold_batchnorm(model)
    assert not _batchnorms(folded)
    x = _images(4, (32, 32, 3))
    reference = np.abs(np.asarray(model(x, training=False))).max()
    assert _max_difference(model, folded, x) <= TOLERANCE * max(1.0, reference)


def test_batchnorms_that_do_not_directly_follow_a_single_use_linear_layer_stay():
    inputs = keras.Input((6, 6, 2))
    a = layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    a_bn = layers.BatchNormalization(name="a_bn")(a)  # after an activation
    b = layers.Conv2D(4, 1, name="b")(a_bn)
    b_bn = layers.BatchNormalization(name="b_bn")(b)
    both = layers.Add(name="add")([b, b_bn])  # b's output is read twice
    c = layers.Conv2D(4, 1, name="c")(both)
    c_bn = layers.BatchNormalization(name="c_bn")(c)  # folds
    model = _randomize(keras.Model(inputs, layers.GlobalAveragePooling2D()(c_bn)))
    folded = keras_prune.fold_batchnorm(model)
    assert _batchnorms(folded) == {"a_bn", "b_bn"}
    assert _max_difference(model, folded, _images(4, (6, 6, 2))) <= TOLERANCE


def test_a_dense_layer_with_lora_keeps_its_batchnorm():
    inputs = keras.Input((5,))
    h = layers.Dense(4, name="fc")(inputs)
    model = _randomize(keras.Model(inputs, layers.BatchNormalization(name="bn")(h)))
    model.get_layer("fc").enable_lora(2)
    folded = keras_prune.fold_batchnorm(model)
    assert _batchnorms(folded) == {"bn"}
    assert _max_difference(model, folded, _images(4, (5,))) <= TOLERANCE


def test_sequential_and_wrapped_models_fold_with_pruned_weights_still_zero():
    model = _randomize(
        keras.Sequential(
            [keras.Input((5,)), layers.Dense(8, name="fc1"), layers.BatchNormalization(name="bn"),
             layers.ReLU(), layers.Dense(3, name="fc2")]
        )
    )
    masked = keras_prune.prunable(model)
    keras_prune.prune(masked, {"fc1": 0.5})
    folded = keras_prune.fold_batchnorm(masked)
    assert isinstance(folded, keras.Sequential) and not _batchnorms(folded)
    assert not keras_prune.wrapped_layers(folded)
    zeros = masked.get_layer("fc1").mask_arrays()[0] == 0
    assert np.all(folded.get_layer("fc1").kernel.numpy()[zeros] == 0.0)
    assert _max_difference(masked, folded, _images(8, (5,))) <= TOLERANCE


def test_shrink_folds_on_request_and_the_cli_flag_does_the_same(tmp_path):
    masked = keras_prune.prunable(_randomize(_inverted_residual(True)))
    keras_prune.prune(masked, {"expand": 0.5}, granularity="filter")
    small = keras_prune.shrink(masked, fold_batchnorm=True)
    assert not _batchnorms(small) and small.get_layer("depthwise").kernel.shape == (3, 3, 8, 1)
    assert _max_difference(masked, small, _images(4, (12, 12, 4))) <= TOLERANCE
    pruned, out = tmp_path / "pruned.keras", tmp_path / "small.keras"
    keras_prune.save_model(masked, pruned)
    result = CliRunner().invoke(main, ["shrink", "-m", str(pruned), "--out", str(out), "--fold-batchnorm"])
    assert result.exit_code == 0, result.output
    assert not _batchnorms(keras_prune.load_model(out))


def test_fold_batchnorm_refuses_subclassed_models():
    class Custom(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelError, match="Sequential and Functional"):
        keras_prune.fold_batchnorm(Custom())
