"""IDX parsing and the dataset splits."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from keras_prune.data import AUGMENT_SHIFT, PIXEL_SCALE, Dataset, load_dataset, load_idx_dir, read_idx
from keras_prune.errors import DataError
from tests.conftest import write_idx, write_idx_dataset


def test_the_shipped_mnist_has_the_published_counts(mnist):
    assert (len(mnist.x_train), len(mnist.x_val), len(mnist.x_test)) == (55000, 5000, 10000)
    labels = np.concatenate([mnist.y_train, mnist.y_val])
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.input_shape == (28, 28, 1)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips_arrays(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a.idx", array, compress)
    np.testing.assert_array_equal(read_idx(path), array)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "f.idx", floats, compress)), floats)


def test_truncated_idx_files_are_reported(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.ones((4, 5, 5), np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_trailing_bytes_are_reported(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.ones((4,), np.uint8))
    path.write_bytes(path.read_bytes() + b"xx")
    with pytest.raises(DataError, match="trailing bytes"):
        read_idx(path)


@pytest.mark.parametrize("payload", [b"", b"\x01\x02\x08\x01", b"PK\x03\x04hello", b"\x00\x00\x07\x01\x00\x00\x00\x01x"])
def test_files_that_are_not_idx_are_reported(tmp_path, payload):
    path = tmp_path / "bad.idx"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)


def test_corrupt_gzip_is_reported(tmp_path):
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05abcde")[:-10])
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_idx(tmp_path / "nothing.idx")


def test_idx_folder_splits_off_a_validation_twelfth(tmp_path):
    data = load_idx_dir(write_idx_dataset(tmp_path, 1200, 300, compress=False))
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1100, 100, 300)
    x, y = next(iter(data.train(batch_size=32, shuffle=False)))
    assert x.shape == (32, 28, 28, 1) and x.dtype.name == "float32"
    np.testing.assert_allclose(x.numpy(), data.x_train[:32] / PIXEL_SCALE, atol=1e-7)
    assert y.dtype.name == "int32"
    assert 0.0 <= float(x.numpy().min()) and float(x.numpy().max()) <= 1.0


def test_a_folder_missing_a_file_names_it(tmp_path):
    folder = write_idx_dataset(tmp_path, 120, 30)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels"):
        load_idx_dir(folder)


def test_image_and_label_counts_must_match(tmp_path):
    folder = write_idx_dataset(tmp_path, 120, 30)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(29, np.uint8), compress=True)
    with pytest.raises(DataError, match="30 t10k images but 29 labels"):
        load_idx_dir(folder)


def test_a_missing_data_folder_is_reported(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_dataset(data_dir=tmp_path / "nope")


def test_unavailable_tfds_datasets_are_one_line_errors():
    with pytest.raises(DataError, match="tensorflow-datasets cannot load 'no_such_dataset_xyz'"):
        load_dataset(name="no_such_dataset_xyz")


def test_a_tfds_dataset_loads_offline_with_its_splits():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=36):
        data = load_dataset(name="fashion_mnist")
    assert data.name == "fashion_mnist"
    assert len(data.x_train) + len(data.x_val) == 36 and len(data.x_val) == 3 and len(data.x_test) == 36
    assert data.x_train.shape[1:] == (28, 28, 1)
    assert data.y_train.dtype == np.int32 and set(np.unique(data.y_train)) <= set(range(10))
    images, labels = next(iter(data.validation(batch_size=3)))
    assert images.dtype == "float32" and 0.0 <= float(images.numpy().min()) <= float(images.numpy().max()) <= 1.0


def test_the_cli_runs_on_a_tfds_dataset(trained_lenet5):
    tfds = pytest.importorskip("tensorflow_datasets")
    from click.testing import CliRunner

    from keras_prune_cli.main import main

    with tfds.testing.mock_data(num_examples=24):
        result = CliRunner().invoke(main, ["test", "-m", str(trained_lenet5), "--dataset", "fashion_mnist"])
    assert result.exit_code == 0, result.output
    assert "Data: fashion_mnist (22 train, 2 validation, 24 test images)" in result.output
    assert "Test: loss" in result.output


def test_a_failed_tfds_download_is_one_line_suggesting_data_dir(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    requests = pytest.importorskip("requests")

    def offline_load(name, **kwargs):  # what tfds raises when the download host is unreachable
        try:
            raise requests.exceptions.ConnectionError(
                "HTTPSConnectionPool(host='storage.googleapis.com', port=443): Max retries exceeded\n"
                "(Caused by NameResolutionError)"
            )
        except requests.exceptions.ConnectionError as exc:
            raise RuntimeError("Failed to download train-images-idx3-ubyte.gz") from exc

    monkeypatch.setattr(tfds, "load", offline_load)
    with pytest.raises(DataError) as caught:
        load_dataset(name="fashion_mnist")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("dataset 'fashion_mnist' could not be downloaded")
    assert "--data-dir" in message


def _random_dataset(count: int = 40) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(count, 8, 8, 1), dtype=np.uint8)  # no zero pixel: shifts show
    y = np.arange(count, dtype=np.int32)  # the label is the image's index
    return Dataset("random", x, y, x[:10], y[:10], x[:10], y[:10])


def _shifted_from(original: np.ndarray, image: np.ndarray) -> bool:
    """Whether `image` is `original` shifted by at most AUGMENT_SHIFT pixels, zero-filled."""
    s = AUGMENT_SHIFT
    padded = np.pad(original, ((s, s), (s, s), (0, 0)))
    height, width = original.shape[:2]
    return any(
        np.allclose(padded[dy:dy + height, dx:dx + width], image, rtol=0, atol=1e-6)
        for dy in range(2 * s + 1) for dx in range(2 * s + 1)
    )


def test_train_reshuffles_every_pass_and_a_seed_repeats_the_passes():
    data = _random_dataset()
    passes = lambda ds: [np.concatenate([y for _, y in ds.as_numpy_iterator()]) for _ in range(3)]
    first, again = passes(data.train(16, seed=3)), passes(data.train(16, seed=3))
    for order in first:
        assert sorted(order) == list(range(40))  # every image once per pass
    assert not np.array_equal(first[0], first[1])  # a new order on every pass
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    in_order = np.concatenate([y for _, y in data.train(16, shuffle=False).as_numpy_iterator()])
    assert list(in_order) == list(range(40))


def test_every_pipeline_tells_keras_its_length():
    # With an unknown length Keras' fit counts one optimizer step too many per epoch.
    data = _random_dataset()
    assert int(data.train(16).cardinality()) == 3  # 40 images: 16 + 16 + 8
    assert int(data.epochs(16, 0, 2, 5).cardinality()) == 3 * 3
    assert int(data.validation(4).cardinality()) == 3
    assert int(data.scoring(16, 2, 0).cardinality()) == 2


@pytest.mark.parametrize("pipeline", ["train", "epochs"])
def test_train_and_epochs_augment_by_the_same_bounded_shifts(pipeline):
    data = _random_dataset()
    originals = data.x_train.astype(np.float32) / 255
    batches = data.train(16, seed=0, augment=True) if pipeline == "train" else data.epochs(16, 0, 0, 1, augment=True)
    shifted = 0
    for images, labels in batches.as_numpy_iterator():
        for image, label in zip(images, labels):
            assert _shifted_from(originals[label], image)
            shifted += not np.allclose(originals[label], image, rtol=0, atol=1e-6)
    assert shifted > 20  # most images moved (1 in 25 shifts is no shift)


def test_validation_and_test_batches_are_the_splits_in_order_scaled():
    data = _random_dataset()
    images, labels = zip(*data.validation(4).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate(labels), data.y_val)
    np.testing.assert_allclose(np.concatenate(images), data.x_val.astype(np.float32) / 255)
    assert [len(y) for _, y in data.test(4).as_numpy_iterator()] == [4, 4, 2]
