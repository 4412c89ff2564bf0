"""The integer L1 LayerNorm unit, forward and backward (reference: ``l1_norm_forward`` and
``l1_norm_backward`` in host/integer_training.py; formulas in docs/integer-training.md).

One element per cycle in and out.  Every division of the reference, the per-row means and the
per-element ``d / s`` and ``dx / s`` alike, is ``div_round``: a signed dividend over a positive
divisor, rounded to nearest with ties away from zero.  ``RoundingDivider`` computes it exactly,
``floor((2|a| + b) / 2b)`` with the sign of a, as a restoring divider with one quotient bit per
pipeline stage, so a row's elements stream through it at one per cycle.

A row is held in a row memory while the unit makes its passes over it:

* forward, input x (``frac`` fraction bits): load and sum x; mu = x_sum / n; a pass summing
  |x - mu| and sgn(x - mu); s = |d|_sum / n + eps; a pass emitting y = (d << 12) / s with sgn(d).
  The row's s is output with its elements: backward needs y, sgn(d) and s, as the reference saves.
* backward, input (g, y, sgn) per element and the row's s: load and sum g, g*y and sgn;
  the three means; a pass emitting dx = ((g - mean g - t) << frac) / s with
  t = round(mean(g*y) * ((sgn << 12) - mean sgn) / 2^12).

Cycles per row of n: forward 3n + 2 divider latencies + 5, backward 2n + 2 latencies + 7.
"""
from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from airfoil.host.integer_training import L1_FRAC

__all__ = ["RoundingDivider", "L1NormUnit", "L1Mode"]


class RoundingDivider(wiring.Component):
    """``q = sign(a) * floor((2|a| + b) / (2b))`` for signed a and unsigned b > 0, pipelined:
    one result per cycle, ``latency`` cycles after its operands; ``tag`` travels alongside."""

    def __init__(self, dividend_width: int, divisor_width: int, tag_width: int):
        self.aw, self.bw, self.tw = dividend_width, divisor_width, tag_width
        # 2|a| + b < 2^aw + 2^bw: max(aw, bw) + 1 bits; the quotient has no more
        self.num_width = max(dividend_width, divisor_width) + 1
        self.latency = self.num_width + 1
        super().__init__({
            "a": In(signed(dividend_width)), "b": In(unsigned(divisor_width)), "tag": In(tag_width),
            "valid": In(1),
            "q": Out(signed(self.num_width + 1)), "q_tag": Out(tag_width), "q_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nw, bw = self.num_width, self.bw
        stage = data.StructLayout({
            "num": unsigned(nw),  # dividend bits not yet consumed, MSB first
            "den": unsigned(bw + 1),  # 2b
            "rem": unsigned(bw + 2),
            "quo": unsigned(nw),
            "neg": 1, "tag": self.tw, "valid": 1,
        })
        regs = [Signal(stage, name=f"div_stage{i}") for i in range(nw + 1)]
        first = regs[0]
        m.d.sync += [first.num.eq(Mux(self.a < 0, -self.a, self.a) * 2 + self.b),
                     first.den.eq(self.b * 2), first.rem.eq(0), first.quo.eq(0),
                     first.neg.eq(self.a < 0), first.tag.eq(self.tag), first.valid.eq(self.valid)]
        for i in range(nw):
            cur, nxt = regs[i], regs[i + 1]
            shifted = Cat(cur.num[nw - 1], cur.rem[:bw + 1])  # (rem << 1) | next dividend bit
            take = shifted >= cur.den
            m.d.sync += [nxt.num.eq(cur.num << 1), nxt.den.eq(cur.den),
                         nxt.rem.eq(Mux(take, shifted - cur.den, shifted)),
                         nxt.quo.eq(Cat(take, cur.quo[:nw - 1])),
                         nxt.neg.eq(cur.neg), nxt.tag.eq(cur.tag), nxt.valid.eq(cur.valid)]
        last = regs[nw]
        m.d.comb += [self.q.eq(Mux(last.neg, -last.quo, last.quo)), self.q_tag.eq(last.tag),
                     self.q_valid.eq(last.valid)]
        return m


class L1Mode(enum.Enum, shape=1):
    FORWARD = 0
    BACKWARD = 1


class _Tag(enum.Enum, shape=3):
    MU = 0
    S = 1
    Y = 2
    MG = 3
    MGY = 4
    MSGN = 5
    DX = 6


# what travels through the divider with each division: which result it is, and for an element
# its sign of (x - mu) and whether it ends the row
_TAG_LAYOUT = data.StructLayout({"kind": _Tag, "sgn": signed(2), "last": 1})


class L1NormUnit(wiring.Component):
    """Forward and backward integer L1 LayerNorm over rows of up to ``max_n`` elements.

    Input (``in_valid``/``in_ready``, ``in_last`` ends a row; ``mode`` and, backward, ``s_in``
    are read with a row's first element): forward ``x``; backward ``g``, ``y``, ``sgn``.
    Output (``out_valid``, no back-pressure): ``value`` (y forward, dx backward), ``sgn``,
    ``out_last``, and forward the row's ``s_out``."""

    def __init__(self, max_n: int, x_width: int = 32, g_width: int = 18, frac: int = 12, eps: int = 1):
        self.max_n, self.xw, self.gw, self.frac, self.eps = max_n, x_width, g_width, frac, eps
        nb = ceil_log2(max_n + 1)
        self.n_bits = nb
        # y = (d << 12) / s and |d| <= n * s  =>  |y| <= n * 2^12 + 1
        self.y_width = L1_FRAC + nb + 2
        self.s_width = x_width + 1
        self.sum_gy_width = g_width + self.y_width + nb
        mgy_w = self.sum_gy_width - L1_FRAC + 1
        self.t_width = mgy_w + 2
        self.num_dx_width = max(g_width + nb, self.t_width) + 2 + frac
        dividend = max(x_width + nb + 1, x_width + 2 + L1_FRAC, self.sum_gy_width, nb + 2 + L1_FRAC,
                       self.num_dx_width)
        divisor = max(self.s_width, nb + L1_FRAC)
        self.divider = RoundingDivider(dividend, divisor, _TAG_LAYOUT.size)
        self.out_width = len(self.divider.q)
        super().__init__({
            "mode": In(L1Mode), "in_valid": In(1), "in_ready": Out(1), "in_last": In(1),
            "x": In(signed(x_width)), "g": In(signed(g_width)), "y": In(signed(self.y_width)),
            "sgn": In(signed(2)), "s_in": In(unsigned(self.s_width)),
            "out_valid": Out(1), "value": Out(signed(self.out_width)), "out_sgn": Out(signed(2)),
            "out_last": Out(1), "s_out": Out(unsigned(self.s_width)), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.div = div = self.divider
        nb, xw, gw = self.n_bits, self.xw, self.gw
        row_w = max(xw, gw + 2)
        m.submodules.row = row = Memory(shape=unsigned(row_w), depth=self.max_n, init=[])
        wr, rd = row.write_port(), row.read_port()

        mode = Signal(L1Mode)
        n = Signal(range(self.max_n + 1))
        i = Signal(range(self.max_n + 1))
        sum_x = Signal(signed(xw + nb + 1))
        sum_abs = Signal(unsigned(xw + nb + 1))
        sum_g = Signal(signed(gw + nb + 1))
        sum_gy = Signal(signed(self.sum_gy_width))
        sum_sgn = Signal(signed(nb + 2))
        mu = Signal(signed(xw + 1))
        s = Signal(unsigned(self.s_width))
        mg, mgy, msgn = Signal(signed(gw + 1)), Signal(signed(self.sum_gy_width)), Signal(signed(L1_FRAC + 2))
        rd_valid, rd_last = Signal(), Signal()  # the read port's data is the element read last cycle

        # divider operands default to idle
        tag = Signal(_TAG_LAYOUT)
        m.d.comb += [div.tag.eq(tag), div.valid.eq(0)]
        q_tag = data.View(_TAG_LAYOUT, div.q_tag)

        # results coming out of the divider
        m.d.comb += [self.out_valid.eq(0), self.value.eq(div.q), self.out_sgn.eq(q_tag.sgn),
                     self.out_last.eq(q_tag.last), self.s_out.eq(s)]
        with m.If(div.q_valid):
            with m.Switch(q_tag.kind):
                with m.Case(_Tag.MU):
                    m.d.sync += mu.eq(div.q)
                with m.Case(_Tag.S):
                    m.d.sync += s.eq(div.q + self.eps)
                with m.Case(_Tag.MG):
                    m.d.sync += mg.eq(div.q)
                with m.Case(_Tag.MGY):
                    m.d.sync += mgy.eq(div.q)
                with m.Case(_Tag.MSGN):
                    m.d.sync += msgn.eq(div.q)
                with m.Case(_Tag.Y, _Tag.DX):
                    m.d.comb += self.out_valid.eq(1)

        m.d.comb += [rd.addr.eq(i), wr.addr.eq(i)]
        m.d.sync += rd_valid.eq(0)
        x_mem = rd.data[:xw].as_signed()
        g_mem = rd.data[:gw].as_signed()
        sgn_mem = rd.data[gw:gw + 2].as_signed()
        d = Signal(signed(xw + 2))
        m.d.comb += d.eq(x_mem - mu)
        d_sgn = Mux(d > 0, 1, Mux(d < 0, -1, 0))

        def divide(a, b, kind: _Tag, sgn=0, last=0) -> list:
            """Statements (comb) that hand one division to the pipelined divider."""
            return [div.a.eq(a), div.b.eq(b), div.valid.eq(1), tag.kind.eq(kind), tag.sgn.eq(sgn), tag.last.eq(last)]

        def read_pass(then: str) -> None:
            """Read the row memory from 0 to n - 1, one element per cycle (its data one cycle
            later, with rd_valid and rd_last), then go to ``then``."""
            with m.If(i < n):
                m.d.sync += [i.eq(i + 1), rd_valid.eq(1), rd_last.eq(i + 1 == n)]
            with m.If((i == n) & ~rd_valid):
                m.next = then

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.in_ready.eq(1)
                with m.If(self.in_valid):
                    first = i == 0
                    cur_mode = Mux(first, self.mode.as_value(), mode.as_value())
                    m.d.comb += wr.en.eq(1)
                    with m.If(first):
                        m.d.sync += [mode.eq(self.mode), s.eq(Mux(self.mode == L1Mode.BACKWARD, self.s_in, s))]
                    with m.If(cur_mode == L1Mode.FORWARD.value):
                        m.d.comb += wr.data.eq(self.x)
                        m.d.sync += sum_x.eq(Mux(first, 0, sum_x) + self.x)
                    with m.Else():
                        m.d.comb += wr.data.eq(Cat(self.g, self.sgn))
                        m.d.sync += [sum_g.eq(Mux(first, 0, sum_g) + self.g),
                                     sum_gy.eq(Mux(first, 0, sum_gy) + self.g * self.y),
                                     sum_sgn.eq(Mux(first, 0, sum_sgn) + self.sgn)]
                    m.d.sync += i.eq(i + 1)
                    with m.If(self.in_last):
                        m.d.sync += [n.eq(i + 1), i.eq(0)]
                        with m.If(cur_mode == L1Mode.FORWARD.value):
                            m.next = "MEAN"
                        with m.Else():
                            m.next = "BWD_MEAN_G"
            # ---- forward
            with m.State("MEAN"):
                m.d.comb += divide(sum_x, n, _Tag.MU)
                m.next = "WAIT_MEAN"
            with m.State("WAIT_MEAN"):
                with m.If(div.q_valid & (q_tag.kind == _Tag.MU)):
                    m.d.sync += [sum_abs.eq(0), i.eq(0)]
                    m.next = "DEVIATION"
            with m.State("DEVIATION"):  # after mu lands: sum |x - mu| over the row
                read_pass("SCALE")
                with m.If(rd_valid):
                    m.d.sync += sum_abs.eq(sum_abs + Mux(d < 0, -d, d))
            with m.State("SCALE"):
                m.d.comb += divide(sum_abs, n, _Tag.S)
                m.next = "WAIT_SCALE"
            with m.State("WAIT_SCALE"):
                with m.If(div.q_valid & (q_tag.kind == _Tag.S)):
                    m.d.sync += i.eq(0)
                    m.next = "NORMALISE"
            with m.State("NORMALISE"):
                read_pass("DRAIN")
                with m.If(rd_valid):
                    m.d.comb += divide(d << L1_FRAC, s, _Tag.Y, d_sgn, rd_last)
            # ---- backward
            with m.State("BWD_MEAN_G"):
                m.d.comb += divide(sum_g, n, _Tag.MG)
                m.next = "BWD_MEAN_GY"
            with m.State("BWD_MEAN_GY"):
                m.d.comb += divide(sum_gy, n << L1_FRAC, _Tag.MGY)
                m.next = "BWD_MEAN_SGN"
            with m.State("BWD_MEAN_SGN"):
                m.d.comb += divide(sum_sgn << L1_FRAC, n, _Tag.MSGN)
                m.next = "BWD_WAIT"
            with m.State("BWD_WAIT"):
                with m.If(div.q_valid & (q_tag.kind == _Tag.MSGN)):
                    m.d.sync += i.eq(0)
                    m.next = "BWD_GRADIENT"
            with m.State("BWD_GRADIENT"):
                read_pass("DRAIN")
                with m.If(rd_valid):
                    prod = Signal(signed(self.t_width + L1_FRAC + 2))
                    t = Signal(signed(self.t_width))
                    m.d.comb += prod.eq(mgy * ((sgn_mem << L1_FRAC) - msgn))
                    mag = Mux(prod < 0, -prod, prod)
                    t_mag = (mag + (1 << (L1_FRAC - 1))) >> L1_FRAC  # div_round(prod, 2^12)
                    m.d.comb += t.eq(Mux(prod < 0, -t_mag, t_mag))
                    m.d.comb += divide((g_mem - mg - t) << self.frac, s, _Tag.DX, last=rd_last)
            with m.State("DRAIN"):  # the row's last result leaves the divider
                with m.If(div.q_valid & q_tag.last):
                    m.d.sync += i.eq(0)
                    m.next = "LOAD"
        m.d.comb += self.busy.eq(~self.in_ready)
        return m
