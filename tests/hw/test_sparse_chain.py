"""SparseDspChain / MPE in Amaranth's simulator: a few tiles per mode and pattern (the 1,000-tile
runs are the Verilator benches in test_mpe_verilator.py, on the DSP48E2 instances); the chains here
are behavioural (primitive=False): Amaranth's simulator cannot run an instance."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from airfoil.hw.mpe_schedule import reference_outputs, schedule
from airfoil.hw.sparse_chain import CHAIN_LATENCY, ChainMode, MatrixProcessingEngine
from tests.hw.tiles import random_tile


def run_mpe(chains, groups, beats):
    dut = MatrixProcessingEngine(chains, groups, primitive=False)
    got = []

    async def bench(ctx):
        for b in beats + [None] * (CHAIN_LATENCY + 2):
            ctx.set(dut.operands.valid, b is not None)
            if b is not None:
                p = dut.operands.payload
                ctx.set(p.act_hi, [list(map(int, r)) for r in b.act_hi])
                ctx.set(p.act_lo, [list(map(int, r)) for r in b.act_lo])
                ctx.set(p.weight_hi, [list(map(int, r)) for r in b.weight_hi])
                ctx.set(p.weight_lo, [list(map(int, r)) for r in b.weight_lo])
                ctx.set(p.index, [list(map(int, r)) for r in b.index])
                ctx.set(p.mode, b.mode)
                ctx.set(p.first, b.first)
                ctx.set(p.last, b.last)
            await ctx.tick()
            if ctx.get(dut.results.valid):
                r = ctx.get(dut.results.payload)
                got.append([(int(r.hi[c]), int(r.lo[c])) for c in range(chains)])

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("mode, n", [(ChainMode.MM, 16), (ChainMode.MM, 2), (ChainMode.MM, 8),
                                     (ChainMode.MV, 16), (ChainMode.MV_SPARSE, 4)])
def test_mpe_tiles_match_numpy(mode, n):
    rng = np.random.default_rng(n + 10 * int(mode))
    for extreme in (False, True):
        x, w, mask = random_tile(rng, 3, 64, 5, n, extreme)
        beats, outs = schedule(x, w, mask, n, mode, chains=2, groups=2)
        assert run_mpe(2, 2, beats) == reference_outputs(x, w, mode, outs)


def test_row_accumulator_holds_the_longest_row():
    """The chain's 32-bit row accumulator must hold a whole row's sum for every model Airfoil
    compiles: |sum| <= K * 128 * 127 with K the widest linear input (OPT-6.7B's ffn_down, 16384)."""
    from airfoil.compiler.model import SHAPE_MODELS
    from airfoil.hw.sparse_chain import LANE_WIDTH, OUT_WIDTH

    k_max = max(k for spec in SHAPE_MODELS.values() for _, k in spec.linear_shapes().values())
    assert k_max == 16384
    assert k_max * 128 * 127 < 2 ** (OUT_WIDTH - 1)
    assert 2 * 128 * 127 < 2 ** (LANE_WIDTH - 1)  # a group's lane: two products
