"""A DSP48E2-shaped slice that computes two INT8 MACs per cycle in one multiplier.

Two activations that share one weight are packed into the 27-bit A port:
``A = a_hi * 2^18 + a_lo``; the 18-bit B port takes the weight. The 48-bit accumulator then
holds ``(sum a_hi*w) * 2^18 + (sum a_lo*w)``. The low lane is the sign-extended low 18 bits;
the high lane is ``(P - lo) >> 18``: subtracting the sign-extended low lane is the
sign-correction term (a negative low lane borrows one from the high lane).

The low lane is exact while ``|sum a_lo*w| < 2^17``: with INT8 activations and weights in
[-127, 127] (the weight decoder never emits -128, see docs/numerics.md) each product is at
most 128*127 = 16,256 in magnitude, so up to ``MAX_PACKED_ACCUMULATIONS`` = 8 products fit;
the chain's reduction nodes unpack the lanes after two (see ``sparse_chain``).

Pipeline as the primitive's AREG/BREG=1, MREG=1, PREG=1: latency 3 cycles.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DspSlice", "unpack_lanes", "LANE_SHIFT", "MAX_PACKED_ACCUMULATIONS",
           "SLICE_LATENCY", "ACC_WIDTH"]

LANE_SHIFT = 18
ACC_WIDTH = 48
MAX_PACKED_ACCUMULATIONS = 8
SLICE_LATENCY = 3


def unpack_lanes(p):
    """(hi, lo) lane sums of a packed accumulator value (Amaranth expression or Python int)."""
    if isinstance(p, int):
        lo = p & ((1 << LANE_SHIFT) - 1)
        lo -= (lo >> (LANE_SHIFT - 1)) << LANE_SHIFT
        return (p - lo) >> LANE_SHIFT, lo
    lo = p[:LANE_SHIFT].as_signed()
    return ((p - lo) >> LANE_SHIFT), lo


class DspSlice(wiring.Component):
    """``p`` = running sum of ``(a_hi*2^18 + a_lo) * w`` since the last ``first`` (both valid)."""

    a_hi: In(signed(8))
    a_lo: In(signed(8))
    w: In(signed(8))
    valid: In(1)
    first: In(1)  # this product starts a new sum (the DSP's Z-mux selects 0 instead of P)
    p: Out(signed(ACC_WIDTH))
    p_valid: Out(1)  # p was updated this cycle (SLICE_LATENCY after the inputs)

    def elaborate(self, platform):
        m = Module()
        a = Signal(signed(27))
        b = Signal(signed(18))
        prod = Signal(signed(45))
        v = Signal(2)
        f = Signal(2)
        m.d.sync += [
            a.eq((self.a_hi << LANE_SHIFT) + self.a_lo),
            b.eq(self.w),
            prod.eq(a * b),
            v.eq(v << 1 | self.valid),
            f.eq(f << 1 | self.first),
            self.p_valid.eq(v[1]),
        ]
        with m.If(v[1]):
            # Z-mux: 0 when a new sum starts, else the P feedback (the DSP48E2 accumulate path)
            m.d.sync += self.p.eq(prod + Mux(f[1], 0, self.p))
        return m
