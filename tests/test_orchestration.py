"""The parts IterativePruning delegates to, and the one settings object the API, the
callback and the CLI share: each pinned on its own."""

from __future__ import annotations

import dataclasses
import inspect
import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import keras_prune as kp
from keras_prune.callbacks import IterativePruning
from keras_prune.criteria import HESSIAN_ESTIMATES, Criterion, register_criterion
from keras_prune.errors import InputError
from keras_prune.guard import AccuracyGuard, loss_diverged, weights_diverged
from keras_prune.methods import available_pruners, get_pruner
from keras_prune.results import StepResult
from keras_prune.runlog import RunLog
from keras_prune.schedules import SCHEDULES, Linear
from keras_prune.selection import NORMALIZATIONS, SCOPES
from keras_prune.settings import (
    CHECKPOINT_RULE,
    PruneOptions,
    RunSettings,
    choices,
    pruner_option_default,
)
from keras_prune.state import EventCursor, PruningState, TrainingState
from keras_prune.structured import GRANULARITIES, UNIT_NORMS
from keras_prune.training import Evaluation
from keras_prune_cli.commands.run import run as run_command
from keras_prune_cli.commands.sensitivity import sensitivity as sensitivity_command
from keras_prune_cli.main import main


def _result(**changes) -> StepResult:
    base = StepResult(2, 8, "fc1", 0.45, 0.55, Evaluation(0.031, 0.9), Evaluation(0.04, 1.1), 3.25,
                      cost=0.2, mask_digest="ab" * 20)
    return dataclasses.replace(base, **changes)


# --- the accuracy guard and divergence, alone --------------------------------------


def test_the_guard_judges_an_event_by_its_cost_against_the_baseline():
    guard = AccuracyGuard(tradeoff=0.5, baseline=Evaluation(loss=0.03, error=1.0))
    assert guard.cost(Evaluation(loss=0.05, error=1.6)) == pytest.approx(0.6)
    assert guard.rejects(guard.cost(Evaluation(loss=0.05, error=1.6)))
    assert not guard.rejects(guard.cost(Evaluation(loss=0.04, error=1.5)))  # exactly the trade-off: kept
    assert guard.cost(None) is None and not guard.rejects(None)
    off = AccuracyGuard(baseline=Evaluation(0.03, 1.0))
    assert off.cost(Evaluation(0.9, 50.0)) == pytest.approx(49.0) and not off.rejects(49.0)


def test_the_guard_refuses_a_negative_tradeoff_and_judging_without_a_baseline():
    with pytest.raises(InputError, match="accuracy trade-off must be >= 0 percentage points, got -1"):
        AccuracyGuard(tradeoff=-1)
    with pytest.raises(InputError, match="no baseline"):
        AccuracyGuard(tradeoff=1.0).cost(Evaluation(0.1, 2.0))


def test_divergence_is_a_non_finite_loss_or_weight():
    assert loss_diverged({"loss": float("nan")}) and loss_diverged({"loss": np.float32("inf")})
    assert not loss_diverged({"loss": 0.25}) and not loss_diverged({}) and not loss_diverged(None)
    assert weights_diverged([keras.Variable(np.ones(3)), keras.Variable(np.array([1.0, np.nan]))])
    assert not weights_diverged([keras.Variable(np.ones((2, 2)))])


# --- snapshot/restore, the cursor and the resume state ------------------------------


def test_training_state_restores_model_and_optimizer_variables_bit_for_bit():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    x, y = np.random.default_rng(0).random((16, 4)), np.zeros((16, 3))
    model.fit(x, y, epochs=1, verbose=0)
    state = TrainingState(model, model.optimizer)
    saved = state.save()
    model.fit(x, y, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 3  # one batch an epoch
    state.restore(saved)
    assert int(model.optimizer.iterations) == 1
    for variable, value in zip(state.variables, saved):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)


def test_the_event_cursor_walks_steps_and_groups_and_skips_stopped_layers():
    a, b, c = object(), object(), object()
    cursor = EventCursor(2, [[a], [b, c]])
    assert cursor.peek() == (1, [a]) and cursor.peek() == (1, [a])  # peeking does not move
    assert cursor.advance() == (1, [a])
    cursor.stop([b])
    assert cursor.advance() == (1, [c])
    cursor.stop([a])
    assert cursor.advance() == (2, [c])
    assert cursor.peek() is None and cursor.position == (2, 2)
    resumed = EventCursor(2, [[a], [b, c]], position=(2, 0), stopped=[a, c])
    assert resumed.peek() == (2, [b])


# --- StepResult: one serialisation for logs and checkpoints ---------------------------


def test_a_step_result_has_one_record_read_back_from_logs_and_checkpoints(tmp_path):
    results = [_result(), _result(step=3, index=None, layer="encoder/fc1", test=None, reverted=True, diverged=True),
               _result(validation=None, test=None, cost=None)]
    for result in results:
        assert StepResult.from_record(json.loads(json.dumps(result.to_record()))) == result
    log = RunLog(tmp_path, "one")
    for result in results:
        log.write(result)
    lines = [json.loads(line) for line in log.jsonl_path.read_text().splitlines()]
    assert [StepResult.from_record(line) for line in lines] == results
    assert [{k: v for k, v in line.items() if k != "time"} for line in lines] == [r.to_record() for r in results]
    state = PruningState((2, 1), 2, ("fc1",), Evaluation(0.03, 0.8), tuple(results))
    assert json.loads(json.dumps(state.to_json()))["results"] == [r.to_record() for r in results]
    assert PruningState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_the_callback_state_holds_results_in_the_same_record_form(trained_lenet5, small_data):
    model = kp.prunable(kp.load_model(trained_lenet5), [8, 12])
    pruning = IterativePruning({8: 0.5, 12: 0.4}, Linear(2), epochs_per_step=0, validation_data=small_data.validation())
    pruning.prune_without_training(model)
    state = json.loads(json.dumps(pruning.state()))
    assert state["results"] == [r.to_record() for r in pruning.results]
    assert list(PruningState.from_json(state).results) == pruning.results


# --- one settings object: the same check from the API, the callback and the CLI ----------


BAD_VALUES = [
    # (keyword of prune/IterativePruning/RunSettings, CLI flag, bad value)
    ("criterion", "--pruner", "nope"),
    ("scope", "--scope", "sideways"),
    ("normalization", "--normalization", "max"),
    ("granularity", "--granularity", "atom"),
    ("unit_norm", "--unit-norm", "l3"),
    ("pattern", "--pattern", "3:2"),
]


@pytest.mark.parametrize("keyword, flag, value", BAD_VALUES)
def test_a_bad_value_gets_the_same_one_line_error_from_api_callback_settings_and_cli(keyword, flag, value, trained_lenet5):
    model = kp.prunable(kp.models.lenet5(), ["fc1"])
    with pytest.raises(InputError) as from_api:
        kp.prune(model, {"fc1": 0.5}, **{keyword: value})
    message = str(from_api.value)
    assert "\n" not in message and value in message
    with pytest.raises(InputError) as from_callback:
        IterativePruning({"fc1": 0.5}, **{keyword: value})
    with pytest.raises(InputError) as from_settings:
        RunSettings(**{keyword: value})
    assert str(from_callback.value) == str(from_settings.value) == message
    result = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "-l", "8", "-p", "0.5", flag, value])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert model.get_layer("fc1").sparsity() == 0


def test_an_invalid_combination_is_refused_by_the_one_check_too():
    message = "granularity 'filter' works with scope 'layer', not 'global'"
    for make in (lambda: PruneOptions(granularity="filter", scope="global"),
                 lambda: IterativePruning({"fc1": 0.5}, granularity="filter", scope="global"),
                 lambda: RunSettings(granularity="filter", scope="global"),
                 lambda: kp.prune(kp.prunable(kp.models.lenet5()), {"fc1": 0.5}, granularity="filter", scope="global")):
        with pytest.raises(InputError, match=message):
            make()


def test_the_callback_takes_the_options_object_or_the_keywords_not_both(trained_lenet5):
    options = PruneOptions("l2", scope="layer", granularity="filter", unit_norm="l2")
    with pytest.raises(InputError, match=r"either as options= or as keywords.*scope"):
        IterativePruning({"conv2": 0.5}, options=options, scope="global")
    by_object = kp.prunable(kp.load_model(trained_lenet5), ["conv2", "fc1"])
    IterativePruning({"conv2": 0.5}, options=PruneOptions("magnitude", granularity="filter", unit_norm="l2"),
                     epochs_per_step=0).prune_without_training(by_object)
    by_keywords = kp.prunable(kp.load_model(trained_lenet5), ["conv2", "fc1"])
    kp.prune(by_keywords, {"conv2": 0.5}, "magnitude", granularity="filter", unit_norm="l2")
    for name in ("conv2", "fc1"):
        np.testing.assert_array_equal(by_object.get_layer(name).mask_arrays()[0], by_keywords.get_layer(name).mask_arrays()[0])
    assert by_object.get_layer("conv2").sparsity() == pytest.approx(0.5)


def test_checkpoint_eligibility_is_decided_by_the_settings_alone():
    assert RunSettings(retrain=True).checkpointable
    for unfit in (dict(), dict(retrain=True, epochs=0), dict(retrain=True, reload=True),
                  dict(retrain=True, schedule="cubic"), dict(retrain=True, multi_worker=True)):
        assert not RunSettings(**unfit).checkpointable
        for given in (dict(checkpoint_dir="ckpt"), dict(resume=True)):
            with pytest.raises(InputError) as info:
                RunSettings(**unfit, **given)
            assert str(info.value) == CHECKPOINT_RULE
    with pytest.raises(InputError, match="resuming needs the checkpoint folder"):
        RunSettings(retrain=True, resume=True)


def test_numbers_are_checked_once_with_one_message():
    with pytest.raises(InputError, match="score batches must be a positive whole number, got 0"):
        PruneOptions(score_batches=0)
    with pytest.raises(InputError, match="score batches must be a positive whole number, got 0"):
        RunSettings(score_batches=0)
    with pytest.raises(InputError, match="iterations must be a positive whole number, got 1.5"):
        RunSettings(iterations=1.5)
    with pytest.raises(InputError, match="epochs_per_step must be a whole number >= 0, got -1"):
        IterativePruning({"fc1": 0.5}, epochs_per_step=-1)
    assert PruneOptions(score_batches=np.int64(3)).score_batches == 3


# --- the mag alias lives in the registry --------------------------------------------


def test_mag_is_an_alias_the_registry_resolves_everywhere(trained_lenet5, small_idx_dir, tmp_path):
    assert get_pruner("mag").name == "magnitude"
    assert PruneOptions("mag").criterion == RunSettings(criterion="mag").criterion == "magnitude"
    a, b = kp.prunable(kp.load_model(trained_lenet5), [8]), kp.prunable(kp.load_model(trained_lenet5), [8])
    kp.prune(a, {8: 0.6}, "mag")
    kp.prune(b, {8: 0.6}, "magnitude")
    np.testing.assert_array_equal(a.get_layer("fc1").mask_arrays()[0], b.get_layer("fc1").mask_arrays()[0])
    result = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir),
                                       "-l", "12", "-p", "0.5", "--pruner", "mag", "--out", str(tmp_path / "p.keras")])
    assert result.exit_code == 0, result.output
    assert "; pruner magnitude, 1 step(s)" in result.output


# --- CLI choices and defaults come from the library -----------------------------------


def _param(command, name):
    return next(p for p in command.params if p.name == name)


def test_cli_choices_are_the_library_registries():
    expected = {
        "pruner": ("mag", *available_pruners()),
        "scope": SCOPES,
        "normalization": NORMALIZATIONS,
        "granularity": GRANULARITIES,
        "unit_norm": UNIT_NORMS,
        "schedule": SCHEDULES,
        "hessian": HESSIAN_ESTIMATES,
    }
    for name, names in expected.items():
        assert tuple(_param(run_command, name).type.choices) == tuple(names), name
    assert _param(sensitivity_command, "pruner").type.choices == choices("pruner")


def test_a_pruner_registered_later_is_a_cli_choice_at_once():
    name = "orchestration-test-reverse"
    if name not in available_pruners():

        @register_criterion(name)
        class Reverse(Criterion):
            def score(self, layers, model=None, data=None):
                return {layer: [-np.abs(v.numpy()) for v in layer.pruned_variables] for layer in layers}

    assert name in _param(run_command, "pruner").type.choices
    help_text = CliRunner().invoke(main, ["run", "--help"]).output
    assert name in help_text


def test_cli_defaults_are_the_settings_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(RunSettings) if f.default is not dataclasses.MISSING}
    shared = 0
    for command in (run_command, sensitivity_command):
        for param in command.params:
            field = "criterion" if param.name == "pruner" else param.name
            if field in defaults and not getattr(param, "is_flag", False):  # a flag is off unless given
                assert param.default == defaults[field], (command.name, param.name)
                shared += 1
    assert shared >= 14


def test_pruner_option_help_shows_the_pruners_own_defaults():
    from keras_prune.criteria import Empirical, L1Gates, Taylor2

    help_text = " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
    for flag, cls, option in [("--probes", Taylor2, "probes"), ("--hessian", Taylor2, "hessian"),
                              ("--gate-penalty", L1Gates, "penalty"), ("--gate-epochs", L1Gates, "epochs"),
                              ("--emp-budget", Empirical, "budget")]:
        default = inspect.signature(cls).parameters[option].default
        assert pruner_option_default(cls.name, option) == default
        after = help_text[help_text.index(f" {flag} "):]
        shown = after[after.index("[default: "):].split("]")[0]
        assert shown.startswith(f"[default: {default}"), (flag, shown)
        assert _param(run_command, flag.lstrip("-").replace("-", "_")).default is None  # not passed unless given


def test_an_option_several_pruners_take_shows_each_ones_default():
    help_text = " ".join(CliRunner().invoke(main, ["run", "--help"]).output.split())
    after = help_text[help_text.index(" --damping "):]
    shown = after[after.index("[default: "):].split("]")[0]
    for pruner in ("taylor1", "taylor2", "taylor12", "l1", "l2", "emp", "sparsegpt"):
        assert f"{pruner} {pruner_option_default(pruner, 'damping')}" in shown, shown
    assert pruner_option_default("taylor2", "damping") == get_pruner("taylor2").damping
    for flag in ("--block-size", "--per-output / --whole-kernel", "--dense-targets / --pruned-targets",
                 "--owl", "--owl-threshold"):
        assert f" {flag} " in help_text, flag


def test_unsafe_is_one_option_shared_by_every_command_that_loads_a_model():
    from keras_prune_cli import commands

    declared = [c.name for c in commands.ALL if any(p.name == "unsafe" for p in c.params)]
    assert sorted(declared) == ["export", "info", "layers", "run", "sensitivity", "shrink", "test"]
    helps = {_param(c, "unsafe").help for c in commands.ALL if c.name in declared}
    assert helps == {"Allow models that contain code (Lambda layers)."}


def test_sensitivity_takes_a_method_as_run_does(trained_lenet5, small_idx_dir, tmp_path):
    result = CliRunner().invoke(main, ["sensitivity", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir),
                                       "-l", "12", "-p", "0.5", "--steps", "1", "--pruner", "wanda",
                                       "--log-dir", str(tmp_path), "--job-id", "w"])
    assert result.exit_code == 0, result.output
    assert "Layer12 fc3: 50% pruned -> validation loss" in result.output


def test_a_checkpoint_whose_pruning_state_cannot_be_read_is_a_one_line_error(trained_lenet5, small_data, tmp_path):
    from keras_prune.checkpoint import CHECKPOINT_FILE
    from keras_prune.experiment import run_pruning
    from keras_prune.plan import Plan

    plan, folder = Plan((12,), (0.5,)), tmp_path / "ckpt"
    settings = RunSettings(retrain=True, checkpoint_dir=str(folder), resume=True)
    run = {"layers": [12], "fractions": [0.5],
           **{k: v for k, v in dataclasses.asdict(settings).items() if k not in ("checkpoint_dir", "resume", "progress", "multi_worker")}}
    old_result = {"step": 1, "index": 12, "layer": "fc3", "fraction": 0.5, "retained": 0.5, "validation": None,
                  "test": None, "seconds": 1.0, "cost": None, "reverted": False, "mask_digest": "", "diverged": False}
    folder.mkdir()
    (folder / "epoch-0001.keras").write_bytes(trained_lenet5.read_bytes())
    pruning = {"cursor": [2, 0], "current_step": 1, "stopped": [], "baseline": None, "results": [old_result]}
    (folder / CHECKPOINT_FILE).write_text(json.dumps({"epoch": 1, "model": "epoch-0001.keras", "pruning": pruning, "run": run}))
    with pytest.raises(InputError) as info:
        run_pruning(kp.load_model(trained_lenet5), plan, small_data, settings)
    assert "cannot read the pruning state of the checkpoint" in str(info.value) and "outcome" in str(info.value)
    assert "\n" not in str(info.value)
