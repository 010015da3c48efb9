"""`keras-prune shrink`: remove pruned units and save a genuinely smaller dense model."""

from __future__ import annotations

from pathlib import Path

import click

from keras_prune_cli.common import unsafe_option

CHECK_EXAMPLES = 32


def _largest_difference(model, small) -> float | None:
    """Largest output difference of the two models on random inputs in [0, 1), or None
    where the model's inputs are not float tensors of a known shape."""
    import keras
    import numpy as np

    inputs = model.inputs
    if not all(
        "float" in str(t.dtype) and all(d is not None for d in t.shape[1:]) for t in inputs
    ):
        return None
    rng = np.random.default_rng(0)
    x = [rng.random((CHECK_EXAMPLES, *t.shape[1:])).astype(str(t.dtype)) for t in inputs]
    x = x[0] if len(x) == 1 else x
    pairs = zip(keras.tree.flatten(model(x, training=False)), keras.tree.flatten(small(x, training=False)))
    return max(float(np.max(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b)))) for a, b in pairs)


@click.command()
@click.option(
    "-m",
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The pruned model file (.keras) to shrink.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to save the shrunk model (.keras). Default: <model>_shrunk.keras here.",
)
@click.option(
    "--fold-batchnorm",
    is_flag=True,
    help="Also fold BatchNormalization layers into the Dense/Conv layers they follow "
    "(a serving model: same outputs at inference, no normalisation layers to train).",
)
@unsafe_option
def shrink(model_path, out, fold_batchnorm, unsafe):
    """Remove pruned neurons and filters from a model and save the smaller model.

    A unit (Dense neuron, Conv filter) whose weights are all pruned is removed with
    the matching inputs of the layers that consume it; prune with `keras-prune run
    --granularity filter` first. The shrunk model is a plain Keras model that
    computes the same outputs: this is checked on random inputs, and the largest
    difference is printed. Pruned units that cannot be removed safely are kept and
    listed with the reason.

    \b
    Example:
      keras-prune run -l conv2,fc1 -p 0.75 --granularity filter --retrain --out p.keras
      keras-prune shrink -m p.keras --out small.keras
    """
    from keras_prune.shrink import shrink_with_report
    from keras_prune.storage import load_model, save_model

    out = out or Path(f"{model_path.stem}_shrunk.keras")
    model = load_model(model_path, safe_mode=not unsafe)
    small, report = shrink_with_report(model, fold_batchnorm=fold_batchnorm)
    click.echo(f"Model: {model_path}")
    click.echo(str(report))
    diff = _largest_difference(model, small)
    if diff is not None:
        click.echo(f"Check: largest output difference {diff:.3g} on {CHECK_EXAMPLES} random inputs")
    save_model(small, out)
    click.echo(f"Saved shrunk model to {out}")
