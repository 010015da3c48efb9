"""Loading and saving models and files, safely.

Every write goes to a temporary file in the destination folder and is renamed into
place only when complete, so a crash or a full disk never leaves a half-written file.
Models are loaded with Keras safe mode on: no arbitrary code (Lambda layers) runs.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import keras
import numpy as np

from keras_prune.errors import InputError, ModelError, NumericalError, WriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` on success.

    On any exception the temporary file is removed and `path` is left as it was.

    Raises:
        InputError: the destination folder does not exist or is not writable.
        WriteError: writing failed part-way (a full disk, an I/O error).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp_path, path)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def make_folder(folder: str | Path, what: str = "folder") -> Path:
    """Creates `folder` (and its parents) if missing; a one-line error if it cannot be.

    Raises:
        InputError: a file is in the way, or the folder cannot be created.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"cannot write into {folder}: it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {what} {folder}: {exc.strerror or exc}") from None
    return folder


def read_text(path: str | Path, what: str) -> str:
    """The text of a file the user named, with a one-line error naming `what` it is.

    Raises:
        InputError: the file is missing, unreadable, or not UTF-8 text.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_finite(model: keras.Model) -> None:
    """Raises NumericalError if any floating-point weight of `model` is NaN or Inf."""
    for variable in model.weights:
        if "float" in str(variable.dtype) and not np.isfinite(keras.ops.convert_to_numpy(variable)).all():
            raise NumericalError(f"model '{model.name}' has NaN or Inf in {variable.path}; it is not saved")


def save_model(model: keras.Model, path: str | Path) -> Path:
    """Saves `model` as a .keras file, atomically. A model holding NaN or Inf is refused.

    Raises:
        InputError: `path` does not end in .keras, or its folder cannot be written.
        NumericalError: a weight is NaN or Inf.
        WriteError: writing failed part-way; `path` is left as it was.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"model files must end in .keras, got {path}")
    check_finite(model)
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def load_model(path: str | Path, safe_mode: bool = True) -> keras.Model:
    """Loads a .keras model (wrapped or plain) with a one-line error on failure.

    Args:
        path: the .keras file.
        safe_mode: refuse files that would run arbitrary code (Lambda layers).

    Raises:
        InputError: the file is missing.
        ModelError: it is not a Keras model file, or cannot be loaded.
    """
    import keras_prune.wrapper  # noqa: F401  (registers PruneWrapper for deserialisation)

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a Keras model file (.keras, a zip archive)")
    try:
        model = keras.models.load_model(path, safe_mode=safe_mode, compile=False)
    except Exception as exc:  # Keras raises many types; all mean "cannot load this file".
        message = " ".join(str(exc).split())
        if "safe_mode" in message or "Lambda" in message:
            raise ModelError(
                f"{path} contains code (a Lambda layer) and is refused in safe mode"
            ) from None
        raise ModelError(f"cannot load model {path}: {message[:300]}") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path} holds a {type(model).__name__}, not a model")
    return model
