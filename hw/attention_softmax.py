"""The SFU's attention softmax: one query row's integer scores in, the INT8 probabilities (with
the values' exponents folded in) out, bit-exact with ``IntegerKernels.attention_probabilities``
(docs/numerics.md, Attention):

    x[tau]  = rshift_round(dot[tau] * C_QK, 15 - eq - ek[tau] - FRAC_S)     allowed tau only
    m = max x;  d = m - x;  n = d >> FRAC_S;  f = d & (2^FRAC_S - 1)
    p[tau]  = EXP2[f] >> n   (0 when n > 31 or tau is masked)               EXP2: a ROM
    ev_max  = max ev;  p'[tau] = rshift_round(p[tau], ev_max - ev[tau]);  sum = sum p
    (qp, ep) = bq(p', 0);  inv = 2^40 // sum

Two passes over the row (scores in, tracking both maxima; probabilities out into a
``BlockQuantiser``), then one sequential division for ``inv``. The P.V product and the final
``rshift_round(acc * inv, 40 - ep - ev_max - FRAC_A)`` belong to the MPE and the requantiser.
"""
from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from airfoil import numerics as nx
from airfoil.hw.block_quantiser import BlockQuantiser, rshift_round
from airfoil.hw.sequential_arith import SequentialDivider

__all__ = ["AttentionSoftmax"]

X_BITS = 48  # |dot * C_QK| < 2^36 and left shifts of a few bits at most


class AttentionSoftmax(wiring.Component):
    """Rows of up to ``max_l`` key positions. Input (``in_valid``/``in_ready``, ``in_last`` ends a
    row): ``dot``, ``ek``, ``ev`` and ``allowed`` per position; ``eq`` and ``c_qk`` per row (read
    with its first position). Output: the probabilities as ``BlockQuantiser`` (``q``,
    ``out_last``, ``exponent`` = ep), and per row ``inv`` and ``ev_max`` with a ``stats_valid``
    pulse. Every row has at least one allowed position (the causal mask always allows the first)."""

    def __init__(self, max_l: int, dot_width: int = 32):
        self.max_l, self.dw = max_l, dot_width
        super().__init__({
            "in_valid": In(1), "in_ready": Out(1), "in_last": In(1),
            "dot": In(signed(dot_width)), "ek": In(signed(8)), "ev": In(signed(8)), "allowed": In(1),
            "eq": In(signed(8)), "c_qk": In(unsigned(16)),
            "out_valid": Out(1), "q": Out(signed(8)), "out_last": Out(1), "exponent": Out(signed(8)),
            "stats_valid": Out(1), "inv": Out(unsigned(nx.INV_SUM_SHIFT + 1)), "ev_max": Out(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.row = row = Memory(shape=unsigned(X_BITS + 9), depth=self.max_l, init=[])
        wr, rd = row.write_port(), row.read_port()
        table = nx.exp2_table()
        m.submodules.exp2 = exp2 = Memory(shape=unsigned(nx.PROB_FRAC + 1), depth=len(table), init=table.tolist())
        rom = exp2.read_port()
        m.submodules.bq = bq = BlockQuantiser(self.max_l, nx.PROB_FRAC + 2, 0)
        m.submodules.div = div = SequentialDivider(nx.INV_SUM_SHIFT + 1, 32)

        n_pos = Signal(range(self.max_l + 1))
        i = Signal(range(self.max_l + 1))
        eq, c_qk = Signal(signed(8)), Signal(16)
        xmax = Signal(signed(X_BITS))
        any_allowed = Signal()
        total = Signal(32)

        # ---- pass 1: x per position into the row memory, the maxima of x and ev (allowed only)
        first = i == 0
        cur_eq = Mux(first, self.eq, eq)
        cur_c = Mux(first, self.c_qk, c_qk)
        x = Signal(signed(X_BITS))
        m.d.comb += x.eq(rshift_round(self.dot * cur_c, 15 - cur_eq - self.ek - nx.FRAC_S, 6))
        m.d.comb += [wr.addr.eq(i), wr.data.eq(Cat(x, self.ev, self.allowed)), rd.addr.eq(i)]

        # ---- pass 2 pipeline: row memory -> (d, n, f) and the ROM -> p, p' into the quantiser
        rd_valid, rd_last = Signal(), Signal()
        x_mem = rd.data[:X_BITS].as_signed()
        ev_mem = rd.data[X_BITS:X_BITS + 8].as_signed()
        ok_mem = rd.data[X_BITS + 8]
        d = Signal(unsigned(X_BITS + 1))
        m.d.comb += [d.eq(xmax - x_mem), rom.addr.eq(d[:nx.FRAC_S])]
        s_valid, s_last, s_ok, s_shift, s_fshift = Signal(), Signal(), Signal(), Signal(range(32)), Signal(signed(10))
        m.d.sync += [s_valid.eq(rd_valid), s_last.eq(rd_last),
                     s_ok.eq(ok_mem & (d >> nx.FRAC_S < 32)), s_shift.eq(d >> nx.FRAC_S),
                     s_fshift.eq(Mux(self.ev_max - ev_mem > nx.MAX_SHIFT, nx.MAX_SHIFT, self.ev_max - ev_mem))]
        p = Signal(unsigned(nx.PROB_FRAC + 1))
        m.d.comb += p.eq(Mux(s_ok, rom.data >> s_shift, 0))
        m.d.comb += [bq.v.eq(Mux(s_ok, rshift_round(p, s_fshift, 6), 0)), bq.in_valid.eq(s_valid),
                     bq.in_last.eq(s_last)]
        m.d.comb += [self.out_valid.eq(bq.out_valid), self.q.eq(bq.q), self.out_last.eq(bq.out_last),
                     self.exponent.eq(bq.exponent)]
        m.d.sync += [rd_valid.eq(0), self.stats_valid.eq(0)]

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.in_ready.eq(1)
                with m.If(self.in_valid):
                    m.d.comb += wr.en.eq(1)
                    with m.If(first):
                        m.d.sync += [eq.eq(self.eq), c_qk.eq(self.c_qk), any_allowed.eq(0)]
                    with m.If(self.allowed):
                        seen = ~first & any_allowed
                        m.d.sync += [any_allowed.eq(1),
                                     xmax.eq(Mux(seen & (xmax > x), xmax, x)),
                                     self.ev_max.eq(Mux(seen & (self.ev_max > self.ev), self.ev_max, self.ev))]
                    m.d.sync += i.eq(i + 1)
                    with m.If(self.in_last):
                        m.d.sync += [n_pos.eq(i + 1), i.eq(0), total.eq(0)]
                        m.next = "WAIT_QUANTISER"
            with m.State("WAIT_QUANTISER"):  # the quantiser may still be emitting the last row
                with m.If(bq.in_ready):
                    m.next = "PROBABILITIES"
            with m.State("PROBABILITIES"):
                with m.If(i < n_pos):
                    m.d.sync += [i.eq(i + 1), rd_valid.eq(1), rd_last.eq(i + 1 == n_pos)]
                with m.If(s_valid):
                    m.d.sync += total.eq(total + p)
                    with m.If(s_last):
                        m.d.sync += i.eq(0)
                        m.next = "INVERSE"
            with m.State("INVERSE"):
                m.d.comb += [div.start.eq(1), div.a.eq(1 << nx.INV_SUM_SHIFT), div.b.eq(total)]
                m.next = "WAIT_INVERSE"
            with m.State("WAIT_INVERSE"):
                with m.If(div.done):
                    m.d.sync += [self.inv.eq(div.q), self.stats_valid.eq(1)]
                    m.next = "LOAD"
        return m
