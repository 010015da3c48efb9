"""The README's set-up commands are the ones CI and users actually run."""

from __future__ import annotations

import re

from keras_prune.resources import PROJECT_ROOT


def _readme_commands() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = re.search(r"<!-- setup -->\n```(?:sh|bash)?\n(.*?)```", readme, re.S)
    assert block, "README.md has no <!-- setup --> block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_ci_runs_the_readme_test_command():
    main_job, tests = _readme_commands()
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci
    assert "keras-prune run" in main_job and "pytest" in tests


def test_the_readme_main_job_uses_shipped_files_only():
    main_job, _ = _readme_commands()
    prune_command = main_job[main_job.index("keras-prune run"):]
    assert "--data-dir" not in prune_command and " -m " not in prune_command  # shipped model and data
    assert (PROJECT_ROOT / "saved_models" / "lenet5.keras").is_file()
    assert (PROJECT_ROOT / "saved_models" / "lenet5.conf").is_file()
    assert (PROJECT_ROOT / "data" / "mnist" / "train-images-idx3-ubyte.gz").is_file()


def test_ci_tests_the_lower_bounds_pyproject_declares():
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    for package in ("tensorflow", "keras", "tensorflow-datasets"):
        lower = re.search(rf'"{package}>=([0-9.]+)[,"]', pyproject)
        assert lower, f"pyproject.toml declares no lower bound for {package}"
        assert f'"{package}=={lower.group(1)}"' in ci, f".ci/run does not test {package}=={lower.group(1)}"
    assert ".venv-min/bin/pytest" in ci and "pytest -q -m slow" in ci
