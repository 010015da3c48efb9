"""Options and helpers shared by several commands.

An option that several commands take is declared here once. Choices are the
library's (`keras_prune.settings.choices`), read when first needed (parsing,
`--help`) rather than when the CLI is imported, since importing keras_prune imports
TensorFlow; values are checked by the library's own check, so a bad value gets the
same message from the CLI as from the API.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Callable

import click


class LibraryChoice(click.ParamType):
    """One of the values a library setting accepts (`keras_prune.settings.choices`).

    Built on click's public `ParamType` interface only. `--help` lists the values;
    a value is checked (and an alias such as ``mag`` made canonical) by
    `keras_prune.settings.check_choice`.

    Args:
        setting: the setting's name in `keras_prune.settings.choices`.

    Example:

    ```python
    @click.option("--scope", type=LibraryChoice("scope"), default="layer", show_default=True)
    ```
    """

    def __init__(self, setting: str):
        self.setting = setting
        self.name = setting

    @property
    def choices(self) -> tuple[str, ...]:
        """The accepted values, in the library's order."""
        from keras_prune.settings import choices

        return choices(self.setting)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return f"[{'|'.join(self.choices)}]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from keras_prune.errors import InputError
        from keras_prune.settings import check_choice

        try:
            return check_choice(self.setting, value)
        except InputError as exc:
            self.fail(str(exc), param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
        from click.shell_completion import CompletionItem

        return [CompletionItem(value) for value in self.choices if value.startswith(incomplete)]


class PrunerOptionDefault(click.Option):
    """A pruner constructor option (default None: the pruner's own), whose `--help`
    shows the pruner's default, read from the library when help is printed.

    Args:
        pruners: the registered pruners that take it; `--help` shows the first one's
            default, or each one's where they differ.
        option: the constructor option's name.
    """

    def __init__(self, param_decls: list[str], *, pruners: tuple[str, ...], option: str, **attributes: Any):
        super().__init__(param_decls, default=None, show_default=True, **attributes)
        self.pruners, self.pruner_option = pruners, option

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        from keras_prune.settings import pruner_option_default

        shown = copy.copy(self)  # this option, with the pruners' defaults, for --help only
        defaults = {pruner: pruner_option_default(pruner, self.pruner_option) for pruner in self.pruners}
        if len(set(defaults.values())) == 1:
            shown.default = defaults[self.pruners[0]]
        else:
            shown.show_default = ", ".join(f"{pruner} {value}" for pruner, value in defaults.items())
        return click.Option.get_help_record(shown, ctx)


_CRITERIA_WITH_DAMPING = ("taylor1", "taylor2", "taylor12", "l1", "l2", "emp", "sparsegpt")
_PRUNER_OPTIONS = (
    ("--probes", ("taylor2", "taylor12"), "probes", click.IntRange(min=1), "taylor2/taylor12: Hutchinson probes, or Gauss-Newton label draws, per scoring batch."),
    ("--hessian", ("taylor2", "taylor12"), "hessian", LibraryChoice("hessian estimate"), "taylor2/taylor12: Hessian-diagonal estimate (auto: gauss-newton for a sparse categorical cross-entropy loss, else hutchinson; docs/criteria.md)."),
    ("--damping", _CRITERIA_WITH_DAMPING, "damping", click.FloatRange(min=0),
     "taylor1/taylor2/taylor12/l1/l2/emp: weight of the prior in the weight's size (0: the plain, "
     "unscaled formula; docs/criteria.md). sparsegpt: Hessian damping, a fraction of its mean diagonal (> 0)."),
    ("--gate-penalty", ("l1", "l2"), "penalty", click.FloatRange(min=0), "l1/l2: coefficient of the penalty on the gates."),
    ("--gate-epochs", ("l1", "l2"), "epochs", click.IntRange(min=1), "l1/l2: passes over the scoring batches to learn the gates."),
    ("--emp-budget", ("emp",), "budget", click.IntRange(min=1), "emp: weight-image evaluations per layer; a layer of N weights is scored on budget/N images at most."),
    ("--block-size", ("sparsegpt",), "block_size", click.IntRange(min=1), "sparsegpt: input columns pruned and updated together."),
    ("--per-output/--whole-kernel", ("wanda",), "per_output", bool, "wanda: compare weights within each output, or across the whole kernel."),
    ("--dense-targets/--pruned-targets", ("sparsegpt", "wanda"), "dense_targets", bool,
     "sparsegpt/wanda: fit each layer to the dense model's outputs, or (the papers' form) to its own outputs on the pruned inputs."),
    ("--owl", ("sparsegpt", "wanda"), "owl", click.FloatRange(0, 0.5), "sparsegpt/wanda: OWL's spread of layer fractions (0: off)."),
    ("--owl-threshold", ("sparsegpt", "wanda"), "owl_threshold", click.FloatRange(min=0, min_open=True), "sparsegpt/wanda: OWL's outlier threshold M (x the mean |w| x input norm)."),
)
"""The pruner constructor options the CLI offers: (flag, the pruners that take it,
the constructor option, type, help)."""


def _parameter(flag: str) -> str:
    return flag.split("/")[0].lstrip("-").replace("-", "_")


def _stack(func: Callable, options: list[Callable]) -> Callable:
    """`func` under `options`, the first listed first in `--help`."""
    for option in reversed(options):
        func = option(func)
    return func


def pruner_options(func: Callable) -> Callable:
    """`--probes`, `--damping`, `--block-size`, ... (`_PRUNER_OPTIONS`): constructor
    options of the pruners; `criterion_options` collects the given ones."""
    return _stack(func, [
        click.option(flag, _parameter(flag), cls=PrunerOptionDefault, pruners=pruners, option=option, type=kind, help=text)
        for flag, pruners, option, kind, text in _PRUNER_OPTIONS
    ])


def criterion_options(params: dict[str, Any]) -> dict[str, Any]:
    """The pruner constructor options given on the command line (those of
    `pruner_options` not left out), by constructor option name."""
    given = {option: params[_parameter(flag)] for flag, _, option, _, _ in _PRUNER_OPTIONS}
    return {option: value for option, value in given.items() if value is not None}


def pruner_option(help: str) -> Callable:
    """`--pruner NAME` (alias `-pruner`): a registered criterion or method, or an alias."""
    return click.option("--pruner", "-pruner", type=LibraryChoice("pruner"), default="magnitude", show_default=True, help=help)


def unsafe_option(func: Callable) -> Callable:
    """`--unsafe`: load models that contain code (Lambda layers)."""
    return click.option("--unsafe", is_flag=True, help="Allow models that contain code (Lambda layers).")(func)


def device_options(func: Callable) -> Callable:
    """`--gpu IDS` and `--cpu`: where to run."""
    return _stack(func, [
        click.option("--gpu", default=None, metavar="IDS", help="Run on these GPUs (e.g. 0 or 0,1); several train under MirroredStrategy."),
        click.option("--cpu", is_flag=True, help="Run on the CPU even if there is a GPU."),
    ])


def retraining_options(what: str) -> Callable:
    """`--retrain` (alias `-reTrain`), `--epochs` (`-nEpochs`), `--lr` (`-LR`) and
    `--momentum`: whether and how to retrain after each pruning step.

    Args:
        what: the help text of `--retrain`.
    """

    def decorate(func: Callable) -> Callable:
        return _stack(func, [
            click.option("--retrain", "-reTrain", is_flag=True, help=what),
            click.option("--epochs", "-nEpochs", type=click.IntRange(min=0), default=1, show_default=True, help="Retraining epochs after each step."),
            click.option("--lr", "-LR", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True, help="SGD learning rate for retraining."),
            click.option("--momentum", "-momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="SGD momentum for retraining."),
        ])

    return decorate


def log_options(log_dir: Path | None, job_id: str, what: str) -> Callable:
    """`--log-dir DIR` (alias `-logDir`), `--job-id ID` (`-jobID`) and `--log-test`.

    Args:
        log_dir: the default folder; None: no logs unless given.
        job_id: the default file-name prefix.
        what: the help text of `--log-dir`.
    """

    def decorate(func: Callable) -> Callable:
        return _stack(func, [
            click.option("--log-dir", "-logDir", type=click.Path(file_okay=False, path_type=Path), default=log_dir, show_default=log_dir is not None, help=what),
            click.option("--job-id", "-jobID", default=job_id, show_default=True, help="Prefix of the log file names."),
            click.option("--log-test", is_flag=True, help="Also measure the test split after every step (logged; decisions never use it)."),
        ])

    return decorate


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
