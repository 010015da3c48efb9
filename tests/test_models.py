"""The reference models: the ViT builder, its registration, and its shipped weights."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.errors import InputError
from keras_prune.models import MODELS, build_model, vit_mnist
from keras_prune.training import evaluate
from keras_prune_cli.main import main

VIT_WEIGHTS = Path(__file__).resolve().parent.parent / "benchmarks" / "models" / "vit_mnist_e15.weights.h5"


def test_vit_mnist_is_a_patch_transformer():
    model = vit_mnist()
    assert model.output_shape == (None, 10)
    assert model.get_layer("tokens").output.shape == (None, 16, 64)
    attention = [l for l in model.layers if isinstance(l, keras.layers.MultiHeadAttention)]
    assert [l.num_heads for l in attention] == [4] * 4
    assert sum(isinstance(l, keras.layers.LayerNormalization) for l in model.layers) == 9
    assert model.get_layer("block1_fc1").units == 128
    assert model.count_params() == 138_890


def test_vit_mnist_options_change_the_shape_and_bad_ones_are_refused():
    model = vit_mnist(patch=4, dim=32, heads=2, depth=1, mlp_dim=48)
    assert model.get_layer("tokens").output.shape == (None, 49, 32)
    assert model.get_layer("block1_mha").num_heads == 2
    with pytest.raises(InputError, match="patch must divide 28"):
        vit_mnist(patch=5)
    with pytest.raises(InputError, match=r"dim \(64\) must be a multiple of heads \(3\)"):
        vit_mnist(heads=3)


def test_vit_mnist_round_trips_through_keras_files(tmp_path):
    model = vit_mnist(depth=1)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    model.save(tmp_path / "vit.keras")
    loaded = keras.models.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_vit_mnist_is_registered():
    assert "vit_mnist" in MODELS
    assert build_model("vit_mnist").name == "vit_mnist"


def test_train_cli_trains_the_vit_with_adamw(small_idx_dir, tmp_path):
    out = tmp_path / "vit.keras"
    result = CliRunner().invoke(main, ["train", "--model", "vit_mnist", "--optimizer", "adamw", "--lr", "0.002",
                                       "--epochs", "3", "--batch-size", "32", "--data-dir", str(small_idx_dir),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = out.with_suffix(".md").read_text()
    assert "AdamW (weight decay 0.05), learning rate 0.002" in card
    assert "momentum" not in card
    error = float(result.output.split("Test: loss")[1].split("error ")[1].split("%")[0])
    # 1,200 images, 3 epochs: about 50% in trial runs (noisy at this size); untrained: 90%
    assert error < 80.0


def test_train_cli_refuses_an_unknown_optimizer(small_idx_dir, tmp_path):
    result = CliRunner().invoke(main, ["train", "--model", "vit_mnist", "--optimizer", "adam",
                                       "--data-dir", str(small_idx_dir), "--out", str(tmp_path / "v.keras")])
    assert result.exit_code == 2
    assert "'adam' is not one of 'sgd', 'adamw'" in result.output
    assert not (tmp_path / "v.keras").exists()


def test_the_shipped_vit_weights_reach_the_cards_test_error(mnist):
    model = vit_mnist()
    model.load_weights(VIT_WEIGHTS)
    assert evaluate(model, mnist.test()).error <= 1.5
