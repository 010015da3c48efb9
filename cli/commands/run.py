"""`keras-prune run`: prune chosen layers of a trained model, retrain, report, save.

The original tool's single-dash flags are accepted as aliases, so its README
commands run with `keras-prune run` in place of `qlua main.lua`.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from keras_prune_cli.common import (
    LibraryChoice,
    batch_size_option,
    conf_beside,
    criterion_options,
    data_options,
    device_options,
    fractions_from_conf,
    load_data,
    log_options,
    model_option,
    print_report,
    pruner_option,
    pruner_options,
    retraining_options,
    seed_everything,
    seed_option,
    unsafe_option,
)

if TYPE_CHECKING:
    from keras_prune.devices import DeviceChoice
    from keras_prune.plan import Plan
    from keras_prune.results import StepResult
    from keras_prune.settings import RunSettings


def _percent(value: float) -> str:
    return f"{100 * value:.4g}%"


def _print_pruned(step: int, index: int | None, name: str, retained: float) -> None:
    label = f"Layer{index}" if index is not None else name
    click.echo(f"{label}: {_percent(retained)} retained (step {step})")


class _StepPrinter:
    """Prints each event's measures once (an event may cover several layers), and reverts."""

    def __init__(self):
        self._last = None

    def __call__(self, result) -> None:
        event = (result.step, result.validation, result.test, result.seconds)
        if event != self._last:
            self._last = event
            click.echo(f"  validation: {result.validation}  [{result.seconds:.1f}s]")
            if result.test is not None:
                click.echo(f"  test: {result.test}")
        if result.reverted:
            label = f"Layer{result.index}" if result.index is not None else result.layer
            reason = (
                "the loss or the weights became NaN or Inf while retraining"
                if result.diverged
                else f"validation error {result.cost:+.2f} points against the unpruned model"
            )
            click.echo(f"  reverted: {reason}; {label} stays at its previous step and is pruned no further")


def _resolve_plan(layers, fraction, config, model_path, model):
    """The plan to prune by, and where it came from: `-l` with `-p`, `-l` alone (its
    fractions from the conf), or the whole conf (`--config`, else `<model>.conf`)."""
    from keras_prune.errors import InputError
    from keras_prune.plan import make_plan, read_conf

    if fraction is not None:
        if layers is None:
            raise InputError("-p/--fraction needs -l/--layers: give both, or neither to use a conf file")
        if config is not None:
            raise InputError("give either --layers/--fraction or --config, not both")
        return make_plan(layers, fraction), "options"
    if layers is not None:
        return fractions_from_conf(layers, config, model_path, model)
    conf = conf_beside(config, model_path)
    if config is None and not conf.is_file():
        raise InputError(
            f"no --layers given and no conf file {conf} beside the model; pass "
            "--layers and --fraction, or --config FILE"
        )
    return read_conf(conf), str(conf)


def _settings(options: dict[str, Any], out: Path) -> "RunSettings":
    """The run's `RunSettings`, validated once there; checkpoints go to
    ``--checkpoint-dir``, else ``<out>.checkpoint``, in runs that write them."""
    from keras_prune.settings import RunSettings

    settings = RunSettings(
        criterion=options["pruner"],
        iterations=options["iterations"],
        retrain=options["retrain"],
        epochs=options["epochs"],
        reload=options["reload"],
        lr=options["lr"],
        momentum=options["momentum"],
        batch_size=options["batch_size"],
        augment=options["augment"],
        seed=options["seed"],
        score_batches=options["score_batches"],
        granularity=options["granularity"],
        unit_norm=options["unit_norm"],
        round_to=options["round_to"],
        pattern=options["pattern"],
        scope=options["scope"],
        normalization=options["normalization"],
        criterion_options=criterion_options(options),
        progress=True,
        schedule=options["schedule"],
        acc_tradeoff=options["acc_tradeoff"],
        log_test=options["log_test"],
        multi_worker=options["multi_worker"],
    )
    folder = options["checkpoint_dir"]
    if settings.checkpointable and folder is None:
        folder = out.with_name(out.name + ".checkpoint")
    # A run that writes no checkpoints refuses a folder and --resume here, saying which runs do.
    return dataclasses.replace(settings, checkpoint_dir=None if folder is None else str(folder), resume=options["resume"])


def _refuse_an_interrupted_run(settings: "RunSettings") -> None:
    """Refuses to start again over the checkpoint of an interrupted run (without --resume)."""
    from keras_prune.checkpoint import CHECKPOINT_FILE
    from keras_prune.errors import InputError

    folder = settings.checkpoint_dir
    if folder is not None and not settings.resume and (Path(folder) / CHECKPOINT_FILE).exists():
        raise InputError(
            f"{folder} holds the checkpoint of an interrupted run: add --resume to "
            "continue it, or remove the folder to start again"
        )


def _describe_plan(plan: "Plan", source: str, settings: "RunSettings") -> str:
    """The plan line: layers, fractions and how they are pruned."""
    return (
        f"Plan ({source}): "
        + ", ".join(f"{s} -> {f:g}" for s, f in plan.items())
        + f"; pruner {settings.criterion}"
        + (f", pattern {settings.pattern}" if settings.pattern is not None else "")
        + f", {settings.iterations} step(s)"
        + (f", retraining {settings.epochs} epoch(s) per step" if settings.retrain else ", no retraining")
        + (", reloading the model every step" if settings.reload else "")
        + (f", {settings.schedule} schedule" if settings.schedule != "linear" else "")
        + (f", accuracy guard {settings.acc_tradeoff:g} points" if settings.acc_tradeoff is not None else "")
    )


def _listeners(options: dict[str, Any], chief: bool) -> tuple[list[Callable[["StepResult"], None]], list]:
    """What hears each step (the printer; on the chief, the logs) and the extra `fit` callbacks."""
    listeners, callbacks = [_StepPrinter()], []
    if options["log_dir"] is not None and chief:
        from keras_prune.runlog import RunLog

        run_log = RunLog(options["log_dir"], options["job_id"], options=options, test_error=options["log_test"])
        listeners.append(run_log.write)
        click.echo(f"Logging to {run_log.csv_path} and {run_log.jsonl_path}")
    if options["tensorboard"] is not None and chief:
        from keras_prune.runlog import TensorBoardLog

        board = TensorBoardLog(options["tensorboard"])
        listeners.append(board.write)
        callbacks.append(board)
    return listeners, callbacks


def _report_and_save(pruned, results: list["StepResult"], data, devices: "DeviceChoice", out: Path, settings: "RunSettings") -> None:
    """Prints the stopped layers, the test measure and the sparsity table; the chief
    saves the model and removes the checkpoints."""
    from keras_prune.report import sparsity_report
    from keras_prune.storage import save_model
    from keras_prune.training import evaluate

    stopped = [f"Layer{r.index}" if r.index is not None else r.layer for r in results if r.reverted]
    if stopped:
        click.echo(f"Stopped by the accuracy guard or a diverging loss: {', '.join(stopped)}")
    click.echo("Final model (the one saved):" if devices.chief else "Final model:")
    click.echo(f"Test: {evaluate(pruned, data.test())}")
    print_report(sparsity_report(pruned))
    if not devices.chief:
        click.echo(f"Not saving: worker {devices.worker} is not the chief (the chief saves the model)")
        return
    save_model(pruned, out)
    click.echo(f"Saved pruned model to {out}")
    if settings.checkpoint_dir is not None:
        shutil.rmtree(settings.checkpoint_dir, ignore_errors=True)


@click.command()
@model_option("the shipped pretrained lenet5 (saved_models/lenet5.keras)")
@click.option("-l", "--layers", default=None, help="Layers to prune: comma-separated 1-based indices or names (see `keras-prune layers`).")
@click.option("-p", "--fraction", default=None, help="Fraction of each layer's weights to prune, in [0, 1]: one value, or one per layer. Default with --layers: each layer's fraction in the conf.")
@click.option(
    "--config",
    "-conf",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Conf file: layers on line 1, fractions on line 2 (CSV). Default: "
    "<model>.conf beside the model; with --layers and no -p, only those layers' fractions are used.",
)
@pruner_option("Criterion that ranks the weights (mag = magnitude; docs/criteria.md), or a method that also updates the kept weights (sparsegpt, wanda; docs/one-shot.md).")
@click.option("--pattern", default=None, metavar="N:M|RxC", help="Sparsity pattern: N:M keeps at most N of each M consecutive inputs (2:4, 4:8); RxC prunes whole blocks of R inputs by C outputs. A layer ends at max(fraction, (M-N)/M) with N:M. Layer scope, weight granularity.")
@click.option("--scope", type=LibraryChoice("scope"), default="layer", show_default=True, help="layer: each layer loses its own fraction; global: the layers together lose as many weights, wherever the scores are lowest (pruned and retrained together).")
@click.option("--normalization", type=LibraryChoice("normalization"), default=None, help="With --scope global, how each layer's scores are rescaled. Default: the pruner's own (none for loss-change pruners, mean for magnitude).")
@pruner_options
@retraining_options("Retrain after each layer's pruning step.")
@click.option(
    "--iterations",
    "-iPruning",
    "-iPrunning",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Steps to reach the target; step i prunes each layer to fraction*i/N.",
)
@click.option("--reload", "-reLoad", is_flag=True, help="Start every step from the unpruned model (sensitivity data).")
@click.option(
    "--schedule",
    type=LibraryChoice("schedule"),
    default="linear",
    show_default=True,
    help="linear: step i of N prunes each layer to fraction*i/N, layer after layer; cubic: "
    "Zhu & Gupta's schedule, all layers together, a step every --epochs epochs (needs --retrain).",
)
@click.option(
    "--acc-tradeoff",
    "-acctradeoff",
    type=click.FloatRange(min=0),
    default=None,
    help="Accuracy guard: a layer's step that leaves validation accuracy more than this "
    "many percentage points below the unpruned model's is reverted exactly, and that "
    "layer is pruned no further.",
)
@device_options
@click.option("-cuda", "cuda", is_flag=True, help="The original's flag: run on the first GPU (--gpu 0).")
@click.option("--multi-worker", is_flag=True, help="Train under MultiWorkerMirroredStrategy as the TF_CONFIG environment variable describes (docs/iterative.md).")
@log_options(None, "localMain", "Write <job-id>.csv (the original's plotlog columns first), .jsonl and .options.json here.")
@click.option("--tensorboard", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write TensorBoard scalars (per-layer sparsity, validation loss and accuracy, training curves) here.")
@click.option("-test", "test_only", is_flag=True, help="Only report the shipped pruned model (or -m MODEL), like `keras-prune test`.")
@click.option("--augment", is_flag=True, help="Shift retraining images by up to 2 pixels each epoch.")
@click.option(
    "--granularity",
    type=LibraryChoice("granularity"),
    default="weight",
    show_default=True,
    help="Prune single weights, or whole units: neuron and filter both remove whole "
    "Dense neurons and Conv filters, head whole MultiHeadAttention heads (then "
    "`keras-prune shrink` makes the model smaller).",
)
@click.option(
    "--unit-norm",
    type=LibraryChoice("unit norm"),
    default="l1",
    show_default=True,
    help="At neuron/filter granularity, rank units by the sum (l1) or the L2 norm of "
    "their weights' scores (with magnitude: the unit's L1 or L2 norm).",
)
@click.option(
    "--round-to",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="At neuron/filter/head granularity, keep a multiple of this many units in each "
    "pruned layer (e.g. 8 or 16, for hardware-friendly shapes); 1: no rounding.",
)
@click.option("--score-batches", type=click.IntRange(min=1), default=20, show_default=True, help="Training batches a data-driven criterion scores on.")
@batch_size_option
@seed_option
@data_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Where to save the pruned model (.keras). Default: <model>_pruned.keras here.")
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --retrain: save model, masks, optimizer and schedule state here after "
    "every step (default: <out>.checkpoint); removed once the pruned model is saved.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its checkpoint (give the same options).")
@unsafe_option
def run(**options: Any) -> None:
    """Prune layers of a trained model, optionally retraining, then report and save.

    \b
    Examples:
      keras-prune run -l 8 -p 0.7                     # one layer, no retraining
      keras-prune run --pruner l1 --layers 1,4,8      # these layers, fractions from the conf
      keras-prune run --retrain --epochs 3            # the model's conf, retrained
      keras-prune run --iterations 10 --retrain -l 8 -p 0.9
      keras-prune run --iterations 10 --retrain --acc-tradeoff 0.2 --log-dir logs
    """
    from keras_prune.devices import select_devices

    # Devices first: they must be chosen before anything creates a tensor.
    gpus = "0" if options["cuda"] and options["gpu"] is None else options["gpu"]
    devices = select_devices(gpus=gpus, cpu=options["cpu"], multi_worker=options["multi_worker"])
    from keras_prune.experiment import run_pruning
    from keras_prune.resources import PRETRAINED_MODEL
    from keras_prune.storage import load_model

    if options["test_only"]:
        from keras_prune_cli.commands.test import report_model

        report_model(options["model_path"], options["data_dir"], options["dataset"], options["unsafe"])
        return
    model_path = options["model_path"] or PRETRAINED_MODEL
    out = options["out"] or Path(f"{model_path.stem}_pruned.keras")
    settings = _settings(options, out)
    _refuse_an_interrupted_run(settings)
    model = load_model(model_path, safe_mode=not options["unsafe"])
    plan, source = _resolve_plan(options["layers"], options["fraction"], options["config"], model_path, model)
    data = load_data(options["data_dir"], options["dataset"])
    seed_everything(settings.seed)
    click.echo(f"Devices: {devices.description}")
    click.echo(f"Model: {model_path}")
    click.echo(_describe_plan(plan, source, settings))
    if settings.checkpoint_dir is not None:
        click.echo(f"{'Resuming from' if settings.resume else 'Checkpoints in'} {settings.checkpoint_dir}")
    listeners, callbacks = _listeners(options, devices.chief)

    def on_step(result):
        for listener in listeners:
            listener(result)

    pruned, results = run_pruning(
        model, plan, data, settings, on_step=on_step, on_prune=_print_pruned, strategy=devices.strategy, callbacks=callbacks
    )
    _report_and_save(pruned, results, data, devices, out, settings)
