"""Han et al. 2015, Table 1, on our CPU: LeNet-300-100 and the Caffe LeNet-5, pruned
iteratively with retraining, then pushed as far as test error allows.

For the chosen net:

1. dense: trained here (SGD, momentum 0.9, learning rate `--lr` with cosine decay,
   weight decay, random 2-pixel shifts) or loaded from benchmarks/models/ where an
   earlier run cached it (its training time is kept beside it);
2. Han's recipe: every layer pruned by magnitude to Han's per-layer targets in
   `--steps` equal steps, each followed by `--epochs` retraining epochs (weights kept,
   no re-initialisation; same augmentation and weight decay as the dense model);
3. criteria screen: every registered criterion prunes the dense model once (global
   selection, no retraining) to `SCREEN_FRACTIONS`; the data-driven criterion with the
   lowest mean validation error is "the best other criterion";
4. curves: magnitude and that criterion, each pruning the dense model along the same
   increasing compression targets (global selection across all layers), `--epochs`
   retraining epochs after each target. Every point reports validation and test error.

Every retraining runs SGD with momentum 0.9 from `--retrain-lr` decaying to 0 (cosine)
over its epochs. Prints the tables and the largest compression whose test error stays
at most the dense model's, and within `--tolerance` points of it, with the CPU and
wall time of every result. Test error is only reported: criteria score on training
batches and the screen ranks on validation error.

Run from the repository root (wall time on 2 CPU cores with the cached dense models; up to
twice that while other work shares the cores):

    .venv/bin/python benchmarks/bench_han.py                      # LeNet-300-100, ~4 min
    .venv/bin/python benchmarks/bench_han.py --net lenet5_caffe   # ~18 min

``--no-cache`` trains the dense model (LeNet-300-100 about 1.5 min, LeNet-5 about 3.5);
``--quick`` is a one-minute smoke test. Options: ``--help``. Results and commands are
recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_prune as kp  # noqa: E402
from keras_prune.criteria import available_criteria, get_criterion  # noqa: E402
from keras_prune.data import Dataset, load_dataset  # noqa: E402
from keras_prune.models import lenet5_caffe, lenet_300_100  # noqa: E402
from keras_prune.training import evaluate  # noqa: E402
from timing import Clock  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

MODELS_DIR = Path(__file__).resolve().parent / "models"
BATCH_SIZE = 128
SCORING_BATCHES = 20
SCREEN_FRACTIONS = (0.9, 0.95, 0.98)
QUICK_TARGETS = (4, 12)


@dataclass(frozen=True)
class Net:
    """A network of Han et al. 2015, Table 1, and the paper's figures for it."""

    build: Callable[[], keras.Model]
    han_pruned: dict[str, float]  # per-layer fraction pruned in the paper
    dense_epochs: int
    epochs: int  # retraining epochs per pruning step
    targets: tuple[float, ...]  # compression targets of the curves (x fewer weights)
    paper: tuple[float, float]  # the paper's dense and pruned (12x) test error, %


NETS = {
    "lenet_300_100": Net(
        lenet_300_100,
        {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74},
        dense_epochs=30,
        epochs=8,
        targets=(4, 8, 12, 16, 20, 24, 32, 48),
        paper=(1.64, 1.59),
    ),
    "lenet5_caffe": Net(
        lenet5_caffe,
        {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81},
        dense_epochs=20,
        epochs=4,
        targets=(4, 8, 12, 16, 24, 32, 48, 64, 100),
        paper=(0.80, 0.77),
    ),
}


@dataclass
class Point:
    """One pruned (or dense) model's figures."""

    label: str
    compression: float  # all weights / non-zero weights
    kept: dict[str, float]  # per-layer share of weights kept
    val_error: float
    test_error: float
    epochs: int  # training epochs spent on this result (cumulative along a path)
    cpu: float
    wall: float


@dataclass
class Settings:
    """What every training run of one benchmark uses."""

    lr: float  # dense training
    retrain_lr: float  # retraining after each pruning step
    weight_decay: float
    augment: bool
    epochs: int  # retraining epochs per pruning step


def fit(model: keras.Model, data: Dataset, epochs: int, lr: float, settings: Settings, seed: int) -> None:
    """Trains `model` for `epochs` with SGD (momentum 0.9), the learning rate decaying
    from `lr` to 0 along a cosine, and decoupled weight decay."""
    steps = math.ceil(len(data.x_train) / BATCH_SIZE) * epochs
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(lr, steps), momentum=0.9, weight_decay=settings.weight_decay
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(data.train(BATCH_SIZE, seed=seed, augment=settings.augment), epochs=epochs, verbose=0)


def measure(label: str, model: keras.Model, data: Dataset, epochs: int, clock: Clock) -> Point:
    """A `Point` for `model`: compression, per-layer kept share and both errors."""
    report = kp.sparsity_report(model)
    cpu, wall = clock.elapsed()
    return Point(
        label,
        report.ratio,
        {layer.name: layer.retained for layer in report.layers},
        evaluate(model, data.validation()).error,
        evaluate(model, data.test()).error,
        epochs,
        cpu,
        wall,
    )


def dense_model(name: str, net: Net, data: Dataset, settings: Settings, epochs: int, cache: bool) -> tuple[keras.Model, Point]:
    """The trained dense net: loaded from `MODELS_DIR` if cached, else trained (and
    cached when `cache`). Its `Point` carries the training time, also when loaded."""
    weights = MODELS_DIR / f"{name}_e{epochs}.weights.h5"
    card = weights.with_suffix("").with_suffix(".json")
    if cache and weights.is_file() and card.is_file():
        model = net.build()
        model.load_weights(weights)
        recorded = json.loads(card.read_text())
        point = measure("dense (cached)", model, data, epochs, Clock())
        point.cpu, point.wall = recorded["cpu_s"], recorded["wall_s"]
        return model, point
    keras.utils.set_random_seed(0)
    model = net.build()
    clock = Clock()
    fit(model, data, epochs, settings.lr, settings, seed=0)
    point = measure("dense", model, data, epochs, clock)
    if cache:
        MODELS_DIR.mkdir(exist_ok=True)
        uncompiled = net.build()  # no optimizer state in the file
        uncompiled.set_weights(model.get_weights())
        uncompiled.save_weights(weights)
        card.write_text(json.dumps({"cpu_s": point.cpu, "wall_s": point.wall, "epochs": epochs,
                                    "lr": settings.lr, "weight_decay": settings.weight_decay,
                                    "augment": settings.augment, "test_error": point.test_error}, indent=1))
    return model, point


def han_recipe(dense: keras.Model, net: Net, data: Dataset, settings: Settings, steps: int) -> Point:
    """Han's per-layer targets by magnitude in `steps` equal steps, retraining after each."""
    clock = Clock()
    model = kp.prunable(dense)
    for step in range(1, steps + 1):
        kp.prune(model, {layer: f * step / steps for layer, f in net.han_pruned.items()})
        fit(model, data, settings.epochs, settings.retrain_lr, settings, seed=step)
    return measure(f"Han's targets, {steps} steps x {settings.epochs} ep", model, data, steps * settings.epochs, clock)


def prune_global(model: keras.Model, compression: float, criterion: str, data: Dataset,
                 options: dict | None = None, seed: int = 0) -> None:
    """Prunes all layers together (global selection) to `compression`x fewer weights.

    Scores are compared raw across layers (normalization ``none``): for magnitude, layers
    with small weights (large fan-in) lose most, as with Han's per-layer targets. Criteria
    that need data score on `SCORING_BATCHES` training batches, a fixed draw of seed
    ``1000 * seed + int(compression)`` (`Dataset.scoring`: the same batches in any run,
    whatever ran before); a criterion with a ``seed`` option (taylor2's and taylor12's
    probes or label draws) gets `seed` unless `options` sets it. Seed 0 is the default run.
    """
    layers = [layer.name for layer in kp.wrapped_layers(model)]
    fraction = 1.0 - 1.0 / compression
    scoring = data.scoring(BATCH_SIZE, SCORING_BATCHES, 1000 * seed + int(compression))
    options = dict(options or {}) if criterion != "magnitude" else None
    if options is not None and "seed" in inspect.signature(type(get_criterion(criterion)).__init__).parameters:
        options.setdefault("seed", seed)
    kp.prune(model, {name: fraction for name in layers}, criterion, data=scoring, scope="global",
             normalization="none", criterion_options=options or None)


def screen(dense: keras.Model, data: Dataset, criteria: list[str], options: dict | None = None,
           seed: int = 0, seeds: int = 1) -> dict[str, tuple[list[float], float, list[float] | None]]:
    """One-shot global pruning of the dense model by each criterion (`options` for all
    but magnitude), no retraining: validation error (%) at each of `SCREEN_FRACTIONS`,
    and the CPU seconds it took. Data-driven criteria score on `seeds` draws of scoring
    data (seeds `seed`, `seed` + 1, ...; see `prune_global`): each error is their mean,
    with their standard deviation beside it when `seeds` > 1 (magnitude needs no data:
    one draw)."""
    results = {}
    for criterion in criteria:
        clock, draws = Clock(), []
        for s in range(seed, seed + (1 if criterion == "magnitude" else seeds)):
            errors = []
            for fraction in SCREEN_FRACTIONS:
                model = kp.prunable(dense)
                prune_global(model, 1.0 / (1.0 - fraction), criterion, data, options, s)
                errors.append(evaluate(model, data.validation()).error)
            draws.append(errors)
            if seeds > 1 and criterion != "magnitude":
                print(f"  screen {criterion:<10} seed {s}: " + " ".join(f"{e:6.2f}%" for e in errors), flush=True)
        table = np.array(draws)
        spread = list(table.std(axis=0, ddof=1)) if len(draws) > 1 else None
        results[criterion] = (list(table.mean(axis=0)), clock.elapsed()[0] / len(draws), spread)
        print(f"  screen {criterion:<10} " + " ".join(f"{e:6.2f}%" for e in results[criterion][0]), flush=True)
    return results


def curve(dense: keras.Model, data: Dataset, settings: Settings, criterion: str, targets: tuple[float, ...]) -> list[Point]:
    """Iterative global pruning along `targets` (x fewer weights), retraining after each."""
    clock = Clock()
    model = kp.prunable(dense)
    points = []
    for step, target in enumerate(targets, start=1):
        prune_global(model, target, criterion, data)
        fit(model, data, settings.epochs, settings.retrain_lr, settings, seed=step)
        points.append(measure(f"{criterion} {target:g}x", model, data, step * settings.epochs, clock))
        print(f"  {points[-1].label:<16} val {points[-1].val_error:.2f}%  test {points[-1].test_error:.2f}%  "
              f"cpu {points[-1].cpu:.0f} s", flush=True)
    return points


def best_within(points: list[Point], limit: float) -> Point | None:
    """The most compressed point whose test error is at most `limit`."""
    within = [p for p in points if p.test_error <= limit + 1e-9]
    return max(within, key=lambda p: p.compression) if within else None


def kept_text(point: Point) -> str:
    """Per-layer kept share, e.g. ``fc1 8.0% fc2 9.0%``."""
    return " ".join(f"{name} {100 * share:.1f}%" for name, share in point.kept.items())


def point_row(point: Point) -> str:
    """One Markdown row of the results table."""
    return (f"| {point.label} | {point.compression:.1f}x | {point.val_error:.2f}% | {point.test_error:.2f}% | "
            f"{point.epochs} | {point.cpu / 60:.1f} min | {point.wall / 60:.1f} min | {kept_text(point)} |")


def results_table(dense: Point, points: list[Point]) -> str:
    """The results table: dense first, then `points`."""
    head = ("| result | x fewer weights | val error | test error | epochs | CPU time | wall time | weights kept |\n"
            "|---|---|---|---|---|---|---|---|")
    return "\n".join([head, point_row(dense), *(point_row(p) for p in points)])


def screen_table(results: dict[str, tuple[list[float], float, list[float] | None]]) -> str:
    """The screen's table: validation error per criterion and compression (mean +- standard
    deviation over the scoring draws, where there were several), CPU time per draw."""
    head = ("| criterion | " + " | ".join(f"{1 / (1 - f):.0f}x val error" for f in SCREEN_FRACTIONS)
            + " | CPU time |\n|---|" + "---|" * (len(SCREEN_FRACTIONS) + 1))
    rows = [f"| {name} | " + " | ".join(f"{e:.2f}%" + ("" if spread is None else f" ± {d:.2f}")
                                        for e, d in zip(errors, spread or errors)) + f" | {cpu:.0f} s |"
            for name, (errors, cpu, spread) in results.items()]
    return "\n".join([head, *rows])


def summary(dense: Point, curves: dict[str, list[Point]], tolerance: float) -> list[str]:
    """Lines: per criterion, the largest compression within `tolerance` of dense test error."""
    lines = []
    for criterion, points in curves.items():
        at_most_dense = best_within(points, dense.test_error)
        within = best_within(points, dense.test_error + tolerance)
        for what, point in (("<= dense", at_most_dense), (f"<= dense + {tolerance}", within)):
            text = (f"{point.compression:.1f}x at {point.test_error:.2f}% (CPU {point.cpu / 60:.1f} min "
                    f"from the dense model)" if point else "none of the targets")
            lines.append(f"- {criterion}, test error {what} ({dense.test_error:.2f}%"
                         f"{'' if what == '<= dense' else f' + {tolerance}'}): {text}")
    return lines


def plot(path: Path, results: dict[str, tuple[Point, Point, dict[str, list[Point]]]], tolerance: float) -> None:
    """Compression vs test error, one panel per net, a line per criterion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 3.4), squeeze=False)
    for ax, (name, (dense, han, curves)) in zip(axes[0], results.items()):
        for criterion, points in curves.items():
            ax.plot([p.compression for p in points], [p.test_error for p in points], "o-", ms=3, label=criterion)
        ax.axhline(dense.test_error, color="k", lw=0.8, label=f"dense {dense.test_error:.2f}%")
        ax.axhline(dense.test_error + tolerance, color="k", lw=0.8, ls=":", label=f"dense + {tolerance}")
        ax.plot([12], [NETS[name].paper[1]], "k^", label="Han et al. 2015 (paper)")
        ax.plot([han.compression], [han.test_error], "rs", label="Han's targets (ours)")
        ticks = sorted({p.compression for points in curves.values() for p in points})
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("x fewer weights (all / non-zero)")
        ax.set_ylabel("test error (%)")
        ax.set_title(name)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def run_net(name: str, args: argparse.Namespace, data: Dataset) -> tuple[Point, Point, dict[str, list[Point]]]:
    """The dense point, Han's recipe and the curves for one net; prints its tables."""
    net = NETS[name]
    settings = Settings(args.lr, args.retrain_lr, args.weight_decay, not args.no_augment, args.epochs or net.epochs)
    dense_epochs = args.dense_epochs or net.dense_epochs
    dense, dense_point = dense_model(name, net, data, settings, dense_epochs, cache=not args.no_cache)
    print(f"\n## {name}: dense test error {dense_point.test_error:.2f}% (Han et al. 2015: dense "
          f"{net.paper[0]:.2f}%, pruned {net.paper[1]:.2f}% at 12x)", flush=True)
    if args.screen_only:
        criteria = args.criteria or [c for c in available_criteria() if c != "magnitude"]
        print(f"\n### {name}: one-shot criteria screen (global selection, no retraining)\n")
        print(screen_table(screen(dense, data, ["magnitude", *criteria], args.options, args.seed, args.seeds)))
        return dense_point, None, {}
    keras.utils.set_random_seed(1)
    han = han_recipe(dense, net, data, settings, args.steps)
    print(f"  {han.label}: {han.compression:.1f}x, test {han.test_error:.2f}%", flush=True)
    criteria = args.criteria or [c for c in available_criteria() if c != "magnitude"]
    screened = screen(dense, data, ["magnitude", *criteria])
    other = min(criteria, key=lambda c: float(np.mean(screened[c][0])))
    curves = {}
    for criterion in ("magnitude", other):
        keras.utils.set_random_seed(2)
        curves[criterion] = curve(dense, data, settings, criterion, args.targets or net.targets)

    print(f"\n### {name}: one-shot criteria screen (global selection, no retraining; "
          f"best other criterion by mean validation error: {other})\n")
    print(screen_table(screened))
    print(f"\n### {name}: results (CPU/wall time from the dense model; the dense row: its training)\n")
    print(results_table(dense_point, [han, *curves["magnitude"], *curves[other]]))
    print()
    print("\n".join(summary(dense_point, curves, args.tolerance)))
    return dense_point, han, curves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", choices=[*NETS, "all"], default="lenet_300_100")
    parser.add_argument("--epochs", type=int, help="retraining epochs after each pruning step (default: 8 / 4)")
    parser.add_argument("--steps", type=int, default=5, help="pruning steps of Han's recipe")
    parser.add_argument("--targets", type=lambda s: tuple(float(x) for x in s.split(",")),
                        help="compression targets of the curves, comma-separated (x fewer weights)")
    parser.add_argument("--criteria", nargs="*", help="criteria to screen besides magnitude (default: all)")
    parser.add_argument("--screen-only", action="store_true",
                        help="only the one-shot criteria screen on the (cached) dense model")
    parser.add_argument("--options", type=json.loads, help="criterion options for the screen, as JSON, "
                        'e.g. \'{"damping": 30}\' (magnitude takes none)')
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the screen's scoring batches and of taylor2/taylor12's probes "
                        "(default 0); other seeds measure the screen's noise")
    parser.add_argument("--seeds", type=int, default=1,
                        help="screen each data-driven criterion on this many scoring draws (seeds --seed, "
                        "--seed + 1, ...): mean and standard deviation per cell")
    parser.add_argument("--dense-epochs", type=int, help="dense training epochs (default: 30 / 20)")
    parser.add_argument("--lr", type=float, default=0.05, help="dense learning rate (cosine decay to 0)")
    parser.add_argument("--retrain-lr", type=float, default=0.02,
                        help="learning rate of each retraining (cosine decay to 0 over its epochs)")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--no-augment", action="store_true", help="no random 2-pixel shifts")
    parser.add_argument("--no-cache", action="store_true", help="train the dense models, do not cache them")
    parser.add_argument("--tolerance", type=float, default=0.05, help="test error points above dense allowed")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 dense epochs, 2 targets, 1 step")
    parser.add_argument("--plot", type=Path, help="write the compression-vs-error curves to this PNG")
    args = parser.parse_args()
    if args.quick:
        args.dense_epochs, args.epochs, args.steps, args.targets, args.no_cache = 2, 1, 1, QUICK_TARGETS, True

    clock = Clock()
    print(f"# bench_han {datetime.datetime.now().isoformat(timespec='minutes')}: python {' '.join(sys.argv)}")
    print(f"# {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    data = load_dataset()
    nets = list(NETS) if args.net == "all" else [args.net]
    results = {name: run_net(name, args, data) for name in nets}
    if args.plot and not args.screen_only:
        plot(args.plot, results, args.tolerance)
        print(f"\nplot: {args.plot}")
    cpu, wall = clock.elapsed()
    print(f"\n(total: CPU {cpu / 60:.1f} min, wall {wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
