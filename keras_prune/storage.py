"""Loading and saving models and files, safely.

Every write goes to a temporary file (or folder) beside its destination, is flushed
to the disk (fsync), and is renamed into place only when complete, so a crash or a
full disk never leaves a half-written file.
Models are loaded with Keras safe mode on: no arbitrary code (Lambda layers) runs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import keras
import numpy as np

from keras_prune.errors import InputError, ModelError, NumericalError, WriteError

__all__ = [
    "atomic_folder",
    "atomic_path",
    "atomic_write_text",
    "load_model",
    "make_folder",
    "read_text",
    "save_model",
]


def _temporary_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{suffix}")


def _fsync(path: Path) -> None:
    """Flushes a file's or folder's contents (a folder: its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root))


def _writable_folder(path: Path) -> Path:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: folder {folder} does not exist")
    return folder


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it onto `path` on success.

    The temporary file is created with the permissions any new file gets (0666 less
    the process umask, which is left alone), and flushed to the disk (fsync) before
    the rename, the folder after it, so a crash leaves either the old or the new file.
    On any exception the temporary file is removed and `path` is left as it was.

    Raises:
        InputError: the destination folder does not exist or is not writable.
        WriteError: writing failed part-way (a full disk, an I/O error).
    """
    path = Path(path)
    folder = _writable_folder(path)
    while True:
        tmp_path = _temporary_name(path, suffix)
        try:
            os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(folder)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yields an empty temporary folder beside `path`; renames it onto `path` on success.

    Like `atomic_path` for a folder: everything in it is flushed to the disk before
    the rename; a folder already at `path` is replaced (moved aside, then removed);
    on any exception the temporary folder is removed and `path` is left as it was.

    Raises:
        InputError: the parent folder does not exist or is not writable.
        WriteError: writing failed part-way.

    Example:

    ```python
    with atomic_folder("serving/lenet5/1") as tmp:
        tf.saved_model.save(module, str(tmp))
    ```
    """
    path = Path(path)
    parent = _writable_folder(path)
    tmp = _temporary_name(path, "")
    old = _temporary_name(path, ".old")
    try:
        os.mkdir(tmp, 0o777)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync(parent)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


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


def _check_finite(model: keras.Model) -> None:
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
    _check_finite(model)
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def load_model(path: str | Path, safe_mode: bool = True, compile: bool = False) -> keras.Model:
    """Loads a .keras model (wrapped or plain) with a one-line error on failure.

    The one place keras-prune loads a model file: the CLI's ``-m``, the API and a
    run's checkpoints (`keras_prune.checkpoint`) all come here.

    Args:
        path: the .keras file.
        safe_mode: refuse files that would run arbitrary code (Lambda layers).
        compile: also restore the compiled loss, metrics and optimizer state the file
            holds (to continue training, as a resumed run does).

    Returns:
        The model.

    Raises:
        InputError: the file is missing.
        ModelError: it is not a Keras model file, or cannot be loaded.

    Example:

    ```python
    model = load_model("saved_models/lenet5.keras")
    ```
    """
    import keras_prune.wrapper  # noqa: F401  (registers PruneWrapper for deserialisation)

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a Keras model file (.keras, a zip archive)")
    try:
        model = keras.models.load_model(path, safe_mode=safe_mode, compile=compile)
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
