"""The errors keras-prune raises for bad input.

Every error a user can cause (a missing file, a bad fraction, a malformed conf) is a
`KerasPruneError`. Its message is one line that names what was wrong and what is
allowed; the CLI prints it without a traceback and exits with `exit_code`.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "InputError",
    "KerasPruneError",
    "ModelError",
    "NumericalError",
    "ScheduleError",
    "WriteError",
]


class KerasPruneError(Exception):
    """Base class of keras-prune's user-facing errors.

    Attributes:
        exit_code: the process exit status the CLI uses: 2 for bad usage or input
            the user gave, 1 for a failure while running.
    """

    exit_code = 1


class InputError(KerasPruneError, ValueError):
    """An argument, option or input file that is not acceptable."""

    exit_code = 2


class DataError(InputError):
    """A dataset file that is missing, truncated or malformed."""


class ModelError(InputError):
    """A model file or model that keras-prune cannot work with."""


class WriteError(KerasPruneError):
    """A file could not be written while running (a full disk, an I/O error)."""


class NumericalError(KerasPruneError):
    """A model holds NaN or Inf values where finite numbers are needed."""


class ScheduleError(KerasPruneError):
    """Training ended before a pruning schedule's last step."""


class BackendError(KerasPruneError):
    """A feature the active Keras backend (``KERAS_BACKEND``) does not offer, such as
    tf.distribute or TFLite export on JAX. The message names the backend."""

    exit_code = 2
