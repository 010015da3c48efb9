"""Plans from options and conf files."""

from __future__ import annotations

import pytest

from keras_prune.errors import InputError
from keras_prune.plan import Plan, make_plan, read_conf
from keras_prune.resources import DEFAULT_CONF


def test_the_shipped_conf_is_the_originals():
    assert read_conf(DEFAULT_CONF) == Plan((1, 4, 8, 10, 12), (0.5, 0.7, 0.95, 0.7, 0.5))


def test_one_fraction_applies_to_every_layer():
    assert make_plan("1,fc1", "0.3") == Plan((1, "fc1"), (0.3, 0.3))


@pytest.mark.parametrize(
    "layers, fractions, message",
    [
        ("1,4", "0.5,0.6,0.7", "2 layers but 3 fractions"),
        ("1,,4", "0.5", "comma-separated"),
        ("1,1", "0.5", "more than once"),
        ("1", "1.5", r"\[0, 1\]"),
        ("1", "x", "must be a number"),
        ("1", "", "comma-separated numbers"),
    ],
)
def test_bad_plans_are_refused(layers, fractions, message):
    with pytest.raises(InputError, match=message):
        make_plan(layers, fractions)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "exactly two lines"),
        ("1,4,8\n", "exactly two lines"),
        ("1,4\n0.5,0.7\n0.1\n", "exactly two lines"),
        ("1,4\n0.5,abc\n", "must be a number"),
        ("1,4\n0.5,0.7,0.9\n", "2 layers but 3 fractions"),
        ("1,1\n0.5,0.7\n", "more than once"),
    ],
)
def test_malformed_conf_files_are_refused_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.conf"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        read_conf(path)
    assert "bad.conf" in str(info.value)


def test_conf_files_allow_comments_and_blank_lines(tmp_path):
    path = tmp_path / "ok.conf"
    path.write_text("# layers\n1, fc1\n\n0.5, 0.9\n")
    assert read_conf(path) == Plan((1, "fc1"), (0.5, 0.9))


def test_a_missing_conf_is_reported(tmp_path):
    with pytest.raises(InputError, match="conf file not found"):
        read_conf(tmp_path / "none.conf")


def test_pick_keeps_the_plans_fractions_for_the_layers_asked_in_their_order():
    plan = Plan((1, 4, "fc1"), (0.5, 0.7, 0.95))
    assert plan.pick(["fc1", 1]) == Plan(("fc1", 1), (0.95, 0.5))
    same_layer = {1: "conv1", "conv1": "conv1", 4: "conv2", "fc1": "fc1", 8: "fc1"}.get
    assert plan.pick([8, "conv1"], same_layer) == Plan((8, "conv1"), (0.95, 0.5))
    with pytest.raises(InputError, match=r"^layer 10 has no fraction in lenet5.conf: give -p FRACTION"):
        plan.pick([1, 10], source="lenet5.conf")
