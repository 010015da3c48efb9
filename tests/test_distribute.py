"""Devices and tf.distribute: device selection, MirroredStrategy over two logical CPUs,
and MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1.

Logical devices and multi-worker collectives must be set up before TensorFlow
initialises, so those tests run their work in fresh Python processes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from keras_prune_cli.main import main

ROOT = Path(__file__).resolve().parent.parent

# A tiny classifier on synthetic data, shared by the scripts below.
COMMON = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf

    def data():
        rng = __import__("numpy").random.default_rng(0)
        x = rng.normal(size=(512, 16)).astype("float32")
        y = (x @ rng.normal(size=(16, 4))).argmax(1).astype("int32")
        return x[:384], y[:384], x[384:], y[384:]

    def build():
        import keras
        import keras_prune as kp
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="tanh", name="hidden"),
                                  keras.layers.Dense(4, name="out")])
        model = kp.prunable(model)
        kp.training.compile_classifier(model, lr=0.05, momentum=0.9)
        return model

    def digest(model):
        import hashlib
        return hashlib.sha1(b"".join(v.numpy().tobytes() for v in model.weights)).hexdigest()
    """
)

MIRRORED = COMMON + textwrap.dedent(
    """
    # As the CLI does at start-up: list the devices, which must not initialise them.
    tf.config.list_physical_devices()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_prune.devices import select_devices
    select_devices(cpu=True)  # still allowed: nothing is initialised yet
    import numpy as np
    from keras_prune.callbacks import IterativePruning
    from keras_prune.schedules import Linear

    x, y, xv, yv = data()
    report = {}
    for name, strategy in [("single", tf.distribute.OneDeviceStrategy("/cpu:0")),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
        with strategy.scope():
            model = build()
        steps = []
        pruning = IterativePruning({"hidden": 0.6, "out": 0.5}, Linear(3), validation_data=(xv, yv),
                                   on_step=lambda r: steps.append([r.step, r.layer, r.mask_digest, r.retained]))
        model.fit(x, y, batch_size=64, epochs=pruning.planned_epochs, callbacks=[pruning], verbose=0, shuffle=False)
        report[name] = {"replicas": strategy.num_replicas_in_sync, "steps": steps,
                        "kernel": model.get_layer("hidden").layer.kernel.numpy().tolist(),
                        "error": pruning.results[-1].validation.error}
    json.dump(report, sys.stdout)
    """
)

WORKER = COMMON + textwrap.dedent(
    """
    from keras_prune.devices import select_devices
    choice = select_devices(multi_worker=True)  # TF_CONFIG names this worker
    import numpy as np
    from keras_prune.criteria import Criterion, register_criterion
    from keras_prune.data import Dataset
    from keras_prune.experiment import RunSettings, run_pruning
    from keras_prune.plan import Plan

    @register_criterion("worker-noise")
    class WorkerNoise(Criterion):
        \"\"\"Scores that differ on every worker: only the broadcast makes the masks agree.\"\"\"

        def score(self, layers, model=None, data=None):
            rng = np.random.default_rng(1000 + choice.worker)
            return {l: [rng.random(v.shape) for v in l.pruned_variables] for l in layers}

    x, y, xv, yv = data()
    dataset = Dataset("synthetic", x, y, xv, yv, xv, yv)
    plain = build()
    steps = []
    settings = RunSettings(criterion="worker-noise", iterations=3, retrain=True, epochs=1, batch_size=64, lr=0.05)
    pruned, _ = run_pruning(plain, Plan(("hidden", "out"), (0.6, 0.5)), dataset, settings, strategy=choice.strategy,
                            on_step=lambda r: steps.append([r.step, r.layer, r.mask_digest, r.retained, r.validation.error]))
    with open(sys.argv[1], "w") as f:
        json.dump({"worker": choice.worker, "chief": choice.chief, "replicas": choice.strategy.num_replicas_in_sync,
                   "steps": steps, "weights": digest(pruned)}, f)
    """
)


# The one training loop (`keras_prune.training.fit`) on a model compiled with more than
# the plain cross-entropy (an L2 kernel regulariser) and a metric: run as two workers
# (TF_CONFIG set) or as one process on one device.
FIT = COMMON + textwrap.dedent(
    """
    if "TF_CONFIG" in os.environ:
        from keras_prune.devices import select_devices
        strategy = select_devices(multi_worker=True).strategy
    else:
        strategy = tf.distribute.get_strategy()
    import keras
    import keras_prune as kp
    from keras_prune.data import Dataset
    from keras_prune.training import fit

    x, y, xv, yv = data()
    dataset = Dataset("synthetic", x, y, xv, yv, xv, yv)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = kp.prunable(keras.Sequential([
            keras.Input((16,)),
            keras.layers.Dense(32, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.01), name="hidden"),
            keras.layers.Dense(4, name="out")]))
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    kp.prune(model, {"hidden": 0.5})
    x0, y0 = next(iter(dataset.epochs(64, 0, 0, 1)))  # the first batch fit sees
    logits = model(x0, training=True)  # the regulariser's loss is collected on a call
    expected = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y0, logits)) + float(sum(model.losses))

    class FirstBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0 and not hasattr(self, "loss"):
                self.loss = float(logs["loss"])

    first = FirstBatch()
    history = fit(model, dataset, epochs=2, batch_size=64, seed=0, validation=True, callbacks=[first], verbose=0)
    with open(sys.argv[1], "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync, "first_batch_loss": first.loss, "expected": expected,
                   "history": history.history, "kernel": model.get_layer("hidden").layer.kernel.numpy().tolist()}, f)
    """
)


def python(script: str, *args: str, env=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


PORT_TAKEN = "Could not start gRPC server"
"""What a worker says when its port was taken between `free_ports` and its start."""


def run_workers(script: str, tmp_path: Path, count: int = 2, attempts: int = 3, timeout: float = 420) -> list[dict]:
    """Runs `script` as `count` workers of one cluster on 127.0.0.1 and returns the JSON
    report each writes to the path in its argv[1].

    `free_ports` cannot hold the ports it finds, so another process may take one before
    a worker binds it; such a cluster (and only such) is started again on new ports.
    Any other failure, or a worker still running after `timeout` seconds (on a loaded
    machine), fails the test with the workers' last lines of stderr.
    """
    for _ in range(attempts):
        cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(count)]}
        workers = []
        for index in range(count):
            config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            workers.append(python(script, str(tmp_path / f"worker{index}.json"), env={"TF_CONFIG": config}))
        errors = []
        try:
            for process in workers:
                try:
                    errors.append(process.communicate(timeout=timeout)[1])
                except subprocess.TimeoutExpired:
                    if any(PORT_TAKEN in err for err in errors):
                        break  # a worker that could not start leaves the others waiting for it
                    raise
        finally:
            for process in workers:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
        if any(PORT_TAKEN in err for err in errors):
            continue
        for process, err in zip(workers, errors):
            assert process.returncode == 0, "\n".join(line[:300] for line in err.splitlines()[-60:])
        return [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(count)]
    raise AssertionError(f"no free ports for {count} workers in {attempts} attempts")


def test_mirrored_over_two_logical_cpus_gives_the_masks_of_one_device():
    process = python(MIRRORED)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    report = json.loads(out)
    single, mirrored = report["single"], report["mirrored"]
    assert single["replicas"] == 1 and mirrored["replicas"] == 2
    assert len(single["steps"]) == 6
    assert mirrored["steps"] == single["steps"]  # same layers, fractions and identical masks at every step
    np.testing.assert_allclose(mirrored["kernel"], single["kernel"], atol=1e-5)


def test_multi_worker_masks_are_identical_on_both_workers(tmp_path):
    reports = run_workers(WORKER, tmp_path)
    assert [r["worker"] for r in reports] == [0, 1] and [r["chief"] for r in reports] == [True, False]
    assert reports[0]["replicas"] == 2
    steps = [r["steps"] for r in reports]
    assert len(steps[0]) == 6 and [s[:2] for s in steps[0][:2]] == [[1, "hidden"], [1, "out"]]
    # Every step: the same masks (digests), sparsity and validation figures on both workers.
    assert steps[0] == steps[1]
    assert reports[0]["weights"] == reports[1]["weights"]


def test_one_training_loop_multi_worker_computes_the_loss_and_metrics_of_one_device(tmp_path):
    single = python(FIT, str(tmp_path / "single.json"))
    _, err = single.communicate(timeout=420)
    assert single.returncode == 0, err[-3000:]
    one = json.loads((tmp_path / "single.json").read_text())
    workers = run_workers(FIT, tmp_path)
    assert one["replicas"] == 1 and [w["replicas"] for w in workers] == [2, 2]
    # The first batch's loss is the compiled one (cross-entropy plus the regulariser),
    # over the global batch: the same on one device and on two workers.
    assert one["first_batch_loss"] == pytest.approx(one["expected"], rel=1e-6)
    for worker in workers:
        assert worker["first_batch_loss"] == pytest.approx(one["expected"], rel=1e-6)
        # Same logs as Keras' fit: loss and compiled metric, for training and validation.
        assert sorted(worker["history"]) == sorted(one["history"]) == ["accuracy", "loss", "val_accuracy", "val_loss"]
        for name, values in one["history"].items():
            np.testing.assert_allclose(worker["history"][name], values, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(worker["kernel"], one["kernel"], atol=1e-5)
    assert workers[0]["history"] == workers[1]["history"]


def test_asking_for_a_gpu_that_does_not_exist_names_the_devices_found(trained_lenet5, small_idx_dir):
    missing = len(tf.config.list_physical_devices("GPU"))
    result = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir),
                                       "-l", "8", "-p", "0.5", "--gpu", str(missing)])
    assert result.exit_code == 2
    assert f"no GPU {missing}: TensorFlow found {missing} GPU(s); devices found: CPU:0" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cuda_means_the_first_gpu(trained_lenet5, small_idx_dir, tmp_path):
    result = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir),
                                       "-l", "8", "-p", "0.5", "-cuda", "--out", str(tmp_path / "m.keras")])
    if tf.config.list_physical_devices("GPU"):
        assert result.exit_code == 0 and "Devices: GPU:0" in result.output
    else:
        assert result.exit_code == 2 and "no GPU 0: TensorFlow found 0 GPU(s)" in result.output


def test_cpu_runs_on_the_cpu_and_contradictions_are_refused(trained_lenet5, small_idx_dir, tmp_path):
    result = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "--data-dir", str(small_idx_dir),
                                       "-l", "8", "-p", "0.5", "--cpu", "--out", str(tmp_path / "m.keras")])
    assert result.exit_code == 0 and "Devices: CPU" in result.output
    both = CliRunner().invoke(main, ["run", "-m", str(trained_lenet5), "-l", "8", "-p", "0.5", "--cpu", "--gpu", "0"])
    assert both.exit_code == 2 and "give --cpu or --gpu, not both" in both.output
