"""`keras-prune plot`: draw a run's or a sensitivity sweep's log as a PNG."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("log", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="The PNG to write. Default: the log's name with .png.")
@click.option("--metric", type=click.Choice(["accuracy", "error"]), default="error", show_default=True, help="What the y-axis shows.")
@click.option("--title", default=None, help="Figure title. Default: the log's file name.")
def plot(log, out, metric, title):
    """Draw error (or accuracy) against fraction pruned, one line per layer.

    LOG is a CSV written by `keras-prune run --log-dir` or `keras-prune
    sensitivity`, or the original tool's plotlog (LayerNo,Retained%,TestError).

    \b
    Example:
      keras-prune plot logs/localMain.csv --metric accuracy
    """
    from keras_prune.plotting import plot_log

    png = plot_log(log, out, metric=metric, title=title)
    click.echo(f"Wrote {png}")
