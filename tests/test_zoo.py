"""The model zoo: models nobody on the team designed, through the whole pipeline.

For each model (tiny configs, random weights, small inputs): prunable -> prune (each of the
seven criteria on at least one model) -> fit a few steps; pruned weights exactly 0 and
biases untouched; the .keras round trip and strip give the same outputs; a SavedModel
export loads and serves (keras-hub backbones with one signature input per model input);
unit or head pruning then shrink gives
the same outputs with fewer parameters.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_prune as kp
from tests.conftest import assert_same_outputs

L = keras.layers
RNG = np.random.default_rng(0)


def _images(n=2, size=32):
    return RNG.uniform(0, 1, (n, size, size, 3)).astype("float32")


def _tokens(n=2, length=8, vocabulary=100):
    x = RNG.integers(1, vocabulary, (n, length)).astype("int32")
    x[:, -2:] = 0  # padding
    return x


def _app(builder, **kwargs):
    return lambda: builder(weights=None, input_shape=(32, 32, 3), classes=4, classifier_activation=None, **kwargs)


def _encoder():
    """A Transformer encoder written with keras.layers, ``x + y`` and keras.ops."""
    tokens = keras.Input((8,), dtype="int32", name="tokens")
    positions = keras.ops.arange(8)
    h = L.Embedding(100, 16, name="emb")(tokens) + L.Embedding(8, 16, name="pos")(positions)
    for i in range(2):
        a = L.MultiHeadAttention(4, 4, name=f"mha{i}")(h, h)
        h = L.LayerNormalization(name=f"ln{i}a")(h + a)
        f = L.Dense(32, name=f"up{i}")(h)
        h = L.LayerNormalization(name=f"ln{i}b")(h + L.Dense(16, name=f"down{i}")(keras.ops.gelu(f)))
    return keras.Model(tokens, L.Dense(4, name="head")(L.GlobalAveragePooling1D()(h)), name="encoder")


def _vit():
    """A ViT-style model: patches as tokens, a learned class token, pre-norm blocks."""
    images = keras.Input((32, 32, 3))
    patches = L.Conv2D(16, 8, strides=8, name="patchify")(images)
    h = L.Reshape((16, 16))(patches)
    h = h + L.Embedding(16, 16, name="pos")(keras.ops.arange(16))
    for i in range(2):
        n = L.LayerNormalization(name=f"ln{i}a")(h)
        h = h + L.MultiHeadAttention(2, 8, name=f"mha{i}")(n, n)
        n = L.LayerNormalization(name=f"ln{i}b")(h)
        h = h + L.Dense(16, name=f"fc{i}b")(L.Dense(32, activation="gelu", name=f"fc{i}a")(n))
    h = L.LayerNormalization(name="ln_out")(h)
    return keras.Model(images, L.Dense(4, name="head")(h[:, 0]), name="vit")


def _text_rnn():
    tokens = keras.Input((8,), dtype="int32")
    h = L.Embedding(100, 8, mask_zero=True, name="emb")(tokens)
    h = L.Bidirectional(L.LSTM(6, return_sequences=True), name="bilstm")(h)
    h = L.TimeDistributed(L.Dense(6), name="td")(h)
    h = L.GRU(6, name="gru")(h)
    return keras.Model(tokens, L.Dense(4, name="head")(L.Dense(12, activation="relu", name="fc")(h)), name="rnn")


def _hub(kind):
    def build():
        import keras_hub

        common = dict(vocabulary_size=100, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
        if kind == "bert":
            backbone = keras_hub.models.BertBackbone(**common)
        else:
            backbone = keras_hub.models.GPT2Backbone(**common)
        inputs = {name: keras.Input((8,), dtype="int32", name=name) for name in backbone.input}
        outputs = backbone(inputs)
        sequence = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
        return keras.Model(inputs, L.Dense(4, name="head")(L.GlobalAveragePooling1D()(sequence)), name=kind)

    return build


def _hub_inputs(kind):
    def make(n=2):
        x = {"token_ids": _tokens(n), "padding_mask": (_tokens(n) > 0).astype("int32")}
        if kind == "bert":
            x["segment_ids"] = np.zeros((n, 8), "int32")
        return x

    return make


@dataclass
class Case:
    """A zoo model, the criterion that prunes its weights, and its structured pruning."""

    build: Callable[[], keras.Model]
    inputs: Callable[..., Any]
    criterion: str | None  # prunes every wrapped layer by weight (None: skip)
    structured: tuple = ()  # (granularity, {layer: fraction of its units or heads}) pairs
    options: dict | None = None  # the weight criterion's options
    unit_criterion: str = "magnitude"
    unit_options: dict | None = None
    savedmodel: bool = True  # export and serve (slow for the large CNNs: their strip and
    # .keras round trip are tested, and the export path is the same)
    shrunk: tuple[str, ...] = ()  # layers that shrink must leave with fewer units or channels
    features: str | None = None  # a pre-head layer whose output is compared too: with random
    # weights some models' logits are the head's bias plus a body contribution of ~1e-8


CASES = {
    "mobilenetv2": Case(_app(keras.applications.MobileNetV2, alpha=0.35), _images, "magnitude",
                        (("filter", {"block_1_expand": 0.5, "block_4_expand": 0.5, "Conv_1": 0.5}),),
                        shrunk=("block_1_expand", "block_1_depthwise", "block_4_depthwise_BN", "Conv_1")),
    "mobilenetv3small": Case(_app(keras.applications.MobileNetV3Small, include_preprocessing=False), _images, "taylor1",
                             (("filter", {"expanded_conv_3_expand": 0.5, "conv_1": 0.5}),),
                             shrunk=("expanded_conv_3_expand", "expanded_conv_3_depthwise",
                                     "expanded_conv_3_squeeze_excite_conv_1")),
    "resnet50": Case(_app(keras.applications.ResNet50), _images, "magnitude", (("filter", {"conv2_block1_1_conv": 0.5}),), savedmodel=False),
    "efficientnetb0": Case(_app(keras.applications.EfficientNetB0), _images, "l1",
                           (("filter", {"block2a_expand_conv": 0.5, "top_conv": 0.5}),), savedmodel=False,
                           shrunk=("block2a_expand_conv", "block2a_dwconv", "block2a_se_expand"),
                           features="block7a_project_bn"),
    "convnexttiny": Case(_app(keras.applications.ConvNeXtTiny), _images, "magnitude",
                         (("neuron", {"convnext_tiny_stage_3_block_2_pointwise_conv_1": 0.5}),), savedmodel=False),
    "densenet121": Case(_app(keras.applications.DenseNet121), _images, "magnitude", (("filter", {"conv2_block1_1_conv": 0.5}),), savedmodel=False),
    "encoder": Case(_encoder, _tokens, "taylor2", (("head", {"mha0": 0.5, "mha1": 0.5}), ("neuron", {"up1": 0.5})),
                    options={"probes": 1},
                    unit_criterion="taylor1"),
    "rnn": Case(_text_rnn, _tokens, "taylor12", (("neuron", {"fc": 0.5}),), options={"probes": 1, "hessian": "gauss-newton"},
                unit_criterion="emp"),
    "vit": Case(_vit, _images, "l2", (("head", {"mha0": 0.5}), ("neuron", {"fc1a": 0.5})),
                unit_criterion="l2"),
    "bert": Case(_hub("bert"), _hub_inputs("bert"), "taylor1"),
    "gpt2": Case(_hub("gpt2"), _hub_inputs("gpt2"), "magnitude"),
}


def _out(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _outputs(model, x, features=None):
    """The model's outputs, and those of its layer ``features`` when given."""
    if features is None:
        return [_out(model, x)]
    probe = keras.Model(model.inputs, [model.outputs[0], model.get_layer(features).output])
    return [keras.ops.convert_to_numpy(o) for o in probe(x, training=False)]


def _biases(model):
    return {
        v.path: v.numpy().copy()
        for w in kp.wrapped_layers(model)
        for v in w.layer.weights
        if v.trainable and all(v is not p for p in w.pruned_variables)
    }


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


@pytest.mark.parametrize("name", list(CASES))
def test_zoo_model_prunes_trains_saves_strips_and_shrinks(name, tmp_path):
    case = CASES[name]
    if name in ("bert", "gpt2"):
        pytest.importorskip("keras_hub")
    original = case.build()
    x, y = case.inputs(), np.array([0, 3], "int32")
    model = kp.prunable(original)
    wrapped = kp.wrapped_layers(model)
    assert wrapped
    assert_same_outputs(_outputs(model, x, case.features), _outputs(original, x, case.features))

    # prune every wrapped layer by weight with this case's criterion; the step is clipped: one
    # unclipped SGD step on a batch of 2 sends randomly initialised EfficientNetB0's weights to
    # ~1e5 (batch statistics of 2 samples at 1x1 resolution) and its inference outputs to NaN
    model.compile(
        keras.optimizers.SGD(0.01, global_clipnorm=1.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False
    )
    biases = _biases(model)
    if case.criterion is not None:
        kp.prune(model, {w.name: 0.5 for w in wrapped}, case.criterion, data=[(x, y)], criterion_options=case.options)
        for w in wrapped:
            assert w.sparsity() == pytest.approx(0.5, abs=0.02), w.name
    after = _biases(model)
    assert all(np.array_equal(biases[k], after[k]) for k in biases)  # pruning never touches a bias

    # structured: units or heads, then fit a few steps
    for granularity, fractions in case.structured:
        kp.prune(model, fractions, case.unit_criterion, data=[(x, y)], granularity=granularity,
                 criterion_options=case.unit_options)
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    for w in wrapped:
        for var, mask in zip(w.pruned_variables, w.mask_arrays()):
            assert np.all(var.numpy()[mask == 0] == 0.0), w.name
    expected = _outputs(model, x, case.features)

    # .keras round trip and strip
    path = tmp_path / f"{name}.keras"
    kp.save_model(model, path)
    assert_same_outputs(_outputs(kp.load_model(path), x, case.features), expected)
    plain = kp.strip(model)
    assert_same_outputs(_outputs(plain, x, case.features), expected)
    assert not kp.wrapped_layers(plain)

    if case.savedmodel:
        folder = kp.export_savedmodel(model, tmp_path / "serving", name=name)
        signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
        if isinstance(x, dict):  # keras-hub backbones: one signature input per model input
            served = signature(**{key: tf.constant(value) for key, value in x.items()})
        else:
            served = signature(tf.constant(x))
        assert_same_outputs([served["logits"].numpy()], expected[:1])

    if case.structured:
        small, report = kp.shrink_with_report(model)
        assert_same_outputs(_outputs(small, x, case.features), expected, atol=1e-4)
        assert report.parameters[1] < report.parameters[0], str(report)
        units = {row.name: row.units for row in report.layers}
        for layer in case.shrunk:
            assert units[layer][1] < units[layer][0], (layer, units[layer])


@pytest.mark.parametrize(
    "name, expand, block_output",
    [("mobilenetv3small", "expanded_conv_3_expand", "expanded_conv_3_project_bn"),
     ("efficientnetb0", "block2a_expand_conv", "block2a_project_bn")],
)
def test_expansion_filters_leave_through_squeeze_and_excitation(name, expand, block_output):
    # the block's output, not the logits: with random weights these are too small to compare
    model = kp.prunable(CASES[name].build())
    kp.prune(model, {expand: 0.5}, granularity="filter")
    small, report = kp.shrink_with_report(model)
    units = {row.name: row.units for row in report.layers}
    assert units[expand][1] == units[expand][0] // 2
    x = _images()
    masked, shrunk = (_out(keras.Model(m.inputs, m.get_layer(block_output).output), x) for m in (model, small))
    assert np.isfinite(masked).all() and np.abs(masked).max() > 0
    np.testing.assert_allclose(shrunk, masked, rtol=1e-4, atol=1e-4 * np.abs(masked).max())
    assert report.parameters[1] < report.parameters[0]


@pytest.mark.parametrize("name", ["encoder", "bert"])
def test_a_zoo_savedmodel_loads_in_a_process_without_keras_prune(name, tmp_path):
    if name == "bert":
        pytest.importorskip("keras_hub")
    model = kp.prunable(CASES[name].build())
    kp.prune(model, {"mha0": 0.5} if name == "encoder" else {w.name: 0.5 for w in kp.wrapped_layers(model)})
    x = CASES[name].inputs()
    arguments = ({key: value.tolist() for key, value in x.items()} if isinstance(x, dict) else {"images": x.tolist()})
    folder = kp.export_savedmodel(model, tmp_path, name=name)
    code = (
        "import sys; sys.modules['keras_prune'] = None; sys.modules['keras_hub'] = None\n"
        "import numpy as np, tensorflow as tf\n"
        f"x = {{k: tf.constant(np.array(v, dtype='int32')) for k, v in {arguments!r}.items()}}\n"
        f"out = tf.saved_model.load({str(folder)!r}).signatures['serving_default'](**x)\n"
        "print(' '.join(repr(float(v)) for v in out['logits'].numpy().ravel()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-800:]
    served = np.array([float(v) for v in result.stdout.strip().splitlines()[-1].split()])
    np.testing.assert_allclose(served, _out(model, x).ravel(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_keras_hub_blocks_prune_whole_heads_that_shrink_removes(kind):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = (keras_hub.models.BertBackbone if kind == "bert" else keras_hub.models.GPT2Backbone)(
        vocabulary_size=100, num_layers=2, num_heads=4, hidden_dim=16, intermediate_dim=32, max_sequence_length=16
    )
    model = kp.prunable(backbone)
    x = _hub_inputs(kind)()
    kp.prune(model, {"transformer_layer_0": 0.5, "transformer_layer_1": 0.25}, granularity="head")
    for name, pruned in (("transformer_layer_0", 2), ("transformer_layer_1", 1)):
        block = model.get_layer(name)
        # the block's attention layer: q/k/v kernels (features, heads, head_dim), output (heads, head_dim, features)
        q, k, v, o = (w for w in block.pruned_variables if "attention" in w.path)
        dead = ~o.numpy().reshape(4, -1).any(axis=1)
        assert dead.sum() == pruned
        for kernel in (q, k, v):
            assert not np.moveaxis(kernel.numpy(), 1, 0)[dead].any()
    # shrink unfolds the blocks into keras.layers (keras_prune.unfold; tests/test_unfold.py)
    # and lowers num_heads, with the same outputs
    small, report = kp.shrink_with_report(model)
    attention = "self_attention_layer" if kind == "bert" else "self_attention"
    heads = [small.get_layer(f"transformer_layer_{i}_{attention}").num_heads for i in (0, 1)]
    assert heads == [2, 3]
    assert report.parameters[0] - report.parameters[1] == 3 * (3 * (16 * 4 + 4) + 4 * 16)
    for a, b in zip(keras.tree.flatten(model(x)), keras.tree.flatten(small(x))):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6)
