"""The SFU's RMSNorm unit: a residual row in, INT8 codes and the row's exponent out, bit-exact
with ``IntegerKernels.rmsnorm`` (docs/numerics.md, RMSNorm):

    p   = max(0, bitlen(max |H|) - 24)
    h   = rshift_round(H, p)
    ms  = (sum h^2) // d
    r   = max(1, isqrt(ms + (EPS_Q >> 2p)))
    inv = 2^46 // r
    z   = rshift_round(h * inv, 46 - FRAC_N)
    u   = rshift_round(z * G, FRAC_G)
    out = bq(u, FRAC_N)

One (H, G) pair per cycle in; the row is held in a row memory for the passes (squares,
normalise); the normalised row streams into a ``BlockQuantiser``. The per-row steps (mean, square root, reciprocal) are sequential: a
divider and a square root with one result bit per cycle, since they run once per row.
Cycles per row of d: about 3d + 2 * 64 + 32 + a few.
"""
from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from airfoil import numerics as nx
from airfoil.hw.block_quantiser import BlockQuantiser, bitlen, rshift_round
from airfoil.hw.sequential_arith import SequentialDivider, SequentialSqrt

__all__ = ["RmsNormUnit"]

SUM_BITS = 64  # sum of h^2: |h| <= 2^24, d <= 2^14 rows


class RmsNormUnit(wiring.Component):
    """RMSNorm over rows of up to ``max_d`` elements. Input (``in_valid``/``in_ready``,
    ``in_last`` ends a row): the residual ``h`` and its gain ``gain`` (FRAC_G). Output
    (``out_valid``, no back-pressure): the INT8 ``q`` of each element in order, ``out_last``,
    and the row's ``exponent`` (valid with the row's elements). ``eps_q`` is EPS_Q."""

    def __init__(self, max_d: int, h_width: int = 32, gain_width: int = 32):
        self.max_d, self.hw, self.gw = max_d, h_width, gain_width
        assert max_d <= 1 << 14
        super().__init__({
            "in_valid": In(1), "in_ready": Out(1), "in_last": In(1),
            "h": In(signed(h_width)), "gain": In(signed(gain_width)), "eps_q": In(unsigned(32)),
            "out_valid": Out(1), "q": Out(signed(8)), "out_last": Out(1), "exponent": Out(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        hw, gw = self.hw, self.gw
        u_w = 48  # |z| < sqrt(d) 2^16 and the gain's 2^-20: u fits with room
        m.submodules.row = row = Memory(shape=unsigned(hw + gw), depth=self.max_d, init=[])
        wr, rd = row.write_port(), row.read_port()
        m.submodules.bq = bq = BlockQuantiser(self.max_d, u_w, nx.FRAC_N)
        m.submodules.div = div = SequentialDivider(SUM_BITS, SUM_BITS)
        m.submodules.sqrt = sqrt = SequentialSqrt(SUM_BITS)

        n = Signal(range(self.max_d + 1))
        i = Signal(range(self.max_d + 1))
        amax = Signal(unsigned(hw))
        p = Signal(range(hw + 1))
        sumsq = Signal(unsigned(SUM_BITS))
        inv = Signal(unsigned(nx.INV_RMS_SHIFT + 1))
        rd_valid, rd_last = Signal(), Signal()

        h_mem = rd.data[:hw].as_signed()
        g_mem = rd.data[hw:].as_signed()
        hs = Signal(signed(hw))
        m.d.comb += hs.eq(rshift_round(h_mem, p, 6))
        m.d.comb += [rd.addr.eq(i), wr.addr.eq(i), wr.data.eq(Cat(self.h, self.gain))]
        m.d.sync += rd_valid.eq(0)
        m.d.comb += [self.out_valid.eq(bq.out_valid), self.q.eq(bq.q), self.out_last.eq(bq.out_last),
                     self.exponent.eq(bq.exponent)]

        def read_pass(then: str) -> None:
            """Read the row memory from 0 to n - 1 (data one cycle later, with rd_valid and
            rd_last), then go to ``then``."""
            with m.If(i < n):
                m.d.sync += [i.eq(i + 1), rd_valid.eq(1), rd_last.eq(i + 1 == n)]
            with m.If((i == n) & ~rd_valid):
                m.d.sync += i.eq(0)
                m.next = then

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.in_ready.eq(1)
                with m.If(self.in_valid):
                    mag = Mux(self.h < 0, -self.h, self.h)
                    m.d.comb += wr.en.eq(1)
                    m.d.sync += [i.eq(i + 1), amax.eq(Mux((i == 0) | (mag > amax), mag, amax))]
                    with m.If(self.in_last):
                        m.d.sync += [n.eq(i + 1), i.eq(0), sumsq.eq(0)]
                        m.next = "PRESHIFT"
            with m.State("PRESHIFT"):
                bl = bitlen(amax, hw)
                m.d.sync += p.eq(Mux(bl > 24, bl - 24, 0))
                m.next = "SQUARES"
            with m.State("SQUARES"):
                read_pass("MEAN")
                with m.If(rd_valid):
                    m.d.sync += sumsq.eq(sumsq + (hs * hs).as_unsigned())
            with m.State("MEAN"):
                m.d.comb += [div.start.eq(1), div.a.eq(sumsq), div.b.eq(n)]
                m.next = "WAIT_MEAN"
            with m.State("WAIT_MEAN"):
                with m.If(div.done):
                    m.d.comb += [sqrt.start.eq(1), sqrt.n.eq(div.q + (self.eps_q >> (p << 1)))]
                    m.next = "WAIT_SQRT"
            with m.State("WAIT_SQRT"):
                with m.If(sqrt.done):
                    root = Mux(sqrt.r == 0, 1, sqrt.r)
                    m.d.comb += [div.start.eq(1), div.a.eq(1 << nx.INV_RMS_SHIFT), div.b.eq(root)]
                    m.next = "WAIT_INV"
            with m.State("WAIT_INV"):
                with m.If(div.done):
                    m.d.sync += inv.eq(div.q)
                    m.next = "WAIT_QUANTISER"
            with m.State("WAIT_QUANTISER"):  # the quantiser may still be emitting the last row
                with m.If(bq.in_ready):
                    m.next = "NORMALISE"
            with m.State("NORMALISE"):
                read_pass("LOAD")
                with m.If(rd_valid):
                    z = Signal(signed(SUM_BITS + 8))
                    u = Signal(signed(u_w))
                    m.d.comb += [z.eq(rshift_round(hs * inv, nx.INV_RMS_SHIFT - nx.FRAC_N, 0)),
                                 u.eq(rshift_round(z * g_mem, nx.FRAC_G, 0)),
                                 bq.v.eq(u), bq.in_valid.eq(1), bq.in_last.eq(rd_last)]
        return m
