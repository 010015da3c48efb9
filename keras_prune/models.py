"""The reference models: the original tool's LeNet-5, the two LeNets of Han et al. 2015
and a small Vision Transformer.

Every model takes 28x28x1 float32 images scaled to [0, 1] and returns 10 logits
(no softmax; train with ``SparseCategoricalCrossentropy(from_logits=True)``).
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import layers

from keras_prune.errors import InputError

__all__ = [
    "build_model",
    "INPUT_SHAPE",
    "lenet5",
    "lenet5_caffe",
    "lenet_300_100",
    "MODELS",
    "NUM_CLASSES",
    "vit_mnist",
]

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def lenet5() -> keras.Sequential:
    """The original torch7-pruner's LeNet-5: 313,470 weights + 316 biases.

    Activations and pooling are layers of their own, so the original's 1-based
    layer indices name the same layers here: 1 conv1, 4 conv2, 8 fc1, 10 fc2, 12 fc3.

    Returns:
        An uncompiled `keras.Sequential`.
    """
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Conv2D(6, 5, padding="same", name="conv1"),
            layers.Activation("tanh", name="tanh1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(96, 5, padding="valid", name="conv2"),
            layers.Activation("tanh", name="tanh2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(120, name="fc1"),
            layers.Activation("tanh", name="tanh3"),
            layers.Dense(84, name="fc2"),
            layers.Activation("tanh", name="tanh4"),
            layers.Dense(NUM_CLASSES, name="fc3"),
        ],
        name="lenet5",
    )


def lenet5_caffe() -> keras.Sequential:
    """Caffe's LeNet-5 as pruned by Han et al. 2015: 430,500 weights, 431,080 parameters.

    conv1 20@5x5, max-pool, conv2 50@5x5, max-pool, fc1 500 + ReLU, fc2 10; no
    nonlinearity after the convolutions.
    """
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="fc1"),
            layers.Dense(NUM_CLASSES, name="fc2"),
        ],
        name="lenet5_caffe",
    )


def lenet_300_100() -> keras.Sequential:
    """LeNet-300-100 of Han et al. 2015: 784-300-100-10, ReLU, 266,200 weights."""
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Flatten(name="flatten"),
            layers.Dense(300, activation="relu", name="fc1"),
            layers.Dense(100, activation="relu", name="fc2"),
            layers.Dense(NUM_CLASSES, name="fc3"),
        ],
        name="lenet_300_100",
    )


def vit_mnist(
    patch: int = 7, dim: int = 64, heads: int = 4, depth: int = 4, mlp_dim: int = 128
) -> keras.Model:
    """A small Vision Transformer for MNIST (Dosovitskiy et al. 2021), pre-norm.

    Each non-overlapping `patch` x `patch` patch becomes a token (7x7 patches: 16
    tokens) through a strided Conv2D, plus a learned position embedding (an Embedding
    looked up at positions 0..15). Each of the `depth` encoder blocks is
    ``x = x + MHA(LN(x))`` then ``x = x + Dense(LN(x) -> mlp_dim, gelu) -> dim``; the
    head averages the tokens after a final LayerNormalization and maps them to 10
    logits. The residuals are Python ``+`` on tensors, as users write them.

    Args:
        patch: patch side in pixels; must divide 28.
        dim: token width.
        heads: attention heads per block (key width ``dim // heads``).
        depth: encoder blocks.
        mlp_dim: hidden width of each block's feed-forward network.

    Returns:
        An uncompiled Functional `keras.Model` (with the defaults: 4 blocks, 138,890
        parameters).

    Example:
        >>> model = vit_mnist()
        >>> model.output_shape
        (None, 10)
    """
    if patch <= 0 or INPUT_SHAPE[0] % patch:
        raise InputError(f"patch must divide {INPUT_SHAPE[0]}, got {patch}")
    if heads <= 0 or dim % heads:
        raise InputError(f"dim ({dim}) must be a multiple of heads ({heads})")
    tokens = (INPUT_SHAPE[0] // patch) ** 2
    images = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(images)
    x = layers.Reshape((tokens, dim), name="tokens")(x)
    positions = keras.ops.zeros_like(x[:, :, 0], dtype="int32") + keras.ops.arange(tokens, dtype="int32")
    x = x + layers.Embedding(tokens, dim, name="pos_embed")(positions)
    for block in range(1, depth + 1):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_ln1")(x)
        h = layers.MultiHeadAttention(heads, dim // heads, name=f"block{block}_mha")(h, h)
        x = x + h
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_ln2")(x)
        h = layers.Dense(mlp_dim, activation="gelu", name=f"block{block}_fc1")(h)
        x = x + layers.Dense(dim, name=f"block{block}_fc2")(h)
    x = layers.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(images, layers.Dense(NUM_CLASSES, name="head")(x), name="vit_mnist")


MODELS: dict[str, Callable[[], keras.Model]] = {
    "lenet5": lenet5,
    "lenet5_caffe": lenet5_caffe,
    "lenet_300_100": lenet_300_100,
    "vit_mnist": vit_mnist,
}


def build_model(name: str) -> keras.Model:
    """A new, untrained reference model by name.

    Args:
        name: one of `MODELS`.

    Raises:
        InputError: for an unknown name.
    """
    try:
        return MODELS[name]()
    except KeyError:
        raise InputError(
            f"unknown model '{name}'; choose one of: {', '.join(MODELS)}"
        ) from None
