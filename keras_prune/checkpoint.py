"""Checkpoints of a pruning run, so that a crash loses at most the step in progress.

After every epoch at which a pruning step closed, `RunCheckpoint` writes into its
folder, in this order and each atomically:

- ``epoch-NNNN.keras``: the wrapped model with its masks, gates and optimizer state;
- ``checkpoint.json``: the epoch to continue at, the name of that model file, the
  pruning schedule's state (`IterativePruning.state`) and the run's options;

then removes older model files. ``checkpoint.json`` therefore always names a complete
model file, whenever the process dies. `read_checkpoint` reads them back for
`keras-prune run --resume`, which loads the model with `keras_prune.storage.load_model`
(``compile=True``: optimizer state included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import keras

from keras_prune.errors import InputError
from keras_prune.storage import atomic_write_text, make_folder, save_model

if TYPE_CHECKING:
    from keras_prune.callbacks import IterativePruning

CHECKPOINT_FILE = "checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    """What `read_checkpoint` found.

    Attributes:
        epoch: the number of epochs done; training continues at this epoch.
        model_path: the wrapped model saved at that epoch.
        pruning: the schedule's state, for `IterativePruning.resume_from`.
        run: the options of the run that wrote it.
    """

    epoch: int
    model_path: Path
    pruning: dict[str, Any]
    run: dict[str, Any]


class RunCheckpoint(keras.callbacks.Callback):
    """Saves model, optimizer and schedule state whenever a pruning step has closed.

    Put it after the `IterativePruning` callback in the callback list.

    Args:
        folder: where to write; created if missing.
        pruning: the run's `IterativePruning` callback.
        run: the run's options, stored so that a resume can check they match.
    """

    def __init__(self, folder: str | Path, pruning: "IterativePruning", run: Mapping[str, Any]):
        super().__init__()
        self.folder = make_folder(folder, "checkpoint folder")
        self.pruning = pruning
        self.run = dict(run)
        self._saved_results = None

    def on_train_begin(self, logs=None):
        self._saved_results = len(self.pruning.results)

    def on_epoch_end(self, epoch, logs=None):
        if len(self.pruning.results) == self._saved_results:
            return
        name = f"epoch-{epoch + 1:04d}.keras"
        save_model(self.model, self.folder / name)
        record = {"epoch": epoch + 1, "model": name, "pruning": self.pruning.state(), "run": self.run}
        atomic_write_text(self.folder / CHECKPOINT_FILE, json.dumps(record, indent=1) + "\n")
        for old in self.folder.glob("epoch-*.keras"):
            if old.name != name:
                old.unlink()
        self._saved_results = len(self.pruning.results)


def read_checkpoint(folder: str | Path) -> Checkpoint:
    """The checkpoint in `folder`.

    Raises:
        InputError: there is none, or it is unreadable.
    """
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise InputError(f"no checkpoint to resume from: {path} does not exist")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        checkpoint = Checkpoint(
            epoch=int(record["epoch"]),
            model_path=Path(folder) / record["model"],
            pruning=dict(record["pruning"]),
            run=dict(record["run"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read checkpoint {path}: {exc}") from None
    if not checkpoint.model_path.is_file():
        raise InputError(f"checkpoint {path} names {checkpoint.model_path}, which does not exist")
    return checkpoint

