"""`keras-prune sensitivity`: sweep each layer alone and plot accuracy against fraction pruned."""

from __future__ import annotations

from pathlib import Path

import click

from keras_prune_cli.common import (
    batch_size_option,
    data_options,
    device_options,
    fractions_from_conf,
    load_data,
    log_options,
    model_option,
    pruner_option,
    retraining_options,
    seed_everything,
    seed_option,
    unsafe_option,
)


def _print_row(result) -> None:
    label = f"Layer{result.index}" if result.index is not None else result.layer
    click.echo(
        f"{label} {result.layer}: {100 * result.fraction:.4g}% pruned -> validation "
        f"{result.validation}" + (f", test error {result.test.error:.2f}%" if result.test else "")
    )


@click.command()
@model_option("the shipped pretrained lenet5 (saved_models/lenet5.keras)")
@click.option("-l", "--layers", default=None, help="Layers to sweep: comma-separated 1-based indices or names. Default: every prunable layer.")
@click.option("--steps", type=click.IntRange(min=1), default=9, show_default=True, help="Points per layer; step i prunes the layer alone to fraction*i/steps.")
@click.option("-p", "--fraction", type=click.FloatRange(0, 1), default=None, help="The largest fraction pruned, reached at the last step [default: 0.9; with --layers, each layer's fraction in the conf].")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Conf file giving the fractions of --layers when -p is not given. Default: <model>.conf beside the model.")
@pruner_option("Criterion that ranks the weights, or a method (see `keras-prune run --help`).")
@retraining_options("Retrain after each step (from the trained model every time).")
@click.option("--metric", type=click.Choice(["accuracy", "error"]), default="accuracy", show_default=True, help="What the plot's y-axis shows (the plot stays on validation).")
@log_options(Path("logs"), "sensitivity", "Folder for <job-id>.csv, .jsonl, .options.json and .png.")
@device_options
@batch_size_option
@seed_option
@data_options
@unsafe_option
def sensitivity(model_path, layers, steps, fraction, config, pruner, retrain, epochs, lr, momentum, metric, log_dir, job_id, log_test, gpu, cpu, batch_size, seed, data_dir, dataset, unsafe):
    """Prune each layer alone, step by step, and plot accuracy against fraction pruned.

    Every point starts again from the trained model (like `run --reload`), so each is
    a one-shot prune of one layer, optionally retrained. Writes the CSV (the original
    plotlog's columns first), JSON lines, the options and a PNG with one line per
    layer, as in Han et al.'s sensitivity figures.

    \b
    Examples:
      keras-prune sensitivity --steps 5
      keras-prune sensitivity -l 1,4 --steps 9 --retrain --epochs 1 --metric error
      keras-prune sensitivity -l 1,4,8 --steps 5    # each up to its fraction in the conf
    """
    from keras_prune.devices import select_devices

    options = dict(click.get_current_context().params)
    # Devices first: they must be chosen before anything creates a tensor.
    devices = select_devices(gpus=gpu, cpu=cpu)
    from keras_prune.errors import InputError
    from keras_prune.plan import parse_selectors
    from keras_prune.plotting import plot_log
    from keras_prune.resources import PRETRAINED_MODEL
    from keras_prune.runlog import RunLog
    from keras_prune.sensitivity import sensitivity as sweep
    from keras_prune.settings import RunSettings
    from keras_prune.storage import load_model

    if config is not None and (layers is None or fraction is not None):
        raise InputError("--config gives the fractions of --layers; give it with --layers and without -p")
    selectors = parse_selectors(layers) if layers is not None else None
    settings = RunSettings(criterion=pruner, retrain=retrain, epochs=epochs, lr=lr, momentum=momentum,
                           batch_size=batch_size, seed=seed, log_test=log_test)
    model_path = model_path or PRETRAINED_MODEL
    model = load_model(model_path, safe_mode=not unsafe)
    if selectors is not None and fraction is None:
        plan, source = fractions_from_conf(layers, config, model_path, model)
        fractions, target = plan.fractions, f"{source}: " + ", ".join(f"{s} -> {f:g}" for s, f in plan.items())
    else:
        fraction = 0.9 if fraction is None else fraction
        fractions, target = fraction, f"{fraction:g} per layer"
    data = load_data(data_dir, dataset)
    seed_everything(seed)
    log = RunLog(log_dir, job_id, options=options, test_error=False)
    click.echo(f"Devices: {devices.description}")
    click.echo(f"Model: {model_path}; {steps} step(s) to {target}, pruner {pruner}"
               + (f", retraining {epochs} epoch(s) per step" if retrain else ", no retraining"))

    def on_step(result):
        _print_row(result)
        log.write(result)

    sweep(model, data, selectors, steps, fractions, settings, on_step=on_step, strategy=devices.strategy)
    png = plot_log(log.csv_path, metric=metric, title=f"{model_path.name}: each layer pruned alone ({pruner})")
    click.echo(f"Wrote {log.csv_path}, {log.jsonl_path} and {png}")
