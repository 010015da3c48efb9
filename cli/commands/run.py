"""`keras-prune run`: prune chosen layers of a trained model, retrain, report, save.

The original tool's single-dash flags are accepted as aliases, so its README
commands run with `keras-prune run` in place of `qlua main.lua`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from keras_prune_cli.common import (
    batch_size_option,
    conf_beside,
    data_options,
    fractions_from_conf,
    load_data,
    model_option,
    print_report,
    seed_everything,
    seed_option,
)


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


class _PrunerChoice(click.Choice):
    """A click.Choice over the registered criteria and methods plus the alias ``mag``.

    The registry is read when the choices are first needed (parsing, --help), not
    when the CLI is imported: importing it imports TensorFlow.
    """

    def __init__(self):
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        from keras_prune.methods import available_pruners

        return ("mag", *available_pruners())

    def get_invalid_choice_message(self, value, ctx) -> str:
        return f"unknown pruner '{value}'; choose one of: {', '.join(self.choices)}"


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
@click.option("--pruner", "-pruner", type=_PrunerChoice(), default="magnitude", show_default=True, help="Criterion that ranks the weights (mag = magnitude; docs/criteria.md), or a method that also updates the kept weights (sparsegpt, wanda; docs/one-shot.md).")
@click.option("--pattern", default=None, metavar="N:M|RxC", help="Sparsity pattern: N:M keeps at most N of each M consecutive inputs (2:4, 4:8); RxC prunes whole blocks of R inputs by C outputs. A layer ends at max(fraction, (M-N)/M) with N:M. Layer scope, weight granularity.")
@click.option("--scope", type=click.Choice(["layer", "global"]), default="layer", show_default=True, help="layer: each layer loses its own fraction; global: the layers together lose as many weights, wherever the scores are lowest (pruned and retrained together).")
@click.option("--normalization", type=click.Choice(["none", "mean", "l2"]), default=None, help="With --scope global, how each layer's scores are rescaled. Default: the pruner's own (none for loss-change pruners, mean for magnitude).")
@click.option("--probes", type=click.IntRange(min=1), default=None, help="taylor2/taylor12: Hessian probes per scoring batch [default: 4].")
@click.option("--hessian", type=click.Choice(["hutchinson", "gauss-newton"]), default=None, help="taylor2/taylor12: Hessian-diagonal estimate [default: hutchinson].")
@click.option("--gate-penalty", type=click.FloatRange(min=0), default=None, help="l1/l2: coefficient of the penalty on the gates [default: 1e-4].")
@click.option("--gate-epochs", type=click.IntRange(min=1), default=None, help="l1/l2: passes over the scoring batches to learn the gates [default: 5].")
@click.option("--emp-budget", type=click.IntRange(min=1), default=None, help="emp: weight-image evaluations per layer; a layer of N weights is scored on budget/N images at most [default: 4194304].")
@click.option("--retrain", "-reTrain", is_flag=True, help="Retrain after each layer's pruning step.")
@click.option("--epochs", "-nEpochs", type=click.IntRange(min=0), default=1, show_default=True, help="Retraining epochs after each step.")
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
    type=click.Choice(["linear", "cubic"]),
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
@click.option("--gpu", default=None, metavar="IDS", help="Run on these GPUs (e.g. 0 or 0,1); several train under MirroredStrategy.")
@click.option("-cuda", "cuda", is_flag=True, help="The original's flag: run on the first GPU (--gpu 0).")
@click.option("--cpu", is_flag=True, help="Run on the CPU even if there is a GPU.")
@click.option("--multi-worker", is_flag=True, help="Train under MultiWorkerMirroredStrategy as the TF_CONFIG environment variable describes (docs/iterative.md).")
@click.option("--log-dir", "-logDir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write <job-id>.csv (the original's plotlog columns first), .jsonl and .options.json here.")
@click.option("--job-id", "-jobID", default="localMain", show_default=True, help="Prefix of the log file names.")
@click.option("--log-test", is_flag=True, help="Also measure the test split after every step (reported and logged; decisions never use it).")
@click.option("--tensorboard", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write TensorBoard scalars (per-layer sparsity, validation loss and accuracy, training curves) here.")
@click.option("-test", "test_only", is_flag=True, help="Only report the shipped pruned model (or -m MODEL), like `keras-prune test`.")
@click.option("--lr", "-LR", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="SGD learning rate for retraining.")
@click.option("--momentum", "-momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="SGD momentum for retraining.")
@click.option("--augment", is_flag=True, help="Shift retraining images by up to 2 pixels each epoch.")
@click.option(
    "--granularity",
    type=click.Choice(["weight", "neuron", "filter", "head"]),
    default="weight",
    show_default=True,
    help="Prune single weights, or whole units: neuron and filter both remove whole "
    "Dense neurons and Conv filters, head whole MultiHeadAttention heads (then "
    "`keras-prune shrink` makes the model smaller).",
)
@click.option(
    "--unit-norm",
    type=click.Choice(["l1", "l2"]),
    default="l1",
    show_default=True,
    help="At neuron/filter granularity, rank units by the sum (l1) or the L2 norm of "
    "their weights' scores (with magnitude: the unit's L1 or L2 norm).",
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
@click.option("--unsafe", is_flag=True, help="Allow models that contain code (Lambda layers).")
def run(model_path, layers, fraction, config, pruner, pattern, scope, normalization, probes, hessian, gate_penalty, gate_epochs, emp_budget, retrain, epochs, iterations, reload, schedule, acc_tradeoff, gpu, cuda, cpu, multi_worker, log_dir, job_id, log_test, tensorboard, test_only, lr, momentum, augment, granularity, unit_norm, score_batches, batch_size, seed, data_dir, dataset, out, checkpoint_dir, resume, unsafe):
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

    options = dict(click.get_current_context().params)
    # Devices first: they must be chosen before anything creates a tensor.
    devices = select_devices(gpus="0" if cuda and gpu is None else gpu, cpu=cpu, multi_worker=multi_worker)
    from keras_prune.checkpoint import CHECKPOINT_FILE
    from keras_prune.errors import InputError
    from keras_prune.experiment import RunSettings, run_pruning
    from keras_prune.report import sparsity_report
    from keras_prune.resources import PRETRAINED_MODEL
    from keras_prune.selection import parse_pattern
    from keras_prune.storage import load_model, save_model
    from keras_prune.training import evaluate

    if test_only:
        from keras_prune_cli.commands.test import report_model

        report_model(model_path, data_dir, dataset, unsafe)
        return
    pruner = "magnitude" if pruner == "mag" else pruner
    pattern = parse_pattern(pattern)
    given = {"probes": probes, "hessian": hessian, "penalty": gate_penalty, "epochs": gate_epochs, "budget": emp_budget}
    model_path = model_path or PRETRAINED_MODEL
    out = out or Path(f"{model_path.stem}_pruned.keras")
    checkpoints = retrain and epochs > 0 and not reload and schedule == "linear" and not multi_worker
    if checkpoints:
        checkpoint_dir = checkpoint_dir or out.with_name(out.name + ".checkpoint")
    elif resume or checkpoint_dir is not None:
        raise InputError(
            "checkpoints are written when retraining with the linear schedule, without "
            "--reload or --multi-worker; --checkpoint-dir and --resume need such a run"
        )
    settings = RunSettings(
        criterion=pruner,
        iterations=iterations,
        retrain=retrain,
        epochs=epochs,
        reload=reload,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        augment=augment,
        seed=seed,
        score_batches=score_batches,
        granularity=granularity,
        unit_norm=unit_norm,
        pattern=None if pattern is None else str(pattern),
        scope=scope,
        normalization=normalization,
        criterion_options={name: value for name, value in given.items() if value is not None},
        progress=True,
        schedule=schedule,
        acc_tradeoff=acc_tradeoff,
        log_test=log_test,
        checkpoint_dir=str(checkpoint_dir) if checkpoints else None,
        resume=resume,
    )
    if checkpoints and not resume and (checkpoint_dir / CHECKPOINT_FILE).exists():
        raise InputError(
            f"{checkpoint_dir} holds the checkpoint of an interrupted run: add --resume to "
            "continue it, or remove the folder to start again"
        )
    model = load_model(model_path, safe_mode=not unsafe)
    plan, source = _resolve_plan(layers, fraction, config, model_path, model)
    data = load_data(data_dir, dataset)
    seed_everything(seed)
    click.echo(f"Devices: {devices.description}")
    click.echo(f"Model: {model_path}")
    click.echo(
        f"Plan ({source}): "
        + ", ".join(f"{s} -> {f:g}" for s, f in plan.items())
        + f"; pruner {pruner}"
        + (f", pattern {pattern}" if pattern is not None else "")
        + f", {iterations} step(s)"
        + (f", retraining {epochs} epoch(s) per step" if retrain else ", no retraining")
        + (", reloading the model every step" if reload else "")
        + (f", {schedule} schedule" if schedule != "linear" else "")
        + (f", accuracy guard {acc_tradeoff:g} points" if acc_tradeoff is not None else "")
    )
    if checkpoints:
        click.echo(f"{'Resuming from' if resume else 'Checkpoints in'} {checkpoint_dir}")
    listeners = [_StepPrinter()]
    callbacks = []
    if log_dir is not None and devices.chief:
        from keras_prune.runlog import RunLog

        run_log = RunLog(log_dir, job_id, options=options, test_error=log_test)
        listeners.append(run_log.write)
        click.echo(f"Logging to {run_log.csv_path} and {run_log.jsonl_path}")
    if tensorboard is not None and devices.chief:
        from keras_prune.runlog import TensorBoardLog

        board = TensorBoardLog(tensorboard)
        listeners.append(board.write)
        callbacks.append(board)

    def on_step(result):
        for listener in listeners:
            listener(result)

    pruned, results = run_pruning(
        model, plan, data, settings, on_step=on_step, on_prune=_print_pruned, strategy=devices.strategy, callbacks=callbacks
    )
    stopped = [f"Layer{r.index}" if r.index is not None else r.layer for r in results if r.reverted]
    if stopped:
        click.echo(f"Stopped by the accuracy guard or a diverging loss: {', '.join(stopped)}")
    click.echo("Final model (the one saved):" if devices.chief else "Final model:")
    test = evaluate(pruned, data.test())
    click.echo(f"Test: {test}")
    print_report(sparsity_report(pruned))
    if not devices.chief:
        click.echo(f"Not saving: worker {devices.worker} is not the chief (the chief saves the model)")
        return
    save_model(pruned, out)
    click.echo(f"Saved pruned model to {out}")
    if checkpoints:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
