"""The SFU's block quantiser ``bq(v, F)`` of docs/numerics.md: a row of wide integers in, INT8
codes and one exponent per row out, bit-exact with ``block_quantise``:

    a = max |v|;  s = bitlen(a) - 7, plus one if rshift_round(a, s) > 127;  s = 0 if a = 0
    q = sat(rshift_round(v, s), 8);  exponent = s - F

The row is held in a row memory: one pass in (tracking max |v|), one pass out. Every SFU
function that ends in ``bq`` (RMSNorm, SiLU-mul, REQUANT, the softmax's probabilities) streams
its results through one.
"""
from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["BlockQuantiser", "bitlen", "rshift_round"]


def bitlen(x, width: int):
    """Bit length of a non-negative value (a priority encoder)."""
    out = Const(0, range(width + 1))
    for i in range(width):
        out = Mux(x[i], i + 1, out)
    return out


def rshift_round(x, s, width: int):
    """``floor((x + 2^(s-1)) / 2^s)`` for s > 0, ``x << -s`` for s <= 0 (signed s); ``width``
    bounds the shift amounts (|s| < 2^width)."""
    if isinstance(s, int):
        return (x + (1 << (s - 1))) >> s if s > 0 else x << -s
    pos = Mux(s > 0, s, 0)[:width]
    neg = Mux(s < 0, -s, 0)[:width]
    half = (Const(1, len(x) + 1) << pos) >> 1
    return Mux(s > 0, (x + half) >> pos, x << neg)


class BlockQuantiser(wiring.Component):
    """``bq`` over rows of up to ``max_n`` signed ``width``-bit values with ``frac`` fraction
    bits. Input ``in_valid``/``in_ready``, ``in_last`` ends a row; output (``out_valid``, no
    back-pressure) ``q`` in order, ``out_last``, and the row's ``exponent`` with its codes."""

    def __init__(self, max_n: int, width: int, frac: int):
        self.max_n, self.width, self.frac = max_n, width, frac
        super().__init__({
            "in_valid": In(1), "in_ready": Out(1), "in_last": In(1), "v": In(signed(width)),
            "out_valid": Out(1), "q": Out(signed(8)), "out_last": Out(1), "exponent": Out(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width
        m.submodules.row = row = Memory(shape=unsigned(w), depth=self.max_n, init=[])
        wr, rd = row.write_port(), row.read_port()
        n = Signal(range(self.max_n + 1))
        i = Signal(range(self.max_n + 1))
        amax = Signal(unsigned(w))
        s = Signal(signed(8))
        rd_valid, rd_last = Signal(), Signal()
        m.d.comb += [wr.addr.eq(i), wr.data.eq(self.v), rd.addr.eq(i)]
        m.d.sync += [rd_valid.eq(0), self.out_valid.eq(0)]
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.in_ready.eq(1)
                with m.If(self.in_valid):
                    mag = Mux(self.v < 0, -self.v, self.v)
                    m.d.comb += wr.en.eq(1)
                    m.d.sync += [i.eq(i + 1), amax.eq(Mux((i == 0) | (mag > amax), mag, amax))]
                    with m.If(self.in_last):
                        m.d.sync += [n.eq(i + 1), i.eq(0)]
                        m.next = "EXPONENT"
            with m.State("EXPONENT"):
                s0 = Signal(signed(8))
                m.d.comb += s0.eq(bitlen(amax, w) - 7)
                over = rshift_round(amax, s0, 7) > 127  # rounding carries into an eighth bit
                m.d.sync += s.eq(Mux(amax == 0, 0, Mux(over, s0 + 1, s0)))
                m.next = "EMIT"
            with m.State("EMIT"):
                with m.If(i < n):
                    m.d.sync += [i.eq(i + 1), rd_valid.eq(1), rd_last.eq(i + 1 == n)]
                with m.If((i == n) & ~rd_valid):
                    m.d.sync += i.eq(0)
                    m.next = "LOAD"
                with m.If(rd_valid):
                    v = Signal(signed(w + 8))
                    m.d.comb += v.eq(rshift_round(rd.data.as_signed(), s, 7))
                    m.d.sync += [self.out_valid.eq(1), self.out_last.eq(rd_last),
                                 self.q.eq(Mux(v > 127, 127, Mux(v < -128, -128, v)))]
        m.d.comb += self.exponent.eq(s - self.frac)
        return m
