"""`keras-prune info`: what pruning buys on disk, dense model beside pruned model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from keras_prune_cli.common import model_option, print_report, unsafe_option

if TYPE_CHECKING:
    from keras_prune.export import FileSize, SizeReport


def _rows(report: "SizeReport") -> list[tuple[str, int | None]]:
    """(label, bytes) for each line of the table; None where a format does not apply."""

    def file(label: str, size: "FileSize | None") -> list[tuple[str, int | None]]:
        return [(label, size and size.raw), (f"{label}, gzip", size and size.gzip)]

    return [
        ("parameters", report.parameters),
        ("non-zero parameters", report.nonzeros),
        *file(".keras file", report.keras_file),
        *file(".keras file, Keras int8", report.keras_int8_file),
        *file("SavedModel variables/", report.savedmodel_variables),
        *file("TFLite float32", report.tflite_file),
        *file("TFLite float32 sparse", report.tflite_sparse_file),
        *file("TFLite float16", report.tflite_float16_file),
        *file("TFLite int8", report.tflite_int8_file),
        *file("TFLite int8 sparse", report.tflite_int8_sparse_file),
        ("float32 arrays (dense)", report.dense_bytes),
        ("bitmask + values", report.bitmask_bytes),
        ("relative-index CSR", report.relative_index_bytes),
    ]


def print_sizes(reports: dict[str, "SizeReport"]) -> None:
    """Prints size reports side by side (sizes in bytes), with dense/pruned ratios for two.

    A size that does not apply (Keras int8 for a model without Dense, EinsumDense or
    Embedding layers; TFLite for a model the converter refuses) is shown as "-",
    with the converter's reason below the table.

    Args:
        reports: column heading -> `keras_prune.export.SizeReport`; with two, the
            first is the dense model and a ratio column is added.
    """
    columns = {heading: _rows(report) for heading, report in reports.items()}
    labels = [label for label, _ in next(iter(columns.values()))]
    width = max(len(label) for label in labels) + 2
    header = f"{'sizes in bytes':<{width}}" + "".join(f"{h:>14}" for h in columns)
    click.echo(header + (f"{'dense/pruned':>14}" if len(columns) == 2 else ""))
    for i, label in enumerate(labels):
        values = [rows[i][1] for rows in columns.values()]
        line = f"{label:<{width}}" + "".join(f"{'-':>14}" if v is None else f"{v:>14,}" for v in values)
        if len(values) == 2 and i > 0:
            line += f"{values[0] / values[1]:>13.2f}x" if values[0] and values[1] else f"{'-':>14}"
        click.echo(line)
    for heading, report in reports.items():
        if report.tflite_error:
            click.echo(f"{heading}: no TFLite sizes: {report.tflite_error}")


def _describe_file(path: Path) -> str:
    from keras_prune.export import FileSize

    size = FileSize.of(path)
    return f"{path} ({size.raw:,} bytes, {size.gzip:,} gzip-compressed, as saved)"


@click.command()
@model_option("the shipped pruned lenet5 (saved_models/lenet5_pruned.keras)")
@click.option(
    "--dense",
    "dense_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The dense model to compare with (.keras). Default: the shipped lenet5 when "
    "-m is not given, otherwise none.",
)
@unsafe_option
def info(model_path, dense_path, unsafe):
    """Show parameters, non-zeros and file sizes (raw and gzip) of a pruned model.

    The files as given are measured as saved (a wrapped model holds masks and
    gates, a compiled one its optimizer state). Every other size is measured by
    exporting the stripped model to a temporary folder (removed afterwards):
    the .keras file, plain and after Keras' int8 quantization (Dense, EinsumDense
    and Embedding kernels), the SavedModel's variables, TFLite float32, float16 and
    int8 (dynamic range) with dense weight storage, float32 and int8 also with
    TFLite's sparse storage, and two compact sparse encodings of the weights (a
    bitmask, and Deep Compression's relative-index CSR). "-" marks a size that does
    not apply. With a dense model the ratio column shows what pruning buys on disk.
    """
    from keras_prune.export import size_report
    from keras_prune.report import sparsity_report
    from keras_prune.resources import PRETRAINED_MODEL, PRUNED_MODEL
    from keras_prune.storage import load_model

    if model_path is None:
        model_path, dense_path = PRUNED_MODEL, dense_path or PRETRAINED_MODEL
    model = load_model(model_path, safe_mode=not unsafe)
    reports = {}
    if dense_path is not None:
        reports["dense"] = size_report(load_model(dense_path, safe_mode=not unsafe))
        click.echo(f"Dense: {_describe_file(dense_path)}")
    click.echo(f"Pruned: {_describe_file(model_path)}")
    print_report(sparsity_report(model))
    reports["pruned"] = size_report(model)
    print_sizes(reports)
