"""The design card's command and every command of the original tool's README, end to end.

torch7-pruner's README runs `qlua main.lua FLAGS`; each command here is
`keras-prune run` with the same flags exactly as the original wrote them, on the
shipped model (no `-m`). Commands that retrain for many epochs add `--data-dir` with a
small slice of the shipped MNIST (the one data-subset option `run` has); the others
also run on the shipped data. Each runs in a fresh folder, where `run` saves
`lenet5_pruned.keras`.
"""

from __future__ import annotations

import re
import shlex
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.results import mask_digest
from keras_prune_cli.main import main
from tests.conftest import write_idx_dataset

CONF_COMPRESSION = "Total Compression: 0.92905541200115"  # the conf's 291,231 of 313,470 weights
FC1_AT_70 = "Total Compression: 0.64312374389894"  # fc1 70% pruned: 201,600 of 313,470


@pytest.fixture(scope="module")
def tiny_idx_dir(tmp_path_factory):
    """480 training images (440 train, 40 validation) and 100 test images."""
    return write_idx_dataset(tmp_path_factory.mktemp("tiny"), 480, 100)


def keras_prune(command: str, folder, monkeypatch, *extra: str):
    """Runs `command` (a `keras-prune ...` line) in `folder`, plus `extra` arguments."""
    monkeypatch.chdir(folder)
    words = shlex.split(command)
    assert words[0] == "keras-prune"
    result = CliRunner().invoke(main, [*words[1:], *map(str, extra)])
    assert "Traceback" not in result.output
    return result


def saved(folder):
    return kp.load_model(folder / "lenet5_pruned.keras")


def retained_lines(output: str) -> list[str]:
    return re.findall(r"^Layer\d+: [\d.]+% retained \(step \d+\)$", output, re.M)


def test_the_design_cards_command_prunes_those_layers_to_the_conf_fractions_by_l1(tmp_path, monkeypatch):
    result = keras_prune("keras-prune run --pruner l1 --layers 1,4,8", tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    conf = kp.resources.DEFAULT_CONF
    assert f"Plan (layers from --layers, fractions from {conf}): 1 -> 0.5, 4 -> 0.7, 8 -> 0.95; pruner l1," in result.output
    assert retained_lines(result.output) == [
        "Layer1: 50% retained (step 1)", "Layer4: 30% retained (step 1)", "Layer8: 5% retained (step 1)",
    ]
    model = saved(tmp_path)
    counts = {layer.name: layer.pruned_count() for layer in model.layers if isinstance(layer, kp.PruneWrapper)}
    assert counts == {"conv1": 75, "conv2": 10080, "fc1": 273600}
    original = kp.load_model(kp.resources.PRETRAINED_MODEL)
    for name in ("fc2", "fc3"):  # untouched: not wrapped, weights as shipped
        assert not isinstance(model.get_layer(name), kp.PruneWrapper)
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), original.get_layer(name).kernel.numpy())
    by_magnitude = kp.prunable(original, [1, 4, 8])
    kp.prune(by_magnitude, {1: 0.5, 4: 0.7, 8: 0.95})
    differs = [n for n in counts if mask_digest(model.get_layer(n)) != mask_digest(by_magnitude.get_layer(n))]
    assert differs == ["conv1", "conv2", "fc1"]  # l1's learned gates choose other weights than magnitude


@pytest.mark.parametrize("layers, missing", [("1,4", "4"), ("fc1,conv2", "conv2")])
def test_a_layer_the_conf_does_not_name_is_a_one_line_error(tmp_path, monkeypatch, layers, missing):
    model = tmp_path / "model.keras"
    shutil.copy(kp.resources.PRETRAINED_MODEL, model)
    model.with_suffix(".conf").write_text("1,8\n0.5,0.9\n")
    result = keras_prune(f"keras-prune run --pruner l1 --layers {layers} -m {model}", tmp_path, monkeypatch)
    assert result.exit_code == 2
    assert result.output == (f"keras-prune: error: layer {missing} has no fraction in {model.with_suffix('.conf')}: "
                             "give -p FRACTION (one, or one per layer)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.conf", "model.keras"]


def test_layers_without_a_conf_beside_the_model_name_the_layer_and_ask_for_p(trained_lenet5, tmp_path, monkeypatch):
    result = keras_prune(f"keras-prune run -m {trained_lenet5} --layers 8,12", tmp_path, monkeypatch)
    assert result.exit_code == 2
    assert "layer 8 has no fraction: no -p given, no --config" in result.output and "give -p" in result.output


def test_layers_take_their_fractions_from_config_by_name_or_index(trained_lenet5, small_idx_dir, tmp_path, monkeypatch):
    conf = tmp_path / "mine.conf"
    conf.write_text("fc1,12\n0.8,0.25\n")
    result = keras_prune(f"keras-prune run -m {trained_lenet5} --layers 12,8 --config {conf}", tmp_path,
                         monkeypatch, "--data-dir", small_idx_dir)
    assert result.exit_code == 0, result.output
    assert f"fractions from {conf}): 12 -> 0.25, 8 -> 0.8;" in result.output
    assert retained_lines(result.output) == ["Layer12: 75% retained (step 1)", "Layer8: 20% retained (step 1)"]


def test_the_originals_one_layer_command(tmp_path, monkeypatch):
    result = keras_prune("keras-prune run -l 8 -p 0.7", tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert retained_lines(result.output) == ["Layer8: 30% retained (step 1)"]
    assert FC1_AT_70 in result.output and "10000 test images" in result.output
    assert saved(tmp_path).get_layer("fc1").pruned_count() == 201600


def test_the_originals_retraining_command(tiny_idx_dir, tmp_path, monkeypatch):
    result = keras_prune("keras-prune run -reTrain -nEpochs 3 -l 8 -p 0.7", tmp_path, monkeypatch, "--data-dir", tiny_idx_dir)
    assert result.exit_code == 0, result.output
    assert "retraining 3 epoch(s) per step" in result.output and "Epoch 3/3" in result.output
    assert retained_lines(result.output) == ["Layer8: 30% retained (step 1)"] and FC1_AT_70 in result.output


def test_the_originals_iterative_command(tiny_idx_dir, tmp_path, monkeypatch):
    result = keras_prune("keras-prune run -iPrunning 10 -reTrain -nEpochs 3 -l 8 -p 0.7", tmp_path, monkeypatch,
                         "--data-dir", tiny_idx_dir)
    assert result.exit_code == 0, result.output
    retained = [100 - 7 * step for step in range(1, 11)]  # 7% of fc1 more at each of 10 steps
    assert retained_lines(result.output) == [f"Layer8: {r}% retained (step {s})" for s, r in enumerate(retained, 1)]
    assert "Epoch 30/30" in result.output and FC1_AT_70 in result.output


def test_the_originals_reload_command(tiny_idx_dir, tmp_path, monkeypatch):
    result = keras_prune("keras-prune run -reLoad -iPrunning 10 -reTrain -nEpochs 3 -l 8 -p 0.7", tmp_path,
                         monkeypatch, "--data-dir", tiny_idx_dir)
    assert result.exit_code == 0, result.output
    assert "reloading the model every step" in result.output
    assert len(retained_lines(result.output)) == 10 and FC1_AT_70 in result.output


def test_the_originals_whole_network_iterative_command(tiny_idx_dir, tmp_path, monkeypatch):
    result = keras_prune("keras-prune run -iPrunning 10 -reTrain -nEpochs 3", tmp_path, monkeypatch, "--data-dir", tiny_idx_dir)
    assert result.exit_code == 0, result.output
    assert f"Plan ({kp.resources.DEFAULT_CONF}): 1 -> 0.5, 4 -> 0.7, 8 -> 0.95, 10 -> 0.7, 12 -> 0.5" in result.output
    assert len(retained_lines(result.output)) == 50 and "Epoch 150/150" in result.output
    assert CONF_COMPRESSION in result.output


def test_the_originals_whole_network_one_shot_command(tiny_idx_dir, tmp_path, monkeypatch):
    result = keras_prune("keras-prune run -reTrain -nEpochs 3", tmp_path, monkeypatch, "--data-dir", tiny_idx_dir)
    assert result.exit_code == 0, result.output
    assert len(retained_lines(result.output)) == 5 and "Epoch 15/15" in result.output
    assert CONF_COMPRESSION in result.output


def test_the_originals_whole_network_command_without_retraining(tmp_path, monkeypatch):
    result = keras_prune("keras-prune run", tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "no retraining" in result.output and CONF_COMPRESSION in result.output
    assert kp.sparsity_report(saved(tmp_path)).zeros == 291231


def test_the_originals_test_command(tmp_path, monkeypatch):
    result = keras_prune("keras-prune run -test", tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert CONF_COMPRESSION in result.output and re.search(r"Test: loss [\d.]+, error 0\.\d+%", result.output)
    assert not list(tmp_path.iterdir())  # it only reports


def test_the_originals_accuracy_tradeoff_command(tiny_idx_dir, tmp_path, monkeypatch):
    result = keras_prune("keras-prune run -acctradeoff 0.5 -iPrunning 10 -reTrain -nEpochs 3", tmp_path, monkeypatch,
                         "--data-dir", tiny_idx_dir)
    assert result.exit_code == 0, result.output
    assert "accuracy guard 0.5 points" in result.output
    reverted = re.findall(r"reverted: validation error \+[\d.]+ points .*; (Layer\d+) stays", result.output)
    stopped = re.search(r"Stopped by the accuracy guard or a diverging loss: (.*)$", result.output, re.M)
    assert (stopped.group(1).split(", ") if stopped else []) == reverted  # each stop said once, and summed up


@pytest.mark.parametrize("pruner", ["taylor1", "taylor2", "taylor12", "l1", "l2", "emp"])
def test_the_originals_pruners(pruner, tiny_idx_dir, tmp_path, monkeypatch):
    result = keras_prune(f"keras-prune run -pruner {pruner} -l 8 -p 0.7", tmp_path, monkeypatch, "--data-dir", tiny_idx_dir)
    assert result.exit_code == 0, result.output
    assert f"; pruner {pruner}, 1 step(s)" in result.output and FC1_AT_70 in result.output


def test_the_originals_cuda_flag(tmp_path, monkeypatch):
    import tensorflow as tf

    result = keras_prune("keras-prune run -cuda -l 8 -p 0.7", tmp_path, monkeypatch)
    if tf.config.list_physical_devices("GPU"):
        assert result.exit_code == 0, result.output
        assert "Devices: GPU:0" in result.output and FC1_AT_70 in result.output
    else:  # a machine without a GPU says so in one line
        assert result.exit_code == 2
        assert "no GPU 0: TensorFlow found 0 GPU(s)" in result.output
        assert len(result.output.strip().splitlines()) == 1
