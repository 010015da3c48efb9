"""`keras-prune export`: a pruned model, stripped, for serving (SavedModel, TFLite, .keras)."""

from __future__ import annotations

from pathlib import Path

import click

from keras_prune_cli.common import data_options, load_data, model_option, unsafe_option


@click.command()
@model_option("the shipped pruned lenet5 (saved_models/lenet5_pruned.keras)")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (created if missing); for a SavedModel, TensorFlow Serving's model base path.",
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    default=("savedmodel",),
    show_default=True,
    help="savedmodel (OUT/NAME/VERSION/), tflite (OUT/NAME.tflite) or keras "
    "(OUT/NAME.keras); repeat the option for several.",
)
@click.option(
    "--name", default=None, help="Model name in the output paths. Default: the model file's name without .keras."
)
@click.option(
    "--version", type=int, default=1, show_default=True, help="SavedModel version folder, a positive integer."
)
@click.option(
    "--quantize",
    "quantization",
    default="float32",
    show_default=True,
    help="TFLite weights: float32, float16, dynamic (int8 weights, float activations) or "
    "int8 (full integer: int8 weights and activations, calibrated on training images; "
    "the signature stays float32). Written as NAME.tflite or NAME_MODE.tflite.",
)
@click.option(
    "--calibration-images",
    type=click.IntRange(min=1),
    default=None,
    help="With --quantize int8: how many training images (the first ones of the training "
    "split of --data-dir/--dataset, default the shipped MNIST) set the activations' ranges. "
    "Default: 500.",
)
@data_options
@click.option(
    "--keras-quantize",
    "keras_quantization",
    default=None,
    help="int8: write the .keras file and the SavedModel with Keras' own int8 quantization "
    "(model.quantize: Dense, EinsumDense and Embedding kernels). Not with --format tflite.",
)
@click.option(
    "--sparse-tflite",
    is_flag=True,
    help="Store sparse TFLite weights in TFLite's sparse format (smaller file, same outputs).",
)
@click.option("--report", is_flag=True, help="Also print the size report (as `keras-prune info`).")
@click.option(
    "--dense",
    "dense_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --report: the dense model to compare with (.keras).",
)
@unsafe_option
def export(
    model_path, out_dir, formats, name, version, quantization, calibration_images, data_dir, dataset,
    keras_quantization, sparse_tflite, report, dense_path, unsafe,
):
    """Strip the pruning wrappers and write the model for deployment.

    The SavedModel's `serving_default` signature takes `images` (float32,
    batch x 28 x 28 x 1 for LeNet-5) and returns `logits` and `probabilities`
    (float32, batch x 10). It loads with plain `tf.saved_model.load`, TensorFlow
    Serving and `saved_model_cli`, without keras-prune.

    \b
    Examples:
      keras-prune export --out serving                     # serving/lenet5_pruned/1/
      keras-prune export -m pruned.keras --out dist --format tflite --quantize float16
      keras-prune export --out dist --format tflite --quantize int8 --sparse-tflite
      keras-prune export --out dist --format keras --keras-quantize int8
      keras-prune export --out serving --version 2 --report
    """
    from keras_prune.errors import InputError
    from keras_prune.export import CALIBRATION_IMAGES, describe_signature, export_model, size_report
    from keras_prune.resources import PRUNED_MODEL
    from keras_prune.storage import load_model

    from keras_prune_cli.commands.info import print_sizes

    if dense_path is not None and not report:
        raise InputError("--dense goes with --report")
    calibrating = quantization == "int8"
    if not calibrating and (calibration_images or data_dir or dataset):
        raise InputError("--calibration-images, --data-dir and --dataset go with --quantize int8")
    model_path = model_path or PRUNED_MODEL
    model = load_model(model_path, safe_mode=not unsafe)
    calibration = None
    if calibrating:
        data = load_data(data_dir, dataset)
        count = calibration_images or CALIBRATION_IMAGES
        calibration = next(iter(data.train(batch_size=count, shuffle=False)))[0].numpy()
        click.echo(f"Calibrating int8 on {len(calibration)} training images")
    written = export_model(
        model, out_dir, formats, name=name or model_path.stem, version=version,
        quantization=quantization, sparse_tflite=sparse_tflite, calibration=calibration,
        keras_quantization=keras_quantization,
    )
    for fmt, path in written.items():
        click.echo(f"{fmt}: {path}")
    click.echo(f"signature {describe_signature(model)}")
    if report:
        reports = {}
        if dense_path is not None:
            reports["dense"] = size_report(load_model(dense_path, safe_mode=not unsafe))
        reports["pruned"] = size_report(model)
        print_sizes(reports)
