"""Sparsity patterns: N:M along the input dimension and RxC blocks, with any criterion."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_prune as kp
from keras_prune.errors import InputError
from keras_prune.methods import kernel_view
from keras_prune.selection import parse_pattern, select_matrix


def kept_per_group(matrix_mask: np.ndarray, m: int) -> np.ndarray:
    """Kept weights in each group of m consecutive inputs, per output (last group may be short)."""
    inputs = matrix_mask.shape[0]
    padded = np.zeros((-(-inputs // m) * m, matrix_mask.shape[1]))
    padded[:inputs] = matrix_mask
    return padded.reshape(-1, m, matrix_mask.shape[1]).sum(axis=1)


@pytest.mark.parametrize("text", ["2:4", "4:8", "1:4"])
def test_n_of_m_keeps_the_n_highest_scores_of_every_group(text):
    pattern = parse_pattern(text)
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(64, 10))
    mask = select_matrix(scores, np.ones_like(scores), 0.0, pattern)
    m, n = pattern.group, pattern.kept
    assert (kept_per_group(mask, m) == n).all()
    groups = scores.reshape(-1, m, 10)
    kept = mask.reshape(-1, m, 10) == 1
    # Every kept weight outscores every pruned weight of its own group.
    lowest_kept = np.where(kept, groups, np.inf).min(axis=1)
    highest_pruned = np.where(~kept, groups, -np.inf).max(axis=1)
    assert (lowest_kept > highest_pruned).all()


def test_n_of_m_reaches_a_higher_fraction_and_keeps_pruned_weights_pruned():
    pattern = parse_pattern("2:4")
    scores = np.random.default_rng(1).random((40, 6))
    old = np.ones_like(scores)
    old[3, 2] = old[17, 0] = 0
    mask = select_matrix(scores, old, 0.7, pattern)
    assert (mask == 0).sum() == int(40 * 6 * 0.7)
    assert mask[3, 2] == 0 and mask[17, 0] == 0
    assert (kept_per_group(mask, 4) <= 2).all()


def test_a_short_last_group_keeps_at_most_n():
    mask = select_matrix(np.arange(7.0)[:, None], np.ones((7, 1)), 0.0, parse_pattern("2:4"))
    assert mask[:, 0].tolist() == [0, 0, 1, 1, 0, 1, 1]


def test_blocks_prune_whole_blocks_until_the_fraction_is_reached():
    pattern = parse_pattern("4x2")
    scores = np.random.default_rng(2).random((16, 6))
    mask = select_matrix(scores, np.ones_like(scores), 0.5, pattern)
    blocks = mask.reshape(4, 4, 3, 2).transpose(0, 2, 1, 3).reshape(12, 8)
    assert set(blocks.sum(axis=1)) <= {0.0, 8.0}
    assert (mask == 0).sum() == 48
    summed = scores.reshape(4, 4, 3, 2).sum(axis=(1, 3)).ravel()
    pruned_blocks = blocks.sum(axis=1) == 0
    assert summed[pruned_blocks].max() < summed[~pruned_blocks].min()


@pytest.mark.parametrize("bad", ["2:2", "4:2", "0:4", "2-4", "1x1", "x", "2:4:8"])
def test_bad_patterns_are_refused_with_what_is_allowed(bad):
    with pytest.raises(InputError, match="N:M"):
        parse_pattern(bad)


def small_cnn() -> keras.Model:
    inputs = keras.Input((12, 12, 8))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="out")(x))


@pytest.mark.parametrize("criterion", ["magnitude", "taylor1", "wanda", "sparsegpt"])
@pytest.mark.parametrize("text", ["2:4", "4:8"])
def test_prune_with_a_pattern_holds_it_on_every_group_of_every_layer(criterion, text):
    keras.utils.set_random_seed(0)
    model = kp.prunable(small_cnn())
    data = [(np.random.rand(8, 12, 12, 8).astype("float32"), np.arange(8) % 4)]
    kp.prune(model, {"conv": 0.5, "fc": 0.6, "out": 0.5}, criterion, data=data, pattern=text)
    pattern = parse_pattern(text)
    for layer in kp.wrapped_layers(model):
        view = kernel_view(layer.layer, layer.pruned_variables[0])
        matrix = view.matrix(layer.mask_arrays()[0])
        assert (kept_per_group(matrix, pattern.group) <= pattern.kept).all(), layer.name
        weights = view.matrix(layer.effective_weights()[0])
        assert (kept_per_group(weights != 0, pattern.group) <= pattern.kept).all()
    assert model.get_layer("fc").sparsity() == pytest.approx(0.6, abs=1e-3)
    assert model.get_layer("conv").sparsity() == pytest.approx(0.5)


def test_conv_groups_run_along_input_channels_first():
    layer = keras.layers.Conv2D(5, 3)
    layer.build((None, 6, 6, 4))
    view = kernel_view(layer, layer.kernel)
    kernel = np.arange(3 * 3 * 4 * 5).reshape(3, 3, 4, 5)
    matrix = view.matrix(kernel)
    assert matrix.shape == (36, 5)
    assert (matrix[:4, 0] == kernel[0, 0, :, 0]).all()  # one group of 4: the 4 input channels
    np.testing.assert_array_equal(view.kernel(matrix), kernel)


def test_patterns_refuse_global_scope_and_units():
    model = kp.prunable(small_cnn())
    with pytest.raises(InputError, match="scope 'layer'"):
        kp.prune(model, {"fc": 0.5}, pattern="2:4", scope="global")
    with pytest.raises(InputError, match="granularity 'weight'"):
        kp.prune(model, {"fc": 0.5}, pattern="2:4", granularity="neuron")
