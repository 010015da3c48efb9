"""One-shot pruning of the MNIST ViT without retraining: 50% and 2:4, per pruner.

The shipped `vit_mnist` (benchmarks/models/vit_mnist_e15.weights.h5, 1.45% test error)
is wrapped with `keras_prune.prunable`, pruned once, and its test error measured with
no retraining, for two plans:

- ``all``: every Dense, Conv2D and MultiHeadAttention layer (the position Embedding
  is left dense: the reconstruction pruners do not take embeddings);
- ``blocks``: the encoder blocks only (attention q/k/v/o and both FFN layers), the
  patch embedding and the classifier head left dense, as SparseGPT and Wanda leave
  the first and last layers of the language models they prune.

Pruners: magnitude, and wanda and sparsegpt with their defaults and with
``dense_targets=False`` (each part reconstructs its output on the pruned inputs, as
the papers do, instead of the unpruned model's output).

Calibration: 20 training batches of 128 (shuffled with seed 0), as `keras-prune run`
scores. Run from the repository root (about 20 minutes on 2 busy CPU cores;
``--plans``/``--pruners``/``--patterns`` run a part):

    .venv/bin/python benchmarks/bench_oneshot_vit.py
    .venv/bin/python benchmarks/bench_oneshot_vit.py --plans blocks --pruners sparsegpt --patterns 50%
    .venv/bin/python benchmarks/bench_oneshot_vit.py --plans blocks --pruners wanda --options '{"owl": 0.08}'

Results and the command are recorded in docs/one-shot.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_prune as kp  # noqa: E402
from keras_prune import models  # noqa: E402
from keras_prune.data import load_dataset  # noqa: E402

WEIGHTS = "benchmarks/models/vit_mnist_e15.weights.h5"
PRUNERS = {
    "magnitude": ("magnitude", {}),
    "wanda": ("wanda", {}),
    "wanda-paper": ("wanda", {"dense_targets": False}),
    "sparsegpt": ("sparsegpt", {}),
    "sparsegpt-paper": ("sparsegpt", {"dense_targets": False}),
}
"""Row label -> (pruner, options); "-paper": each part fitted to its pruned inputs' outputs."""
PATTERNS = ("50%", "2:4")


def trained_vit() -> keras.Model:
    model = models.vit_mnist()
    model.load_weights(WEIGHTS)
    return model


def test_error(model: keras.Model, dataset) -> float:
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return 100 * (1 - model.evaluate(dataset.test(1000), verbose=0)[1])


def plan(model: keras.Model, which: str) -> dict[str, float]:
    """Layer name -> 0.5 for the layers the plan prunes."""
    layers = [l for l in kp.wrapped_layers(model) if not isinstance(l.layer, keras.layers.Embedding)]
    if which == "blocks":
        layers = [l for l in layers if l.name.startswith("block")]
    return {layer.name: 0.5 for layer in layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", default="all,blocks")
    parser.add_argument("--pruners", default=",".join(PRUNERS), help=f"of {', '.join(PRUNERS)}")
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--options", default="{}", help="JSON options added to every pruner's, e.g. '{\"owl\": 0.08}'")
    args = parser.parse_args()
    extra = json.loads(args.options)
    dataset = load_dataset()
    calibration = dataset.train(128, seed=0).take(20)
    print(f"dense: test error {test_error(trained_vit(), dataset):.2f}%")
    print(f"{'plan':<8}{'pruner':<17}{'pattern':<9}{'test error':>11}{'sparsity':>10}{'time':>7}")
    for which in args.plans.split(","):
        for label in args.pruners.split(","):
            pruner, options = PRUNERS[label]
            options = {**options, **extra}
            for pattern in args.patterns.split(","):
                start = time.perf_counter()
                model = kp.prunable(trained_vit())
                model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
                kp.prune(model, plan(model, which), pruner, data=calibration, criterion_options=options,
                         pattern=None if pattern == "50%" else pattern)
                seconds = time.perf_counter() - start
                sparsity = kp.sparsity_report(model).total_compression
                print(
                    f"{which:<8}{label:<17}{pattern:<9}{test_error(model, dataset):>10.2f}%"
                    f"{sparsity:>10.3f}{seconds:>6.0f}s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
