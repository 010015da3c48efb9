"""A built wheel, installed into a fresh virtual environment, runs the main job from any
folder: the shipped data and models travel inside it, and so does everything
tensorflow-datasets needs at run time.

Slow (a fresh install of TensorFlow from pip's cache or the registry, 2-4 minutes):
`pytest -q` skips it; `.ci/run` runs it (`pytest -q -m slow`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

from keras_prune.resources import PROJECT_ROOT

pytestmark = pytest.mark.slow

# Run inside the fresh environment: tensorflow-datasets can build a dataset (which
# imports its undeclared runtime dependencies) and keras-prune loads one through it.
TFDS_SCRIPT = textwrap.dedent(
    """
    import tempfile
    import tensorflow_datasets as tfds
    import keras_prune
    from keras_prune.data import load_tfds

    assert "site-packages" in keras_prune.__file__, keras_prune.__file__
    tfds.builder("mnist", data_dir=tempfile.mkdtemp()).code_path  # needs importlib_resources
    with tfds.testing.mock_data(num_examples=30):
        data = load_tfds("mnist")
    print("tfds", len(data.x_train) + len(data.x_val), data.x_train.shape[1:], len(data.x_test))
    """
)


def _run(command: list[str], cwd: Path, timeout: int = 900) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


# What a fresh clone does not have: environments, build outputs, caches.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "logs"
)


def test_wheel_installs_and_runs_the_main_job_outside_the_checkout(tmp_path):
    source, wheels = tmp_path / "source", tmp_path / "wheels"
    shutil.copytree(PROJECT_ROOT, source, ignore=NOT_IN_A_CLONE)  # no stale build/ in the wheel
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(wheels)], cwd=tmp_path)
    (wheel,) = wheels.glob("keras_prune-*.whl")
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    _run([str(environment / "bin" / "pip"), "install", "-q", str(wheel)], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    out = _run([str(environment / "bin" / "keras-prune"), "run"], cwd=work)
    assert "Data: mnist (shipped copy" in out and "55000 train" in out
    assert "Total Compression: 0.929" in out
    assert (work / "lenet5_pruned.keras").is_file()
    model_line = next(line for line in out.splitlines() if line.startswith("Model: "))
    assert str(environment) in model_line and str(PROJECT_ROOT) not in model_line

    out = _run([str(environment / "bin" / "python"), "-c", TFDS_SCRIPT], cwd=work)
    assert "tfds 30 (28, 28, 1) 30" in out
