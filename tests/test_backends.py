"""keras-prune on the active Keras backend, and .keras files across backends.

`pytest -q` runs this file on TensorFlow; .ci/run runs it again with
KERAS_BACKEND=jax (docs/backends.md). The model is a small hand-written Transformer
encoder (attention, layer normalisation, a GELU MLP), not one of keras-prune's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import keras
import keras_prune as kp
from keras_prune.errors import BackendError

BACKEND = keras.backend.backend()
OTHER = "jax" if BACKEND == "tensorflow" else "tensorflow"
needs_other_backend = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", f"import {'jax' if OTHER == 'jax' else 'tensorflow'}"],
                   capture_output=True).returncode != 0,
    reason=f"the {OTHER} backend is not installed (pip install -e '.[jax]')",
)
not_tensorflow = pytest.mark.skipif(BACKEND == "tensorflow", reason="what other backends refuse")


def _encoder(seed: int = 0) -> keras.Model:
    """Tokens (8 x 6 features) -> one encoder block -> mean over tokens -> 3 logits."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 6))
    attended = keras.layers.MultiHeadAttention(2, 4, name="attention")(inputs, inputs)
    x = keras.layers.LayerNormalization(name="norm1")(inputs + attended)
    hidden = keras.layers.Dense(16, activation="gelu", name="mlp_in")(x)
    x = keras.layers.LayerNormalization(name="norm2")(x + keras.layers.Dense(6, name="mlp_out")(hidden))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def _data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 6)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def _compiled(model: keras.Model, optimizer) -> keras.Model:
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _pruned_values(model: keras.Model) -> list[np.ndarray]:
    """Every pruned position's value, over all wrapped layers."""
    out = []
    for layer in kp.wrapped_layers(model):
        for var, mask in zip(layer.pruned_variables, layer.mask_arrays()):
            out.append(keras.ops.convert_to_numpy(var)[mask == 0])
    return out


def test_autodiff_gives_exact_gradients_and_hessian_vector_products():
    from keras_prune import autodiff

    def cubic(values, x):  # sum(x * a^3) + sum(a * b): H = [[6 x a, 1], [1, 0]]
        a, b = values
        return keras.ops.sum(x * a**3) + keras.ops.sum(a * b)

    a, b, x = np.array([1.0, -2.0], "float32"), np.array([0.5, 3.0], "float32"), np.array([2.0, 1.0], "float32")
    grads = autodiff.gradient(cubic)([a, b], x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grads[0]), 3 * x * a**2 + b)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grads[1]), a)
    u, v = np.array([1.0, 0.0], "float32"), np.array([0.0, 2.0], "float32")
    grads, products = autodiff.hessian_vector(cubic)([a, b], [u, v], x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(products[0]), 6 * x * a * u + v)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(products[1]), u)
    labels = autodiff.sample_categorical(np.log(np.array([[1e-9, 1.0], [1.0, 1e-9]], "float32")), np.array([0, 1], "int32"))
    assert keras.ops.convert_to_numpy(labels).tolist() == [1, 0]


class _ZerosAfterEveryStep(keras.callbacks.Callback):
    """Records, after each batch, whether every pruned weight is exactly 0."""

    def __init__(self):
        super().__init__()
        self.checks: list[bool] = []

    def on_train_batch_end(self, batch, logs=None):
        self.checks.append(all((v == 0).all() for v in _pruned_values(self.model)))


@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras.optimizers.SGD(0.1, momentum=0.9), lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1)],
    ids=["sgd-momentum", "adamw"],
)
def test_pruned_weights_are_exactly_zero_after_every_optimizer_step(optimizer):
    model = _compiled(kp.prunable(_encoder()), optimizer())
    x, y = _data()
    watch = _ZerosAfterEveryStep()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # momentum builds up before pruning
    kp.prune(model, {"mlp_in": 0.5, "attention": 0.3, "head": 0.5})
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[watch], verbose=0)
    # Masks changed after the train step was compiled: the new ones hold too.
    kp.prune(model, {"mlp_in": 0.8})
    model.fit(x, y, batch_size=16, epochs=1, callbacks=[watch], verbose=0)
    assert watch.checks == [True] * 12
    assert sum(v.size for v in _pruned_values(model)) > 0
    assert model.get_layer("mlp_in").sparsity() == pytest.approx(0.8, abs=1 / 96)


def test_iterative_pruning_inside_fit_reaches_its_fractions():
    model = _compiled(kp.prunable(_encoder()), keras.optimizers.Adam(1e-3))
    x, y = _data()
    pruning = kp.IterativePruning({"mlp_in": 0.6, "head": 0.5}, kp.schedules.Linear(2))
    watch = _ZerosAfterEveryStep()
    model.fit(x, y, batch_size=16, epochs=pruning.planned_epochs, callbacks=[pruning, watch], verbose=0)
    assert pruning.done
    assert model.get_layer("mlp_in").pruned_count() == int(6 * 16 * 0.6)
    assert model.get_layer("head").pruned_count() == 9
    assert all(watch.checks)


CRITERIA = {
    "magnitude": ("magnitude", None),
    "taylor1": ("taylor1", None),
    "taylor2-hutchinson": ("taylor2", {"probes": 2, "hessian": "hutchinson"}),
    "taylor2-gauss-newton": ("taylor2", {"probes": 2, "hessian": "gauss-newton"}),
    "taylor2-fisher": ("taylor2", {"hessian": "fisher"}),
    "taylor12": ("taylor12", {"probes": 1}),
    "l1": ("l1", {"epochs": 1}),
    "l2": ("l2", {"epochs": 1}),
    "sparsegpt": ("sparsegpt", None),
    "wanda": ("wanda", None),
}


@pytest.mark.parametrize("name, options", list(CRITERIA.values()), ids=list(CRITERIA))
def test_every_criterion_and_method_prunes_on_this_backend(name, options):
    model = kp.prunable(_encoder())
    before = model.predict(_data(8)[0], verbose=0)
    sparsity = kp.prune(model, {"mlp_in": 0.5, "attention": 0.25}, name, data=_data(), criterion_options=options)
    assert [round(s, 6) for s in sparsity.values()] == [0.5, 0.25]
    assert all((v == 0).all() for v in _pruned_values(model))
    assert not np.allclose(model.predict(_data(8)[0], verbose=0), before)


_EMP_SIDE = textwrap.dedent(
    """
    import sys
    import numpy as np, keras, keras_prune as kp
    from keras_prune.criteria import get_criterion
    folder = sys.argv[1]
    assert keras.backend.backend() == sys.argv[2], keras.backend.backend()
    model = kp.load_model(folder + "/emp.keras")
    data = np.load(folder + "/data.npz")
    layers = kp.wrapped_layers(model)
    scores = get_criterion("emp").score(layers, model, [(data["x"], data["y"])])
    np.savez(folder + "/scores.npz", *[scores[layer][0] for layer in layers])
    """
)


def _emp_model() -> keras.Model:
    """A Sequential conv -> dense model: emp's separable path with a suffix, and without."""
    keras.utils.set_random_seed(4)
    return keras.Sequential(
        [
            keras.Input((8, 6)),
            keras.layers.Conv1D(4, 3, activation="tanh", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="head"),
        ]
    )


def test_emp_prunes_on_this_backend():
    model = kp.prunable(_emp_model())
    sparsity = kp.prune(model, {"conv": 0.5, "head": 0.25}, "emp", data=_data())
    assert [round(s, 6) for s in sparsity.values()] == [36 / 72, 18 / 72]
    assert all((v == 0).all() for v in _pruned_values(model))


def test_emp_measures_each_weights_loss_change_on_this_backend():
    """emp's batched removals against a plain loop that zeroes one weight at a time
    (float32, so a loose tolerance; the float64 ground truths are in test_criteria)."""
    from keras_prune.criteria import get_criterion

    model = kp.prunable(_emp_model())
    head = kp.wrapped_layers(model)[1]
    x, y = _data()
    scores = get_criterion("emp", significance=0, damping=0).score([head], model, [(x, y)])[head][0]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variable = head.pruned_variables[0]
    original = keras.ops.convert_to_numpy(variable)
    base = float(loss(y, model(x)))
    expected = np.empty(original.size)
    for k in range(original.size):
        modified = original.copy().ravel()
        modified[k] = 0.0
        variable.assign(modified.reshape(original.shape))
        expected[k] = float(loss(y, model(x))) - base
    variable.assign(original)
    assert np.abs(expected).max() > 1e-3  # the removals change the loss measurably
    np.testing.assert_allclose(np.ravel(scores), expected, rtol=1e-2, atol=2e-3 * np.abs(expected).max())


@needs_other_backend
def test_emp_scores_a_loaded_sequential_the_same_on_both_backends(tmp_path):
    from keras_prune.criteria import get_criterion

    kp.save_model(kp.prunable(_emp_model()), tmp_path / "emp.keras")
    model = kp.load_model(tmp_path / "emp.keras")  # a loaded Sequential: emp cuts its own graph
    x, y = _data(48, seed=5)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    layers = kp.wrapped_layers(model)
    scores = get_criterion("emp").score(layers, model, [(x, y)])
    env = {**os.environ, "KERAS_BACKEND": OTHER}
    env.pop("JAX_ENABLE_X64", None)
    done = subprocess.run(
        [sys.executable, "-c", _EMP_SIDE, str(tmp_path), OTHER], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    there = np.load(tmp_path / "scores.npz")
    for index, layer in enumerate(layers):
        here = scores[layer][0]
        assert np.abs(here).max() > 1e-3, layer.name  # a real measurement, not zeros
        np.testing.assert_allclose(there[f"arr_{index}"], here, rtol=1e-4, atol=1e-5 * np.abs(here).max())  # measured: 2e-7


def test_strip_shrink_report_and_keras_files_keep_the_outputs(tmp_path):
    model = kp.prunable(_encoder())
    kp.prune(model, {"mlp_in": 0.5, "head": 0.5, "attention": 0.4})
    kp.prune(model, {"mlp_out": 0.25}, granularity="neuron")
    x = _data(8)[0]
    expected = model.predict(x, verbose=0)
    plain = kp.strip(model)
    np.testing.assert_allclose(plain.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert kp.sparsity_report(plain).total_compression == pytest.approx(kp.sparsity_report(model).total_compression)
    kp.save_model(model, tmp_path / "wrapped.keras")
    loaded = kp.load_model(tmp_path / "wrapped.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert [l.pruned_count() for l in kp.wrapped_layers(loaded)] == [l.pruned_count() for l in kp.wrapped_layers(model)]
    dense_model = kp.prunable(keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu", name="a"), keras.layers.Dense(2, name="b")]))
    kp.prune(dense_model, {"a": 0.5}, granularity="neuron")
    small = kp.shrink(dense_model)
    assert small.get_layer("a").units == 4
    z = np.random.default_rng(1).normal(size=(4, 5)).astype("float32")
    np.testing.assert_allclose(small.predict(z, verbose=0), dense_model.predict(z, verbose=0), rtol=1e-5, atol=1e-6)


_OTHER_SIDE = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras, keras_prune as kp
    folder = sys.argv[1]
    assert keras.backend.backend() == sys.argv[2], keras.backend.backend()
    x = np.load(folder + "/x.npy")
    seen = {}
    for name in ("wrapped", "stripped"):
        model = kp.load_model(folder + f"/{name}.keras")
        seen[name] = np.abs(model.predict(x, verbose=0) - np.load(folder + f"/{name}.npy")).max().item()
    model = kp.load_model(folder + "/plain.keras")
    model = kp.prunable(model)
    kp.prune(model, {"mlp_in": 0.7, "head": 0.4})
    kp.save_model(model, folder + "/back_wrapped.keras")
    kp.save_model(kp.strip(model), folder + "/back_stripped.keras")
    np.save(folder + "/back.npy", model.predict(x, verbose=0))
    print(json.dumps(seen))
    """
)


@needs_other_backend
def test_keras_files_pruned_on_one_backend_load_on_the_other_with_the_same_outputs(tmp_path):
    model = kp.prunable(_encoder())
    kp.prune(model, {"mlp_in": 0.5, "attention": 0.3}, "taylor1", data=_data())
    x = _data(8, seed=3)[0]
    np.save(tmp_path / "x.npy", x)
    for name, saved in (("wrapped", model), ("stripped", kp.strip(model))):
        kp.save_model(saved, tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", saved.predict(x, verbose=0))
    kp.save_model(_encoder(1), tmp_path / "plain.keras")
    env = {**os.environ, "KERAS_BACKEND": OTHER}
    if OTHER == "jax":
        env.pop("JAX_ENABLE_X64", None)
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_SIDE, str(tmp_path), OTHER], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    differences = json.loads(done.stdout.strip().splitlines()[-1])
    assert differences["wrapped"] < 1e-5 and differences["stripped"] < 1e-5, differences
    # And the other way round: pruned and stripped there, loaded here.
    expected = np.load(tmp_path / "back.npy")
    wrapped = kp.load_model(tmp_path / "back_wrapped.keras")
    assert wrapped.get_layer("mlp_in").pruned_count() == int(6 * 16 * 0.7)
    for name in ("back_wrapped", "back_stripped"):
        np.testing.assert_allclose(kp.load_model(tmp_path / f"{name}.keras").predict(x, verbose=0), expected, atol=1e-5)


@not_tensorflow
def test_tensorflow_only_features_refuse_in_one_line_naming_the_backend(tmp_path, trained_lenet5):
    from keras_prune.devices import select_devices
    from keras_prune_cli.main import main as cli

    model = kp.prunable(_encoder())
    with pytest.raises(BackendError, match=f"SavedModel export needs the tensorflow backend; KERAS_BACKEND is '{BACKEND}'"):
        kp.export_savedmodel(model, tmp_path / "serving")
    with pytest.raises(BackendError, match="TFLite export needs the tensorflow backend"):
        kp.export_tflite(model, tmp_path / "m.tflite")
    with pytest.raises(BackendError, match="tflite export needs the tensorflow backend"):
        kp.export_model(model, tmp_path / "both", formats=["keras", "tflite"])
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(BackendError, match="tf.distribute, which needs the tensorflow backend"):
        select_devices(gpus="0,1")
    runner = CliRunner()
    for args in (["export", "-m", str(trained_lenet5), "--out", str(tmp_path / "e")], ["run", "--multi-worker", "-l", "1", "-p", "0.5"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("keras-prune: error:")]
        assert len(lines) == 1 and f"KERAS_BACKEND is '{BACKEND}'" in lines[0] and "Traceback" not in result.output


def test_cli_commands_work_on_this_backend(trained_lenet5, small_idx_dir, tmp_path):
    from keras_prune_cli.main import main as cli

    runner = CliRunner()
    data = ["--data-dir", str(small_idx_dir)]
    out = tmp_path / "pruned.keras"
    run = runner.invoke(
        cli,
        ["run", "-m", str(trained_lenet5), *data, "-l", "1,12", "-p", "0.5,0.5", "--pruner", "taylor1",
         "--score-batches", "2", "--retrain", "--epochs", "1", "--out", str(out)],
    )
    assert run.exit_code == 0, run.output
    assert "Total Compression" in run.output and out.is_file()
    for args in (["test", "-m", str(out), *data], ["layers", "-m", str(out)], ["info", "-m", str(out)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
    assert "fc3              Dense (wrapped)" in runner.invoke(cli, ["layers", "-m", str(out)]).output
    sweep = runner.invoke(
        cli, ["sensitivity", "-m", str(trained_lenet5), *data, "-l", "12", "-p", "0.5", "--steps", "2", "--log-dir", str(tmp_path / "s")]
    )
    assert sweep.exit_code == 0, sweep.output


def test_ci_runs_this_file_on_jax_with_the_declared_extra():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    ci = (root / ".ci" / "run").read_text()
    assert "pip install -q -e '.[dev,jax]'" in ci
    assert "KERAS_BACKEND=jax .venv/bin/pytest -q tests/test_backends.py tests/test_criteria.py" in ci
    assert 'jax = ["jax>=' in (root / "pyproject.toml").read_text()
