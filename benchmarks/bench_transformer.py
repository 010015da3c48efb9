"""Structured pruning of a BERT-base-shaped encoder: FLOPs and parameters removed against
CPU latency, dense vs shrunk, in the TensorFlow runtime and in TensorFlow Lite.

The encoder is written with keras.layers (post-norm blocks: MultiHeadAttention, residual
``x + y``, LayerNormalization, Dense -> gelu -> Dense), BERT-base wide (hidden 768, 12
heads, FFN 3072) with random weights: latency does not depend on the weights' values.
Half the heads of every attention layer and half the FFN units of every block are
pruned (magnitude), the model is shrunk with `keras_prune.shrink`, the shrunk model is
checked against the masked one, and both are timed side by side at batch 1 and batch
32: the four (model, runtime) configurations take turns round after round, ``--burst``
calls in a row each, and each keeps its fastest call (`timing.fastest_interleaved`, as in
`bench_structured.py`).

Run from the repository root (about 7 minutes on 2 CPU cores with the defaults; ``--burst 1``, 4):

    .venv/bin/python benchmarks/bench_transformer.py

``--layers 12`` gives the full BERT-base depth (the per-layer ratios are the same; it
takes about three times as long). ``--keras-hub`` builds the same encoder from keras-hub's
``TransformerEncoder`` blocks (activation gelu) instead, and prunes it after
`keras_prune.unfold`. Options: ``--help``. Figures: docs/structured.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_prune  # noqa: E402
from keras_prune.flops import count_macs  # noqa: E402
from timing import fastest_interleaved, runners  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

L = keras.layers


def encoder(layers: int, seq: int, hidden: int, heads: int, ffn: int) -> keras.Model:
    """A BERT-style post-norm encoder on float token embeddings ``(batch, seq, hidden)``."""
    x = inputs = keras.Input((seq, hidden), name="embeddings")
    for i in range(layers):
        attention = L.MultiHeadAttention(heads, hidden // heads, name=f"mha{i}")(x, x)
        x = L.LayerNormalization(epsilon=1e-12, name=f"ln{i}a")(x + attention)
        h = keras.ops.gelu(L.Dense(ffn, name=f"ffn{i}_in")(x))
        x = L.LayerNormalization(epsilon=1e-12, name=f"ln{i}b")(x + L.Dense(hidden, name=f"ffn{i}_out")(h))
    return keras.Model(inputs, x, name="encoder")


def hub_encoder(layers: int, seq: int, hidden: int, heads: int, ffn: int) -> keras.Model:
    """The same encoder made of keras-hub ``TransformerEncoder`` blocks (post-norm, like BERT)."""
    import keras_hub

    x = inputs = keras.Input((seq, hidden), name="embeddings")
    for i in range(layers):
        x = keras_hub.layers.TransformerEncoder(ffn, heads, activation="gelu", layer_norm_epsilon=1e-12, name=f"block{i}")(x)
    return keras.Model(inputs, x, name="hub_encoder")


def time_side_by_side(models: dict[str, keras.Model], batch: int, rounds: int, threads: int, burst: int) -> dict:
    """Fastest seconds per batch for each (model, runtime), interleaved (`timing.fastest_interleaved`)."""
    x = np.random.default_rng(0).standard_normal((batch, *models["dense"].input_shape[1:])).astype("float32")
    calls = {(name, runtime): f for name, model in models.items() for runtime, f in runners(model, batch, threads).items()}
    return fastest_interleaved(calls, x, rounds, burst)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--ffn", type=int, default=3072)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of heads and FFN units pruned")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--burst", type=int, default=5,
                        help="calls of one configuration in a row within each round; the fastest is kept")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keras-hub", action="store_true", help="keras-hub TransformerEncoder blocks, unfolded")
    args = parser.parse_args()
    if args.burst < 1:
        parser.error(f"--burst must be at least 1, got {args.burst}")
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)

    shape = (args.layers, args.seq, args.hidden, args.heads, args.ffn)
    if args.keras_hub:
        dense = hub_encoder(*shape)
        model = keras_prune.prunable(keras_prune.unfold(dense))
        heads, units = "block{}_self_attention_layer", "block{}_feedforward_intermediate_dense"
    else:
        dense = encoder(*shape)
        model = keras_prune.prunable(dense)
        heads, units = "mha{}", "ffn{}_in"
    keras_prune.prune(model, {heads.format(i): args.fraction for i in range(args.layers)}, granularity="head")
    keras_prune.prune(model, {units.format(i): args.fraction for i in range(args.layers)}, granularity="neuron")
    small, report = keras_prune.shrink_with_report(model)
    x = np.random.default_rng(1).standard_normal((2, args.seq, args.hidden)).astype("float32")
    diff = float(np.max(np.abs(model(x) - small(x))))
    print(f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}  {sys.argv}  "
          f"load average {os.getloadavg()[0]:.1f}, {args.threads} thread(s)")
    print(f"shrunk vs masked: max |difference| {diff:.2e}")
    (p0, p1), (m0, m1) = report.parameters, report.multiply_adds
    print(f"parameters {p0:,} -> {p1:,} ({p0 / p1:.2f}x fewer); "
          f"FLOPs per example {2 * m0:,} -> {2 * m1:,} ({m0 / m1:.2f}x fewer)")
    assert m0 == count_macs(keras_prune.unfold(dense))  # keras-hub blocks are counted once unfolded
    print(f"{'batch':>5} {'runtime':>8} {'dense ms':>10} {'shrunk ms':>10} {'speed-up':>9}")
    for batch in (int(b) for b in args.batches.split(",")):
        fastest = time_side_by_side({"dense": dense, "shrunk": small}, batch, args.rounds, args.threads, args.burst)
        for runtime in ("tf", "tflite"):
            d, s = fastest[("dense", runtime)], fastest[("shrunk", runtime)]
            print(f"{batch:>5} {runtime:>8} {1e3 * d:>10.1f} {1e3 * s:>10.1f} {d / s:>8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
