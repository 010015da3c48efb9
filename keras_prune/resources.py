"""Where the files shipped with keras-prune live: the MNIST copy and the saved models.

In the repository they are ``data/mnist/`` and ``saved_models/``. A wheel carries the
files the library reads as package data under ``keras_prune/_shipped/`` (see
``[tool.setuptools.package-dir]`` in pyproject.toml), so an installed keras-prune
runs its main job from any folder, offline. The package copy is used when it exists
(an installed wheel), the repository folders otherwise (a checkout, an editable
install).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DEFAULT_CONF",
    "PACKAGE_DIR",
    "PRETRAINED_MODEL",
    "PROJECT_ROOT",
    "PRUNED_MODEL",
    "SHIPPED_MNIST_DIR",
    "SHIPPED_MODELS_DIR",
]

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
"""The repository root in a checkout (site-packages in an installed wheel)."""


def _shipped(repository_folder: str, package_folder: str) -> Path:
    installed = PACKAGE_DIR / "_shipped" / package_folder
    return installed if installed.is_dir() else PROJECT_ROOT / repository_folder


SHIPPED_MNIST_DIR = _shipped("data/mnist", "mnist")
SHIPPED_MODELS_DIR = _shipped("saved_models", "models")
PRETRAINED_MODEL = SHIPPED_MODELS_DIR / "lenet5.keras"
PRUNED_MODEL = SHIPPED_MODELS_DIR / "lenet5_pruned.keras"
DEFAULT_CONF = SHIPPED_MODELS_DIR / "lenet5.conf"
