"""Schedules: the fractions of each step, their timing, and exact pruned counts."""

from __future__ import annotations

import math

import pytest

import keras_prune as kp
from keras_prune.callbacks import IterativePruning
from keras_prune.errors import InputError
from keras_prune.schedules import Cubic, Linear, OneShot


def test_linear_step_i_of_n_prunes_to_p_times_i_over_n():
    schedule = Linear(4)
    assert [schedule.fraction(0.8, i) for i in range(1, 5)] == [0.2, 0.4, 0.6000000000000001, 0.8]
    assert schedule.timing == "epoch"


def test_one_shot_goes_straight_to_the_target():
    assert OneShot().steps == 1 and OneShot().fraction(0.7, 1) == 0.7


def test_cubic_follows_zhu_and_gupta_and_starts_each_step_on_time():
    schedule = Cubic(steps=4, frequency=100, begin=50, initial=0.1)
    s_f, s_i, n = 0.8, 0.1, 4
    for i in range(1, 5):
        # The paper's s_t at t = t0 + i * dt, with t0 = begin - frequency.
        expected = s_f + (s_i - s_f) * (1 - i / n) ** 3
        assert schedule.fraction(s_f, i) == pytest.approx(expected, abs=1e-12)
        assert schedule.start(i) == 50 + (i - 1) * 100
    assert schedule.fraction(0.8, 4) == 0.8
    # Fast at first, slow near the end.
    gains = [schedule.fraction(0.8, i + 1) - schedule.fraction(0.8, i) for i in range(1, 4)]
    assert gains[0] > gains[1] > gains[2]
    assert schedule.timing == "batch"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Linear(0), "positive whole number of steps"),
        (lambda: Linear(2.5), "positive whole number of steps"),
        (lambda: Cubic(3, frequency=0), "frequency must be a positive"),
        (lambda: Cubic(3, frequency=10, begin=-1), "begin must be a training step"),
        (lambda: Linear(3).fraction(0.5, 4), "step must be in 1..3"),
        (lambda: Linear(3).fraction(1.5, 1), "must be in [0, 1]"),
    ],
)
def test_bad_schedules_are_refused(make, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make()


def test_the_linear_schedule_prunes_exact_counts_at_every_step():
    """The original's LeNet-5 conf over 10 steps: floor(N * p * i / 10) at step i, layer by layer."""
    model = kp.prunable(kp.models.lenet5())
    conf = {1: 0.5, 4: 0.7, 8: 0.95, 10: 0.7, 12: 0.5}
    counts = {}

    def on_prune(step, index, name, retained):
        layer = model.get_layer(name)
        counts[(step, index)] = layer.pruned_count()
        # Layers later in the order are still at the previous step.
        for later, fraction in conf.items():
            if later > index:
                other = model.layers[later - 1]
                assert other.pruned_count() == math.floor(other.weight_count() * fraction * (step - 1) / 10 + 1e-9)

    pruning = IterativePruning(conf, Linear(10), epochs_per_step=0, on_prune=on_prune)
    results = pruning.prune_without_training(model)
    sizes = {1: 150, 4: 14400, 8: 288000, 10: 10080, 12: 840}
    for step in range(1, 11):
        for index, fraction in conf.items():
            assert counts[(step, index)] == math.floor(sizes[index] * fraction * step / 10 + 1e-9)
    assert counts[(3, 8)] == 82080 and counts[(10, 8)] == 273600
    assert [(r.step, r.index) for r in results[:6]] == [(1, 1), (1, 4), (1, 8), (1, 10), (1, 12), (2, 1)]
    assert kp.sparsity_report(model).zeros == 291231  # the original's 0.929 compression


@pytest.mark.parametrize("frequency, epochs", [(5, 2), (20, 8), (1000, 400)])
def test_planned_epochs_of_a_cubic_schedule_follow_its_frequency(frequency, epochs):
    pruning = IterativePruning({"fc1": 0.9}, Cubic(4, frequency), steps_per_epoch=10)
    assert pruning.planned_steps == Cubic(4, frequency).end() == 4 * frequency
    assert pruning.planned_epochs == epochs
    late = IterativePruning({"fc1": 0.9}, Cubic(4, frequency, begin=25), steps_per_epoch=10)
    assert late.planned_steps == 25 + 4 * frequency and late.planned_epochs == -(-(25 + 4 * frequency) // 10)


def test_planned_epochs_of_a_cubic_schedule_need_the_epoch_length():
    with pytest.raises(InputError, match=r"Cubic\(4, frequency=20.*give IterativePruning steps_per_epoch.*train planned_steps \(80\) steps"):
        IterativePruning({"fc1": 0.9}, Cubic(4, 20)).planned_epochs
    with pytest.raises(InputError, match="steps_per_epoch must be a positive whole number, got 0"):
        IterativePruning({"fc1": 0.9}, Cubic(4, 20), steps_per_epoch=0)
    linear = IterativePruning({"fc1": 0.9, "fc2": 0.5}, Linear(3), epochs_per_step=2)
    assert linear.planned_epochs == 12 and linear.planned_steps is None
