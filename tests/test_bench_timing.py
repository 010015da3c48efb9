"""The latency benchmarks' timing protocol (benchmarks/timing.py, `fastest_interleaved`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "timing.py"


@pytest.fixture(scope="module")
def timing():
    spec = importlib.util.spec_from_file_location("bench_timing", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def recorder(log: list[str], name: str):
    return lambda x: log.append(name)


@pytest.mark.parametrize("burst", [1, 5])
def test_each_turn_is_a_burst_of_calls_in_a_new_order_each_round(timing, burst):
    log: list[str] = []
    names = ["a", "b", "c", "d"]
    best = timing.fastest_interleaved({n: recorder(log, n) for n in names}, np.zeros(1), rounds=12, burst=burst)
    assert set(best) == set(names) and all(0 <= s < 1 for s in best.values())
    warm_up, timed = log[: 2 * len(names)], log[2 * len(names):]
    assert warm_up == [n for n in names for _ in range(2)]
    assert len(timed) == 12 * len(names) * burst
    turns = [timed[i: i + burst] for i in range(0, len(timed), burst)]
    assert all(len(set(turn)) == 1 for turn in turns)  # a turn is `burst` calls of one runner
    rounds = [tuple(turn[0] for turn in turns[i: i + len(names)]) for i in range(0, len(turns), len(names))]
    assert all(sorted(r) == names for r in rounds)  # every runner once per round
    assert len(set(rounds)) > 1  # the order changes from round to round
    assert {r[0] for r in rounds} != {rounds[0][0]}  # not always the same runner first


def test_keeps_the_fastest_call(timing):
    import time

    delays = iter([0.0, 0.0, 0.03, 0.002, 0.03])  # two warm-up calls, then three timed ones
    best = timing.fastest_interleaved({"slow": lambda x: time.sleep(next(delays))}, np.zeros(1), rounds=1, burst=3)
    assert 0.002 <= best["slow"] < 0.02
