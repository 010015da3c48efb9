"""Layer handlers: which variables each layer family prunes, custom handlers, unknown layers,
and the criteria on Embeddings, RNNs, dict inputs and several outputs."""

from __future__ import annotations


import keras
import numpy as np
import pytest

import keras_prune as kp
from keras_prune.handlers import LayerHandler, handler_for, layer_units, prunable_variables

SEVEN = ["magnitude", "taylor1", "taylor2", "taylor12", "l1", "l2", "emp"]
L = keras.layers


def _built(layer, shape):
    layer.build(shape)
    return layer


def _names(variables):
    return sorted(v.path.split("/")[-1] for v in variables)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: _built(L.Dense(3), (None, 4)), ["kernel"]),
        (lambda: _built(L.Conv2D(3, 3), (None, 8, 8, 2)), ["kernel"]),
        (lambda: _built(L.Conv1D(3, 3), (None, 8, 2)), ["kernel"]),
        (lambda: _built(L.DepthwiseConv2D(3), (None, 8, 8, 2)), ["kernel"]),
        (lambda: _built(L.SeparableConv2D(3, 3), (None, 8, 8, 2)), ["depthwise_kernel", "pointwise_kernel"]),
        (lambda: _built(L.Embedding(10, 4), (None, 5)), ["embeddings"]),
        (lambda: _built(L.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c"), (None, 4)), ["kernel"]),
        (lambda: _built(L.LSTM(3), (None, 5, 2)), ["kernel", "recurrent_kernel"]),
        (lambda: _built(L.GRU(3), (None, 5, 2)), ["kernel", "recurrent_kernel"]),  # bias is (2, 9)
        (lambda: _built(L.SimpleRNN(3), (None, 5, 2)), ["kernel", "recurrent_kernel"]),
        (lambda: _built(L.Bidirectional(L.LSTM(3)), (None, 5, 2)), ["kernel", "kernel", "recurrent_kernel", "recurrent_kernel"]),
        (lambda: _built(L.TimeDistributed(L.Dense(3)), (None, 5, 2)), ["kernel"]),
        (lambda: _built(L.PReLU(), (None, 4, 3)), []),
        (lambda: _built(L.LayerNormalization(), (None, 4)), []),
        (lambda: _built(L.BatchNormalization(), (None, 4)), []),
    ],
    ids=[
        "dense", "conv2d", "conv1d", "depthwise", "separable", "embedding", "einsum", "lstm", "gru",
        "simplernn", "bidirectional", "timedistributed", "prelu", "layernorm", "batchnorm",
    ],
)
def test_each_layer_family_prunes_its_kernels_never_a_bias_or_norm_parameter(make, expected):
    layer = make()
    variables = prunable_variables(layer)
    assert _names(variables) == sorted(expected)
    assert not any("bias" in v.path or "gamma" in v.path or "alpha" in v.path for v in variables)


def test_multi_head_attention_prunes_query_key_value_and_output_kernels_and_has_heads():
    mha = L.MultiHeadAttention(num_heads=2, key_dim=4)
    mha.build((None, 5, 8), (None, 5, 8))
    variables = prunable_variables(mha)
    assert [v.path.split("/")[-2] for v in variables] == ["query", "key", "value", "attention_output"]
    units = layer_units(mha, "head")
    assert units.count == 2 and units.axes == (1, 1, 1, 0)
    assert layer_units(mha, "neuron") is None


def test_a_wrapped_gru_keeps_its_bias_through_pruning_and_training():
    keras.utils.set_random_seed(0)
    model = kp.prunable(keras.Sequential([keras.Input((6, 3)), L.GRU(4, name="gru"), L.Dense(2, name="out")]))
    gru = model.get_layer("gru")
    bias = gru.layer.cell.bias
    assert bias.shape == (2, 12) and all(v is not bias for v in gru.pruned_variables)
    kp.prune(model, {"gru": 0.5})
    before = bias.numpy().copy()
    assert all(np.mean(m == 0) == 0.5 for m in gru.mask_arrays())
    model.compile("sgd", "mse")
    x, y = np.ones((4, 6, 3), "float32"), np.ones((4, 2), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    for var, mask in zip(gru.pruned_variables, gru.mask_arrays()):
        assert np.all(var.numpy()[mask == 0] == 0.0)
    assert not np.array_equal(bias.numpy(), before)  # trained, never masked
    assert np.all(bias.numpy() != 0)


class ScaledDense(L.Layer):
    """A custom layer: ``x @ w * scale``, with its own variables."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.scale = self.add_weight(shape=(self.units,), initializer="ones", name="scale")

    def call(self, x):
        return keras.ops.matmul(x, self.w) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _custom_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((4,))
    return keras.Model(x, L.Dense(2, name="out")(ScaledDense(6, name="scaled")(x)))


def test_an_unknown_layer_is_left_intact_with_a_warning_naming_it():
    from keras_prune import handlers

    handlers._warned.discard(ScaledDense)
    with pytest.warns(UserWarning, match="no handler for ScaledDense.*left intact"):
        model = kp.prunable(_custom_model())
    assert [w.name for w in kp.wrapped_layers(model)] == ["out"]
    with pytest.raises(kp.InputError, match="no prunable weights"):
        kp.prune(model, {"scaled": 0.5})


def test_a_registered_handler_makes_a_custom_layer_prunable(monkeypatch):
    from keras_prune import handlers

    class ScaledDenseHandler(kp.LayerHandler):
        def prunable_variables(self, layer):
            return [layer.w]

    monkeypatch.setattr(handlers, "_HANDLERS", dict(handlers._HANDLERS))
    kp.register_handler(ScaledDense, ScaledDenseHandler())
    assert isinstance(handler_for(ScaledDense(2)), ScaledDenseHandler)
    model = kp.prunable(_custom_model())
    kp.prune(model, {"scaled": 0.5})
    scaled = model.get_layer("scaled")
    assert scaled.sparsity() == 0.5 and np.all(scaled.layer.scale.numpy() == 1.0)
    x = np.ones((3, 4), "float32")
    np.testing.assert_allclose(kp.strip(model)(x), model(x), rtol=1e-6)


def test_register_handler_rejects_what_is_not_a_layer_class_or_handler():
    with pytest.raises(kp.InputError, match="keras Layer class"):
        kp.register_handler(int, LayerHandler())
    with pytest.raises(kp.InputError, match="LayerHandler instance"):
        kp.register_handler(ScaledDense, object())


def test_prune_with_a_nested_model_name_prunes_every_wrapped_layer_inside():
    inner_in = keras.Input((4,))
    h = L.Dense(6, name="a")(inner_in)
    sub = keras.Model(inner_in, L.Dense(6, name="b")(h), name="sub")
    x = keras.Input((4,))
    model = kp.prunable(keras.Model(x, L.Dense(2, name="out")(sub(x))), layers=["sub"])
    result = kp.prune(model, {"sub": 0.5})
    assert sorted(layer.name for layer in result) == ["a", "b"]
    assert all(sparsity == 0.5 for sparsity in result.values())


def _text_model(mask_zero: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    h = L.Embedding(20, 4, mask_zero=mask_zero, name="emb")(tokens)
    h = L.GRU(5, name="gru")(h) if mask_zero else L.GlobalAveragePooling1D()(h)
    return kp.prunable(keras.Model(tokens, L.Dense(3, name="out")(h)))


def _text_batches():
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 20, (8, 6)).astype("int32"), rng.integers(0, 3, 8).astype("int32")) for _ in range(2)]


@pytest.mark.parametrize("criterion", SEVEN)
def test_every_criterion_prunes_an_embedding(criterion):
    """An Embedding's gradient is sparse (IndexedSlices); every criterion scores it."""
    model = _text_model(mask_zero=False)
    options = {"probes": 1} if criterion in ("taylor2", "taylor12") else None
    kp.prune(model, {"emb": 0.25, "out": 0.25}, criterion, data=_text_batches(), criterion_options=options)
    assert model.get_layer("emb").sparsity() == 0.25


@pytest.mark.parametrize("criterion", ["taylor1", "taylor2", "l1"])
def test_criteria_prune_a_masked_rnn_text_model(criterion):
    model = _text_model(mask_zero=True)
    options = {"probes": 1, "hessian": "gauss-newton"} if criterion == "taylor2" else None
    kp.prune(model, {"emb": 0.25, "gru": 0.5}, criterion, data=_text_batches(), criterion_options=options)
    assert model.get_layer("gru").sparsity() == pytest.approx(0.5, abs=0.01)  # floor per variable


@pytest.mark.parametrize("criterion", ["taylor1", "taylor12", "l2"])
def test_criteria_score_dict_inputs_and_two_outputs_with_their_compiled_losses(criterion):
    keras.utils.set_random_seed(0)
    tokens, feats = keras.Input((6,), dtype="int32", name="tokens"), keras.Input((3,), name="feats")
    h = L.GlobalAveragePooling1D()(L.Embedding(20, 4, name="emb")(tokens))
    h = L.Dense(8, activation="relu", name="hid")(L.Concatenate()([h, feats]))
    outputs = {"cls": L.Dense(3, name="cls")(h), "reg": L.Dense(1, name="reg")(h)}
    model = kp.prunable(keras.Model({"tokens": tokens, "feats": feats}, outputs))
    model.compile(
        "adam", loss={"cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "reg": "mse"}
    )
    rng = np.random.default_rng(0)
    data = [
        (
            {"tokens": rng.integers(0, 20, (8, 6)).astype("int32"), "feats": rng.normal(size=(8, 3)).astype("float32")},
            {"cls": rng.integers(0, 3, 8).astype("int32"), "reg": rng.normal(size=(8, 1)).astype("float32")},
        )
        for _ in range(2)
    ]
    options = {"probes": 1} if criterion == "taylor12" else None
    kp.prune(model, {"emb": 0.5, "hid": 0.5}, criterion, data=data, criterion_options=options)
    assert model.get_layer("hid").sparsity() == 0.5
    model.fit(data[0][0], data[0][1], epochs=1, verbose=0)
    assert np.all(model.get_layer("hid").layer.kernel.numpy()[model.get_layer("hid").mask_arrays()[0] == 0] == 0)


def _encoder(heads: int = 4) -> keras.Model:
    """A Transformer encoder block written with keras.layers, ``x + y`` and keras.ops."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((8,), dtype="int32")
    h = L.Embedding(50, 16, name="emb")(tokens)
    h = L.LayerNormalization()(h + L.MultiHeadAttention(heads, 4, name="mha")(h, h))
    f = L.Dense(32, name="up")(h)
    h = L.LayerNormalization()(h + L.Dense(16, name="down")(keras.ops.gelu(f)))
    return keras.Model(tokens, L.Dense(3, name="out")(L.GlobalAveragePooling1D()(h)))


def test_head_granularity_masks_whole_heads_and_shrink_lowers_num_heads():
    model = kp.prunable(_encoder())
    x = np.random.default_rng(0).integers(0, 50, (3, 8))
    kp.prune(model, {"mha": 0.5}, granularity="head")
    mha = model.get_layer("mha")
    q, k, v, o = mha.mask_arrays()
    dead = ~o.reshape(4, -1).any(axis=1)
    assert dead.sum() == 2
    for mask in (q, k, v):  # whole head slices, nothing else
        assert np.all(mask[:, dead, :] == 0) and np.all(mask[:, ~dead, :] == 1)
    assert np.all(o[~dead] == 1)
    kp.prune(model, {"up": 0.5}, granularity="neuron")
    small, report = kp.shrink_with_report(model)
    np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-6)
    assert small.get_layer("mha").num_heads == 2
    assert small.get_layer("up").units == 16 and small.get_layer("down").kernel.shape == (16, 16)
    assert report.parameters[1] < report.parameters[0]
    # 8 positions: projections 8 * 4 * 16 * 16, scores and sums 4 heads * 8 * 8 * (4 + 4),
    # FFN 2 * 8 * 16 * 32, head 16 * 3; half the heads and FFN units go.
    assert report.multiply_adds == (8192 + 2048 + 8192 + 48, 4096 + 1024 + 4096 + 48)


def test_head_granularity_on_a_layer_without_heads_is_a_one_line_input_error():
    model = kp.prunable(_encoder())
    with pytest.raises(kp.InputError, match="no attention heads"):
        kp.prune(model, {"up": 0.5}, granularity="head")


def test_neuron_granularity_on_an_embedding_prunes_whole_rows():
    model = _text_model(mask_zero=False)
    kp.prune(model, {"emb": 0.25}, "taylor1", data=_text_batches(), granularity="neuron")
    (mask,) = model.get_layer("emb").mask_arrays()
    rows = ~mask.any(axis=1)
    assert rows.sum() == 5 and np.all(mask[~rows] == 1)  # floor(20 * 0.25) whole rows
    x = _text_batches()[0][0]
    np.testing.assert_allclose(kp.shrink(model)(x), model(x), rtol=1e-6)


def test_cli_run_granularity_head_on_a_model_without_heads_is_a_one_line_error(trained_lenet5, small_idx_dir, tmp_path):
    from click.testing import CliRunner

    from keras_prune_cli.main import main

    out = tmp_path / "p.keras"
    args = ["run", "-m", trained_lenet5, "-l", "8", "-p", "0.5", "--granularity", "head",
            "--data-dir", small_idx_dir, "--out", out]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0 and not out.exists()
    assert "no attention heads" in result.output and "Traceback" not in result.output
