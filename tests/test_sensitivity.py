"""Sensitivity sweeps, their CSV and plot, and `keras-prune plot` on any log."""

from __future__ import annotations

import csv

import pytest
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.errors import InputError
from keras_prune.experiment import RunSettings
from keras_prune.plotting import read_log
from keras_prune.sensitivity import sensitivity
from keras_prune.training import evaluate
from keras_prune_cli.main import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path, max_bytes=200_000):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) < max_bytes
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 400
    assert image.std() > 0.05  # not a blank canvas


def test_each_point_is_a_one_shot_prune_of_that_layer_alone(trained_lenet5, small_data):
    model = kp.load_model(trained_lenet5)
    result = sensitivity(model, small_data, layers=[12, "conv1"], steps=2, fraction=0.8)
    rows = [(r.layer, r.step, r.fraction) for r in result.results]
    assert rows == [("fc3", 0, 0.0), ("fc3", 1, 0.4), ("fc3", 2, 0.8), ("conv1", 0, 0.0), ("conv1", 1, 0.4), ("conv1", 2, 0.8)]
    # The step-2 point of fc3 is exactly what pruning the trained model once to 0.8 gives.
    direct = kp.prunable(model, [12])
    kp.prune(direct, {12: 0.8})
    assert result.results[2].validation == evaluate(direct, small_data.validation())
    assert result.results[0].validation == result.baseline == evaluate(model, small_data.validation())
    assert result.curve("conv1")[0] == (0.0, result.baseline.error)
    assert not any(isinstance(layer, kp.PruneWrapper) for layer in model.layers)  # left untouched


def test_sensitivity_with_retraining_retrains_every_point_from_the_trained_model(trained_lenet5, small_data):
    model = kp.load_model(trained_lenet5)
    settings = RunSettings(retrain=True, epochs=1, lr=0.01, batch_size=128)
    result = sensitivity(model, small_data, layers=[10], steps=2, fraction=0.9, settings=settings)
    assert [r.step for r in result.results] == [0, 1, 2]
    assert all(r.validation.error < 50 for r in result.results)


def test_the_sensitivity_command_writes_csv_and_a_real_png(trained_lenet5, small_idx_dir, tmp_path):
    result = CliRunner().invoke(main, ["sensitivity", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir),
                                       "-l", "1,8,12", "-p", "0.9", "--steps", "3", "--log-dir", str(tmp_path), "--job-id", "sens"])
    assert result.exit_code == 0, result.output
    assert "Layer8 fc1: 90% pruned -> validation loss" in result.output
    rows = list(csv.DictReader((tmp_path / "sens.csv").read_text().splitlines()))
    assert list(rows[0])[:3] == ["LayerNo", "Retained%", "ValError"]
    assert [(r["LayerNo"], r["Step"]) for r in rows] == [(l, s) for l in ("1", "8", "12") for s in ("0", "1", "2", "3")]
    assert [float(r["Retained%"]) for r in rows[:4]] == pytest.approx([1.0, 0.7, 0.4, 0.1], abs=0.01)
    assert_real_png(tmp_path / "sens.png")
    assert (tmp_path / "sens.jsonl").read_text().count("\n") == 12


def test_plot_draws_an_original_plotlog(tmp_path):
    log = tmp_path / "localMain.plotlog.csv"
    log.write_text("LayerNo,Retained%,TestError\n8,0.9,0.96\n8,0.5,0.97\n8,0.1,1.4\n8,stop\n4,0.7,0.99\n4,0.3,2.5\n")
    curves, column = read_log(log)
    assert column == "TestError"
    assert [(c.label, c.fractions) for c in curves] == [("Layer8", pytest.approx((0.1, 0.5, 0.9))), ("Layer4", pytest.approx((0.3, 0.7)))]
    assert curves[0].errors == (0.96, 0.97, 1.4)
    result = CliRunner().invoke(main, ["plot", str(log), "--out", str(tmp_path / "p.png"), "--metric", "accuracy"])
    assert result.exit_code == 0, result.output
    assert_real_png(tmp_path / "p.png")


def test_plot_refuses_files_that_are_not_logs(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="is not a pruning log"):
        read_log(bad)
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "none.csv")])
    assert result.exit_code == 2 and "log file not found" in result.output
    result = CliRunner().invoke(main, ["plot", str(bad)])
    assert result.exit_code == 2 and "is not a pruning log" in result.output


def test_a_sensitivity_sweep_needs_fractions_in_range(trained_lenet5, small_data):
    with pytest.raises(InputError, match=r"must be in \[0, 1\]"):
        sensitivity(kp.load_model(trained_lenet5), small_data, layers=[8], fraction=1.5)


def test_sensitivity_layers_without_p_sweep_each_to_its_fraction_in_the_conf(small_idx_dir, tmp_path):
    # The shipped model and its conf (1,4,8,10,12 -> 0.5,0.7,0.95,0.7,0.5): layer 12 to 0.5, layer 4 to 0.7.
    result = CliRunner().invoke(main, ["sensitivity", "--data-dir", str(small_idx_dir), "-l", "12,4", "--steps", "2",
                                       "--log-dir", str(tmp_path), "--job-id", "conf"])
    assert result.exit_code == 0, result.output
    assert f"fractions from {kp.resources.DEFAULT_CONF}: 12 -> 0.5, 4 -> 0.7" in result.output
    rows = list(csv.DictReader((tmp_path / "conf.csv").read_text().splitlines()))
    assert [(r["LayerNo"], float(r["Fraction"])) for r in rows] == [
        ("12", 0.0), ("12", 0.25), ("12", 0.5), ("4", 0.0), ("4", 0.35), ("4", 0.7)]


def test_sensitivity_layers_the_conf_does_not_name_ask_for_p(trained_lenet5, small_idx_dir, tmp_path):
    conf = tmp_path / "two.conf"
    conf.write_text("1,8\n0.5,0.9\n")
    result = CliRunner().invoke(main, ["sensitivity", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir),
                                       "-l", "8,10", "--config", str(conf), "--log-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"layer 10 has no fraction in {conf}: give -p FRACTION" in result.output
    beside = CliRunner().invoke(main, ["sensitivity", "-m", str(trained_lenet5), "-l", "8", "--log-dir", str(tmp_path)])
    assert beside.exit_code == 2 and "layer 8 has no fraction: no -p given" in beside.output


def test_a_sweep_takes_one_fraction_per_layer(trained_lenet5, small_data):
    result = sensitivity(kp.load_model(trained_lenet5), small_data, layers=[12, 10], steps=1, fraction=[0.2, 0.6])
    assert [(r.layer, r.fraction) for r in result.results] == [("fc3", 0.0), ("fc3", 0.2), ("fc2", 0.0), ("fc2", 0.6)]
    with pytest.raises(InputError, match="2 layers but 3 fractions"):
        sensitivity(kp.load_model(trained_lenet5), small_data, layers=[12, 10], fraction=[0.2, 0.6, 0.1])
