"""Selection: per-layer and global, with per-layer score normalisation."""

from __future__ import annotations

import numpy as np
import pytest

import keras
import keras_prune as kp
from keras_prune.errors import InputError
from keras_prune.experiment import RunSettings, run_pruning
from keras_prune.plan import Plan
from keras_prune.selection import normalize_scores, select_global, select_layer


def test_select_layer_prunes_exactly_floor_n_fraction_lowest_scores():
    scores = [np.array([[5.0, 1.0], [3.0, 3.0]]), np.array([2.0, 4.0, 0.5])]
    masks = select_layer(scores, [np.ones((2, 2)), np.ones(3)], 0.5)
    # 7 weights -> floor(3.5) = 3 pruned: 0.5, 1.0 and 2.0.
    np.testing.assert_array_equal(masks[0], [[1, 0], [1, 1]])
    np.testing.assert_array_equal(masks[1], [0, 1, 0])


def test_select_layer_keeps_already_pruned_weights_pruned():
    scores = [np.array([9.0, 1.0, 2.0, 3.0])]
    masks = select_layer(scores, [np.array([0.0, 1, 1, 1])], 0.5)
    np.testing.assert_array_equal(masks[0], [0, 0, 1, 1])


def test_select_global_takes_the_lowest_scores_anywhere():
    scores = [[np.array([1.0, 2.0, 3.0, 4.0])], [np.array([0.1, 0.2, 5.0, 6.0])]]
    masks = select_global(scores, [[np.ones(4)], [np.ones(4)]], 0.5)
    np.testing.assert_array_equal(masks[0][0], [0, 0, 1, 1])
    np.testing.assert_array_equal(masks[1][0], [0, 0, 1, 1])
    masks = select_global(scores, [[np.ones(4)], [np.ones(4)]], 0.25)
    np.testing.assert_array_equal(masks[0][0], [1, 1, 1, 1])
    np.testing.assert_array_equal(masks[1][0], [0, 0, 1, 1])


def test_select_global_with_per_layer_fractions_prunes_their_total():
    rng = np.random.default_rng(0)
    scores = [[rng.random((10, 3))], [rng.random(7)], [rng.random((2, 2, 5))]]
    masks = [[np.ones((10, 3))], [np.ones(7)], [np.ones((2, 2, 5))]]
    fractions = [0.5, 0.3, 0.95]
    new = select_global(scores, masks, fractions)
    pruned = sum(int((m == 0).sum()) for layer in new for m in layer)
    assert pruned == 15 + 2 + 19
    # ... and they are the lowest scores of all layers together.
    flat = np.concatenate([s[0].ravel() for s in scores])
    kept = np.concatenate([m[0].ravel() for m in new]) == 1
    assert flat[~kept].max() < flat[kept].min()


def test_select_global_keeps_already_pruned_weights_and_counts_them():
    scores = [[np.array([5.0, 6.0])], [np.array([1.0, 2.0])]]
    masks = [[np.array([0.0, 1.0])], [np.ones(2)]]
    new = select_global(scores, masks, 0.5)
    np.testing.assert_array_equal(new[0][0], [0, 1])
    np.testing.assert_array_equal(new[1][0], [0, 1])


def test_mean_normalisation_makes_layers_of_different_scale_comparable():
    small = [np.array([0.01, 0.02, 0.03, 0.04])]
    large = [np.array([10.0, 20.0, 30.0, 40.0])]
    masks = [[np.ones(4)], [np.ones(4)]]
    raw = select_global([small, large], masks, 0.5, normalization="none")
    assert (raw[0][0] == 0).all() and (raw[1][0] == 1).all()
    fair = select_global([small, large], masks, 0.5, normalization="mean")
    np.testing.assert_array_equal(fair[0][0], [0, 0, 1, 1])
    np.testing.assert_array_equal(fair[1][0], [0, 0, 1, 1])


def test_normalisations_ignore_pruned_weights_and_keep_signs():
    scores = [np.array([-1.0, 3.0, 100.0])]
    masks = [np.array([1.0, 1.0, 0.0])]
    np.testing.assert_allclose(normalize_scores(scores, masks, "mean")[0], [-0.5, 1.5, 50.0])
    np.testing.assert_allclose(
        normalize_scores(scores, masks, "l2")[0], np.array([-1.0, 3.0, 100.0]) / np.sqrt(10)
    )
    np.testing.assert_array_equal(normalize_scores(scores, masks, "none")[0], scores[0])


def test_bad_normalisation_and_nan_scores_are_refused():
    with pytest.raises(InputError, match="unknown normalization 'max'"):
        normalize_scores([np.ones(2)], [np.ones(2)], "max")
    with pytest.raises(ValueError, match="NaN"):
        select_global([[np.array([1.0, np.nan])]], [[np.ones(2)]], 0.5)


def _dense_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(4, name="b")]
    )
    wrapped = kp.prunable(model)
    # Layer a's weights are 100x smaller than b's.
    a, b = wrapped.get_layer("a"), wrapped.get_layer("b")
    a.pruned_variables[0].assign(a.pruned_variables[0].numpy() * 0.01)
    return wrapped, a, b


def test_prune_global_scope_prunes_the_same_total_and_normalises_magnitude():
    wrapped, a, b = _dense_model()
    kp.prune(wrapped, {"a": 0.5, "b": 0.5}, scope="global")
    assert a.pruned_count() + b.pruned_count() == 24 + 16
    # magnitude's scores are mean-normalised per layer, so layer a's tiny weights
    # are not all pruned first ...
    assert 0 < a.pruned_count() < 48
    wrapped, a, b = _dense_model()
    kp.prune(wrapped, {"a": 0.5, "b": 0.5}, scope="global", normalization="none")
    # ... while raw magnitudes prune layer a (40 of its 48) before any of b.
    assert a.pruned_count() == 40 and b.pruned_count() == 0


def test_prune_refuses_unknown_scope():
    wrapped, _, _ = _dense_model()
    with pytest.raises(InputError, match="unknown scope 'world'"):
        kp.prune(wrapped, {"a": 0.5}, scope="world")


def test_run_with_global_scope_prunes_all_plan_layers_in_one_step(trained_lenet5, small_data):
    model = kp.load_model(trained_lenet5)
    plan = Plan(layers=(1, 8, 12), fractions=(0.5, 0.9, 0.5))
    pruned, results = run_pruning(model, plan, small_data, RunSettings(scope="global"))
    layers = [pruned.get_layer(n) for n in ("conv1", "fc1", "fc3")]
    assert sum(l.pruned_count() for l in layers) == 75 + 259200 + 420
    assert [r.layer for r in results] == ["conv1", "fc1", "fc3"]
    assert len({r.validation for r in results}) == 1  # one joint step, one evaluation
    # Global selection moves weights between layers: not the per-layer counts.
    assert [l.pruned_count() for l in layers] != [75, 259200, 420]
