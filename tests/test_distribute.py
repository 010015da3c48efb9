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


def test_mirrored_over_two_logical_cpus_gives_the_masks_of_one_device():
    process = python(MIRRORED)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    report = json.loads(out)
    single, mirrored = report["single"], report["mirrored"]
    assert single["replicas"] == 1 and mirrored["replicas"] == 2
    assert len(single["steps"]) == 6
    assert mirrored["steps"] == single["steps"]  # same layers, fractions and identical masks at every step
    import numpy as np

    np.testing.assert_allclose(mirrored["kernel"], single["kernel"], atol=1e-5)


def test_multi_worker_masks_are_identical_on_both_workers(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(python(WORKER, str(tmp_path / f"worker{index}.json"), env={"TF_CONFIG": config}))
    try:
        for process in workers:
            _, err = process.communicate(timeout=240)
            assert process.returncode == 0, "\n".join(line[:300] for line in err.splitlines()[-60:])
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
    reports = [json.loads((tmp_path / f"worker{i}.json").read_text()) for i in range(2)]
    assert [r["worker"] for r in reports] == [0, 1] and [r["chief"] for r in reports] == [True, False]
    assert reports[0]["replicas"] == 2
    steps = [r["steps"] for r in reports]
    assert len(steps[0]) == 6 and [s[:2] for s in steps[0][:2]] == [[1, "hidden"], [1, "out"]]
    # Every step: the same masks (digests), sparsity and validation figures on both workers.
    assert steps[0] == steps[1]
    assert reports[0]["weights"] == reports[1]["weights"]


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
