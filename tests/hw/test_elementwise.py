"""The SFU's element-wise units in Amaranth's simulator (small, one-stage): RoPE pairs from
SmolLM2's real table equal IntegerKernels.rope, and the residual add equals sat(a + b, 32)."""
from types import SimpleNamespace

import numpy as np
import torch
from amaranth.sim import Simulator

from airfoil import numerics as nx
from airfoil.host.integer_reference import IntegerKernels, sat
from airfoil.hw.elementwise import RotaryPair, SaturatingAdd

HEAD_DIM = 64


def _stream(dut, inputs: list[dict], outputs: tuple[str, ...]) -> list[tuple]:
    """Drive one input dict per cycle; collect ``outputs`` of every valid result."""
    got = []

    async def bench(ctx):
        for values in inputs + [None]:
            ctx.set(dut.valid, values is not None)
            for port, v in (values or {}).items():
                ctx.set(getattr(dut, port), v)
            await ctx.tick()
            if ctx.get(dut.out_valid):
                got.append(tuple(ctx.get(getattr(dut, o)) for o in outputs))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


def test_rope_pairs_equal_the_reference():
    rng = np.random.default_rng(4)
    cos, sin = nx.rope_table(HEAD_DIM, 100000.0, 8192)
    kernels = SimpleNamespace(rope_c=torch.from_numpy(cos), rope_s=torch.from_numpy(sin))
    T, half = 24, HEAD_DIM // 2
    x = torch.from_numpy(rng.integers(-(1 << 31), 1 << 31, (1, T, HEAD_DIM)))
    x[0, :2] = torch.tensor([-(1 << 31), (1 << 31) - 1]).repeat_interleave(HEAD_DIM // 2)  # extremes
    positions = torch.from_numpy(rng.integers(0, 8192, T))
    want = IntegerKernels.rope(kernels, x, positions)[0]
    inputs = [{"x1": int(x[0, t, j]), "x2": int(x[0, t, j + half]), "c": int(cos[positions[t], j]),
               "s": int(sin[positions[t], j])} for t in range(T) for j in range(half)]
    got = _stream(RotaryPair(), inputs, ("y1", "y2"))
    expect = [(int(want[t, j]), int(want[t, j + half])) for t in range(T) for j in range(half)]
    assert got == expect


def test_residual_add_saturates_like_the_reference():
    rng = np.random.default_rng(6)
    a = rng.integers(-(1 << 31), 1 << 31, 500)
    b = rng.integers(-(1 << 31), 1 << 31, 500)
    a[:4], b[:4] = [(1 << 31) - 1, -(1 << 31), 5, -7], [(1 << 31) - 1, -(1 << 31), -5, 7]
    got = _stream(SaturatingAdd(), [{"a": int(u), "b": int(v)} for u, v in zip(a, b)], ("y",))
    assert [g[0] for g in got] == sat(torch.from_numpy(a + b), 32).tolist()
