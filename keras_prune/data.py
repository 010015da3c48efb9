"""Datasets as tf.data pipelines: IDX folders (MNIST's layout) and tensorflow-datasets.

Three splits, kept apart on purpose: `train` for training and for the criteria's
scoring batches, `validation` (the last twelfth of the training file, 5,000 images for
MNIST) for every accuracy-guided decision, and `test`, which is only ever reported.
The original tool scored its criteria on the test split; keras-prune never does.

Images are served as float32 in [0, 1] (pixel / 255) with a channel axis; labels as
int32 class indices.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_prune.errors import DataError
from keras_prune.resources import SHIPPED_MNIST_DIR

__all__ = [
    "AUGMENT_SHIFT",
    "Dataset",
    "load_dataset",
    "load_idx_dir",
    "load_tfds",
    "PIXEL_SCALE",
    "read_idx",
    "VALIDATION_FRACTION",
]

PIXEL_SCALE = 255.0
VALIDATION_FRACTION = 1 / 12
AUGMENT_SHIFT = 2

# IDX type codes (third byte of the magic number) and their big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one IDX file (gzip-compressed or not) into a numpy array.

    Args:
        path: the file.

    Returns:
        The array, with the shape and dtype the file declares.

    Raises:
        DataError: the file is missing, not IDX, truncated, or has trailing bytes.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file (expected a magic number 0x0000TTDD with "
            "a known type code TT)"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {what}: shape {shape} needs {expected} bytes, "
            f"found {len(raw)}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(data_dir: Path, prefix: str, kind: str) -> Path:
    """The IDX file for `prefix` ('train' or 't10k') and `kind` ('images' or 'labels')."""
    rank = 3 if kind == "images" else 1
    for name in (f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"):
        for candidate in (data_dir / f"{name}.gz", data_dir / name):
            if candidate.is_file():
                return candidate
    raise DataError(
        f"{data_dir} has no {prefix}-{kind}-idx{rank}-ubyte[.gz] file (an IDX data "
        "folder needs train-images, train-labels, t10k-images and t10k-labels)"
    )


def _read_pair(data_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find_idx(data_dir, prefix, "images")
    labels_path = _find_idx(data_dir, prefix, "labels")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim not in (3, 4):
        raise DataError(f"{images_path}: images must have 3 or 4 dimensions, got shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: labels must have 1 dimension, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{data_dir}: {len(images)} {prefix} images but {len(labels)} labels; "
            "the counts must match"
        )
    if images.ndim == 3:
        images = images[..., np.newaxis]
    return images, labels.astype(np.int32)


@dataclass
class Dataset:
    """A dataset held in memory as raw arrays, served as tf.data pipelines.

    Attributes:
        name: where the data came from (a folder or a tensorflow-datasets name).
        x_train, y_train: training images and labels (validation slice removed).
        x_val, y_val: the validation slice.
        x_test, y_test: the test split.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, channel last."""
        return tuple(self.x_train.shape[1:])

    def train(
        self, batch_size: int = 128, shuffle: bool = True, seed: int | None = None, augment: bool = False
    ):
        """Training batches, one pass over the training split each time the dataset is
        iterated, reshuffled (when `shuffle` is set) and, with `augment`, shifted anew
        on every pass.

        Each pass is the pass `epochs` gives for an epoch number drawn at random (from
        `seed`: a seeded dataset repeats its sequence of passes).

        Args:
            batch_size: images per batch.
            shuffle: a new order on every pass; False keeps the file's order.
            seed: seeds the passes; None draws them anew every run.
            augment: shift each image by up to `AUGMENT_SHIFT` pixels in each direction
                (zero-padded), a new shift every pass.

        Returns:
            A tf.data dataset of (images, labels) batches.

        Example:

        ```python
        model.fit(dataset.train(128, seed=0), epochs=3)
        ```
        """
        import tensorflow as tf

        passes = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        return _batches(self.x_train, self.y_train, batch_size, seed or 0, passes.map(lambda n: n % 2**31), shuffle, augment)

    def epochs(self, batch_size: int, seed: int, first: int, last: int, augment: bool = False):
        """Training batches for epochs `first` .. `last - 1`, one after another.

        Unlike `train`, each epoch's order (and its random shifts) is a function of
        (`seed`, epoch number) alone, so a run resumed at epoch k sees exactly the
        batches an uninterrupted run sees from epoch k on. Fit with
        ``steps_per_epoch=steps_per_epoch(batch_size)``.
        """
        import tensorflow as tf

        return _batches(self.x_train, self.y_train, batch_size, seed, tf.data.Dataset.range(first, last), True, augment)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches in one pass over the training split."""
        return -(-len(self.x_train) // batch_size)

    def scoring(self, batch_size: int, batches: int, seed: int):
        """A fixed sample of `batches` training batches for a criterion to score on:
        the same batches every time it is iterated."""
        return self.epochs(batch_size, seed, 0, 1).take(batches)

    def validation(self, batch_size: int = 256):
        """Validation batches, in order."""
        return _in_order(self.x_val, self.y_val, batch_size)

    def test(self, batch_size: int = 256):
        """Test batches, in order. Only for reporting."""
        return _in_order(self.x_test, self.y_test, batch_size)


def _scale(x: np.ndarray) -> np.float32:
    """What pixel values are multiplied by: 1/255 for uint8 images, 1 for floats."""
    return np.float32(1.0 / PIXEL_SCALE) if x.dtype == np.uint8 else np.float32(1.0)


def _shift(images, offsets):
    """Shifts each image of a batch (B, H, W, C) by (offsets[0] - S, offsets[1] - S) pixels,
    S = `AUGMENT_SHIFT`, filling with zeros. `offsets`: int32 (2, B) in [0, 2S]."""
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [AUGMENT_SHIFT, AUGMENT_SHIFT], [AUGMENT_SHIFT, AUGMENT_SHIFT], [0, 0]])
    rows = offsets[0][:, None] + tf.range(height)[None, :]
    columns = offsets[1][:, None] + tf.range(width)[None, :]
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), columns, axis=2, batch_dims=1)


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, passes, shuffle: bool, augment: bool):
    """The one input pipeline: for each number in the tf.data dataset `passes` (of known
    length), one pass over (`x`, `y`) in batches, images scaled to floats. The order (with `shuffle`) and
    the shifts (with `augment`) of a pass are functions of (`seed`, its number) alone."""
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch size must be a positive integer, got {batch_size}")
    images, labels, scale = tf.constant(x), tf.constant(y), _scale(x)

    def one_pass(number):
        order = tf.range(len(x))
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([seed, number]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size).enumerate().map(
            lambda batch, indices: load(number, batch, indices), num_parallel_calls=tf.data.AUTOTUNE
        )

    def load(number, batch, indices):
        batch_images = tf.cast(tf.gather(images, indices), tf.float32) * scale
        if augment:
            offsets = tf.random.stateless_uniform(
                (2, tf.shape(indices)[0]), seed=tf.stack([seed * 65_537 + number, batch]),
                maxval=2 * AUGMENT_SHIFT + 1, dtype=tf.int32,
            )
            batch_images = _shift(batch_images, offsets)
        return batch_images, tf.gather(labels, indices)

    # Known cardinality: Keras' fit counts steps right only when the dataset says its length.
    length = int(passes.cardinality()) * -(-len(x) // batch_size)
    return passes.flat_map(one_pass).apply(tf.data.experimental.assert_cardinality(length)).prefetch(tf.data.AUTOTUNE)


def _in_order(x: np.ndarray, y: np.ndarray, batch_size: int):
    """One pass over (`x`, `y`) in batches, in order, unaugmented."""
    import tensorflow as tf

    return _batches(x, y, batch_size, 0, tf.data.Dataset.range(1), False, False)


def _split_validation(name: str, x: np.ndarray, y: np.ndarray, x_test, y_test) -> Dataset:
    n_val = max(1, int(round(len(x) * VALIDATION_FRACTION)))
    if len(x) <= n_val:
        raise DataError(f"{name}: {len(x)} training images are too few to hold out a validation slice")
    return Dataset(name, x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:], x_test, y_test)


def load_idx_dir(data_dir: str | Path) -> Dataset:
    """Loads a folder of IDX files in MNIST's layout (Fashion-MNIST works unchanged).

    Args:
        data_dir: folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte,
            t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each optionally ``.gz``.

    Raises:
        DataError: a missing folder or file, a malformed file, or mismatched counts.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    x_train, y_train = _read_pair(data_dir, "train")
    x_test, y_test = _read_pair(data_dir, "t10k")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{data_dir}: training images are {x_train.shape[1:]} but test images are "
            f"{x_test.shape[1:]}"
        )
    return _split_validation(str(data_dir), x_train, y_train, x_test, y_test)


def load_tfds(name: str) -> Dataset:
    """Loads an image-classification dataset through tensorflow-datasets.

    It must already be prepared in the tensorflow-datasets data folder
    (``~/tensorflow_datasets`` unless ``TFDS_DATA_DIR`` says otherwise), or the
    machine must reach its download host.

    Args:
        name: a tensorflow-datasets name with ``train`` and ``test`` splits of
            ``(image, label)`` pairs, e.g. "fashion_mnist".

    Returns:
        The dataset, the last twelfth of ``train`` held out for validation.

    Raises:
        DataError: tensorflow-datasets cannot provide it; a failed download says so
            and suggests ``--data-dir``.
    """
    try:
        import tensorflow_datasets as tfds

        train, test = tfds.load(name, split=["train", "test"], as_supervised=True)
        (x_train, y_train), (x_test, y_test) = _tfds_arrays(train), _tfds_arrays(test)
    except Exception as exc:  # tfds raises many types; all mean "cannot load".
        text = " ".join(str(exc).split()) or type(exc).__name__
        first = text[:200]
        if _is_download_failure(exc):
            raise DataError(
                f"dataset '{name}' could not be downloaded ({first}); prepare it with "
                "tensorflow-datasets on a machine that reaches the internet, or pass "
                "--data-dir with IDX files in MNIST's layout"
            ) from None
        raise DataError(f"tensorflow-datasets cannot load '{name}': {first}") from None
    return _split_validation(name, x_train, y_train, x_test, y_test)


def _tfds_arrays(split) -> tuple[np.ndarray, np.ndarray]:
    """All `(image, label)` pairs of a tf.data split as two arrays (labels int32)."""
    images, labels = [], []
    for x, y in split.batch(4096).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def _is_download_failure(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, is a network failure."""
    while exc is not None:
        module = type(exc).__module__.split(".")[0]
        if module in ("requests", "urllib3", "urllib", "http", "socket") or type(exc).__name__ == "DownloadError":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def load_dataset(data_dir: str | Path | None = None, name: str | None = None) -> Dataset:
    """The dataset a command works on.

    Args:
        data_dir: a folder of IDX files; wins over `name`.
        name: a tensorflow-datasets name. With neither, the shipped MNIST copy.
    """
    if data_dir is not None:
        return load_idx_dir(data_dir)
    if name is not None and name != "mnist":
        return load_tfds(name)
    data = load_idx_dir(SHIPPED_MNIST_DIR)
    data.name = "mnist (shipped copy in data/mnist)"
    return data
