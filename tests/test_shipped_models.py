"""The shipped models keep the promises the README makes about them."""

from __future__ import annotations

import pytest

import keras_prune as kp
from keras_prune.resources import PRETRAINED_MODEL, PRUNED_MODEL
from keras_prune.training import evaluate


def test_the_pretrained_lenet5_beats_the_originals_base_error(mnist):
    model = kp.load_model(PRETRAINED_MODEL)
    assert model.count_params() == 313786
    assert kp.sparsity_report(model).zeros == 0
    assert evaluate(model, mnist.test()).error <= 0.96


def test_the_pruned_lenet5_is_at_least_as_good_as_the_originals(mnist):
    model = kp.load_model(PRUNED_MODEL)
    report = kp.sparsity_report(model)
    assert report.total_compression >= 0.929
    assert evaluate(model, mnist.test()).error <= 0.94
    # Pruned weights are exactly zero in the variables, not only masked.
    for layer in kp.wrapped_layers(model):
        for weights, mask in zip(layer.pruned_variables, layer.mask_arrays()):
            assert (weights.numpy()[mask == 0] == 0).all()
    assert report.zeros == pytest.approx(sum(l.pruned_count() for l in kp.wrapped_layers(model)))
