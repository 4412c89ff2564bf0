"""Per-row arithmetic of the SFU that runs once per row, so one result bit per cycle is enough:
an unsigned floor divider and a digit-by-digit integer square root (RMSNorm's mean, root and
reciprocal; the softmax's 2^40 // sum)."""
from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SequentialDivider", "SequentialSqrt"]


class SequentialDivider(wiring.Component):
    """``q = a // b`` and ``r = a % b`` for unsigned a and b > 0, one quotient bit per cycle:
    ``done`` pulses ``width`` cycles after ``start``."""

    def __init__(self, width: int, divisor_width: int):
        self.width, self.bw = width, divisor_width
        super().__init__({"start": In(1), "a": In(unsigned(width)), "b": In(unsigned(divisor_width)),
                          "q": Out(unsigned(width)), "r": Out(unsigned(divisor_width)), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        w, bw = self.width, self.bw
        num, den = Signal(w), Signal(bw)
        rem = Signal(bw + 1)
        m.d.comb += self.r.eq(rem[:bw])
        count = Signal(range(w + 1))
        shifted = Cat(num[w - 1], rem[:bw])
        take = shifted >= den
        m.d.sync += self.done.eq(0)
        with m.If(count != 0):
            m.d.sync += [num.eq(num << 1), rem.eq(Mux(take, shifted - den, shifted)),
                         self.q.eq(Cat(take, self.q[:w - 1])), count.eq(count - 1), self.done.eq(count == 1)]
        with m.If(self.start):
            m.d.sync += [num.eq(self.a), den.eq(self.b), rem.eq(0), self.q.eq(0), count.eq(w)]
        return m


class SequentialSqrt(wiring.Component):
    """``r = isqrt(n)`` for unsigned n of ``width`` (even) bits, digit by digit, one root bit per
    cycle: ``done`` pulses ``width / 2`` cycles after ``start``."""

    def __init__(self, width: int):
        assert width % 2 == 0
        self.width = width
        super().__init__({"start": In(1), "n": In(unsigned(width)), "r": Out(unsigned(width // 2)),
                          "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        w = self.width
        num = Signal(w)
        rem = Signal(w // 2 + 2)  # at most 2 * root
        count = Signal(range(w // 2 + 1))
        shifted = Cat(num[w - 2:w], rem)  # (rem << 2) | next two bits
        trial = Cat(Const(1, 2), self.r)  # (root << 2) | 1
        take = shifted >= trial
        m.d.sync += self.done.eq(0)
        with m.If(count != 0):
            m.d.sync += [num.eq(num << 2), rem.eq(Mux(take, shifted - trial, shifted)),
                         self.r.eq(Cat(take, self.r[:w // 2 - 1])), count.eq(count - 1), self.done.eq(count == 1)]
        with m.If(self.start):
            m.d.sync += [num.eq(self.n), rem.eq(0), self.r.eq(0), count.eq(w // 2)]
        return m
