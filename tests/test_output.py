"""What people read: the sparsity report as a table, progress that stays plain in logs."""

from __future__ import annotations

import keras
import keras_prune as kp
from keras_prune.criteria.objective import progress_bar


def _pruned_mlp():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(10, name="a_rather_long_layer_name"), keras.layers.Dense(4, name="out")]
    )
    wrapped = kp.prunable(model)
    kp.prune(wrapped, {"a_rather_long_layer_name": 0.5})
    return wrapped


def test_a_sparsity_report_prints_as_a_table():
    report = kp.sparsity_report(_pruned_mlp())
    lines = str(report).splitlines()
    assert lines[0].split() == ["idx", "layer", "type", "weights", "zeros", "retained"]
    assert lines[1].split() == ["1", "a_rather_long_layer_name", "Dense", "200", "100", "50.00%"]
    assert lines[2].split() == ["2", "out", "Dense", "40", "0", "100.00%"]
    assert lines[3] == "Total Compression: 0.41666666666667 (100 of 240 weights pruned, 1.71x fewer)"
    assert lines[0].index("weights") + len("weights") == lines[1].index("200") + len("200")  # aligned
    assert "SparsityReport(" not in str(report)


def test_progress_in_a_log_is_one_plain_line(capsys):
    bar = progress_bar(4, verbose=True, unit="step")  # capsys: stdout is not a terminal
    for _ in range(4):
        bar.add(1, values=[("objective", 0.5)])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\b" not in out
    assert out.count("\n") == 1 and out.startswith("4/4")
    assert progress_bar(4, verbose=False, unit="step") is None
