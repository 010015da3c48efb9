"""The `keras-prune` command group: error handling and the commands it holds.

Every `KerasPruneError` becomes one line on stderr and its exit code (2 for bad
input, 1 for a runtime failure); anything unexpected becomes one line and exit 1.
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import os

# Before anything imports TensorFlow: keep its C++ start-up chatter off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click  # noqa: E402

from keras_prune_cli import commands  # noqa: E402


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with stderr muted: its C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # finds (or fails to find) CUDA now, muted
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class App(click.Group):
    """A click group that turns keras-prune errors into one-line messages."""

    def invoke(self, ctx: click.Context):
        _import_tensorflow_quietly()
        from keras_prune.errors import KerasPruneError

        debug = bool(ctx.params.get("debug")) or bool(os.environ.get("KERAS_PRUNE_DEBUG"))
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:  # a subcommand's bad option: one line, not click's four
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"keras-prune: error: {exc.format_message()} (see '{where} --help')", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KerasPruneError as exc:
            if debug:
                raise
            click.echo(f"keras-prune: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("keras-prune: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # a bug or a library failure: still one line
            if debug:
                raise
            message = " ".join(str(exc).split())[:400] or type(exc).__name__
            click.echo(
                f"keras-prune: error: {type(exc).__name__}: {message} "
                "(run with --debug for the traceback)",
                err=True,
            )
            ctx.exit(1)


@click.group(cls=App, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="keras-prune")
def main(debug: bool) -> None:
    """Prune Keras 3 models: wrap, score, prune, retrain, report and save.

    Start with `keras-prune layers` to see the model's layers and their 1-based
    indices, then `keras-prune run` to prune the ones you choose.
    """


for command in commands.ALL:
    main.add_command(command)
