"""Where the files shipped with keras-prune live: the MNIST copy and the saved models."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MNIST_DIR = PROJECT_ROOT / "data" / "mnist"
SHIPPED_MODELS_DIR = PROJECT_ROOT / "saved_models"
PRETRAINED_MODEL = SHIPPED_MODELS_DIR / "lenet5.keras"
PRUNED_MODEL = SHIPPED_MODELS_DIR / "lenet5_pruned.keras"
DEFAULT_CONF = SHIPPED_MODELS_DIR / "lenet5.conf"
