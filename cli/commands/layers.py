"""`keras-prune layers`: the table a user reads before choosing `--layers`."""

from __future__ import annotations

import click

from keras_prune_cli.common import model_option, unsafe_option


@click.command()
@model_option("the shipped lenet5")
@unsafe_option
def layers(model_path, unsafe):
    """List the model's layers with their 1-based indices, weights and sparsity.

    The index column is what `--layers` takes (names work too). Layers without
    prunable weights (activations, pooling) are listed with '-'.
    """
    from keras_prune.api import has_prunable_weights, top_layers
    from keras_prune.report import sparsity_report
    from keras_prune.resources import PRETRAINED_MODEL
    from keras_prune.storage import load_model
    from keras_prune.wrapper import PruneWrapper

    model = load_model(model_path or PRETRAINED_MODEL, safe_mode=not unsafe)
    report = {row.name: row for row in sparsity_report(model).layers}
    click.echo(f"Model: {model.name} ({model_path or PRETRAINED_MODEL})")
    click.echo(f"{'idx':>4}  {'name':<16} {'type':<22} {'weights':>10} {'sparsity':>9}")
    for index, layer in enumerate(top_layers(model), start=1):
        kind = type(layer).__name__
        if isinstance(layer, PruneWrapper):
            kind = f"{type(layer.layer).__name__} (wrapped)"
        nested = [row for name, row in report.items() if name.startswith(f"{layer.name}/")]
        rows = [report[layer.name]] if layer.name in report else nested
        if rows and has_prunable_weights(layer):
            weights = sum(r.weights for r in rows)
            zeros = sum(r.zeros for r in rows)
            click.echo(f"{index:>4}  {layer.name:<16} {kind:<22} {weights:>10,} {100 * zeros / weights:>8.2f}%")
        else:
            click.echo(f"{index:>4}  {layer.name:<16} {kind:<22} {'-':>10} {'-':>9}")
