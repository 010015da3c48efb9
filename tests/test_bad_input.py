"""Bad input, tried systematically: each case is one line, a fixed exit code, no traceback,
and no file left behind. docs/errors.md lists the same cases."""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_prune as kp
from keras_prune.data import read_idx
from keras_prune.errors import DataError, InputError, KerasPruneError, WriteError
from keras_prune.plan import read_conf
from keras_prune.storage import atomic_write_text, save_model
from keras_prune_cli.main import main
from tests.conftest import write_idx, write_idx_dataset


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("keras-prune: error:")]
    assert len(errors) == 1 and message in errors[0], result.output


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory) -> Path:
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10)(keras.layers.Lambda(lambda x: x * 2)(keras.layers.Flatten()(inputs)))
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def test_a_truncated_model_file_is_refused(trained_lenet5, tmp_path):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(trained_lenet5.read_bytes()[:5000])
    assert_one_line_error(invoke("test", "-m", truncated), 2, "truncated.keras")


def test_a_zip_that_is_not_a_keras_model_is_refused(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "not a model")
    assert_one_line_error(invoke("layers", "-m", path), 2, "cannot load model")


def test_a_model_with_code_is_refused_unless_unsafe(lambda_model):
    assert_one_line_error(invoke("layers", "-m", lambda_model), 2, "refused in safe mode")
    result = invoke("layers", "-m", lambda_model, "--unsafe")
    assert result.exit_code == 0, result.output


def test_data_that_does_not_fit_the_model_is_refused(trained_lenet5, tmp_path):
    folder = tmp_path / "small_images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 14, 14), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    result = invoke("test", "-m", trained_lenet5, "--data-dir", folder)
    assert_one_line_error(result, 2, "data images have shape (14, 14, 1) but model 'lenet5' takes (28, 28, 1)")


@pytest.mark.parametrize(
    "damage, message",
    [("delete", "no train-images-idx3-ubyte"), ("truncate", "truncated"), ("labels", "1100 train images but 1099 labels")],
)
def test_damaged_idx_folders_are_refused(trained_lenet5, tmp_path, damage, message):
    folder = write_idx_dataset(tmp_path / "idx", 1100, 50, compress=False)
    images = folder / "train-images-idx3-ubyte"
    if damage == "delete":
        images.unlink()
    elif damage == "truncate":
        images.write_bytes(images.read_bytes()[:-100])
    else:
        write_idx(folder / "train-labels-idx1-ubyte", np.zeros(1099, np.uint8))
    assert_one_line_error(invoke("test", "-m", trained_lenet5, "--data-dir", folder), 2, message)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "exactly two lines"),
        ("1,4,8\n", "exactly two lines"),
        ("1,4\nhalf,0.5\n", "must be a number"),
        ("1,4\n0.5,0.7,0.9\n", "2 layers but 3 fractions"),
        ("8,8\n0.5,0.5\n", "more than once"),
    ],
    ids=["empty", "one-line", "non-numeric", "extra-column", "duplicate-layer"],
)
def test_malformed_conf_files_are_refused(trained_lenet5, small_idx_dir, tmp_path, text, message):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    out = tmp_path / "out.keras"
    result = invoke("run", "-m", trained_lenet5, "--config", conf, "--data-dir", small_idx_dir, "--out", out)
    assert_one_line_error(result, 2, message)
    assert not out.exists()


def test_a_model_without_a_conf_and_without_layers_is_told_what_to_pass(trained_lenet5, small_idx_dir):
    result = invoke("run", "-m", trained_lenet5, "--data-dir", small_idx_dir)
    assert_one_line_error(result, 2, "pass --layers and --fraction, or --config FILE")


def test_an_unwritable_folder_is_refused(trained_lenet5, small_idx_dir):
    # /proc takes no new files, even for root (CI runs as root, so chmod would not do).
    result = invoke("run", "-m", trained_lenet5, "-l", "8", "-p", "0.5", "--data-dir", small_idx_dir,
                    "--out", "/proc/x.keras")
    assert_one_line_error(result, 2, "cannot write /proc/x.keras")


def test_a_full_disk_while_saving_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    model = kp.models.lenet_300_100()
    path = tmp_path / "model.keras"
    path.write_bytes(b"previous version")

    def fill_disk(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", fill_disk)
    with pytest.raises(WriteError, match="No space left on device") as info:
        save_model(model, path)
    assert info.value.exit_code == 1
    assert path.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_a_full_disk_in_the_cli_is_exit_1(trained_lenet5, small_idx_dir, tmp_path, monkeypatch):
    def fill_disk(self, filepath, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keras.Model, "save", fill_disk)
    out = tmp_path / "x.keras"
    result = invoke("run", "-m", trained_lenet5, "-l", "12", "-p", "0.5", "--data-dir", small_idx_dir, "--out", out)
    assert_one_line_error(result, 1, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_text_files_are_written_atomically(tmp_path):
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert path.stat().st_mode & 0o777 != 0o600  # readable like any other file


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=256))
def test_fuzzed_idx_bytes_give_our_error_or_an_array(tmp_path, payload):
    path = tmp_path / "fuzz.idx"
    path.write_bytes(payload)
    try:
        array = read_idx(path)
    except DataError:
        return
    assert array.size * array.itemsize == len(payload) - 4 - 4 * array.ndim


@FUZZ
@given(st.binary(min_size=4, max_size=64).map(lambda tail: b"\x00\x00\x08" + tail))
def test_fuzzed_idx_headers_give_our_error_or_an_array(tmp_path, payload):
    path = tmp_path / "fuzz.idx"
    path.write_bytes(payload)
    try:
        read_idx(path)
    except DataError:
        pass


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("0123456789.,-e \n#abfc\t")), max_size=80))
def test_fuzzed_conf_files_give_our_error_or_a_valid_plan(tmp_path, text):
    path = tmp_path / "fuzz.conf"
    path.write_text(text)
    try:
        plan = read_conf(path)
    except InputError:
        return
    assert len(plan.layers) == len(plan.fractions) > 0
    assert all(0.0 <= f <= 1.0 for f in plan.fractions)


def test_every_user_error_is_a_keras_prune_error():
    for error in (InputError, DataError, WriteError):
        assert issubclass(error, KerasPruneError)
    assert InputError.exit_code == DataError.exit_code == 2
    assert WriteError.exit_code == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--iterations", "0"], "Invalid value for '--iterations'"),
        (["run", "--epochs", "-1"], "Invalid value for '--epochs'"),
        (["run", "--batch-size", "x"], "'x' is not a valid integer"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line_too(args, message):
    assert_one_line_error(invoke(*args), 2, message)
