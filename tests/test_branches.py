"""Depth pruning: a residual branch whose units are all pruned leaves the model whole.

`shrink` removes the branch's layers (a layer otherwise keeps at least one unit), folds
the constant the branch still adds into the layer that computes the shortcut, and the
smaller model computes what the masked one does.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

import keras_prune
from keras_prune.shrink import shrink_with_report
from keras_prune.structured import units_to_prune
from tests.conftest import assert_same_outputs, model_outputs
from tests.test_shrink import _randomize


def _inverted_residuals(shortcut_reader: bool = False) -> keras.Model:
    """A stem and three MobileNetV2-style inverted-residual blocks (expand -> BN -> ReLU6
    -> depthwise -> BN -> ReLU6 -> project -> BN, added to the block's input), written as
    an Add layer, ``x + y`` and a Subtract. With `shortcut_reader`, a side output also
    reads the stem, so the first block's constant cannot go into the stem's BatchNorm."""
    inputs = keras.Input((12, 12, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    stem = x
    for block, merge in ((1, "add"), (2, "plus"), (3, "subtract")):
        y = layers.Conv2D(24, 1, use_bias=False, name=f"b{block}_expand")(x)
        y = layers.BatchNormalization(name=f"b{block}_expand_bn")(y)
        y = layers.ReLU(6.0, name=f"b{block}_expand_relu")(y)
        y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"b{block}_depthwise")(y)
        y = layers.BatchNormalization(name=f"b{block}_depthwise_bn")(y)
        y = layers.ReLU(6.0, name=f"b{block}_depthwise_relu")(y)
        y = layers.Conv2D(8, 1, use_bias=False, name=f"b{block}_project")(y)
        y = layers.BatchNormalization(name=f"b{block}_project_bn")(y)
        if merge == "add":
            x = layers.Add(name=f"b{block}_add")([x, y])
        elif merge == "plus":
            x = x + y
        else:
            x = layers.Subtract(name=f"b{block}_subtract")([x, y])
    x = layers.Conv2D(16, 1, name="head_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(5, name="logits")(x)
    if shortcut_reader:
        side = layers.GlobalAveragePooling2D(name="side_gap")(stem)
        return keras.Model(inputs, [outputs, side], name="inverted_residuals")
    return keras.Model(inputs, outputs, name="inverted_residuals")


def _images(n: int = 8, shape=(12, 12, 3)) -> np.ndarray:
    return np.random.default_rng(3).random((n, *shape), dtype=np.float32)


def _layer_names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers}


def test_whole_fraction_prunes_every_unit_even_when_rounding():
    assert units_to_prune(96, 1.0) == 96
    assert units_to_prune(96, 1.0, round_to=16) == 96
    assert units_to_prune(96, 0.99, round_to=16) == 80  # a partial fraction still keeps a multiple


def test_a_residual_branch_pruned_whole_leaves_the_model():
    masked = keras_prune.prunable(_randomize(_inverted_residuals()))
    keras_prune.prune(masked, {"b1_expand": 1.0, "b3_expand": 1.0}, granularity="filter")
    small, report = shrink_with_report(masked)
    names = _layer_names(small)
    for block in (1, 3):
        branch = [f"b{block}_{part}" for part in ("expand", "expand_bn", "depthwise", "depthwise_bn", "project",
                                                  "project_bn", "add", "subtract")]
        assert not names & set(branch), names & set(branch)
    assert "b2_expand" in names and small.get_layer("b2_expand").filters == 24
    assert not [layer for layer in small.layers if isinstance(layer, layers.Rescaling)]  # folded into BN betas
    rows = {row.name: row for row in report.layers}
    assert rows["b1_expand"].units == (24, 0) and rows["b1_project"].inputs == (24, 0)
    assert rows["b3_project_bn"].notes == ("removed with its residual branch",)
    assert report.parameters[1] < report.parameters[0]
    assert_same_outputs(model_outputs(small, _images()), model_outputs(masked, _images()), atol=1e-5)
    served = keras_prune.shrink(masked, fold_batchnorm=True)
    assert_same_outputs(model_outputs(served, _images()), model_outputs(masked, _images()), atol=1e-5)


def test_a_constant_that_cannot_be_folded_becomes_a_rescaling():
    masked = keras_prune.prunable(_randomize(_inverted_residuals(shortcut_reader=True)))
    keras_prune.prune(masked, {"b1_expand": 1.0}, granularity="filter")
    small = keras_prune.shrink(masked)
    (offset,) = [layer for layer in small.layers if isinstance(layer, layers.Rescaling)]
    assert offset.name == "b1_add" and np.abs(offset.offset).min() > 0
    assert_same_outputs(model_outputs(small, _images()), model_outputs(masked, _images()), atol=1e-5)


def test_a_branch_without_a_shortcut_keeps_one_unit():
    # head_conv's constant would reach the pooling and the logits, not a merge with a shortcut
    masked = keras_prune.prunable(_randomize(_inverted_residuals()))
    keras_prune.prune(masked, {"head_conv": 1.0}, granularity="filter")
    small, report = shrink_with_report(masked)
    assert small.get_layer("head_conv").filters == 1
    (row,) = [r for r in report.layers if r.name == "head_conv"]
    assert any("a layer keeps at least one unit" in note for note in row.notes)
    assert_same_outputs(model_outputs(small, _images()), model_outputs(masked, _images()), atol=1e-5)


def test_mobilenetv2_residual_blocks_removed_whole_save_and_serve(tmp_path):
    dense = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35,
                                           classifier_activation=None)
    masked = keras_prune.prunable(_randomize(dense))
    whole = {f"block_{i}_expand": 1.0 for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)}
    keras_prune.prune(masked, whole, granularity="filter", round_to=8)
    small, report = shrink_with_report(masked, fold_batchnorm=True)
    assert not any(name.startswith(("block_2_", "block_15_")) for name in _layer_names(small))
    assert len(small.layers) < len(dense.layers) / 2
    assert report.multiply_adds[1] < report.multiply_adds[0] * 0.85  # 20% at 32x32 and width 0.35
    x = _images(4, (32, 32, 3))
    assert_same_outputs(model_outputs(small, x), model_outputs(masked, x), atol=1e-4)
    path = tmp_path / "small.keras"
    small.save(path)
    assert_same_outputs(model_outputs(keras.models.load_model(path), x), model_outputs(small, x), atol=1e-6)


def test_resnet_bottleneck_removed_whole():
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    for block in (1, 2):
        y = layers.Conv2D(8, 1, name=f"b{block}_conv1")(x)
        y = layers.BatchNormalization(name=f"b{block}_bn1")(y)
        y = layers.ReLU(name=f"b{block}_relu1")(y)
        y = layers.Conv2D(8, 3, padding="same", name=f"b{block}_conv2")(y)
        y = layers.BatchNormalization(name=f"b{block}_bn2")(y)
        y = layers.ReLU(name=f"b{block}_relu2")(y)
        y = layers.Conv2D(16, 1, name=f"b{block}_conv3")(y)
        y = layers.BatchNormalization(name=f"b{block}_bn3")(y)
        x = layers.ReLU(name=f"b{block}_out")(layers.Add(name=f"b{block}_add")([x, y]))
    model = keras.Model(inputs, layers.Dense(4, name="logits")(layers.GlobalAveragePooling2D()(x)))
    masked = keras_prune.prunable(_randomize(model))
    keras_prune.prune(masked, {"b2_conv1": 1.0, "b2_conv2": 1.0}, granularity="filter")
    small = keras_prune.shrink(masked)
    assert not {"b2_conv1", "b2_conv2", "b2_conv3"} & _layer_names(small)
    # the shortcut comes from a ReLU, whose bias cannot take the constant: the sum becomes x + c
    assert isinstance(small.get_layer("b2_add"), layers.Rescaling)
    assert "b2_out" in _layer_names(small)  # the ReLU after the sum stays
    x = _images(8, (16, 16, 3))
    assert_same_outputs(model_outputs(small, x), model_outputs(masked, x), atol=1e-5)
