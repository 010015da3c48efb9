"""Devices and tf.distribute: which devices TensorFlow uses, and how replicas agree.

`select_devices` must run before TensorFlow initialises its devices (before the first
tensor or variable is made). Listing the physical devices
(`tf.config.list_physical_devices`, which the CLI does at start-up) does not
initialise them, so selecting afterwards still works.

- ``cpu=True`` hides every GPU.
- ``gpus="0,2"`` keeps only those GPUs; with several, training runs under
  `tf.distribute.MirroredStrategy` (the batch is split between them).
- ``multi_worker=True`` runs under `tf.distribute.MultiWorkerMirroredStrategy`,
  configured by the ``TF_CONFIG`` environment variable (docs/iterative.md has a
  two-worker example).
- Otherwise TensorFlow's default: the first GPU if there is one, else the CPU.

Pruning decisions must be identical on every replica and worker; `broadcast_first`
makes them so by sending the first replica's arrays to all.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np

from keras_prune.errors import BackendError, InputError


@dataclass(frozen=True)
class DeviceChoice:
    """What `select_devices` chose.

    Attributes:
        strategy: the tf.distribute strategy to build and train the model under.
        description: one line for the user, e.g. ``"GPU:0, GPU:1 (MirroredStrategy)"``.
        chief: whether this process writes files (always, except non-chief workers
            of a multi-worker run).
        worker: this worker's index in a multi-worker run, else 0.
    """

    strategy: object
    description: str
    chief: bool = True
    worker: int = 0


def parse_gpu_ids(text: str) -> list[int]:
    """Parses ``"0,1"`` into ``[0, 1]``.

    Raises:
        InputError: empty items, non-integers, negatives or duplicates.
    """
    items = [item.strip() for item in str(text).split(",")]
    if not items or any(not item.isdigit() for item in items):
        raise InputError(f"--gpu takes comma-separated GPU numbers such as 0 or 0,1; got '{text}'")
    ids = [int(item) for item in items]
    if len(set(ids)) != len(ids):
        raise InputError(f"--gpu lists a GPU more than once: '{text}'")
    return ids


def _device_names(devices) -> str:
    return ", ".join(d.name.replace("/physical_device:", "") for d in devices) or "none"


def _multi_worker_choice():
    import tensorflow as tf

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise InputError(
            "a multi-worker run needs the TF_CONFIG environment variable "
            '(e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}})'
        )
    try:
        config = json.loads(raw)
        cluster = config["cluster"]
        kind, index = config["task"]["type"], int(config["task"]["index"])
        tasks = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"TF_CONFIG is not a valid cluster configuration: {exc!r}") from None
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    chief = kind == "chief" or ("chief" not in cluster and index == 0)
    description = (
        f"{tasks} workers (MultiWorkerMirroredStrategy), this is {kind} {index}, "
        f"{strategy.num_replicas_in_sync} replicas in sync"
    )
    return DeviceChoice(strategy, description, chief=chief, worker=index)


def select_devices(gpus: str | None = None, cpu: bool = False, multi_worker: bool = False) -> DeviceChoice:
    """Makes only the chosen devices visible to TensorFlow and picks a strategy.

    Call it before anything creates a tensor or a variable.

    Args:
        gpus: comma-separated GPU numbers (``"0"``, ``"0,1"``); None keeps the default.
        cpu: hide all GPUs and run on the CPU.
        multi_worker: train under MultiWorkerMirroredStrategy as TF_CONFIG describes.

    Returns:
        The strategy and a description of the devices.

    Raises:
        InputError: contradictory options, a GPU that does not exist (the message
            names the devices found), a missing TF_CONFIG, or devices that
            TensorFlow has already initialised.

    Example:

    ```python
    choice = select_devices(gpus="0,1")
    with choice.strategy.scope():
        model = keras_prune.prunable(keras_prune.load_model("lenet5.keras"))
    ```
    """
    import tensorflow as tf

    if cpu and gpus is not None:
        raise InputError("give --cpu or --gpu, not both")
    if keras.backend.backend() != "tensorflow":
        return _other_backend_choice(gpus, cpu, multi_worker)
    physical_gpus = tf.config.list_physical_devices("GPU")
    try:
        if cpu:
            tf.config.set_visible_devices([], "GPU")
        elif gpus is not None:
            ids = parse_gpu_ids(gpus)
            missing = [i for i in ids if i >= len(physical_gpus)]
            if missing:
                found = _device_names(tf.config.list_physical_devices())
                raise InputError(
                    f"no GPU {', '.join(map(str, missing))}: TensorFlow found "
                    f"{len(physical_gpus)} GPU(s); devices found: {found}"
                )
            tf.config.set_visible_devices([physical_gpus[i] for i in ids], "GPU")
    except RuntimeError as exc:
        raise InputError(f"cannot select devices after TensorFlow has initialised them: {exc}") from None
    if multi_worker:
        return _multi_worker_choice()
    if gpus is not None and len(parse_gpu_ids(gpus)) > 1:
        strategy = tf.distribute.MirroredStrategy()
        names = ", ".join(d.name for d in tf.config.list_logical_devices("GPU"))
        return DeviceChoice(strategy, f"{names} (MirroredStrategy)")
    strategy = tf.distribute.get_strategy()
    if cpu or not physical_gpus:
        return DeviceChoice(strategy, "CPU")
    return DeviceChoice(strategy, "GPU:0" if gpus is None else f"GPU:{gpus.strip()}")


def _other_backend_choice(gpus: str | None, cpu: bool, multi_worker: bool) -> DeviceChoice:
    """Devices on a backend other than TensorFlow: its own default devices, or the CPU.

    tf.distribute is TensorFlow's: several GPUs or workers are refused with a
    `BackendError`; the strategy is TensorFlow's default one, which does nothing.
    """
    import tensorflow as tf

    backend = keras.backend.backend()
    if multi_worker or gpus is not None:
        option = "--multi-worker" if multi_worker else "--gpu"
        raise BackendError(
            f"{option} picks devices through tf.distribute, which needs the tensorflow backend; "
            f"KERAS_BACKEND is '{backend}' (choose its devices with CUDA_VISIBLE_DEVICES, or give --cpu)"
        )
    if backend == "jax":
        import jax

        if cpu:
            jax.config.update("jax_platforms", "cpu")
        kinds = sorted({d.platform.upper() for d in jax.devices()})
        description = f"{', '.join(kinds)} ({backend})"
    else:
        description = f"{'CPU' if cpu else 'default devices'} ({backend})"
    return DeviceChoice(tf.distribute.get_strategy(), description)


def strategy_of(model: keras.Model):
    """The tf.distribute strategy `model` was built under; TensorFlow's default (which
    does nothing) on other backends, whose models have none."""
    import tensorflow as tf

    return getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()


def is_distributed(strategy) -> bool:
    """Whether `strategy` has more than one replica or spans several workers."""
    import tensorflow as tf

    return strategy is not None and (
        strategy.num_replicas_in_sync > 1 or isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    )


def broadcast_first(strategy, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The first replica's `arrays` (of the first worker), on every replica and worker.

    Every replica and worker must call it at the same point with arrays of the same
    shapes and dtypes (a collective all-reduce runs underneath).

    Args:
        strategy: the tf.distribute strategy the model trains under.
        arrays: this process's values.

    Returns:
        The values of replica 0, as numpy arrays.

    Example:

    ```python
    masks = broadcast_first(strategy, layer.mask_arrays())
    layer.set_mask(masks)
    ```
    """
    import tensorflow as tf

    if not is_distributed(strategy) or not arrays:
        return [np.asarray(a) for a in arrays]
    values = [tf.constant(np.asarray(a, np.float64)) for a in arrays]
    result = _broadcaster(strategy)(values)
    return [
        np.asarray(strategy.experimental_local_results(r)[0].numpy(), dtype=np.asarray(a).dtype)
        for r, a in zip(result, arrays)
    ]


@functools.lru_cache(maxsize=None)
def _broadcaster(strategy):
    """A tf.function, one per strategy, that all-reduces replica 0's values (others add 0)."""
    import tensorflow as tf

    def keep_first(parts):
        context = tf.distribute.get_replica_context()
        keep = tf.equal(context.replica_id_in_sync_group, 0)
        return context.all_reduce("sum", [tf.where(keep, p, tf.zeros_like(p)) for p in parts])

    return tf.function(lambda parts: strategy.run(keep_first, args=(parts,)), reduce_retracing=True)
