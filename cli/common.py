"""Options and helpers shared by several commands."""

from __future__ import annotations

import functools
from pathlib import Path

import click


def model_option(default_help: str):
    """`-m/--model FILE`: a .keras model; None means the command's shipped default."""
    return click.option(
        "-m",
        "--model",
        "model_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"Model file (.keras). Default: {default_help}.",
    )


def data_options(func):
    """`--data-dir DIR` and `--dataset NAME`: where the images come from."""

    @click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder of IDX files in MNIST's layout (train-images-idx3-ubyte[.gz], ...). "
        "Default: the shipped MNIST copy.",
    )
    @click.option(
        "--dataset",
        default=None,
        help="A tensorflow-datasets name to use instead of IDX files (must be "
        "available offline or downloadable).",
    )
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


def seed_option(func):
    """`--seed N` (alias `-manualSeed`): seeds Python, numpy and TensorFlow."""
    return click.option(
        "--seed",
        "-manualSeed",
        type=int,
        default=0,
        show_default=True,
        help="Random seed for shuffling and initialisation.",
    )(func)


def batch_size_option(func):
    """`--batch-size N` (alias `-batchsize`)."""
    return click.option(
        "--batch-size",
        "-batchsize",
        type=click.IntRange(min=1),
        default=128,
        show_default=True,
        help="Images per training step.",
    )(func)


def load_data(data_dir: Path | None, dataset: str | None):
    """Loads the dataset the options name, saying what it loads."""
    from keras_prune.data import load_dataset

    data = load_dataset(data_dir=data_dir, name=dataset)
    click.echo(
        f"Data: {data.name} ({len(data.x_train)} train, {len(data.x_val)} validation, "
        f"{len(data.x_test)} test images)"
    )
    return data


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and TensorFlow."""
    import keras

    keras.utils.set_random_seed(seed)


def print_report(report) -> None:
    """Prints a sparsity report: its table plus the original's totals line."""
    click.echo(str(report))
