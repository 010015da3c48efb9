"""keras_prune.unfold: keras-hub Transformer blocks as standard Keras layers, whose heads
and FFN units shrink removes (BertBackbone and GPT2Backbone from tiny configs)."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_prune as kp
from tests.conftest import assert_same_outputs, model_outputs

keras_hub = pytest.importorskip("keras_hub")

RNG = np.random.default_rng(0)
ATTENTION = {"bert": "self_attention_layer", "gpt2": "self_attention"}  # keras-hub's sublayer names


def _backbone(kind):
    cls = keras_hub.models.BertBackbone if kind == "bert" else keras_hub.models.GPT2Backbone
    backbone = cls(vocabulary_size=100, num_layers=2, num_heads=4, hidden_dim=16, intermediate_dim=32, max_sequence_length=16)
    # random weights everywhere (biases and LayerNorm offsets too): a pruned FFN unit then
    # outputs gelu(bias) != 0, which shrink must fold into the next layer's bias
    rng = np.random.default_rng(1)
    backbone.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in backbone.get_weights()])
    return backbone


def _inputs(kind):
    x = {"token_ids": RNG.integers(1, 100, (3, 8)).astype("int32"), "padding_mask": np.ones((3, 8), "int32")}
    x["padding_mask"][0, 5:] = 0  # padding
    x["padding_mask"][1, 7:] = 0
    if kind == "bert":
        x["segment_ids"] = np.zeros((3, 8), "int32")
    return x


def _assert_same(actual, expected, atol=1e-5):
    assert_same_outputs(actual, expected, rtol=1e-5, atol=atol)


def _hub_layers(model):
    return [layer for _, layer in kp.graph.walk(model) if type(layer).__module__.startswith("keras_hub")]


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_unfold_replaces_the_blocks_by_keras_layers_with_the_same_outputs(kind):
    backbone = _backbone(kind)
    unfolded = kp.unfold(backbone)
    hub = {type(layer).__name__ for layer in _hub_layers(unfolded)}
    assert not hub & {"TransformerEncoder", "TransformerDecoder", "CachedMultiHeadAttention"}, hub
    attention = unfolded.get_layer(f"transformer_layer_0_{ATTENTION[kind]}")
    assert type(attention) is keras.layers.MultiHeadAttention
    assert attention.num_heads == 4 and attention.key_dim == 4
    assert type(unfolded.get_layer("transformer_layer_1_feedforward_intermediate_dense")) is keras.layers.Dense
    assert unfolded.count_params() == backbone.count_params()
    x = _inputs(kind)
    _assert_same(model_outputs(unfolded, x), model_outputs(backbone, x))
    # the padding mask and (GPT-2) the causal mask matter: changing a padded or a later token
    # changes neither model's outputs at the earlier, unpadded positions
    changed = {k: v.copy() for k, v in x.items()}
    changed["token_ids"][0, 6] = changed["token_ids"][0, 6] % 99 + 1  # padded in sequence 0
    changed["token_ids"][2, 7] = changed["token_ids"][2, 7] % 99 + 1  # the last, unpadded token of sequence 2
    first, second = (model_outputs(unfolded, v)[-1] for v in (x, changed))
    np.testing.assert_allclose(second[0, :5], first[0, :5], atol=1e-6)
    if kind == "gpt2":
        np.testing.assert_allclose(second[2, :7], first[2, :7], atol=1e-6)
        assert np.abs(second[2, :7] - first[2, :7]).max() < np.abs(second[2, 7] - first[2, 7]).max()


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_pruned_heads_and_ffn_units_of_an_unfolded_block_shrink(kind, tmp_path):
    attention, ffn = f"transformer_layer_0_{ATTENTION[kind]}", "transformer_layer_0_feedforward_intermediate_dense"
    model = kp.prunable(kp.unfold(_backbone(kind)))
    kp.prune(model, {attention: 0.5}, granularity="head")
    kp.prune(model, {ffn: 0.5}, granularity="neuron")
    x = _inputs(kind)
    masked = model_outputs(model, x)
    small, report = kp.shrink_with_report(model)
    _assert_same(model_outputs(small, x), masked)
    rows = {row.name: row for row in report.layers}
    assert rows[attention].units == (4, 2)
    assert rows[ffn].units == (32, 16)
    assert rows["transformer_layer_0_feedforward_output_dense"].inputs == (32, 16)
    assert rows["transformer_layer_1_feedforward_intermediate_dense"].units == (32, 32)
    assert small.get_layer(attention).num_heads == 2 and small.get_layer(attention).key_dim == 4
    # heads: 2 x (3 x (16 x 4 + 4) + 4 x 16); FFN units: 16 x (16 + 1 + 16)
    assert report.parameters[0] - report.parameters[1] == 2 * (3 * 68 + 64) + 16 * 33

    # .keras round trip, loaded where keras_prune cannot be imported
    path = tmp_path / "small.keras"
    small.save(path)
    code = (
        "import sys; sys.modules['keras_prune'] = None\n"
        "import numpy as np, keras, keras_hub\n"
        f"x = {{k: np.array(v, dtype='int32') for k, v in {({k: v.tolist() for k, v in x.items()})!r}.items()}}\n"
        f"model = keras.saving.load_model({str(path)!r})\n"
        "print(model.get_layer(" + repr(attention) + ").num_heads)\n"
        "print(' '.join(repr(float(v)) for v in keras.ops.convert_to_numpy(keras.tree.flatten(model(x))[-1]).ravel()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-800:]
    heads, values = result.stdout.strip().splitlines()[-2:]
    assert int(heads) == 2
    np.testing.assert_allclose(np.array([float(v) for v in values.split()]), masked[-1].ravel(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_shrink_unfolds_a_wrapped_block_with_pruned_heads_only(kind):
    model = kp.prunable(_backbone(kind))
    kp.prune(model, {"transformer_layer_1": 0.5}, granularity="head")
    x = _inputs(kind)
    small, report = kp.shrink_with_report(model)
    _assert_same(model_outputs(small, x), model_outputs(model, x))
    assert small.get_layer(f"transformer_layer_1_{ATTENTION[kind]}").num_heads == 2
    # the block without dead units stays a keras-hub block
    assert type(small.get_layer("transformer_layer_0")).__name__ in ("TransformerEncoder", "TransformerDecoder")
    assert report.parameters[0] - report.parameters[1] == 2 * (3 * 68 + 64)


def test_shrink_lowers_heads_of_a_backbone_nested_in_a_model():
    backbone = _backbone("bert")
    inputs = {name: keras.Input((8,), dtype="int32", name=name) for name in backbone.input}
    head = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(backbone(inputs)["sequence_output"]))
    model = kp.prunable(keras.Model(inputs, head))
    kp.prune(model, {f"{backbone.name}/transformer_layer_0": 0.5}, granularity="head")
    x = _inputs("bert")
    small = kp.shrink(model)
    _assert_same(model_outputs(small, x), model_outputs(model, x))
    nested = small.get_layer(backbone.name)
    assert nested.get_layer("transformer_layer_0_self_attention_layer").num_heads == 2


def test_blocks_unfold_cannot_reproduce_stay_as_they_are():
    # a decoder with cross-attention, and an encoder whose input carries a Keras mask
    tokens = keras.Input((6,), dtype="int32")
    embedded = keras.layers.Embedding(50, 8, mask_zero=True)(tokens)
    encoded = keras_hub.layers.TransformerEncoder(16, 2, name="masked_encoder")(embedded)
    unmasked = keras.layers.Embedding(50, 8)(tokens)
    decoded = keras_hub.layers.TransformerDecoder(16, 2, name="cross_decoder")(unmasked, encoded)
    model = keras.Model(tokens, decoded)
    unfolded = kp.unfold(model)
    assert type(unfolded.get_layer("masked_encoder")) is keras_hub.layers.TransformerEncoder
    assert type(unfolded.get_layer("cross_decoder")) is keras_hub.layers.TransformerDecoder
    x = RNG.integers(0, 50, (2, 6)).astype("int32")
    _assert_same(model_outputs(unfolded, x), model_outputs(model, x))


def test_a_plain_encoder_block_unfolds_with_an_attention_mask():
    hidden = keras.Input((5, 8))
    attention_mask = keras.Input((5, 5), dtype="int32")
    block = keras_hub.layers.TransformerEncoder(16, 2, activation="relu", normalize_first=True, name="block")
    model = keras.Model([hidden, attention_mask], block(hidden, attention_mask=attention_mask))
    unfolded = kp.unfold(model)
    assert type(unfolded.get_layer("block_self_attention_layer")) is keras.layers.MultiHeadAttention
    x = [RNG.normal(size=(2, 5, 8)).astype("float32"), (RNG.uniform(size=(2, 5, 5)) > 0.3).astype("int32")]
    x[1][:, :, 0] = 1  # every query sees a key
    _assert_same(model_outputs(unfolded, x), model_outputs(model, x))


def test_neuron_granularity_on_a_wrapped_block_points_to_unfold():
    model = kp.prunable(_backbone("bert"))
    with pytest.raises(kp.InputError, match=r"keras_prune\.unfold"):
        kp.prune(model, {"transformer_layer_0": 0.5}, granularity="neuron")


@pytest.mark.tensorflow_only
def test_an_unfolded_and_shrunk_model_exports_as_savedmodel(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(50, 8)(tokens)
    h = keras_hub.layers.TransformerEncoder(16, 2, name="encoder")(h)
    h = keras_hub.layers.TransformerDecoder(16, 2, normalize_first=True, name="decoder")(h)  # causal, no padding
    model = keras.Model(tokens, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(h)))
    model.set_weights([np.random.default_rng(2).normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    pruned = kp.prunable(kp.unfold(model))
    kp.prune(pruned, {"decoder_self_attention": 0.5, "encoder_self_attention_layer": 0.5}, granularity="head")
    small = kp.shrink(pruned)
    assert small.get_layer("decoder_self_attention").num_heads == 1
    x = RNG.integers(0, 50, (2, 6)).astype("int32")
    expected = model_outputs(pruned, x)
    _assert_same(model_outputs(small, x), expected)
    folder = kp.export_savedmodel(small, tmp_path, name="unfolded")
    served = tf.saved_model.load(str(folder)).signatures["serving_default"](tf.constant(x))
    _assert_same([served["logits"].numpy()], expected)


def test_shrink_unfolds_a_plain_block_whose_ffn_units_are_zero():
    backbone = _backbone("gpt2")
    dense = kp._keras_compat.transformer_block_parts(backbone.get_layer("transformer_layer_0"))["ffn_in"]
    kernel = dense.kernel.numpy()
    kernel[:, :8] = 0.0  # 8 FFN units whose kernel columns are zero, as weight pruning can leave them
    dense.kernel.assign(kernel)
    x = _inputs("gpt2")
    small, report = kp.shrink_with_report(backbone)
    _assert_same(model_outputs(small, x), model_outputs(backbone, x))
    rows = {row.name: row for row in report.layers}
    assert rows["transformer_layer_0_feedforward_intermediate_dense"].units == (32, 24)
    assert small.get_layer("transformer_layer_0_self_attention").num_heads == 4
    assert type(small.get_layer("transformer_layer_1")).__name__ == "TransformerDecoder"
