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


def conf_beside(config: Path | None, model_path: Path) -> Path:
    """The conf file a command reads its plan from: `--config`, else `<model>.conf`."""
    return config if config is not None else model_path.with_suffix(".conf")


def fractions_from_conf(layers: str, config: Path | None, model_path: Path, model):
    """`--layers` without `-p`: those layers, each with its fraction in the conf.

    The conf is `--config FILE`, else `<model>.conf` beside the model; a layer given
    by index matches the same layer given by name in the conf.

    Args:
        layers: the `--layers` text ("1,4,fc1").
        config: the `--config` file, or None.
        model_path: the model file (its `.conf` sibling is the default conf).
        model: the loaded model, to match indices and names.

    Returns:
        (plan, where its fractions came from, for the plan line).

    Raises:
        InputError: no conf, or a layer the conf gives no fraction (naming the
            layer and saying to give `-p`).
    """
    from keras_prune.api import find_layers
    from keras_prune.errors import InputError
    from keras_prune.plan import parse_selectors, read_conf

    selectors = parse_selectors(layers)
    conf = conf_beside(config, model_path)
    if config is None and not conf.is_file():
        raise InputError(
            f"layer {selectors[0]} has no fraction: no -p given, no --config, and no conf "
            f"file {conf} beside the model; give -p FRACTION (one, or one per layer)"
        )
    plan = read_conf(conf)
    find_layers(model, plan.layers)  # a conf that does not fit the model fails here, saying so
    picked = plan.pick(selectors, lambda selector: id(find_layers(model, [selector])[0]), str(conf))
    return picked, f"layers from --layers, fractions from {conf}"
