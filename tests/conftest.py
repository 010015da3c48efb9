"""Shared fixtures: small slices of the shipped MNIST and small trained models.

Everything here is sized for a 2-core CPU: tests train on a few thousand images at
most. Full-size training belongs in benchmarks/.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("KERAS_BACKEND") == "jax":
    # The float64 ground-truth tests need 64-bit JAX, which must be on before jax runs.
    os.environ.setdefault("JAX_ENABLE_X64", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

from keras_prune.data import Dataset, load_dataset  # noqa: E402
from keras_prune.models import lenet5  # noqa: E402
from keras_prune.training import train  # noqa: E402

_IDX_TYPE = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D}


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Writes `array` as an IDX file (big-endian), gzip-compressed if asked."""
    array = np.asarray(array)
    header = bytes([0, 0, _IDX_TYPE[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_idx_dataset(folder: Path, n_train: int, n_test: int, compress: bool = True) -> Path:
    """An IDX folder in MNIST's layout holding the first images of the shipped MNIST."""
    full = _mnist()
    x_train = np.concatenate([full.x_train, full.x_val])[:n_train, ..., 0]
    y_train = np.concatenate([full.y_train, full.y_val])[:n_train]
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", x_train, compress)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", y_train.astype(np.uint8), compress)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", full.x_test[:n_test, ..., 0], compress)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", full.y_test[:n_test].astype(np.uint8), compress)
    return folder


_MNIST: list[Dataset] = []


def model_outputs(model, x) -> list[np.ndarray]:
    """Every output of `model` on `x` in inference mode, as numpy arrays."""
    return [keras.ops.convert_to_numpy(y) for y in keras.tree.flatten(model(x, training=False))]


def assert_same_outputs(actual, expected, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Equal outputs, which must be finite (NaN == NaN passes assert_allclose) and not all zero;
    ``atol`` is scaled down for outputs smaller than 1, so tiny outputs are still compared."""
    for a, e in zip(actual, expected, strict=True):
        assert np.isfinite(e).all() and np.isfinite(a).all(), "non-finite outputs"
        scale = float(np.abs(e).max())
        assert scale > 0, "outputs all zero"
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * min(1.0, scale))


def _mnist() -> Dataset:
    if not _MNIST:
        _MNIST.append(load_dataset())
    return _MNIST[0]


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    """The full shipped MNIST (55,000 / 5,000 / 10,000)."""
    return _mnist()


@pytest.fixture(scope="session")
def small_data() -> Dataset:
    """2,400 training, 600 validation and 1,000 test images of MNIST."""
    full = _mnist()
    return Dataset(
        "mnist-small",
        full.x_train[:2400],
        full.y_train[:2400],
        full.x_val[:600],
        full.y_val[:600],
        full.x_test[:1000],
        full.y_test[:1000],
    )


@pytest.fixture(scope="session")
def small_idx_dir(tmp_path_factory) -> Path:
    """An IDX folder with 1,200 training and 300 test images (gzip-compressed)."""
    return write_idx_dataset(tmp_path_factory.mktemp("idx"), 1200, 300)


@pytest.fixture(scope="session")
def trained_lenet5(small_data, tmp_path_factory) -> Path:
    """The original tool's LeNet-5 trained 2 epochs on `small_data`, saved as .keras.

    Returned as a path: load a fresh copy in each test with `keras_prune.load_model`.
    """
    keras.utils.set_random_seed(0)
    model = lenet5()
    train(model, small_data, epochs=2, lr=0.05, batch_size=64, seed=0, verbose=0)
    path = tmp_path_factory.mktemp("models") / "lenet5.keras"
    model.save(path)
    return path


def pytest_collection_modifyitems(config, items):
    """On a backend other than TensorFlow, skips the tests marked ``tensorflow_only``."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow-only feature; KERAS_BACKEND is {backend}")
    for item in items:
        if "tensorflow_only" in item.keywords:
            item.add_marker(skip)
