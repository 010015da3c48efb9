"""The ViT head/FFN pruning benchmark's path, end to end on a tiny random ViT."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "bench_vit_structured.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vit_structured", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fractions_rise_to_the_target_in_whole_units(bench):
    assert [bench.fraction_at(0.5, 4, r, 3) for r in (1, 2, 3)] == [0.25, 0.25, 0.5]
    assert [bench.fraction_at(0.625, 128, r, 3) for r in (1, 2, 3)] == [27 / 128, 53 / 128, 80 / 128]


def test_tiny_run_prunes_heads_and_ffn_units_and_shrinks_them(bench, capsys):
    assert bench.main(["--tiny", "--rounds", "2", "--epochs", "1", "--final-epochs", "1"]) == 0
    out = capsys.readouterr().out
    rows = {
        row.split("|")[1].strip(): [cell.strip() for cell in row.split("|")[2:-1]]
        for row in out.splitlines()
        if row.startswith("| dense") or row.startswith("| pruned + shrunk")
    }
    # vit_mnist(dim=16, heads=4, depth=1, mlp_dim=16): half the heads, 10 of 16 FFN units go.
    assert rows["dense"][2:4] == ["[4]", "[16]"]
    assert rows["pruned + shrunk"][2:4] == ["[2]", "[6]"]
    dense_macs, small_macs = (int(rows[k][0].replace(",", "")) for k in ("dense", "pruned + shrunk"))
    assert small_macs < 0.7 * dense_macs
    difference = float(re.search(r"max \|difference\| (\S+)", out).group(1))
    assert difference <= 1e-4
    assert re.search(r"round 2/2: heads 0\.50, FFN 0\.625 pruned", out)


def test_bad_criterion_or_share_is_one_line_and_nonzero(bench, capsys):
    assert bench.main(["--tiny", "--criterion", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nope" in err and "magnitude" in err and "\n" not in err
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--heads", "1.5"])
    assert exit_.value.code == 2
    assert "must be a fraction in [0, 1], got 1.5" in capsys.readouterr().err
