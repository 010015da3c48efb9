"""Nothing lost: a run killed with SIGKILL resumes from its last checkpoint and ends
exactly where an uninterrupted run ends (same masks, weights and metrics, on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import keras_prune as kp

EXE = str(Path(sys.executable).with_name("keras-prune"))


def _command(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [EXE, "run", "-m", str(model), "--data-dir", str(data), "-l", "8,10,12", "-p", "0.9,0.6,0.5",
            "--iterations", "2", "--retrain", "--epochs", "1", "--seed", "3", "--out", str(out), *extra]


def _final_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("Test:", "Total Compression"))]


def test_a_killed_run_resumes_to_the_same_result(trained_lenet5, small_idx_dir, tmp_path):
    env = {**os.environ, "CI": "1"}
    whole = subprocess.run(_command(trained_lenet5, small_idx_dir, tmp_path / "whole.keras"),
                           capture_output=True, text=True, timeout=300, env=env)
    assert whole.returncode == 0, whole.stderr
    assert not (tmp_path / "whole.keras.checkpoint").exists()  # removed after success

    out, checkpoints = tmp_path / "resumed.keras", tmp_path / "ckpt"
    first = subprocess.Popen(_command(trained_lenet5, small_idx_dir, out, "--checkpoint-dir", str(checkpoints)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    state = checkpoints / "checkpoint.json"
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 3:
            first.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()
    done = json.loads(state.read_text())["epoch"]
    assert 3 <= done < 6

    again = subprocess.run(_command(trained_lenet5, small_idx_dir, out, "--checkpoint-dir", str(checkpoints)),
                           capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 2 and "add --resume" in again.stderr  # never silently restarts
    resumed = subprocess.run(_command(trained_lenet5, small_idx_dir, out, "--checkpoint-dir", str(checkpoints), "--resume"),
                             capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming from {checkpoints}" in resumed.stdout
    assert _final_lines(resumed.stdout) == _final_lines(whole.stdout)
    a, b = kp.load_model(tmp_path / "whole.keras"), kp.load_model(out)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)
    assert not checkpoints.exists()


def test_resuming_with_other_options_is_refused(trained_lenet5, small_idx_dir, tmp_path):
    from click.testing import CliRunner

    from keras_prune.checkpoint import CHECKPOINT_FILE
    from keras_prune_cli.main import main

    checkpoints = tmp_path / "ckpt"
    checkpoints.mkdir()
    (checkpoints / "epoch-0001.keras").write_bytes(trained_lenet5.read_bytes())
    record = {"epoch": 1, "model": "epoch-0001.keras", "pruning": {}, "run": {"layers": [8], "fractions": [0.1]}}
    (checkpoints / CHECKPOINT_FILE).write_text(json.dumps(record))
    args = _command(trained_lenet5, small_idx_dir, tmp_path / "x.keras", "--checkpoint-dir", str(checkpoints), "--resume")
    result = CliRunner().invoke(main, args[1:])
    assert result.exit_code == 2, result.output
    assert "is of a run with other options" in result.output and "fractions" in result.output


def test_resume_without_a_checkpoint_is_a_clear_error(trained_lenet5, small_idx_dir, tmp_path):
    from click.testing import CliRunner

    from keras_prune_cli.main import main

    args = _command(trained_lenet5, small_idx_dir, tmp_path / "x.keras", "--checkpoint-dir", str(tmp_path / "none"), "--resume")
    result = CliRunner().invoke(main, args[1:])
    assert result.exit_code == 2
    assert "no checkpoint to resume from" in result.output


@pytest.mark.parametrize("extra", [["--reload"], ["--schedule", "cubic"]])
def test_checkpoints_need_a_linear_run_without_reload(trained_lenet5, small_idx_dir, tmp_path, extra):
    from click.testing import CliRunner

    from keras_prune_cli.main import main

    args = _command(trained_lenet5, small_idx_dir, tmp_path / "x.keras", "--resume", *extra)
    result = CliRunner().invoke(main, args[1:])
    assert result.exit_code == 2 and "checkpoints are written when retraining" in result.output
