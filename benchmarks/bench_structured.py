"""Structured pruning on real architectures: FLOPs and parameters removed against latency.

ResNet50 and MobileNetV2 from keras.applications (``weights=None``; latency does not
depend on the weights' values, but biases and BatchNorm statistics are randomised as
in a trained model, so that shrink must fold the constants of removed units as it would
there). Each is filter-pruned with the current library (`keras_prune.prunable`, then
`keras_prune.prune(..., granularity="filter")` with the magnitude criterion, L1 unit
norm) and shrunk with `keras_prune.shrink_with_report`:

- ResNet50: the first two convolutions of every bottleneck block (``*_1_conv``,
  ``*_2_conv``) lose the same share of their filters; the residual stream is kept.
- MobileNetV2: the bottleneck (``*_project``) convolutions and the last 1x1 convolution
  (``Conv_1``) lose the same share; the residual adds couple the bottlenecks of a stage.
  The expansion convolutions cannot be shrunk today (their filters feed a
  DepthwiseConv2D, or a ZeroPadding2D, which shrink cannot see through); the script
  shows this by pruning them too and counting what shrink keeps.

``--round-to N`` rounds every pruned layer's kept filter count to a multiple of N
(nearest, at least N) instead of taking the same share everywhere (counting the constant
stand-in channel shrink keeps where removed units feed a padded convolution).

The shrunk model is checked against the masked one on random images, then dense and
shrunk models are timed side by side at batch 1 and batch 32 in two runtimes:
TensorFlow (a concrete `tf.function` of the Keras model at a fixed batch size) and
TensorFlow Lite (`tf.lite.Interpreter`, XNNPACK, ``num_threads`` fixed). All four
(model, runtime) configurations are interleaved call by call, round after round, and
each keeps the fastest call: the least disturbed by the other processes of a shared
machine.

Run from the repository root (about 6 minutes on 2 shared CPU cores at the defaults):

    .venv/bin/python benchmarks/bench_structured.py [--size 160] [--round-to 8]

Results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
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
from timing import runners  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Plan:
    """Which filters a benchmark model loses."""

    build: Callable[..., keras.Model]
    suffixes: tuple[str, ...]  # layers whose names end so are filter-pruned
    fraction: float  # share of filters each of them loses
    description: str


PLANS = {
    "resnet50": Plan(
        keras.applications.ResNet50, ("_1_conv", "_2_conv"), 0.45,
        "first two convolutions of every bottleneck block",
    ),
    "mobilenetv2": Plan(
        keras.applications.MobileNetV2, ("_project", "Conv_1"), 0.55,
        "bottleneck (project) convolutions and Conv_1",
    ),
}
# The plan MobileNetV2 would need, which shrink cannot carry out today.
MOBILENET_EXPAND = ("_expand",)


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


def fractions(model: keras.Model, suffixes: tuple[str, ...], fraction: float, round_to: int) -> dict[str, float]:
    """Per-layer fractions: `fraction` everywhere, or, with `round_to` > 1, the fraction
    that leaves each layer a multiple of `round_to` filters (the nearest one)."""
    chosen = {}
    for layer in model.layers:
        if not layer.name.endswith(suffixes):
            continue
        units = int(layer.kernel.shape[-1])
        if round_to <= 1:
            chosen[layer.name] = fraction
            continue
        kept = max(round_to, int(round(units * (1 - fraction) / round_to)) * round_to)
        # prune() removes floor(units * fraction) units; the half unit guards against round-off
        chosen[layer.name] = min(1.0, (units - kept + 0.5) / units) if kept < units else 0.0
    return chosen


def prune_and_shrink(
    dense: keras.Model, chosen: dict[str, float]
) -> tuple[keras.Model, keras.Model, keras_prune.ShrinkReport]:
    """The masked model (only `chosen` layers wrapped, filter-pruned) and its shrunk copy."""
    masked = keras_prune.prunable(dense, layers=list(chosen))
    keras_prune.prune(masked, chosen, granularity="filter")
    small, report = keras_prune.shrink_with_report(masked)
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


def fastest_interleaved(calls: dict[tuple[str, str], Runner], x: np.ndarray, rounds: int) -> dict[tuple[str, str], float]:
    """Fastest of `rounds` calls of each runner, the runners taking turns call by call."""
    for f in calls.values():  # warm-up: graph building, XNNPACK packing, caches
        f(x)
        f(x)
    best = {key: float("inf") for key in calls}
    for _ in range(rounds):
        for key, f in calls.items():
            started = time.perf_counter()
            f(x)
            best[key] = min(best[key], time.perf_counter() - started)
    return best


def benchmark(
    name: str, size: int, round_to: int, rounds: dict[int, int], threads: int, breakdown_batch: int = 0
) -> Result:
    plan = PLANS[name]
    dense = randomize_statistics(plan.build(weights=None, input_shape=(size, size, 3)))
    chosen = fractions(dense, plan.suffixes, plan.fraction, round_to)
    shares = sorted(set(round(f, 3) for f in chosen.values()))
    print(f"\n## {dense.name} at {size}x{size}: {len(chosen)} layers ({plan.description}) lose "
          f"{plan.fraction:.0%} of their filters" + (f", kept counts rounded to multiples of {round_to}" if round_to > 1 else "")
          + (f" (fractions {shares[0]}-{shares[-1]})" if len(shares) > 1 else ""), flush=True)
    started = time.perf_counter()
    masked, small, report = prune_and_shrink(dense, chosen)
    if round_to > 1:
        # A producer whose removed units feed a padded convolution keeps one of them as a
        # constant stand-in channel; prune one more unit there so the count stays a multiple.
        off = {row.name: row.units[0] for row in report.layers if row.name in chosen and row.units[1] % round_to == 1}
        if off:
            chosen = {n: f + (1 / off[n] if n in off else 0.0) for n, f in chosen.items()}
            masked, small, report = prune_and_shrink(dense, chosen)
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
        dense.name, (dense.count_params(), small.count_params()), (count_flops(dense).macs, count_flops(small).macs)
    )
    for batch, count in rounds.items():
        started = time.perf_counter()
        calls = {}
        for label, model in (("dense", dense), ("shrunk", small)):
            for runtime, f in runners(model, batch, threads).items():
                calls[(runtime, label)] = f
        images = np.random.default_rng(2).random((batch, size, size, 3), dtype=np.float32)
        best = fastest_interleaved(calls, images, count)
        for runtime, shown in (("tf", "TF"), ("tflite", "TFLite")):
            result.latency[f"{shown} batch {batch}"] = (best[(runtime, "dense")], best[(runtime, "shrunk")])
        print(f"batch {batch}: {count} rounds in {time.perf_counter() - started:.0f} s", flush=True)
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


def mobilenet_expand_check(size: int) -> None:
    """Prunes MobileNetV2's expansion convolutions as well and reports what shrink keeps."""
    dense = randomize_statistics(keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3)))
    chosen = fractions(dense, MOBILENET_EXPAND, 0.5, 1)
    _, small, report = prune_and_shrink(dense, chosen)
    before, after = count_flops(dense).macs, count_flops(small).macs
    print(f"\nMobileNetV2, expansion convolutions pruned by 50% ({len(chosen)} layers): "
          f"{before / 1e6:.1f}M -> {after / 1e6:.1f}M multiply-adds ({before / after:.2f}x); "
          f"pruned filters shrink kept: {kept_reasons(report)}")


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
    parser.add_argument("--models", default="resnet50,mobilenetv2", help="comma-separated: resnet50, mobilenetv2")
    parser.add_argument("--size", type=int, default=160, help="input height and width")
    parser.add_argument("--round-to", type=int, default=1, help="round kept filter counts to multiples of this")
    parser.add_argument("--rounds-1", type=int, default=30, help="timing rounds at batch 1")
    parser.add_argument("--rounds-32", type=int, default=6, help="timing rounds at batch 32")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both runtimes")
    parser.add_argument("--breakdown", type=int, default=0, metavar="BATCH",
                        help="also time every layer alone at this batch size and sum by layer kind")
    parser.add_argument("--skip-timing", action="store_true", help="no whole-model timing (FLOPs, shrink, breakdown)")
    parser.add_argument("--skip-expand-check", action="store_true", help="skip the MobileNetV2 expansion check")
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
    rounds = {} if args.skip_timing else {1: args.rounds_1, 32: args.rounds_32}
    results = [benchmark(name, args.size, args.round_to, rounds, args.threads, args.breakdown) for name in names]
    if "mobilenetv2" in names and not args.skip_expand_check:
        mobilenet_expand_check(args.size)
    print("\nFastest call of each configuration, interleaved; ratios measured side by side.\n")
    print(table(results, [k for b in rounds for k in (f"TF batch {b}", f"TFLite batch {b}")]))
    print(f"\n({time.perf_counter() - started:.0f} s in all; load average now {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
