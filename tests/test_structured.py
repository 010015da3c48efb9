"""Unit granularity: scores per neuron/filter, whole-unit masks, coupled units, CLI option."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from keras import layers

import keras_prune
from keras_prune.criteria import Criterion
from keras_prune.errors import InputError
from keras_prune.structured import (
    check_granularity,
    is_structured,
    pruned_units,
    select_coupled_units,
    select_units,
    unit_scores,
    units_to_prune,
)
from keras_prune_cli.main import main


def _unit_pruned(kernel: np.ndarray) -> np.ndarray:
    """Which units of a kernel are entirely zero."""
    return ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)


def _residual_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    stem = layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    branch = layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(stem)
    branch = layers.Conv2D(6, 3, padding="same", name="c2")(branch)
    merged = layers.Add(name="add")([stem, branch])
    pooled = layers.GlobalAveragePooling2D()(merged)
    return keras.Model(inputs, layers.Dense(3, name="head")(pooled))


def test_unit_scores_l1_sums_each_unit_and_l2_takes_its_norm():
    kernel = np.array([[3.0, -1.0], [4.0, 2.0]])
    np.testing.assert_allclose(unit_scores([kernel]), [7.0, 1.0])
    np.testing.assert_allclose(unit_scores([kernel], norm="l2"), [5.0, np.sqrt(5.0)])
    with pytest.raises(InputError, match="unit norm"):
        unit_scores([kernel], norm="l3")


def test_select_units_masks_whole_lowest_scoring_units():
    scores = np.abs(np.random.default_rng(0).normal(size=(5, 5, 3, 8)))
    scores[..., [2, 6]] *= 0.01  # the two weakest filters
    masks = select_units([scores], [np.ones_like(scores)], 0.25)
    np.testing.assert_array_equal(pruned_units(masks), np.isin(np.arange(8), [2, 6]))
    kept = masks[0][..., [0, 1, 3, 4, 5, 7]]
    assert kept.min() == 1.0  # kept units keep every weight


def test_select_units_keeps_pruned_units_and_weight_masks_of_kept_units():
    scores = np.array([[1.0, 2.0, 3.0, 4.0]] * 2)
    mask = np.ones((2, 4), dtype=np.float32)
    mask[:, 3] = 0.0  # unit 3 already pruned, though it scores highest
    mask[0, 2] = 0.0  # one weight of unit 2 pruned earlier
    new = select_units([scores], [mask], 0.5)[0]
    np.testing.assert_array_equal(pruned_units([new]), [True, False, False, True])
    assert new[0, 2] == 0.0 and new[1, 2] == 1.0


def test_coupled_units_are_pruned_together_by_their_summed_scores():
    a = np.array([[1.0, 9.0, 5.0, 5.0]])
    b = np.array([[9.0, 1.0, 4.0, 5.0]])
    c = np.array([[0.1, 0.2, 0.3]])  # uncoupled
    new = select_coupled_units(
        {"a": [a], "b": [b], "c": [c]},
        {"a": [np.ones((1, 4))], "b": [np.ones((1, 4))], "c": [np.ones((1, 3))]},
        {"a": np.array([0, 1, 2, 3]), "b": np.array([0, 1, 2, 3]), "c": np.array([4, 5, 6])},
        {"a": 0.25},
    )
    # Alone, 'a' would drop unit 0; together, unit 2 (9 in total) is the weakest.
    np.testing.assert_array_equal(new["a"][0], [[1, 1, 0, 1]])
    np.testing.assert_array_equal(new["b"][0], [[1, 1, 0, 1]])
    np.testing.assert_array_equal(new["c"][0], np.ones((1, 3)))


def test_granularity_names():
    assert not is_structured("weight")
    assert is_structured("neuron") and is_structured("filter")
    with pytest.raises(InputError, match="granularity 'channel'"):
        check_granularity("channel")


def test_prune_at_filter_granularity_masks_whole_filters_and_neurons():
    model = keras_prune.prunable(keras_prune.models.lenet5())
    result = keras_prune.prune(model, {"conv2": 0.75, "fc1": 0.5}, granularity="filter")
    conv2, fc1 = model.get_layer("conv2"), model.get_layer("fc1")
    assert result == {conv2: 0.75, fc1: 0.5}
    assert _unit_pruned(conv2.mask_arrays()[0]).sum() == 72
    assert _unit_pruned(conv2.effective_weights()[0]).sum() == 72
    assert _unit_pruned(fc1.mask_arrays()[0]).sum() == 60
    # every weight of a kept unit is kept: whole units, not scattered weights
    assert conv2.pruned_count() == 72 * 5 * 5 * 6


def test_neuron_granularity_ranks_units_by_any_criterion_summed_over_the_unit():
    class Designed(Criterion):
        """Scores each fc1 weight by its unit index, except unit 7 which scores lowest."""

        def score(self, layers, model=None, data=None):
            kernel = layers[0].effective_weights()[0]
            scores = np.tile(np.arange(kernel.shape[1], dtype=float) + 1, (kernel.shape[0], 1))
            scores[:, 7] = 0.0
            return {layers[0]: [scores]}

    model = keras_prune.prunable(keras_prune.models.lenet_300_100(), layers=["fc1"])
    keras_prune.prune(model, {"fc1": 0.01}, criterion=Designed(), granularity="neuron")
    pruned = _unit_pruned(model.get_layer("fc1").mask_arrays()[0])
    np.testing.assert_array_equal(np.flatnonzero(pruned), [0, 1, 7])


def test_unit_granularity_refuses_layers_without_output_units():
    model = keras.Sequential(
        [keras.Input((8, 8, 2)), layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
         layers.SeparableConv2D(4, 3, name="sep"), layers.Flatten(), layers.Dense(2)]
    )
    wrapped = keras_prune.prunable(model)
    with pytest.raises(InputError, match="'sep' \\(SeparableConv2D\\) cannot be pruned by units"):
        keras_prune.prune(wrapped, {"sep": 0.5}, granularity="filter")
    with pytest.raises(InputError, match="granularity"):
        keras_prune.prune(wrapped, {"dw": 0.5}, granularity="rows")


def test_pruning_one_layer_of_a_residual_sum_prunes_the_same_filters_in_its_partners():
    model = keras_prune.prunable(_residual_model())
    result = keras_prune.prune(model, {"c2": 0.5}, granularity="filter")
    stem, c1, c2 = (model.get_layer(n) for n in ("stem", "c1", "c2"))
    assert set(result) == {stem, c2}
    pruned_c2 = _unit_pruned(c2.mask_arrays()[0])
    assert pruned_c2.sum() == 3
    np.testing.assert_array_equal(_unit_pruned(stem.mask_arrays()[0]), pruned_c2)
    assert not _unit_pruned(c1.mask_arrays()[0]).any()  # c1 feeds no merge


def test_cli_run_granularity_filter_prunes_whole_filters(trained_lenet5, small_idx_dir, tmp_path):
    out = tmp_path / "pruned.keras"
    result = CliRunner().invoke(
        main,
        ["run", "-m", str(trained_lenet5), "-l", "conv2,fc1", "-p", "0.5",
         "--granularity", "filter", "--data-dir", str(small_idx_dir), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    model = keras_prune.load_model(out)
    assert _unit_pruned(model.get_layer("conv2").mask_arrays()[0]).sum() == 48
    assert _unit_pruned(model.get_layer("fc1").mask_arrays()[0]).sum() == 60
    assert not _unit_pruned(model.get_layer("fc2").kernel.numpy()).any()


def test_filter_granularity_with_taylor1_prunes_units_of_lowest_summed_taylor_terms(small_data):
    model = keras_prune.prunable(keras_prune.models.lenet5(), layers=["conv2"])
    batches = small_data.train(64, shuffle=False).take(2)
    conv2 = model.get_layer("conv2")
    terms = keras_prune.criteria.get_criterion("taylor1").score([conv2], model=model, data=batches)[conv2]
    expected = np.sort(np.argsort(unit_scores(terms), kind="stable")[:24])
    keras_prune.prune(model, {"conv2": 0.25}, "taylor1", data=batches, granularity="filter")
    np.testing.assert_array_equal(np.flatnonzero(_unit_pruned(conv2.mask_arrays()[0])), expected)


def test_round_to_keeps_the_nearest_multiple_of_units():
    assert units_to_prune(120, 0.5) == 60
    assert units_to_prune(120, 0.5, round_to=16) == 120 - 64  # 60 kept -> 64
    assert units_to_prune(96, 0.6, round_to=16) == 96 - 32  # 38.4 kept -> 32
    assert units_to_prune(96, 0.95, round_to=16) == 96 - 16  # at least one multiple kept
    assert units_to_prune(100, 0.0, round_to=16) == 0  # a layer left whole stays whole
    assert units_to_prune(20, 0.5, already=15, round_to=8) == 15  # 5 left: fewer than 8
    assert units_to_prune(40, 0.1, already=10, round_to=8) == 40 - 24  # 30 left -> at most 24
    with pytest.raises(InputError, match="round_to must be a whole number >= 1"):
        units_to_prune(10, 0.5, round_to=0)


def test_prune_with_round_to_keeps_multiples_in_coupled_layers_and_heads():
    model = keras_prune.prunable(_residual_model())
    keras_prune.prune(model, {"c2": 0.3}, granularity="filter", round_to=4)
    kept = {n: int((~_unit_pruned(model.get_layer(n).mask_arrays()[0])).sum()) for n in ("stem", "c2")}
    assert kept == {"stem": 4, "c2": 4}  # 6 * 0.7 = 4.2 kept -> 4, in both layers of the sum

    inputs = keras.Input((4, 8))
    attention = layers.MultiHeadAttention(6, 4, name="mha")(inputs, inputs)
    heads = keras_prune.prunable(keras.Model(inputs, attention))
    keras_prune.prune(heads, {"mha": 0.4}, granularity="head", round_to=2)
    output_mask = heads.get_layer("mha").mask_arrays()[3]  # (heads, head_dim, features)
    assert int(output_mask.reshape(6, -1).any(axis=1).sum()) == 4  # 3.6 heads kept -> 4


def test_round_to_needs_unit_granularity():
    model = keras_prune.prunable(_residual_model())
    with pytest.raises(InputError, match="round_to works with granularity neuron, filter or head, not 'weight'"):
        keras_prune.prune(model, {"c2": 0.5}, round_to=8)
    with pytest.raises(InputError, match="round_to must be a whole number >= 1"):
        keras_prune.prune(model, {"c2": 0.5}, granularity="filter", round_to=2.5)


def test_cli_run_round_to_keeps_multiples_of_units(trained_lenet5, small_idx_dir, tmp_path):
    out = tmp_path / "pruned.keras"
    result = CliRunner().invoke(
        main,
        ["run", "-m", str(trained_lenet5), "-l", "conv2,fc1", "-p", "0.6,0.5", "--granularity", "filter",
         "--round-to", "16", "--data-dir", str(small_idx_dir), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    model = keras_prune.load_model(out)
    assert _unit_pruned(model.get_layer("conv2").mask_arrays()[0]).sum() == 96 - 32
    assert _unit_pruned(model.get_layer("fc1").mask_arrays()[0]).sum() == 120 - 64
    bad = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "-l", "conv2", "-p", "0.5", "--round-to", "8",
                                    "--data-dir", str(small_idx_dir), "--out", str(tmp_path / "bad.keras")])
    assert bad.exit_code != 0
    assert "round_to works with granularity neuron, filter or head" in bad.output
    assert "Traceback" not in bad.output and not (tmp_path / "bad.keras").exists()
