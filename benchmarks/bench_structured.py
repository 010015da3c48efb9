"""Structured pruning on real architectures: FLOPs and parameters removed against latency.

ResNet50 and MobileNetV2 from keras.applications (``weights=None``; latency does not
depend on the weights' values, but biases and BatchNorm statistics are randomised as
in a trained model, so that shrink must fold the constants of removed units as it would
there). Each is filter-pruned with the current library (`keras_prune.prunable`, then
`keras_prune.prune(..., granularity="filter")` with the magnitude criterion, L1 unit
norm) and shrunk with `keras_prune.shrink_with_report`:

- ResNet50: the first two convolutions of every bottleneck block (``*_1_conv``,
  ``*_2_conv``) lose the same share of their filters; the residual stream is kept.
- MobileNetV2: the expansion convolutions (``*_expand``) and the last 1x1 convolution
  (``Conv_1``) lose the same share; each expansion channel leaves with its slice of the
  depthwise convolution, both BatchNorms and the projection's input.

- MobileNetV2, plan ``mobilenetv2-depth``: its 10 residual blocks (those with a shortcut)
  lose their whole expansion, so that shrink removes each block (docs/structured.md,
  "Residual branches removed whole"), and ``Conv_1`` loses half its filters (2.23x fewer
  FLOPs). Plan ``mobilenetv2-depth9`` keeps block 14 and prunes 60% of ``Conv_1``
  (2.03x fewer FLOPs).

``--round-to N`` passes ``round_to=N`` to `keras_prune.prune`: every pruned layer keeps
the multiple of N filters nearest to its share. Where removed units feed a padded
convolution, shrink keeps one of them as a constant stand-in channel; the script then
prunes one more filter there, so the shrunk layer too has a multiple of N.

Both models are timed as served: BatchNormalization folded into the convolutions
(`keras_prune.fold_batchnorm` for the dense model, ``shrink(..., fold_batchnorm=True)``
for the pruned one).

The shrunk model is checked against the masked one on random images, then dense and
shrunk models are timed side by side at batch 1 and batch 32 in two runtimes:
TensorFlow (a concrete `tf.function` of the Keras model at a fixed batch size) and
TensorFlow Lite (`tf.lite.Interpreter`, XNNPACK, ``num_threads`` fixed). The four
(model, runtime) configurations take turns, round after round, in a new random order
each round; each runs ``--burst`` calls in a row per turn (default 5: the steady state
of a server answering requests with one model) and keeps its fastest call, the least
disturbed by the other processes of a shared machine (`timing.fastest_interleaved`).
``--burst 1`` times every call right after another configuration's, its caches cold.

Run from the repository root (about 5 minutes on 2 CPU cores at the defaults):

    .venv/bin/python benchmarks/bench_structured.py [--size 160] [--round-to 8]

Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_prune  # noqa: E402
from keras_prune.flops import count_flops  # noqa: E402
from timing import fastest_interleaved, runners  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Plan:
    """Which filters a benchmark model loses."""

    build: Callable[..., keras.Model]
    suffixes: tuple[str, ...]  # layers whose names end so are filter-pruned
    fraction: float  # share of filters each of them loses
    description: str
    whole: tuple[str, ...] = ()  # layers that lose all their filters (residual branches removed whole)


PLANS = {
    "resnet50": Plan(
        keras.applications.ResNet50, ("_1_conv", "_2_conv"), 0.45,
        "first two convolutions of every bottleneck block",
    ),
    "mobilenetv2": Plan(
        keras.applications.MobileNetV2, ("_expand", "Conv_1"), 0.55,
        "expansion convolutions and Conv_1",
    ),
    "mobilenetv2-depth": Plan(
        keras.applications.MobileNetV2, ("Conv_1",), 0.5,
        "Conv_1, and the 10 residual blocks removed whole (their expansions lose all filters)",
        tuple(f"block_{i}_expand" for i in (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)),
    ),
    "mobilenetv2-depth9": Plan(
        keras.applications.MobileNetV2, ("Conv_1",), 0.6,
        "Conv_1, and 9 residual blocks removed whole (all but block 14)",
        tuple(f"block_{i}_expand" for i in (2, 4, 5, 7, 8, 9, 11, 12, 15)),
    ),
    "mobilenetv2-early": Plan(
        keras.applications.MobileNetV2, tuple(f"block_{i}_expand" for i in range(1, 13)), 0.8,
        "expansion convolutions of blocks 1-12 (the higher-resolution ones)",
    ),
    "mobilenetv2-all": Plan(
        keras.applications.MobileNetV2, ("Conv1", "_expand", "_project", "Conv_1"), 0.3,
        "stem, expansion and projection convolutions and Conv_1",
    ),
}


@dataclass
class Result:
    """One architecture's figures."""

    name: str
    params: tuple[int, int]  # dense, shrunk
    macs: tuple[int, int]
    latency: dict[str, tuple[float, float]] = field(default_factory=dict)  # "TF batch 1" -> (dense, shrunk) s


def randomize_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """Random biases, BatchNorm betas, gammas, means and variances (kernels as built),
    so that removed units output non-zero constants, as in a trained model."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        weights = []
        for v in layer.weights:
            if len(v.shape) >= 2:
                weights.append(v.numpy())
            elif "variance" in v.path or "gamma" in v.path:
                weights.append(rng.uniform(0.5, 1.5, v.shape))
            else:
                weights.append(rng.normal(0.0, 0.1, v.shape))
        layer.set_weights(weights)
    return model


def fractions(model: keras.Model, suffixes: tuple[str, ...], fraction: float) -> dict[str, float]:
    """`fraction` for every Conv2D layer whose name ends with one of `suffixes`."""
    return {
        layer.name: fraction
        for layer in model.layers
        if type(layer) is keras.layers.Conv2D and layer.name.endswith(suffixes)
    }


def prune_and_shrink(
    dense: keras.Model, chosen: dict[str, float], round_to: int
) -> tuple[keras.Model, keras.Model, keras_prune.ShrinkReport]:
    """The masked model (every layer wrapped, `chosen` ones filter-pruned with their
    coupled depthwise channels) and its shrunk copy with BatchNorm folded."""
    masked = keras_prune.prunable(dense)
    keras_prune.prune(masked, chosen, granularity="filter", round_to=round_to)
    small, report = keras_prune.shrink_with_report(masked, fold_batchnorm=True)
    if round_to > 1:
        # A producer whose removed units feed a padded convolution keeps one of them as a
        # constant stand-in channel; prune one more unit there so the count stays a multiple.
        # (units[1] counts the stand-in: the mask prunes units[0] - units[1] + 1 units)
        extra = {row.name: (row.units[0] - row.units[1] + 2) / row.units[0]
                 for row in report.layers if row.name in chosen and row.units[1] % round_to == 1}
        if extra:
            keras_prune.prune(masked, extra, granularity="filter")
            small, report = keras_prune.shrink_with_report(masked, fold_batchnorm=True)
    return masked, small, report


def kept_reasons(report: keras_prune.ShrinkReport) -> dict[str, int]:
    """Pruned units shrink had to keep, summed by reason (layer names left out)."""
    counts: dict[str, int] = {}
    for row in report.layers:
        for note in row.notes:
            found = re.fullmatch(r"kept (\d+) pruned unit\(s\): (.*)", note)
            if found:
                reason = re.sub(r"'[^']*'", "'...'", found.group(2))
                counts[reason] = counts.get(reason, 0) + int(found.group(1))
    return counts


def timed_runtimes(xla: bool, serving: bool) -> list[tuple[str, str]]:
    """(runner key, column label) of every runtime timed."""
    return ([("tf", "TF"), ("tflite", "TFLite")] + [("tf-xla", "TF XLA")] * xla
            + [("tf-serving", "TF Serving session")] * serving)


def benchmark(
    name: str, size: int, round_to: int, rounds: dict[int, int], threads: int, breakdown_batch: int = 0,
    fraction: float | None = None, xla: bool = False, serving: bool = False, burst: int = 5,
) -> Result:
    plan = PLANS[name]
    if fraction is not None:
        plan = dataclasses.replace(plan, fraction=fraction)
    dense = randomize_statistics(plan.build(weights=None, input_shape=(size, size, 3)))
    chosen = {**fractions(dense, plan.suffixes, plan.fraction), **dict.fromkeys(plan.whole, 1.0)}
    print(f"\n## {dense.name} at {size}x{size}: {len(chosen) - len(plan.whole)} layers ({plan.description}) lose "
          f"{plan.fraction:.0%} of their filters" + (f", {len(plan.whole)} lose all" if plan.whole else "") + (f", kept counts rounded to multiples of {round_to}" if round_to > 1 else ""),
          flush=True)
    started = time.perf_counter()
    masked, small, report = prune_and_shrink(dense, chosen, round_to)
    dense = keras_prune.fold_batchnorm(dense)
    x = np.random.default_rng(1).random((4, size, size, 3), dtype=np.float32)
    reference = np.asarray(masked(x, training=False))
    diff = float(np.max(np.abs(reference - np.asarray(small(x, training=False)))))
    print(f"prunable + prune + shrink: {time.perf_counter() - started:.0f} s; masked vs shrunk on 4 random "
          f"images: largest difference {diff:.2g} (largest output {np.max(np.abs(reference)):.2g})")
    for reason, count in kept_reasons(report).items():
        print(f"pruned units shrink kept: {count}, {reason}")
    constants = sum(1 for row in report.layers for note in row.notes if "stands in" in note)
    if constants:
        print(f"{constants} consumer(s) keep one removed channel as a constant stand-in (padded convolutions)")
    rows = [row for row in report.layers if row.kind == "Conv2D"][:6]
    print("first convolutions (filters, input channels): "
          + "; ".join(f"{r.name} {r.units[0]}->{r.units[1]}, {r.inputs[0]}->{r.inputs[1]}" for r in rows))
    if breakdown_batch:
        print_breakdown(dense.name, breakdown({"dense": dense, "shrunk": small}, breakdown_batch, 5), breakdown_batch)
    result = Result(
        f"{dense.name} ({name})", (dense.count_params(), small.count_params()),
        (count_flops(dense).macs, count_flops(small).macs),
    )
    for batch, count in rounds.items():
        started = time.perf_counter()
        calls = {}
        for label, model in (("dense", dense), ("shrunk", small)):
            for runtime, f in runners(model, batch, threads, xla, serving).items():
                calls[(runtime, label)] = f
        images = np.random.default_rng(2).random((batch, size, size, 3), dtype=np.float32)
        best = fastest_interleaved(calls, images, count, burst)
        for runtime, shown in timed_runtimes(xla, serving):
            result.latency[f"{shown} batch {batch}"] = (best[(runtime, "dense")], best[(runtime, "shrunk")])
        print(f"batch {batch}: {count} rounds of {burst} call(s) each in {time.perf_counter() - started:.0f} s", flush=True)
    return result


def layer_kind(layer: keras.layers.Layer) -> str:
    """The row of the breakdown a layer's time goes to."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "DepthwiseConv2D"
    if isinstance(layer, keras.layers.Conv2D):
        return f"Conv2D {'1x1' if tuple(layer.kernel_size) == (1, 1) else 'kxk'}"
    if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
        return "activation"
    return type(layer).__name__


def breakdown(models: dict[str, keras.Model], batch: int, rounds: int) -> dict[str, dict[str, float]]:
    """TensorFlow time by layer kind: each layer alone under `tf.function` on random inputs
    of its shapes (no fusion across layers), fastest of `rounds` calls, summed by kind."""
    rng = np.random.default_rng(3)
    totals: dict[str, dict[str, float]] = {}
    for label, model in models.items():
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            sources = layer.input if isinstance(layer.input, list) else [layer.input]
            args = [tf.constant(rng.random((batch, *t.shape[1:]), dtype=np.float32)) for t in sources]
            fn = tf.function(lambda *a, layer=layer: layer(list(a) if len(a) > 1 else a[0], training=False))
            fn(*args)
            best = float("inf")
            for _ in range(rounds):
                started = time.perf_counter()
                np.asarray(fn(*args))
                best = min(best, time.perf_counter() - started)
            row = totals.setdefault(layer_kind(layer), {})
            row[label] = row.get(label, 0.0) + best
        for path, macs in count_flops(model).by_layer.items():
            row = totals[layer_kind(model.get_layer(path))]
            row[f"{label} MACs"] = row.get(f"{label} MACs", 0.0) + macs
    return totals


def print_breakdown(name: str, totals: dict[str, dict[str, float]], batch: int) -> None:
    print(f"\n{name}, TensorFlow, batch {batch}: time by layer kind (each layer timed alone, ms)\n")
    print("| layer kind | dense | shrunk | dense / shrunk | MACs dense / shrunk |\n|---|---|---|---|---|")
    rows = sorted(totals.items(), key=lambda kv: -kv[1].get("dense", 0.0))
    keys = ("dense", "shrunk", "dense MACs", "shrunk MACs")
    for kind, t in rows + [("**all**", {k: sum(r.get(k, 0.0) for _, r in rows) for k in keys})]:
        dense, small = t.get("dense", 0.0), t.get("shrunk", 0.0)
        macs = f"{t['dense MACs'] / t['shrunk MACs']:.2f}x" if t.get("shrunk MACs") else "-"
        print(f"| {kind} | {dense * 1e3:.2f} | {small * 1e3:.2f} | {dense / small if small else float('nan'):.2f}x | {macs} |")


def width_check(size: int, rounds: int, threads: int, burst: int) -> None:
    """The TF runtime's fixed cost per call at batch 1: MobileNetV2 at width 1.0 and at
    0.35 (about 5x fewer multiply-adds, the same layers), BatchNorm folded, timed side by side."""
    models = {
        alpha: keras_prune.fold_batchnorm(
            keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), alpha=alpha)
        )
        for alpha in (1.0, 0.35)
    }
    calls = {(runtime, str(alpha)): f for alpha, m in models.items() for runtime, f in runners(m, 1, threads).items()}
    best = fastest_interleaved(calls, np.random.default_rng(4).random((1, size, size, 3), dtype=np.float32), rounds, burst)
    macs = {alpha: count_flops(m).macs for alpha, m in models.items()}
    print(f"\nMobileNetV2 width 1.0 vs 0.35 at batch 1 ({macs[1.0] / macs[0.35]:.1f}x fewer multiply-adds, "
          f"{len(models[1.0].layers)} layers each): TF {best[('tf', '1.0')] * 1e3:.2f} -> {best[('tf', '0.35')] * 1e3:.2f} ms "
          f"({best[('tf', '1.0')] / best[('tf', '0.35')]:.2f}x), TFLite {best[('tflite', '1.0')] * 1e3:.2f} -> "
          f"{best[('tflite', '0.35')] * 1e3:.2f} ms ({best[('tflite', '1.0')] / best[('tflite', '0.35')]:.2f}x)")


def table(results: list[Result], runtimes: list[str]) -> str:
    head = ["model", "", "parameters", "GMACs"] + [f"{k} (ms)" for k in runtimes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for i, label in enumerate(("dense", "shrunk")):
            cells = [r.name, label, f"{r.params[i] / 1e6:.2f}M", f"{r.macs[i] / 1e9:.3f}"]
            cells += [f"{r.latency[k][i] * 1e3:.2f}" for k in runtimes]
            lines.append("| " + " | ".join(cells) + " |")
        ratio = [r.name, "**dense / shrunk**", f"{r.params[0] / r.params[1]:.2f}x", f"{r.macs[0] / r.macs[1]:.2f}x"]
        ratio += [f"**{r.latency[k][0] / r.latency[k][1]:.2f}x**" for k in runtimes]
        lines.append("| " + " | ".join(ratio) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,mobilenetv2", help=f"comma-separated: {', '.join(PLANS)}")
    parser.add_argument("--size", type=int, default=160, help="input height and width")
    parser.add_argument("--round-to", type=int, default=1, help="round kept filter counts to multiples of this")
    parser.add_argument("--rounds-1", type=int, default=30, help="timing rounds at batch 1")
    parser.add_argument("--rounds-32", type=int, default=6, help="timing rounds at batch 32 (0: not timed)")
    parser.add_argument("--fraction", type=float, default=None,
                        help="share of filters every planned layer loses (default: the plan's own)")
    parser.add_argument("--xla", action="store_true",
                        help="also time the TF runtime with XLA (tf.function(jit_compile=True))")
    parser.add_argument("--serving", action="store_true",
                        help="also time the model as TensorFlow Serving runs it: export_savedmodel's "
                             "SavedModel in a TF1 Session")
    parser.add_argument("--burst", type=int, default=5,
                        help="calls of one configuration in a row within each round; the fastest is kept "
                             "(1: every call follows another model's, with its caches cold)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both runtimes")
    parser.add_argument("--breakdown", type=int, default=0, metavar="BATCH",
                        help="also time every layer alone at this batch size and sum by layer kind")
    parser.add_argument("--skip-timing", action="store_true", help="no whole-model timing (FLOPs, shrink, breakdown)")
    parser.add_argument("--width-check", action="store_true",
                        help="also time MobileNetV2 at width 1.0 against 0.35 at batch 1 (the TF runtime's fixed cost)")
    args = parser.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in PLANS]
    if unknown or not names:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(PLANS)}")

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    print(f"# bench_structured {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='minutes')}")
    print(f"# {' '.join(sys.argv)}")
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{args.threads} thread(s)")
    if args.burst < 1:
        parser.error(f"--burst must be at least 1, got {args.burst}")
    if args.fraction is not None and not 0 < args.fraction < 1:
        parser.error(f"--fraction must lie between 0 and 1, got {args.fraction}")
    rounds = {} if args.skip_timing else {b: n for b, n in ((1, args.rounds_1), (32, args.rounds_32)) if n > 0}
    results = [benchmark(name, args.size, args.round_to, rounds, args.threads, args.breakdown, args.fraction, args.xla,
                         args.serving, args.burst)
               for name in names]
    if args.width_check:
        width_check(args.size, args.rounds_1, args.threads, args.burst)
    print("\nFastest call of each configuration, interleaved; ratios measured side by side.\n")
    runtimes = [shown for _, shown in timed_runtimes(args.xla, args.serving)]
    print(table(results, [f"{r} batch {b}" for b in rounds for r in runtimes]))
    print(f"\n({time.perf_counter() - started:.0f} s in all; load average now {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
