"""The data users have, as criteria score on it: every accepted form, bounded, and clear errors."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_prune as kp
from keras_prune.criteria.objective import SCORE_BATCHES, fixed_batches
from keras_prune.errors import InputError
from keras_prune.experiment import RunSettings
from keras_prune.schedules import Linear
from keras_prune_cli.commands.run import run as run_command

N = 300  # images: batches of 128, 128 and 44


@pytest.fixture(scope="module")
def arrays(small_data):
    x = small_data.x_train[:N].astype("float32") / 255
    y = small_data.y_train[:N].astype("int64")
    return x, y


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size=128):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, index):
        part = slice(index * self.size, (index + 1) * self.size)
        return self.x[part], self.y[part]


def forms(x, y):
    """Every accepted form of the same 300 images, each read as batches of 128 in order."""
    pairs = tf.data.Dataset.from_tensor_slices((x, y))
    return {
        "batched tf.data": pairs.batch(128),
        "unbatched tf.data": pairs,
        "infinite tf.data": pairs.batch(128).repeat(),
        "infinite unbatched tf.data": pairs.repeat(),
        "tf.data with sample weights": tf.data.Dataset.from_tensor_slices((x, y, np.ones(N, "float32"))).batch(128),
        "(x, y) numpy": (x, y),
        "PyDataset": Batches(x, y),
        "generator of batches": ((x[i : i + 128], y[i : i + 128]) for i in range(0, N, 128)),
        "generator of samples": ((x[i], y[i]) for i in range(N)),
        "list of batches": [(x[i : i + 128], y[i : i + 128]) for i in range(0, N, 128)],
    }


FORMS = list(forms(np.zeros((N, 28, 28, 1), "float32"), np.zeros(N, "int64")))


@pytest.mark.parametrize("form", FORMS)
def test_every_form_gives_the_same_scoring_batches(form, arrays):
    x, y = arrays
    model = kp.models.lenet5()
    batches = fixed_batches(forms(x, y)[form], "taylor1", model, batches=3)
    wraps = form == "infinite unbatched tf.data"  # its third batch runs on into the second pass
    sizes = [128, 128, 128] if wraps else [128, 128, 44]
    assert [int(b[0].shape[0]) for b in batches] == sizes
    for (bx, by), start, size in zip(batches, [0, 128, 256], sizes):
        np.testing.assert_array_equal(bx.numpy(), np.concatenate([x, x])[start : start + size])
        np.testing.assert_array_equal(by.numpy(), np.concatenate([y, y])[start : start + size])


@pytest.mark.parametrize("form", ["unbatched tf.data", "(x, y) numpy", "PyDataset", "generator of samples", "infinite tf.data"])
def test_prune_scores_every_form_like_batched_tf_data(form, arrays, trained_lenet5):
    x, y = arrays
    masks = {}
    for name in ("batched tf.data", form):
        model = kp.prunable(kp.load_model(trained_lenet5), ["fc2"])
        kp.prune(model, {"fc2": 0.6}, "taylor1", data=forms(x, y)[name], score_batches=2)
        masks[name] = model.get_layer("fc2").mask_arrays()[0]
    np.testing.assert_array_equal(masks["batched tf.data"], masks[form])


def test_an_infinite_source_is_read_only_as_far_as_the_bound(arrays):
    x, y = arrays
    pulled = itertools.count()

    def endless():
        while True:
            next(pulled)
            yield x[:16], y[:16]

    batches = fixed_batches(endless(), "l1", kp.models.lenet5())
    assert len(batches) == SCORE_BATCHES and next(pulled) == SCORE_BATCHES


def test_the_default_bound_is_the_same_in_the_api_and_the_cli():
    import inspect

    cli_default = next(p.default for p in run_command.params if p.name == "score_batches")
    api_default = inspect.signature(kp.prune).parameters["score_batches"].default
    callback_default = inspect.signature(kp.IterativePruning).parameters["score_batches"].default
    assert cli_default == api_default == callback_default == RunSettings().score_batches == SCORE_BATCHES == 20


def test_a_keras_application_scores_on_an_infinite_unbatched_dataset():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=5, alpha=0.35)
    model.compile(loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((40, 32, 32, 3), dtype=np.float32)
    y = np.arange(40) % 5
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
    wrapped = kp.prunable(model, ["predictions"])
    kp.prune(wrapped, {"predictions": 0.5}, "taylor1", data=data, score_batches=2, batch_size=8)
    assert wrapped.get_layer("predictions").sparsity() == pytest.approx(0.5)


def test_iterative_pruning_reads_a_generator_once_for_every_event(arrays, trained_lenet5):
    x, y = arrays
    pulled = itertools.count()

    def batches():
        for i in range(0, N, 64):
            next(pulled)
            yield x[i : i + 64], y[i : i + 64]

    model = kp.prunable(kp.load_model(trained_lenet5), ["fc2", "fc3"])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruning = kp.IterativePruning({"fc2": 0.5, "fc3": 0.5}, Linear(2), criterion="taylor1", data=batches(),
                                  score_batches=3, epochs_per_step=0)
    results = pruning.prune_without_training(model)
    assert len(results) == 4 and next(pulled) == 3  # four events, one read of three batches
    assert model.get_layer("fc3").sparsity() == pytest.approx(0.5)


@pytest.mark.parametrize(
    "data, message",
    [
        (5, "cannot score on int data: give a tf.data.Dataset, an (x, y) pair of arrays"),
        ("images/", "cannot score on str data"),
        ({"x": np.zeros((4, 28, 28, 1)), "y": np.zeros(4)}, "cannot score on dict data"),
        (tf.data.Dataset.from_tensor_slices(np.zeros((4, 28, 28, 1))), "needs a dataset of (x, y) elements"),
        ((np.zeros((4, 28, 28, 1)), np.zeros(3)), "x has 4 samples but y has 3"),
        ([1, 2, 3], "batch 1 of the data is a int, not an (x, y) or (x, y, sample_weight) tuple"),
        ([("a", "b")], "batch 1 of the data is not numbers with a batch axis (got string of shape ()"),
        ([(np.zeros((28, 28, 1), "float32"), 1), (np.zeros((5, 5, 1), "float32"), 2)],
         "the data's (x, y) samples cannot be stacked into a batch"),
        ([], "got no training batches to score on"),
        (None, "needs training data; none was given"),
    ],
)
def test_other_data_is_a_one_line_input_error(data, message, trained_lenet5):
    model = kp.prunable(kp.load_model(trained_lenet5), ["fc3"])
    with pytest.raises(InputError, match=None) as info:
        kp.prune(model, {"fc3": 0.5}, "taylor1", data=data)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert model.get_layer("fc3").sparsity() == 0


def test_the_bound_must_be_positive(arrays):
    with pytest.raises(InputError, match="score batches must be a positive whole number, got 0"):
        fixed_batches(arrays, "taylor1", batches=0)
