"""Unfold keras-hub Transformer blocks into standard Keras layers.

A keras-hub ``TransformerEncoder`` (BertBackbone) or ``TransformerDecoder`` (GPT2Backbone)
is one layer whose config holds ``num_heads`` and whose attention derives ``key_dim =
hidden_dim // num_heads`` when it builds: a block with fewer heads would have wider
heads, so neither its heads nor its FFN width can be shrunk as a block. `unfold`
replaces each such block by the Functional sub-graph its ``call`` computes, made of
standard Keras layers holding the block's weights:

    [LayerNormalization]  (normalize_first=True, GPT-2)
    MultiHeadAttention    (explicit num_heads and key_dim; the padding, attention and
                           causal masks merged as keras-hub merges them, in keras.ops)
    Dropout, + residual, [LayerNormalization]  (normalize_first=False, BERT)
    [LayerNormalization], Dense (intermediate, with the block's activation; keras-hub's
    gelu_approximate as keras.ops.gelu(approximate=True) after it), Dense, Dropout,
    + residual, [LayerNormalization]

Its layers are named after the block and its parts (``transformer_layer_0_self_attention_layer``,
``transformer_layer_0_feedforward_intermediate_dense``, ...), so `prune` can name them;
the graph, handler and shrink machinery then prune and remove whole heads and FFN units
there as in any encoder written with keras.layers. `keras_prune.shrink` unfolds the
blocks in which it finds a dead head or FFN unit.

A block stays as it is when its call is one the sub-graph would not reproduce: a
decoder with cross-attention, a call with a cache or ``return_attention_scores``, an
input carrying a Keras mask (keras-hub's cached attention ignores it, Keras' attention
would not), a block called more than once, or a block inside a Sequential model.
Private keras-hub attributes are read through `keras_prune._keras_compat` only.
"""

from __future__ import annotations

import inspect
import sys
from collections import Counter
from typing import Callable

import keras

from keras_prune import _keras_compat
from keras_prune.graph import check_graph_model, rebuild, walk

__all__ = ["is_transformer_block", "unfold"]


def _block_classes() -> tuple[type, ...]:
    hub = sys.modules.get("keras_hub")  # a model holding keras-hub layers has imported it
    if hub is None:
        return ()
    return (hub.layers.TransformerEncoder, hub.layers.TransformerDecoder)


def is_transformer_block(layer) -> bool:
    """Whether `layer` is a built keras-hub TransformerEncoder, or a TransformerDecoder
    without cross-attention (exactly these classes: a subclass may compute differently),
    which `unfold` can replace by standard layers.

    Example:

    ```python
    is_transformer_block(bert.get_layer("transformer_layer_0"))  # True
    ```
    """
    if type(layer) not in _block_classes() or not layer.built:
        return False
    return _keras_compat.transformer_block_parts(layer)["cross_attention"] is None


def _graph_calls(model: keras.Model) -> Counter:
    """How many times each operation is called in the model's Functional graphs (nested
    ones included; the layers of a Sequential model are not counted)."""
    calls: Counter = Counter()
    graphs = [model, *(layer for _, layer in walk(model) if _keras_compat.is_graph_model(layer))]
    for graph in graphs:
        if isinstance(graph, keras.Sequential):
            continue
        for node in _keras_compat.graph_nodes(graph):
            calls[id(node.operation)] += 1
    return calls


def _copy(layer: keras.layers.Layer, cls: type, name: str, **changes) -> keras.layers.Layer:
    """A new, unbuilt `cls` layer (a standard Keras class) with `layer`'s config, `name`
    and `changes`."""
    return cls.from_config({**layer.get_config(), "name": name, **changes})


class _Unfolded:
    """Calls a block's computation as standard layers on symbolic tensors, where `rebuild`
    would call the block; falls back to the block for calls it does not reproduce."""

    def __init__(self, block: keras.layers.Layer):
        self.block = block
        self.signature = inspect.signature(block.call)

    def __call__(self, *args, **kwargs):
        call = self.signature.bind(*args, **kwargs).arguments
        encoder = "inputs" in self.signature.parameters
        x = call.get("inputs") if encoder else call.get("decoder_sequence")
        if encoder:
            padding, attention, causal = call.get("padding_mask"), call.get("attention_mask"), False
            unsupported = call.get("return_attention_scores", False)
        else:
            padding, attention = call.get("decoder_padding_mask"), call.get("decoder_attention_mask")
            causal = call.get("use_causal_mask", True)
            unsupported = any(
                call.get(k) is not None
                for k in (
                    "encoder_sequence", "encoder_padding_mask", "encoder_attention_mask", "self_attention_cache",
                    "self_attention_cache_update_index", "cross_attention_cache", "cross_attention_cache_update_index",
                )
            )
        if unsupported or _keras_compat.keras_mask(x) is not None or not isinstance(causal, bool):
            return self.block(*args, **kwargs)
        return self._graph(x, padding, attention, causal)

    def _graph(self, x, padding, attention, causal):
        block = self.block
        parts = _keras_compat.transformer_block_parts(block)
        layers = {
            role: _copy(parts[role], cls, f"{block.name}_{parts[role].name}")
            for role, cls in (
                ("attention", keras.layers.MultiHeadAttention),
                ("attention_norm", keras.layers.LayerNormalization),
                ("attention_dropout", keras.layers.Dropout),
                ("ffn_norm", keras.layers.LayerNormalization),
                ("ffn_in", keras.layers.Dense),
                ("ffn_out", keras.layers.Dense),
                ("ffn_dropout", keras.layers.Dropout),
            )
        }
        if block.activation is _keras_compat.hub_gelu_approximate():
            # keras-hub's own function, which shrink cannot see through: applied as keras.ops.gelu
            layers["ffn_in"] = _copy(parts["ffn_in"], keras.layers.Dense, layers["ffn_in"].name, activation=None)
        # keras-hub's merge_padding_and_attention_mask: (B, 1, S) int32, minimum with the
        # (B, T, S) attention mask, then (decoder) with the causal mask: query position i
        # sees key positions j <= i. The causal mask is a tensor, not the attention layer's
        # use_causal_mask flag: a flag beside a tensor mask cannot pass a PruneWrapper.
        mask = None
        if padding is not None:
            mask = keras.ops.cast(keras.ops.expand_dims(padding, axis=1), "int32")
        if attention is not None:
            attention = keras.ops.cast(attention, "int32")
            mask = attention if mask is None else keras.ops.minimum(mask, attention)
        if causal:
            # positions 1 .. T for any T, in int32 (exact, whatever the block's float dtype)
            position = keras.ops.cumsum(keras.ops.ones_like(x[:, :, 0], dtype="int32"), axis=1)
            seen = keras.ops.expand_dims(position, axis=2) >= keras.ops.expand_dims(position, axis=1)
            seen = keras.ops.cast(seen, "int32")
            mask = seen if mask is None else keras.ops.minimum(mask, seen)

        def run(role, *inputs, **kwargs):
            layer = layers[role]
            y = layer(*inputs, **kwargs)
            layer.set_weights(parts[role].get_weights())
            return y

        first = block.normalize_first
        residual = x
        h = run("attention_norm", x) if first else x
        h = run("attention", h, h, attention_mask=mask) if mask is not None else run("attention", h, h)
        x = run("attention_dropout", h) + residual
        if not first:
            x = run("attention_norm", x)
        residual = x
        h = run("ffn_norm", x) if first else x
        h = run("ffn_in", h)
        if block.activation is _keras_compat.hub_gelu_approximate():  # as a Keras op
            h = keras.ops.gelu(h, approximate=True)
        h = run("ffn_dropout", run("ffn_out", h))
        x = h + residual
        if not first:
            x = run("ffn_norm", x)
        return x


def unfold_blocks(model: keras.Model, select: Callable[[keras.layers.Layer], bool]) -> keras.Model:
    """`unfold`, for the blocks `select` returns True for only."""
    check_graph_model(model)
    calls = _graph_calls(model)

    def replace(layer):
        if is_transformer_block(layer) and calls[id(layer)] == 1 and select(layer):
            return _Unfolded(layer)
        return layer

    return rebuild(model, replace)


def unfold(model: keras.Model) -> keras.Model:
    """The model with each keras-hub Transformer block replaced by standard Keras layers.

    Each keras-hub ``TransformerEncoder`` and ``TransformerDecoder`` (without
    cross-attention) becomes the sub-graph its ``call`` computes: MultiHeadAttention
    (with explicit ``num_heads`` and ``key_dim``), Dense, LayerNormalization, Dropout and
    ``+``, holding the block's weights, named ``{block}_{part}`` (for example
    ``transformer_layer_0_self_attention_layer`` and
    ``transformer_layer_0_feedforward_intermediate_dense``). The outputs are the
    model's. Unfold a model before `keras_prune.prunable` to prune a block's FFN units
    (``granularity="neuron"`` on ``..._feedforward_intermediate_dense``) or its heads as
    a MultiHeadAttention's; `keras_prune.shrink` then removes them and lowers
    ``num_heads``. Nested models are unfolded too. Blocks left as they are: see the
    module docstring (cross-attention, caches, a Keras mask on the input, a block
    called twice or inside a Sequential model).

    Args:
        model: a Sequential or Functional model (a keras-hub backbone is one), not wrapped.

    Returns:
        A plain Functional model (a Sequential model stays Sequential) with the same
        name; layers other than the blocks are the model's own (shared, as `shrink` shares
        the layers it does not change). Save it as ``.keras``: it holds only Keras and
        keras-hub layers.

    Raises:
        ModelError: the model is subclassed or not built.

    Example:

    ```python
    backbone = keras_hub.models.BertBackbone(...)
    model = keras_prune.prunable(keras_prune.unfold(backbone))
    keras_prune.prune(model, {"transformer_layer_0_self_attention_layer": 0.5}, granularity="head")
    keras_prune.prune(model, {"transformer_layer_0_feedforward_intermediate_dense": 0.5}, granularity="neuron")
    small = keras_prune.shrink(model)  # 2 of 4 heads, half the FFN units
    ```
    """
    return unfold_blocks(model, lambda layer: True)
