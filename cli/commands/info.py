"""`keras-prune info`: what pruning buys on disk, dense model beside pruned model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from keras_prune_cli.common import model_option, print_report

if TYPE_CHECKING:
    from keras_prune.export import SizeReport


def _rows(report: "SizeReport") -> list[tuple[str, int]]:
    return [
        ("parameters", report.parameters),
        ("non-zero parameters", report.nonzeros),
        (".keras file", report.keras_file.raw),
        (".keras file, gzip", report.keras_file.gzip),
        ("SavedModel variables/", report.savedmodel_variables.raw),
        ("SavedModel variables/, gzip", report.savedmodel_variables.gzip),
        ("TFLite float32", report.tflite_file.raw),
        ("TFLite float32, gzip", report.tflite_file.gzip),
        ("TFLite float32 sparse", report.tflite_sparse_file.raw),
        ("TFLite float32 sparse, gzip", report.tflite_sparse_file.gzip),
        ("float32 arrays (dense)", report.dense_bytes),
        ("bitmask + values", report.bitmask_bytes),
        ("relative-index CSR", report.relative_index_bytes),
    ]


def print_sizes(reports: dict[str, "SizeReport"]) -> None:
    """Prints size reports side by side (sizes in bytes), with dense/pruned ratios for two.

    Args:
        reports: column heading -> `keras_prune.export.SizeReport`; with two, the
            first is the dense model and a ratio column is added.
    """
    columns = {heading: _rows(report) for heading, report in reports.items()}
    labels = [label for label, _ in next(iter(columns.values()))]
    header = f"{'sizes in bytes':<28}" + "".join(f"{h:>14}" for h in columns)
    click.echo(header + (f"{'dense/pruned':>14}" if len(columns) == 2 else ""))
    for i, label in enumerate(labels):
        values = [rows[i][1] for rows in columns.values()]
        line = f"{label:<28}" + "".join(f"{v:>14,}" for v in values)
        if len(values) == 2 and i > 0:
            line += f"{values[0] / values[1]:>13.2f}x" if values[1] else f"{'-':>14}"
        click.echo(line)


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
@click.option("--unsafe", is_flag=True, help="Allow models that contain code (Lambda layers).")
def info(model_path, dense_path, unsafe):
    """Show parameters, non-zeros and file sizes (raw and gzip) of a pruned model.

    The files as given are measured as saved (a wrapped model holds masks and
    gates, a compiled one its optimizer state). Every other size is measured by
    exporting the stripped model to a temporary folder:
    the .keras file, the SavedModel's variables, TFLite with dense and with sparse
    weight storage, and two compact sparse encodings of the weights (a bitmask, and
    Deep Compression's relative-index CSR). With a dense model the ratio column
    shows what pruning buys on disk.
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
