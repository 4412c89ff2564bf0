"""The FP16 multiply-add baseline against numpy float16 (round to nearest even, subnormals,
infinities, NaN), in Amaranth's simulator."""
import numpy as np
from amaranth.sim import Simulator

from airfoil.hw.fp16 import NAN, Fp16MulAdd

SPECIAL = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00]


def _f16(bits: int) -> np.float16:
    return np.array([bits], np.uint16).view(np.float16)[0]


def _numpy(a: int, b: int, c: int) -> int:
    with np.errstate(all="ignore"):
        r = np.float16(np.float16(_f16(a) * _f16(b)) + _f16(c))
    return NAN if np.isnan(r) else int(np.array([r], np.float16).view(np.uint16)[0])


def _vectors(n: int, seed: int) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)

    def one() -> int:
        r = rng.random()
        if r < 0.1:
            return int(rng.choice(SPECIAL))
        if r < 0.3:  # subnormal and tiny normal operands: products and sums that underflow
            return int(rng.integers(0, 0x0C00)) | int(rng.integers(0, 2)) << 15
        if r < 0.4:  # near the top: overflow to infinity
            return int(rng.integers(0x7400, 0x7C00)) | int(rng.integers(0, 2)) << 15
        return int(rng.integers(0, 1 << 16))

    vecs = [(one(), one(), one()) for _ in range(n)]
    # cancellation: c = -(a*b) rounded, and c one ulp away from it
    for _ in range(n // 10):
        a, b = int(rng.integers(0, 0x7C00)), int(rng.integers(0, 0x7C00))
        p = _numpy(a, b, 0x8000)
        if p & 0x7C00 != 0x7C00:
            vecs += [(a, b, p ^ 0x8000), (a, b, (p ^ 0x8000) + 1)]
    return vecs


def test_multiply_add_matches_numpy_float16():
    dut = Fp16MulAdd()
    vecs = _vectors(3000, 0)
    bad = []

    async def bench(ctx):
        for a, b, c in vecs:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.c, c)
            await ctx.tick()
            got, want = ctx.get(dut.r), _numpy(a, b, c)
            if got != want:
                bad.append((hex(a), hex(b), hex(c), hex(got), hex(want)))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(vecs) > 3000 and not bad, bad[:5]
