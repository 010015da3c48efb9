"""`keras-prune test`: total compression and test error of a (pruned) model."""

from __future__ import annotations

from pathlib import Path

import click

from keras_prune_cli.common import data_options, load_data, model_option, print_report, unsafe_option


def report_model(model_path: Path | None, data_dir, dataset, unsafe: bool = False) -> None:
    """Prints the sparsity table, the total compression and the test loss and error."""
    from keras_prune.report import sparsity_report
    from keras_prune.resources import PRUNED_MODEL
    from keras_prune.storage import load_model
    from keras_prune.training import check_input_shape, evaluate

    path = model_path or PRUNED_MODEL
    model = load_model(path, safe_mode=not unsafe)
    data = load_data(data_dir, dataset)
    check_input_shape(model, data)
    click.echo(f"Model: {path}")
    print_report(sparsity_report(model))
    test = evaluate(model, data.test())
    click.echo(f"Test: {test} on {len(data.x_test)} images")


@click.command()
@model_option("the shipped pruned lenet5 (saved_models/lenet5_pruned.keras)")
@data_options
@unsafe_option
def test(model_path, data_dir, dataset, unsafe):
    """Report a model's per-layer sparsity, total compression and test error.

    Total compression is pruned / all prunable weights (biases excluded), as the
    original tool printed it; the ratio all / non-zero weights is shown beside it.
    """
    report_model(model_path, data_dir, dataset, unsafe)
