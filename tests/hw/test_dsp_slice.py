"""DspSlice: the packed two-MAC multiply-accumulate, behavioural (primitive=False), in Amaranth's simulator
(small cases; the DSP48E2 instance against it is test_dsp_slice_verilator.py)."""
import random

import pytest
from amaranth.sim import Simulator

from airfoil.hw.dsp_slice import MAX_PACKED_ACCUMULATIONS, SLICE_LATENCY, DspSlice, unpack_lanes


def _run(vectors):
    """vectors: list of sums, each a list of (a_hi, a_lo, w); returns the (hi, lo) lanes of each sum."""
    dut = DspSlice(primitive=False)
    results = []

    async def bench(ctx):
        seq = [(x, i == 0) for s in vectors for i, x in enumerate(s)]
        seq += [((0, 0, 0), None)] * (SLICE_LATENCY + 1)
        pending = []
        for (a_hi, a_lo, w), first in seq:
            ctx.set(dut.a_hi, a_hi)
            ctx.set(dut.a_lo, a_lo)
            ctx.set(dut.w, w)
            ctx.set(dut.valid, first is not None)
            ctx.set(dut.first, bool(first))
            await ctx.tick()
            if ctx.get(dut.p_valid):
                pending.append(ctx.get(dut.p))
        ends = []
        n = 0
        for s in vectors:
            n += len(s)
            ends.append(n - 1)
        results.extend(unpack_lanes(pending[e]) for e in ends)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def _expected(s):
    return sum(h * w for h, _, w in s), sum(lo * w for _, lo, w in s)


def test_extremes_that_break_naive_packing():
    cases = [
        [(-128, -128, 127)] * MAX_PACKED_ACCUMULATIONS,
        [(-128, -128, -127)] * MAX_PACKED_ACCUMULATIONS,
        [(127, -128, -127)] * MAX_PACKED_ACCUMULATIONS,
        [(-128, 127, 127)] * MAX_PACKED_ACCUMULATIONS,
        [(0, -1, 1)],  # a negative low lane borrows from the high lane: the sign correction
        [(-1, -128, 127), (-128, 0, -127)],
    ]
    assert _run(cases) == [_expected(s) for s in cases]


def test_random_sums():
    rng = random.Random(0)
    cases = [[(rng.randint(-128, 127), rng.randint(-128, 127), rng.randint(-127, 127))
              for _ in range(rng.randint(1, MAX_PACKED_ACCUMULATIONS))] for _ in range(60)]
    assert _run(cases) == [_expected(s) for s in cases]


@pytest.mark.parametrize("p", [0, 1, -1, (5 << 18) - 3, -(7 << 18) + 131071, (-3 << 18) - 131072])
def test_unpack_lanes_inverts_packing(p):
    hi, lo = unpack_lanes(p)
    assert hi * (1 << 18) + lo == p and -(1 << 17) <= lo < (1 << 17)


def test_non_accumulating_slice_adds_its_cascade_input_to_every_product():
    """``accumulate=False`` (the chain's slices): p = pcin + this product, whatever ``first`` says,
    never the previous P."""
    dut = DspSlice(accumulate=False, primitive=False)
    rng = random.Random(3)
    vectors = [(rng.randint(-128, 127), rng.randint(-128, 127), rng.randint(-127, 127), rng.randint(-(1 << 40), 1 << 40),
                rng.randint(0, 1)) for _ in range(40)]
    got = []

    async def bench(ctx):
        for a_hi, a_lo, w, pcin, first in vectors + [(0, 0, 0, 0, 0)] * (SLICE_LATENCY + 1):
            ctx.set(dut.a_hi, a_hi)
            ctx.set(dut.a_lo, a_lo)
            ctx.set(dut.w, w)
            ctx.set(dut.pcin, pcin)
            ctx.set(dut.first, first)
            ctx.set(dut.valid, 1)
            await ctx.tick()
            got.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # the product reaches P SLICE_LATENCY cycles after its operands; pcin meets it at the
    # post-adder, in P's last cycle (as the cascaded slice below delivers its own P)
    products = [(a_hi * (1 << 18) + a_lo) * w for a_hi, a_lo, w, _, _ in vectors]
    pcins = [pcin for _, _, _, pcin, _ in vectors] + [0] * SLICE_LATENCY
    assert [got[i + SLICE_LATENCY - 1] for i in range(len(vectors))] == [
        product + pcins[i + SLICE_LATENCY - 1] for i, product in enumerate(products)]
