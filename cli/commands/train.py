"""`keras-prune train`: train a reference model from scratch and save it."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import click

from keras_prune_cli.common import batch_size_option, data_options, load_data, seed_everything, seed_option


@click.command()
@click.option(
    "--model",
    "model_name",
    default="lenet5",
    show_default=True,
    help="Reference architecture: lenet5 (the original tool's), lenet5_caffe, lenet_300_100 or vit_mnist "
    "(a small Vision Transformer; train it with --optimizer adamw --lr 0.002).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True, help="Training epochs.")
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=0.05,
    show_default=True,
    help="Initial learning rate (cosine-decayed to 0 over the run).",
)
@click.option("--momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="SGD momentum.")
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adamw"]),
    default="sgd",
    show_default=True,
    help="SGD with momentum, or AdamW (weight decay 0.05) for Transformers.",
)
@click.option("--augment", is_flag=True, help="Shift training images by up to 2 pixels each epoch.")
@batch_size_option
@seed_option
@data_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to save the model (.keras). Default: <model>.keras here. A card "
    "<name>.md describing the training is written beside it.",
)
def train(model_name, epochs, lr, momentum, optimizer, augment, batch_size, seed, data_dir, dataset, out):
    """Train a reference model from scratch on the training split.

    Validation error is shown after every epoch; the test error is measured once at
    the end and written to the model card.
    """
    from keras_prune.models import build_model
    from keras_prune.storage import atomic_write_text, save_model
    from keras_prune.training import evaluate, train as fit

    out = out or Path(f"{model_name}.keras")
    model = build_model(model_name)
    data = load_data(data_dir, dataset)
    seed_everything(seed)
    shifts = ", random 2-pixel shifts" if augment else ""
    settings = f"SGD, learning rate {lr}" if optimizer == "sgd" else f"AdamW (weight decay 0.05), learning rate {lr}"
    settings += " with cosine decay to 0" + (f", momentum {momentum}" if optimizer == "sgd" else "")
    click.echo(f"Training {model_name} for {epochs} epochs ({settings}, batch {batch_size}{shifts})")
    fit(
        model, data, epochs, lr=lr, momentum=momentum, batch_size=batch_size, seed=seed, cosine=True,
        augment=augment, optimizer=optimizer,
    )
    val, test = evaluate(model, data.validation()), evaluate(model, data.test())
    click.echo(f"Validation: {val}")
    click.echo(f"Test: {test}")
    save_model(model, out)
    card = out.with_suffix(".md")
    command = "keras-prune " + " ".join(sys.argv[1:]) if sys.argv[1:] else "keras-prune train"
    atomic_write_text(
        card,
        f"# {out.name}\n\n"
        f"- architecture: `{model_name}` ({model.count_params():,} parameters)\n"
        f"- trained: {datetime.date.today().isoformat()} with `{command}`\n"
        f"- data: {data.name}, {len(data.x_train)} training images "
        f"({len(data.x_val)} held out for validation)\n"
        f"- optimiser: {settings}, batch {batch_size}, {epochs} epochs, seed {seed}{shifts}\n"
        f"- validation: {val}\n"
        f"- test ({len(data.x_test)} images): {test}\n",
    )
    click.echo(f"Saved {out} and {card}")
