"""The graph module: each private-Keras accessor, rebuilding graphs with op nodes, coupling."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_prune as kp
from keras_prune import _keras_compat
from keras_prune.graph import coupled_units, rebuild, walk


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def _ops_model() -> keras.Model:
    """Embedding(mask_zero) -> Dense -> gelu op -> Dense, a residual ``x + y``, a shared
    layer and a nested model: every kind of node a Functional graph holds."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(30, 8, mask_zero=True, name="emb")(tokens)
    f = keras.layers.Dense(8, name="up")(h)
    f = keras.ops.gelu(f)
    h = h + keras.layers.Dense(8, name="down")(f)
    inner_in = keras.Input((5, 8))
    nested = keras.Model(inner_in, keras.layers.Dense(8, name="inner")(inner_in), name="sub")
    shared = keras.layers.Dense(8, name="shared")
    h = shared(nested(h)) + shared(h)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(tokens, out, name="ops")


def _tokens(n: int = 4) -> np.ndarray:
    x = np.random.default_rng(0).integers(1, 30, (n, 5)).astype("int32")
    x[:, -2:] = 0  # padding, masked by the Embedding
    return x


# --- one test per private accessor -------------------------------------------------


def test_functional_class_is_the_class_of_graph_models():
    model = _ops_model()
    assert isinstance(model, _keras_compat.functional_class())
    assert not isinstance(Subclassed(), _keras_compat.functional_class())


def test_is_graph_model_tells_sequential_and_functional_from_subclassed():
    assert _keras_compat.is_graph_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
    assert _keras_compat.is_graph_model(_ops_model())
    assert not _keras_compat.is_graph_model(Subclassed())
    assert not _keras_compat.is_graph_model(keras.layers.Dense(1))


def test_graph_of_a_sequential_model_is_its_functional_graph_or_none():
    built = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert _keras_compat.graph_of(built) is not None
    assert _keras_compat.graph_of(keras.Sequential([keras.layers.Dense(1)])) is None
    model = _ops_model()
    assert _keras_compat.graph_of(model) is model


def test_graph_nodes_come_in_call_order_with_op_nodes():
    model = _ops_model()
    names = [node.operation.name for node in _keras_compat.graph_nodes(model)]
    assert names.index("emb") < names.index("up") < names.index("down") < names.index("head")
    kinds = {type(node.operation).__name__ for node in _keras_compat.graph_nodes(model)}
    assert {"Gelu", "Add"} <= kinds  # op nodes, not layers
    assert names.count("shared") == 2


def test_producer_is_the_operation_behind_a_tensor():
    model = _ops_model()
    assert _keras_compat.producer(model.input).name == "tokens"
    assert _keras_compat.producer(model.output).name == "head"


def test_stored_weight_matrix_is_the_variable_behind_kernel_or_embeddings():
    dense, embedding = keras.layers.Dense(2), keras.layers.Embedding(5, 3)
    dense.build((None, 4))
    embedding.build((None,))
    assert _keras_compat.stored_weight_matrix(dense) is dense.kernel
    assert _keras_compat.stored_weight_matrix(embedding) is embedding.embeddings
    conv = keras.layers.Conv2D(2, 3)
    conv.build((None, 8, 8, 1))
    assert _keras_compat.stored_weight_matrix(conv) is conv.kernel


def test_sublayers_are_the_layers_a_layer_holds():
    bi = keras.layers.Bidirectional(keras.layers.LSTM(3))
    bi.build((None, 4, 2))
    assert {type(s).__name__ for s in _keras_compat.sublayers(bi)} == {"LSTM"}
    assert len(_keras_compat.sublayers(bi)) == 2
    assert _keras_compat.sublayers(keras.layers.Dense(1)) == []


def test_elementwise_op_classes_include_the_operator_add():
    x = keras.Input((3,))
    y = x + x
    assert isinstance(_keras_compat.producer(y), _keras_compat.elementwise_op_classes())


def test_scalar_op_classes_include_the_operators_with_a_number():
    x = keras.Input((3,))
    for y in (x + 3.0, 3.0 - x, x * (1.0 / 6.0), x / 6.0):
        assert isinstance(_keras_compat.producer(y), _keras_compat.scalar_op_classes())


def test_keras_mask_is_the_mask_an_embedding_attaches():
    tokens = keras.Input((5,), dtype="int32")
    assert _keras_compat.keras_mask(keras.layers.Embedding(30, 4, mask_zero=True)(tokens)) is not None
    assert _keras_compat.keras_mask(keras.layers.Embedding(30, 4)(tokens)) is None


def test_transformer_block_parts_are_the_sublayers_of_keras_hub_blocks():
    keras_hub = pytest.importorskip("keras_hub")
    encoder = keras_hub.layers.TransformerEncoder(16, 2)
    encoder.build((None, 5, 8))
    parts = _keras_compat.transformer_block_parts(encoder)
    kinds = {role: type(layer).__name__ if layer is not None else None for role, layer in parts.items()}
    assert kinds == {
        "attention": "MultiHeadAttention", "attention_norm": "LayerNormalization", "attention_dropout": "Dropout",
        "ffn_norm": "LayerNormalization", "ffn_in": "Dense", "ffn_out": "Dense", "ffn_dropout": "Dropout",
        "cross_attention": None,
    }
    assert parts["ffn_in"].units == 16 and parts["attention"].num_heads == 2
    decoder = keras_hub.layers.TransformerDecoder(16, 2)
    decoder.build((None, 5, 8), (None, 4, 8))
    parts = _keras_compat.transformer_block_parts(decoder)
    assert type(parts["attention"]).__name__ == type(parts["cross_attention"]).__name__ == "CachedMultiHeadAttention"
    assert {id(layer) for layer in parts.values()} <= {id(layer) for layer in _keras_compat.sublayers(decoder)}


def test_hub_gelu_approximate_is_bert_and_gpt2s_ffn_activation():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=8
    )
    assert backbone.get_layer("transformer_layer_0").activation is _keras_compat.hub_gelu_approximate()
    x = np.linspace(-3, 3, 7).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(_keras_compat.hub_gelu_approximate()(x)),
        keras.ops.convert_to_numpy(keras.ops.gelu(x, approximate=True)),
    )


# --- rebuild and the public functions built on it ----------------------------------


def test_rebuild_copies_a_graph_with_op_nodes_shared_layers_and_nested_models():
    model = _ops_model()
    seen = []

    def replace(layer):
        seen.append(layer.name)
        return layer

    copy = rebuild(model, replace)
    np.testing.assert_allclose(copy(_tokens()), model(_tokens()), rtol=1e-6)
    assert seen.count("shared") == 1  # replaced once, shared alike
    assert "inner" in seen and "sub" not in seen  # nested models are rebuilt, not replaced
    assert {p for p, _ in walk(copy)} >= {"sub/inner", "shared", "emb"}


def test_prunable_prune_fit_strip_on_a_graph_with_op_nodes_and_a_mask():
    model = _ops_model()
    wrapped = kp.prunable(model)
    x, y = _tokens(8), np.arange(8) % 3
    np.testing.assert_allclose(wrapped(x), model(x), rtol=1e-6)
    names = {w.name for w in kp.wrapped_layers(wrapped)}
    assert names == {"emb", "up", "down", "inner", "shared", "head"}
    kp.prune(wrapped, {"up": 0.5, "sub": 0.5, "emb": 0.5})
    assert kp.wrapped_layers(wrapped)[[w.name for w in kp.wrapped_layers(wrapped)].index("inner")].sparsity() == 0.5
    wrapped.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapped.fit(x, y, epochs=1, verbose=0)
    plain = kp.strip(wrapped)
    np.testing.assert_allclose(plain(x), wrapped(x), rtol=1e-5, atol=1e-6)
    assert np.sum(plain.get_layer("up").kernel.numpy() == 0) == 32


def test_masks_still_reach_layers_after_wrapping():
    """The Embedding's padding mask changes the GRU's output; the wrapped GRU sees it too."""
    keras.utils.set_random_seed(1)
    tokens = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(30, 4, mask_zero=True)(tokens)
    out = keras.layers.GRU(3)(h)
    model = keras.Model(tokens, out)
    wrapped = kp.prunable(model)
    x = _tokens()
    np.testing.assert_allclose(wrapped(x), model(x), rtol=1e-6)
    unmasked = keras.Model(tokens, out)  # same layers: the mask is what differs
    np.testing.assert_allclose(unmasked(x), model(x), rtol=1e-6)


def test_coupled_units_joins_units_added_with_the_plus_operator():
    x = keras.Input((4,))
    a = keras.layers.Dense(3, name="a")(x)
    b = keras.layers.Dense(3, name="b")(x)
    c = keras.layers.Dense(3, name="c")(a + b)
    model = keras.Model(x, keras.layers.Dense(2, name="d")(c))
    classes = {layer.name: ids for layer, ids in coupled_units(model).items()}
    np.testing.assert_array_equal(classes["a"], classes["b"])
    assert not set(classes["a"]) & set(classes["c"])


def test_shrink_removes_units_through_an_operator_residual():
    keras.utils.set_random_seed(2)
    x = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="stem")(x)
    f = keras.layers.Dense(8, activation="relu", name="f")(h)
    h = h + keras.layers.Dense(8, name="g")(f)
    model = keras.Model(x, keras.layers.Dense(2, name="out")(keras.ops.relu(h)))
    wrapped = kp.prunable(model)
    kp.prune(wrapped, {"stem": 0.5, "f": 0.5}, granularity="neuron")
    small, report = kp.shrink_with_report(wrapped)
    data = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(small(data), wrapped(data), rtol=1e-5, atol=1e-6)
    assert small.get_layer("stem").units == 4 and small.get_layer("g").units == 4
    assert small.get_layer("f").units == 4
    assert report.parameters[1] < report.parameters[0]


def test_subclassed_models_get_a_one_line_model_error():
    with pytest.raises(kp.ModelError, match="subclassed"):
        rebuild(Subclassed(), lambda layer: layer)


def test_no_import_cycle_between_api_structured_shrink_and_graph():
    code = "import keras_prune.shrink, keras_prune.structured, keras_prune.api; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("ok"), out.stderr[-500:]
    source = open(sys.modules["keras_prune.shrink"].__file__).read()
    assert "from keras_prune.api" not in source and "from keras_prune.structured" not in source


def test_elementwise_activation_op_classes_include_gelu_and_relu():
    x = keras.Input((3,))
    classes = _keras_compat.elementwise_activation_op_classes()
    for y in (keras.ops.gelu(x), keras.ops.relu(x), keras.ops.tanh(x)):
        assert isinstance(_keras_compat.producer(y), classes)
