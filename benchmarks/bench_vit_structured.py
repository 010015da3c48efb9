"""Heads and FFN width of the small MNIST ViT, pruned and retrained (issue 12 item 7, accuracy).

Loads `keras_prune.models.vit_mnist` with the shipped weights
(``benchmarks/models/vit_mnist_e15.weights.h5``, 1.45% test error), wraps every
block's MultiHeadAttention and first FFN Dense (``blockN_mha``, ``blockN_fc1``) with
`keras_prune.prunable`, then runs ``--rounds`` prune/retrain rounds:

- `keras_prune.prune(..., granularity="head")` on each attention layer and
  ``granularity="neuron"`` on each ``fc1`` (its hidden units; shrink then removes the
  matching input rows of ``fc2``), each layer's cumulative fraction rising linearly to
  ``--heads`` and ``--ffn`` over the rounds, ranked by ``--criterion``;
- retraining as ``keras-prune train --optimizer adamw --augment`` does
  (`keras_prune.training.train`: AdamW, weight decay 0.05, cosine decay of ``--lr``,
  random 2-pixel shifts) for ``--epochs`` epochs per round, ``--final-epochs`` after
  the last one.

Then `keras_prune.shrink_with_report` removes the dead heads and units; the shrunk model's
outputs are checked against the pruned (masked) model's on validation images. It prints
dense vs final FLOPs (`keras_prune.flops.count_flops`), parameters, heads per block, FFN
widths, validation error after every round and validation and test error at the end,
and wall time. Decisions use the validation split only; the test split is read once, for
the final report.

Run from the repository root (about 11 minutes on 2 shared CPU cores at the defaults):

    .venv/bin/python benchmarks/bench_vit_structured.py [--heads 0.5] [--ffn 0.625]

``--tiny`` runs the same path on a small random ViT and a slice of the data (seconds; for
the tests). Results are recorded in docs/benchmarks.md (section 7).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_prune  # noqa: E402
from keras_prune.criteria import get_criterion  # noqa: E402
from keras_prune.data import Dataset, load_dataset  # noqa: E402
from keras_prune.errors import KerasPruneError  # noqa: E402
from keras_prune.flops import count_flops  # noqa: E402
from keras_prune.models import vit_mnist  # noqa: E402
from keras_prune.training import evaluate, train  # noqa: E402

WEIGHTS = Path(__file__).parent / "models" / "vit_mnist_e15.weights.h5"
SCORE_BATCHES = 20
"""Training batches a data-driven criterion (taylor1) scores on."""


@dataclass(frozen=True)
class Shape:
    """Per-block attention heads and FFN widths of a ViT."""

    heads: tuple[int, ...]
    ffn: tuple[int, ...]

    def __str__(self) -> str:
        return f"heads {list(self.heads)}, FFN widths {list(self.ffn)}"


def vit_shape(model: keras.Model, depth: int) -> Shape:
    """Heads and FFN widths of a plain (stripped or shrunk) ViT made by `vit_mnist`."""
    heads = tuple(model.get_layer(f"block{b}_mha").num_heads for b in range(1, depth + 1))
    ffn = tuple(model.get_layer(f"block{b}_fc1").units for b in range(1, depth + 1))
    return Shape(heads, ffn)


def fraction_at(target: float, units: int, round_: int, rounds: int) -> float:
    """Cumulative fraction for `round_` (1-based): a whole number of `units`, rising
    linearly to `target` at the last round."""
    return int(target * units * round_ / rounds + 0.5) / units  # halves round up


def share(text: str) -> float:
    """An argparse type: a fraction in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """Prunes, retrains and shrinks the ViT as `args` say, printing the figures; returns the exit status."""
    get_criterion(args.criterion)  # an unknown name fails here, before any work
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    data = load_dataset()
    if args.tiny:
        config = dict(dim=16, heads=4, depth=1, mlp_dim=16)
        data = Dataset(
            data.name, data.x_train[:512], data.y_train[:512], data.x_val[:256], data.y_val[:256],
            data.x_test[:256], data.y_test[:256],
        )
        dense = vit_mnist(**config)
    else:
        config = dict(dim=64, heads=4, depth=4, mlp_dim=128)
        dense = vit_mnist(**config)
        dense.load_weights(WEIGHTS)
    depth, heads, mlp_dim = config["depth"], config["heads"], config["mlp_dim"]
    blocks = range(1, depth + 1)
    attention = [f"block{b}_mha" for b in blocks]
    ffn = [f"block{b}_fc1" for b in blocks]

    dense_flops = count_flops(dense).macs
    dense_val = evaluate(dense, data.validation())
    print(f"dense: {dense_flops:,} multiply-adds, {dense.count_params():,} parameters, "
          f"{vit_shape(dense, depth)}, validation {dense_val}", flush=True)

    model = keras_prune.prunable(dense, layers=attention + ffn)
    scoring = data.scoring(args.batch_size, SCORE_BATCHES, args.seed) if args.criterion != "magnitude" else None
    for round_ in range(1, args.rounds + 1):
        head_fraction = fraction_at(args.heads, heads, round_, args.rounds)
        ffn_fraction = fraction_at(args.ffn, mlp_dim, round_, args.rounds)
        if head_fraction:
            keras_prune.prune(model, {name: head_fraction for name in attention}, args.criterion,
                              data=scoring, granularity="head")
        keras_prune.prune(model, {name: ffn_fraction for name in ffn}, args.criterion,
                          data=scoring, granularity="neuron")
        pruned_val = evaluate(model, data.validation())
        epochs = args.final_epochs if round_ == args.rounds else args.epochs
        train(model, data, epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed + round_,
              cosine=True, augment=True, optimizer="adamw", verbose=0 if args.tiny else 2)
        retrained_val = evaluate(model, data.validation())
        print(f"round {round_}/{args.rounds}: heads {head_fraction:.2f}, FFN {ffn_fraction:.3f} pruned; "
              f"validation error {pruned_val.error:.2f}% -> {retrained_val.error:.2f}% after {epochs} "
              f"epoch(s); {(time.perf_counter() - start) / 60:.1f} min", flush=True)

    stripped = keras_prune.strip(model)
    small, report = keras_prune.shrink_with_report(model)
    x_check = next(iter(data.validation(256)))[0]
    difference = float(np.max(np.abs(np.asarray(small(x_check)) - np.asarray(stripped(x_check)))))
    if difference > 1e-4:
        print(f"shrunk outputs differ from the pruned model's by up to {difference:.2e}", file=sys.stderr)
        return 1
    small_flops = count_flops(small).macs
    small_val = evaluate(small, data.validation())
    dense_test = evaluate(dense, data.test())
    small_test = evaluate(small, data.test())
    minutes = (time.perf_counter() - start) / 60
    print(f"\nshrink: {report}")
    print(f"shrunk vs pruned outputs: max |difference| {difference:.1e} on 256 validation images")
    print("\n| model | multiply-adds | parameters | heads per block | FFN widths | validation error | test error |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, m, flops, val, test in (
        ("dense", dense, dense_flops, dense_val, dense_test),
        ("pruned + shrunk", small, small_flops, small_val, small_test),
    ):
        shape = vit_shape(m, depth)
        print(f"| {label} | {flops:,} | {m.count_params():,} | {list(shape.heads)} | {list(shape.ffn)} "
              f"| {val.error:.2f}% | {test.error:.2f}% |")
    print(f"\nFLOPs {dense_flops / small_flops:.2f}x fewer, parameters "
          f"{dense.count_params() / small.count_params():.2f}x fewer, test error "
          f"{small_test.error - dense_test.error:+.2f} points; wall time {minutes:.1f} min")
    print(f"date {datetime.date.today()}; command: .venv/bin/python {' '.join(sys.argv)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=share, default=0.5, help="share of each block's heads to prune")
    parser.add_argument("--ffn", type=share, default=0.625, help="share of each block's FFN units to prune")
    parser.add_argument("--criterion", default="magnitude", help="a keras_prune criterion (magnitude, taylor1, ...)")
    parser.add_argument("--rounds", type=int, default=4, help="prune/retrain rounds")
    parser.add_argument("--epochs", type=int, default=3, help="retraining epochs after each round but the last")
    parser.add_argument("--final-epochs", type=int, default=6, help="retraining epochs after the last round")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (cosine decay per round)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a small random ViT on a data slice (for tests)")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KerasPruneError as error:  # a bad criterion name or share: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
