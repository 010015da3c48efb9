"""The original tool's result on its own LeNet-5, and how far its conf can be pushed.

torch7-pruner pruned its LeNet-5 with ``lenet5.conf`` (layers 1,4,8,10,12 to
0.5,0.7,0.95,0.7,0.5 of their weights) to a total compression of 0.929 (14.1x fewer
weights) at 0.94% test error, from a 0.96% base model. This script:

1. runs the same conf on the shipped dense LeNet-5 (saved_models/lenet5.keras) as
   ``keras-prune run --retrain --epochs 3 --augment`` does: each layer in turn pruned
   by magnitude to its fraction, then retrained 3 epochs (SGD lr 0.01, momentum 0.9,
   random 2-pixel shifts);
2. pushes that pruned model further along three plans, each from the conf's result:
   ``scale`` multiplies every layer's kept share by `--shrink` per step (the conf's
   proportions kept), ``fc1`` raises only fc1's fraction along `FC1_FRACTIONS`, and
   ``global`` prunes all layers together by magnitude (global selection, raw
   magnitudes) to `GLOBAL_TARGETS`; every step is followed by `--epochs` retraining
   epochs, the learning rate decaying from `--lr` to 0 (cosine);
3. prints every point, and per plan the largest compression whose test error is at
   most the original's 0.94% and at most the dense model's error + `--tolerance`.

Run from the repository root (about 8 minutes on 2 CPU cores, 15 under load):

    .venv/bin/python benchmarks/bench_original.py

``--shipped`` starts from saved_models/lenet5_pruned.keras (made by step 1's command)
instead of redoing step 1. Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_prune as kp  # noqa: E402
from keras_prune.data import Dataset, load_dataset  # noqa: E402
from keras_prune.training import evaluate, train  # noqa: E402
from timing import Clock  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parent.parent
DENSE = ROOT / "saved_models" / "lenet5.keras"
SHIPPED_PRUNED = ROOT / "saved_models" / "lenet5_pruned.keras"
CONF = {"conv1": 0.5, "conv2": 0.7, "fc1": 0.95, "fc2": 0.7, "fc3": 0.5}  # layers 1,4,8,10,12
ORIGINAL_ERROR = 0.94
LR = 0.01
PLANS = ("scale", "fc1", "global")
FC1_FRACTIONS = (0.97, 0.98, 0.99, 0.995)
GLOBAL_TARGETS = (20, 28, 40, 56, 80)


@dataclass
class Point:
    """One model's figures."""

    label: str
    compression: float  # pruned / all weights, the original's "Total Compression"
    ratio: float  # all weights / non-zero weights
    kept: dict[str, float]
    val_error: float
    test_error: float
    epochs: int  # retraining epochs spent since the dense model
    cpu: float
    wall: float


def measure(label: str, model: keras.Model, data: Dataset, epochs: int, clock: Clock) -> Point:
    """The `Point` of `model` now."""
    report = kp.sparsity_report(model)
    cpu, wall = clock.elapsed()
    return Point(label, report.total_compression, report.ratio,
                 {layer.name: layer.retained for layer in report.layers},
                 evaluate(model, data.validation()).error, evaluate(model, data.test()).error, epochs, cpu, wall)


def run_conf(dense: keras.Model, data: Dataset, epochs: int, clock: Clock) -> keras.Model:
    """The original's conf: each layer pruned in turn, then `epochs` retraining epochs."""
    model = kp.prunable(dense)
    for layer, fraction in CONF.items():
        kp.prune(model, {layer: fraction})
        train(model, data, epochs, lr=LR, seed=0, augment=True, verbose=0)
        print(f"  {layer} -> {fraction}: validation {evaluate(model, data.validation())} "
              f"(CPU {clock.elapsed()[0]:.0f} s)", flush=True)
    return model


def plan_step(model: keras.Model, plan: str, step: int, conf: Point, shrink: float) -> str:
    """Prunes `model` to step `step` (1-based) of `plan`; returns the step's label."""
    if plan == "scale":
        kp.prune(model, {layer: 1.0 - share * shrink**step for layer, share in conf.kept.items()})
        return f"scale: kept x {shrink**step:.3f}"
    if plan == "fc1":
        kp.prune(model, {**CONF, "fc1": FC1_FRACTIONS[step - 1]})
        return f"fc1: fraction {FC1_FRACTIONS[step - 1]}"
    kp.prune(model, {layer: 1.0 - 1.0 / GLOBAL_TARGETS[step - 1] for layer in CONF}, scope="global",
             normalization="none")
    return f"global: {GLOBAL_TARGETS[step - 1]}x"


def push(start: keras.Model, plan: str, data: Dataset, args: argparse.Namespace, conf: Point) -> list[Point]:
    """The points of one plan, each after its pruning step and retraining."""
    model, clock = kp.prunable(start), Clock()
    steps = {"scale": args.steps, "fc1": len(FC1_FRACTIONS), "global": len(GLOBAL_TARGETS)}[plan]
    points = []
    for step in range(1, steps + 1):
        label = plan_step(model, plan, step, conf, args.shrink)
        train(model, data, args.epochs, lr=args.lr, seed=step, cosine=True, augment=True, verbose=0)
        point = measure(label, model, data, conf.epochs + step * args.epochs, clock)
        point.cpu, point.wall = point.cpu + conf.cpu, point.wall + conf.wall
        points.append(point)
        print(f"  {point.label}: {point.compression:.4f} ({point.ratio:.1f}x), val {point.val_error:.2f}%, "
              f"test {point.test_error:.2f}% (CPU {point.cpu:.0f} s)", flush=True)
    return points


def row(point: Point) -> str:
    """One Markdown row of the results table."""
    kept = " ".join(f"{name} {100 * share:.1f}%" for name, share in point.kept.items())
    return (f"| {point.label} | {point.compression:.4f} | {point.ratio:.1f}x | {point.val_error:.2f}% | "
            f"{point.test_error:.2f}% | {point.epochs} | {point.cpu / 60:.1f} min | {point.wall / 60:.1f} min | {kept} |")


def best_within(points: list[Point], limit: float) -> Point | None:
    """The most compressed point whose test error is at most `limit`."""
    within = [p for p in points if p.test_error <= limit + 1e-9]
    return max(within, key=lambda p: p.ratio) if within else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conf-epochs", type=int, default=3, help="retraining epochs after each layer of the conf")
    parser.add_argument("--plans", nargs="+", choices=PLANS, default=list(PLANS))
    parser.add_argument("--steps", type=int, default=7, help="steps of the scale plan")
    parser.add_argument("--shrink", type=float, default=0.8, help="factor on every layer's kept share per step")
    parser.add_argument("--epochs", type=int, default=3, help="retraining epochs per push step")
    parser.add_argument("--lr", type=float, default=0.02, help="initial learning rate of each push retraining")
    parser.add_argument("--tolerance", type=float, default=0.05, help="test error points above dense allowed")
    parser.add_argument("--shipped", action="store_true", help="push from saved_models/lenet5_pruned.keras")
    args = parser.parse_args()

    print(f"# bench_original {datetime.datetime.now().isoformat(timespec='minutes')}: python {' '.join(sys.argv)}")
    print(f"# {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    keras.utils.set_random_seed(0)
    total = Clock()
    data = load_dataset()
    dense_model = kp.load_model(DENSE)
    dense = measure("dense (saved_models/lenet5.keras)", dense_model, data, 0, Clock())
    clock = Clock()
    if args.shipped:
        model = kp.load_model(SHIPPED_PRUNED)
        conf = measure("conf (shipped lenet5_pruned.keras)", model, data, len(CONF) * args.conf_epochs, clock)
    else:
        model = run_conf(dense_model, data, args.conf_epochs, clock)
        conf = measure(f"conf, {args.conf_epochs} epochs per layer", model, data, len(CONF) * args.conf_epochs, clock)
    print(f"  {conf.label}: {conf.compression:.4f} ({conf.ratio:.1f}x), test {conf.test_error:.2f}%", flush=True)
    plans = {plan: push(model, plan, data, args, conf) for plan in args.plans}

    print("\n| result | total compression | x fewer weights | val error | test error | retraining epochs "
          "| CPU time | wall time | weights kept |\n|---|---|---|---|---|---|---|---|---|")
    print("| torch7-pruner, its base model | 0 | 1.0x | | 0.96% | | | | |")
    print("| torch7-pruner, conf one-shot + 20 retraining epochs | 0.929 | 14.1x | | 0.94% | 20 | | | conf |")
    for point in (dense, conf, *(p for points in plans.values() for p in points)):
        print(row(point))
    print("\n(CPU/wall time: cumulative from the dense model, which was trained separately: saved_models/lenet5.md)")
    limits = {"the original's 0.94%": ORIGINAL_ERROR,
              f"dense {dense.test_error:.2f}% + {args.tolerance}": dense.test_error + args.tolerance}
    for plan, points in plans.items():
        for what, limit in limits.items():
            best = best_within([conf, *points], limit)
            text = (f"{best.compression:.4f} ({best.ratio:.1f}x) at {best.test_error:.2f}%, CPU {best.cpu / 60:.1f} min"
                    if best else "none")
            print(f"- {plan}: largest compression at test error <= {what}: {text}")
    cpu, wall = total.elapsed()
    print(f"\n(total: CPU {cpu / 60:.1f} min, wall {wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
