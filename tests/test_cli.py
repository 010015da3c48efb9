"""Every command end to end on small data, and the errors a user can cause."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import keras_prune as kp
from keras_prune_cli.main import main


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def pruned_path(trained_lenet5, small_idx_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "pruned.keras"
    result = invoke("run", "-m", trained_lenet5, "--config", kp.resources.DEFAULT_CONF,
                    "--data-dir", small_idx_dir, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "layers", "run", "test"):
        assert command in result.output


def test_layers_shows_the_original_indices(trained_lenet5):
    result = invoke("layers", "-m", trained_lenet5)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert sorted(int(i) for i in rows) == list(range(1, 13))
    assert rows["1"][1:3] == ["conv1", "Conv2D"] and rows["1"][3] == "150"
    assert rows["8"][1] == "fc1" and rows["8"][3] == "288,000"
    assert rows["2"][3] == "-"  # tanh has no weights


def test_train_saves_a_model_and_its_card(small_idx_dir, tmp_path):
    out = tmp_path / "mlp.keras"
    result = invoke("train", "--model", "lenet_300_100", "--epochs", "1", "--data-dir", small_idx_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Test: loss" in result.output
    model = kp.load_model(out)
    assert model.count_params() == 266610
    card = out.with_suffix(".md").read_text()
    assert "lenet_300_100" in card and "test (300 images)" in card


def test_run_one_layer_like_the_originals_readme(trained_lenet5, small_idx_dir, tmp_path):
    out = tmp_path / "one.keras"
    result = invoke("run", "-m", trained_lenet5, "-l", "8", "-p", "0.7", "--data-dir", small_idx_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Layer8: 30% retained" in result.output
    assert "Total Compression: 0.64312374389894" in result.output
    assert "validation: loss" in result.output and "Test: loss" in result.output
    model = kp.load_model(out)
    assert model.get_layer("fc1").pruned_count() == 201600


def test_run_with_the_conf_prunes_every_listed_layer(pruned_path):
    report = kp.sparsity_report(kp.load_model(pruned_path))
    assert report.zeros == 291231


def test_run_accepts_the_originals_flags_and_retrains(trained_lenet5, small_idx_dir, tmp_path):
    out = tmp_path / "retrained.keras"
    result = invoke("run", "-m", trained_lenet5, "-reTrain", "-nEpochs", "1", "-iPruning", "2",
                    "-l", "8", "-p", "0.7", "-pruner", "mag", "-LR", "0.01",
                    "--data-dir", small_idx_dir, "--out", out)
    assert result.exit_code == 0, result.output
    output = result.output
    assert "Layer8: 65% retained (step 1)" in output
    assert "Layer8: 30% retained (step 2)" in output
    # One fit of two epochs; Keras' line for each retraining epoch comes between the
    # prune and its validation.
    assert output.count("Epoch ") == 2
    assert output.index("Epoch 2/2") < output.index("Layer8: 30% retained") < output.rindex("accuracy:") < output.rindex("validation: loss")
    assert kp.load_model(out).get_layer("fc1").pruned_count() == 201600


def test_run_with_reload_starts_each_step_from_the_pretrained_model(trained_lenet5, small_idx_dir, tmp_path):
    out = tmp_path / "reload.keras"
    result = invoke("run", "-m", trained_lenet5, "-reLoad", "-iPrunning", "2", "-l", "10", "-p", "0.5",
                    "--data-dir", small_idx_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "Layer10: 75% retained (step 1)" in result.output
    assert "Layer10: 50% retained (step 2)" in result.output
    assert "Total Compression: 0.01607809" in result.output  # 5040 / 313470, the saved model's


def test_test_reports_compression_and_error(pruned_path, small_idx_dir):
    result = invoke("test", "-m", pruned_path, "--data-dir", small_idx_dir)
    assert result.exit_code == 0, result.output
    assert "Total Compression: 0.92905541200115" in result.output
    assert "Test: loss" in result.output and "on 300 images" in result.output
    dash = invoke("run", "-test", "-m", pruned_path, "--data-dir", small_idx_dir)
    assert dash.exit_code == 0 and "Total Compression: 0.92905541200115" in dash.output


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["-l", "8", "-p", "1.5"], 2, "must be in [0, 1], got 1.5"),
        (["-l", "8", "-p", "abc"], 2, "must be a number"),
        (["-l", "13", "-p", "0.5"], 2, "layer index 13 is out of range"),
        (["-l", "2", "-p", "0.5"], 2, "has no prunable weights"),
        (["-l", "fc9", "-p", "0.5"], 2, "no layer named 'fc9'"),
        (["-l", "1,4", "-p", "0.5,0.6,0.7"], 2, "2 layers but 3 fractions"),
        (["-l", "8"], 2, "layer 8 has no fraction: no -p given, no --config, and no conf file"),
        (["-p", "0.5"], 2, "-p/--fraction needs -l/--layers"),
        (["-l", "8", "-p", "0.5", "-pruner", "nope"], 2, "unknown pruner 'nope'"),
        (["-l", "8", "-p", "0.5", "-acctradeoff", "-1"], 2, "Invalid value"),
        (["-l", "8", "-p", "0.5", "--gpu", "0,x"], 2, "--gpu takes comma-separated GPU numbers"),
        (["-l", "8", "-p", "0.5", "--schedule", "cubic"], 2, "the cubic schedule prunes during retraining"),
        (["-l", "8", "-p", "0.5", "--multi-worker"], 2, "needs the TF_CONFIG environment variable"),
        (["-l", "8", "-p", "0.5", "--iterations", "0"], 2, "Invalid value"),
        (["-l", "8", "-p", "0.5", "--epochs", "-1"], 2, "Invalid value"),
    ],
)
def test_run_bad_input_gives_one_line_and_no_file(trained_lenet5, small_idx_dir, tmp_path, args, code, message):
    out = tmp_path / "never.keras"
    result = invoke("run", "-m", trained_lenet5, "--data-dir", small_idx_dir, "--out", out, *args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_missing_and_corrupt_model_files_are_one_line_errors(tmp_path):
    missing = invoke("test", "-m", tmp_path / "none.keras")
    assert missing.exit_code == 2 and "model file not found" in missing.output
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip")
    result = invoke("layers", "-m", corrupt)
    assert result.exit_code == 2 and "is not a Keras model file" in result.output
    assert "Traceback" not in result.output


def test_an_unwritable_output_leaves_nothing_behind(trained_lenet5, small_idx_dir, tmp_path):
    out = tmp_path / "no_such_dir" / "x.keras"
    result = invoke("run", "-m", trained_lenet5, "-l", "8", "-p", "0.5", "--data-dir", small_idx_dir, "--out", out)
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not out.parent.exists()


def test_the_installed_console_script_runs_and_fails_cleanly(tmp_path):
    exe = Path(sys.executable).with_name("keras-prune")
    result = subprocess.run([str(exe), "layers", "-m", str(tmp_path / "none.keras")],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "CI": "1"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"keras-prune: error: model file not found: {tmp_path / 'none.keras'}"]
