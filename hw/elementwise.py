"""The SFU's element-wise functions on the global buffer's fixed-point rows, one element (or
RoPE pair) per cycle, bit-exact with the reference (docs/numerics.md):

* ``RotaryPair``: RoPE on the rotate-half pair (x1, x2) = (x[j], x[j + hd/2]) of a head, with the
  table's C[pos, j] and Sn[pos, j] (ROPE_FRAC):
  ``x1' = rshift_round(x1 C - x2 Sn, 14)``, ``x2' = rshift_round(x2 C + x1 Sn, 14)``;
* ``SaturatingAdd``: the residual add, ``sat(a + b, 32)``.

Both are one-stage pipelines (a result one cycle after its operands)."""
from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from airfoil import numerics as nx
from airfoil.hw.block_quantiser import rshift_round

__all__ = ["RotaryPair", "SaturatingAdd"]


def _sat32(v):
    return Mux(v > (1 << 31) - 1, (1 << 31) - 1, Mux(v < -(1 << 31), -(1 << 31), v))


class RotaryPair(wiring.Component):
    """One RoPE pair per cycle (inputs: 32-bit values, 16-bit table entries; results saturated
    to INT32, the global buffer's element)."""

    def __init__(self, width: int = 32):
        super().__init__({"valid": In(1), "x1": In(signed(width)), "x2": In(signed(width)),
                          "c": In(signed(16)), "s": In(signed(16)),
                          "out_valid": Out(1), "y1": Out(signed(32)), "y2": Out(signed(32))})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += [self.out_valid.eq(self.valid),
                     self.y1.eq(_sat32(rshift_round(self.x1 * self.c - self.x2 * self.s, nx.ROPE_FRAC, 0))),
                     self.y2.eq(_sat32(rshift_round(self.x2 * self.c + self.x1 * self.s, nx.ROPE_FRAC, 0)))]
        return m


class SaturatingAdd(wiring.Component):
    """``sat(a + b, 32)`` per cycle."""

    def __init__(self):
        super().__init__({"valid": In(1), "a": In(signed(32)), "b": In(signed(32)),
                          "out_valid": Out(1), "y": Out(signed(32))})

    def elaborate(self, platform):
        m = Module()
        total = Signal(signed(33))
        m.d.comb += total.eq(self.a + self.b)
        m.d.sync += [self.out_valid.eq(self.valid), self.y.eq(_sat32(total))]
        return m
