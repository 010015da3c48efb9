"""`keras-prune run`: prune chosen layers of a trained model, retrain, report, save.

The original tool's single-dash flags are accepted as aliases, so its README
commands run with `keras-prune run` in place of `qlua main.lua`.
"""

from __future__ import annotations

from pathlib import Path

import click

from keras_prune_cli.common import (
    batch_size_option,
    data_options,
    load_data,
    model_option,
    print_report,
    seed_everything,
    seed_option,
)


def _percent(value: float) -> str:
    return f"{100 * value:.4g}%"


def _print_step(result) -> None:
    label = f"Layer{result.index}" if result.index is not None else result.layer
    click.echo(f"{label}: {_percent(result.retained)} retained (step {result.step}, target fraction {result.fraction:.4g})")
    click.echo(f"  validation: {result.validation}  [{result.seconds:.1f}s]")


def _resolve_plan(layers, fraction, config, model_path):
    from keras_prune.errors import InputError
    from keras_prune.plan import make_plan, read_conf

    if layers is not None or fraction is not None:
        if layers is None or fraction is None:
            raise InputError("--layers and --fraction go together: give both, or neither to use a conf file")
        if config is not None:
            raise InputError("give either --layers/--fraction or --config, not both")
        return make_plan(layers, fraction), "options"
    conf = config or model_path.with_suffix(".conf")
    if config is None and not conf.is_file():
        raise InputError(
            f"no --layers given and no conf file {conf} beside the model; pass "
            "--layers and --fraction, or --config FILE"
        )
    return read_conf(conf), str(conf)


def _not_implemented(flag: str) -> None:
    from keras_prune.errors import InputError

    raise InputError(f"{flag} is not implemented yet in this version of keras-prune")


@click.command()
@model_option("the shipped pretrained lenet5 (saved_models/lenet5.keras)")
@click.option("-l", "--layers", default=None, help="Layers to prune: comma-separated 1-based indices or names (see `keras-prune layers`).")
@click.option("-p", "--fraction", default=None, help="Fraction of each layer's weights to prune, in [0, 1]: one value, or one per layer.")
@click.option(
    "--config",
    "-conf",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Conf file: layers on line 1, fractions on line 2 (CSV). Default without "
    "--layers: <model>.conf beside the model.",
)
@click.option("--pruner", "-pruner", default="magnitude", show_default=True, help="Criterion that ranks the weights (mag = magnitude).")
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
@click.option("--acc-tradeoff", "-acctradeoff", type=float, default=None, help="Stop pruning a layer that costs more than this many points of accuracy (not implemented yet).")
@click.option("--gpu", "-cuda", "gpu", is_flag=True, help="Run on the GPU (not implemented yet).")
@click.option("-test", "test_only", is_flag=True, help="Only report the shipped pruned model (or -m MODEL), like `keras-prune test`.")
@click.option("--lr", "-LR", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="SGD learning rate for retraining.")
@click.option("--momentum", "-momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="SGD momentum for retraining.")
@click.option("--score-batches", type=click.IntRange(min=1), default=20, show_default=True, help="Training batches a data-driven criterion scores on.")
@batch_size_option
@seed_option
@data_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Where to save the pruned model (.keras). Default: <model>_pruned.keras here.")
@click.option("--unsafe", is_flag=True, help="Allow models that contain code (Lambda layers).")
def run(model_path, layers, fraction, config, pruner, retrain, epochs, iterations, reload, acc_tradeoff, gpu, test_only, lr, momentum, score_batches, batch_size, seed, data_dir, dataset, out, unsafe):
    """Prune layers of a trained model, optionally retraining, then report and save.

    \b
    Examples:
      keras-prune run -l 8 -p 0.7                     # one layer, no retraining
      keras-prune run --retrain --epochs 3            # the model's conf, retrained
      keras-prune run --iterations 10 --retrain -l 8 -p 0.9
    """
    from keras_prune.criteria import available_criteria
    from keras_prune.errors import InputError
    from keras_prune.experiment import RunSettings, run_pruning
    from keras_prune.report import sparsity_report
    from keras_prune.resources import PRETRAINED_MODEL
    from keras_prune.storage import load_model, save_model
    from keras_prune.training import evaluate

    if test_only:
        from keras_prune_cli.commands.test import report_model

        report_model(model_path, data_dir, dataset, unsafe)
        return
    if acc_tradeoff is not None:
        _not_implemented("--acc-tradeoff/-acctradeoff")
    if gpu:
        _not_implemented("--gpu/-cuda")
    pruner = "magnitude" if pruner == "mag" else pruner
    if pruner not in available_criteria():
        raise InputError(f"unknown pruner '{pruner}'; choose one of: {', '.join(available_criteria())}")
    model_path = model_path or PRETRAINED_MODEL
    out = out or Path(f"{model_path.stem}_pruned.keras")
    plan, source = _resolve_plan(layers, fraction, config, model_path)
    settings = RunSettings(
        criterion=pruner,
        iterations=iterations,
        retrain=retrain,
        epochs=epochs,
        reload=reload,
        lr=lr,
        momentum=momentum,
        batch_size=batch_size,
        seed=seed,
        score_batches=score_batches,
    )
    model = load_model(model_path, safe_mode=not unsafe)
    data = load_data(data_dir, dataset)
    seed_everything(seed)
    click.echo(f"Model: {model_path}")
    click.echo(
        f"Plan ({source}): "
        + ", ".join(f"{s} -> {f:g}" for s, f in plan.items())
        + f"; pruner {pruner}, {iterations} step(s)"
        + (f", retraining {epochs} epoch(s) per step" if retrain else ", no retraining")
        + (", reloading the model every step" if reload else "")
    )
    pruned, _ = run_pruning(model, plan, data, settings, on_step=_print_step)
    test = evaluate(pruned, data.test())
    click.echo(f"Test: {test}")
    print_report(sparsity_report(pruned))
    save_model(pruned, out)
    click.echo(f"Saved pruned model to {out}")
