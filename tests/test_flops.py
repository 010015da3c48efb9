"""FLOPs / multiply-add counting: hand-computed counts on single layers, and published
counts of keras.applications models."""

from __future__ import annotations

import keras
import pytest
from keras import layers

import keras_prune
from keras_prune.errors import ModelError
from keras_prune.flops import count_flops, count_macs
from keras_prune.models import lenet5, lenet_300_100, vit_mnist


def _one(layer: layers.Layer, *shapes: tuple) -> keras.Model:
    inputs = [keras.Input(s) for s in shapes]
    return keras.Model(inputs, layer(*inputs))


# Each case: (layer, input shapes, multiply-adds worked out by hand)
HAND_COUNTED = [
    # 5 positions x 8 inputs x 3 units
    (layers.Dense(3), [(5, 8)], 5 * 8 * 3),
    # valid 3x3 on 10x10: 8x8 outputs x 4 filters x 9 taps x 2 channels
    (layers.Conv2D(4, 3), [(10, 10, 2)], 64 * 4 * 9 * 2),
    # 'same' with stride 2: 5x5 outputs x 8 filters x 9 taps x 3 channels
    (layers.Conv2D(8, 3, strides=2, padding="same"), [(10, 10, 3)], 25 * 8 * 9 * 3),
    # groups=2: each filter sees 4 / 2 channels
    (layers.Conv2D(6, 3, groups=2), [(6, 6, 4)], 16 * 6 * 9 * 2),
    # channels-first: 2 channels of 7x7, valid 3x3 -> 5x5 outputs x 4 filters
    (layers.Conv2D(4, 3, data_format="channels_first"), [(2, 7, 7)], 25 * 4 * 9 * 2),
    # causal Conv1D keeps the length: 12 positions x 5 filters x 3 taps x 4 channels
    (layers.Conv1D(5, 3, padding="causal"), [(12, 4)], 12 * 5 * 3 * 4),
    # Conv3D: 2x2x2 outputs x 3 filters x 27 taps x 1 channel
    (layers.Conv3D(3, 3), [(4, 4, 4, 1)], 8 * 3 * 27),
    # transposed: each of 5x5 inputs scatters 9 taps x 2 channels x 4 filters
    (layers.Conv2DTranspose(4, 3, strides=2), [(5, 5, 2)], 25 * 9 * 2 * 4),
    # depthwise, multiplier 2: 8x8 outputs x 6 channels x 9 taps
    (layers.DepthwiseConv2D(3, depth_multiplier=2), [(10, 10, 3)], 64 * 6 * 9),
    # separable: depthwise 8x8 x 3 x 9, then pointwise 8x8 x 3 x 5
    (layers.SeparableConv2D(5, 3), [(10, 10, 3)], 64 * 3 * 9 + 64 * 3 * 5),
    # einsum: 4 positions, (2, 3) outputs each, 5 inputs summed over
    (layers.EinsumDense("abc,cde->abde", output_shape=(4, 2, 3)), [(4, 5)], 4 * 2 * 3 * 5),
    # cross-attention, 2 heads, key_dim 3, value_dim 4, query 6x5, value 7x8:
    # projections q 6*5*2*3, k 7*8*2*3, v 7*8*2*4, out 6*2*4*5; scores and sum 2*6*7*(3+4)
    (
        layers.MultiHeadAttention(2, 3, value_dim=4),
        [(6, 5), (7, 8)],
        6 * 5 * 2 * 3 + 7 * 8 * 2 * 3 + 7 * 8 * 2 * 4 + 6 * 2 * 4 * 5 + 2 * 6 * 7 * (3 + 4),
    ),
]


@pytest.mark.parametrize("layer, shapes, expected", HAND_COUNTED, ids=lambda c: type(c).__name__)
def test_single_layers_match_hand_counts(layer, shapes, expected):
    report = count_flops(_one(layer, *shapes))
    assert report.macs == expected
    assert report.flops == 2 * expected
    assert report.uncounted == ()


def test_layers_without_arithmetic_cost_nothing_and_are_not_flagged():
    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization()(inputs)
    x = layers.MaxPooling2D()(x)
    x = layers.ReLU()(x)
    x = layers.LayerNormalization()(x)
    x = layers.GlobalAveragePooling2D()(x)
    report = count_flops(keras.Model(inputs, layers.Dense(2)(x)))
    assert report.macs == 3 * 2
    assert report.uncounted == ()


def test_layers_with_weights_but_no_rule_are_listed():
    inputs = keras.Input((5, 3))
    x = layers.LSTM(4, name="rnn")(inputs)
    report = count_flops(keras.Model(inputs, layers.Dense(2, name="out")(x)))
    assert report.by_layer == {"out": 8}
    assert report.uncounted == ("rnn",)
    assert "not counted: rnn" in str(report)


def test_nested_models_are_walked_with_paths():
    inner = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="fc")], name="inner")
    inputs = keras.Input((4,))
    outer = keras.Model(inputs, layers.Dense(2, name="head")(inner(inputs)))
    assert count_flops(outer).by_layer == {"inner/fc": 12, "head": 6}


def test_reference_models_match_hand_counts():
    # LeNet-300-100: 784*300 + 300*100 + 100*10
    assert count_macs(lenet_300_100()) == 266_200
    # LeNet-5: conv1 28*28*6*25, conv2 10*10*96*25*6, fc1 2400*120, fc2 120*84, fc3 84*10
    assert count_macs(lenet5()) == 117_600 + 1_440_000 + 288_000 + 10_080 + 840


def test_wrapped_models_count_as_their_plain_layers():
    model = lenet5()
    assert count_macs(keras_prune.prunable(model)) == count_macs(model)


def test_vit_mnist_counts_attention_and_feed_forward():
    # per block on 16 tokens of width 64: q, k, v, out 4*16*64*64; scores and sum
    # 4 heads*16*16*(16+16); FFN 2*16*64*128. Plus patch embedding 16*64*49, head 64*10.
    block = 4 * 16 * 64 * 64 + 4 * 16 * 16 * 32 + 2 * 16 * 64 * 128
    assert count_macs(vit_mnist()) == 4 * block + 16 * 64 * 49 + 64 * 10


def test_mobilenetv2_matches_the_published_count():
    # Sandler et al. 2018, Table 4: MobileNetV2 (1.0, 224) takes 300M multiply-adds.
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    report = count_flops(model)
    assert report.macs == pytest.approx(300e6, rel=0.01)
    assert report.uncounted == ()


def test_resnet50_matches_the_published_count():
    # He et al. 2016, Table 1: ResNet-50 takes 3.8 x 10^9 multiply-adds ("FLOPs").
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    assert count_macs(model) == pytest.approx(3.8e9, rel=0.03)


def test_unbuilt_and_variable_size_models_are_refused():
    with pytest.raises(ModelError, match="not built"):
        count_flops(keras.Sequential([layers.Dense(2)]))
    inputs = keras.Input((None, None, 3))
    with pytest.raises(ModelError, match="unknown sizes.*fixed input size"):
        count_flops(keras.Model(inputs, layers.Conv2D(2, 3)(inputs)))
