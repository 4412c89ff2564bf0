"""The SFU's SwiGLU unit (SILU_MUL): gate and up rows in (A format, FRAC_A), INT8 codes and the
row's exponent out, bit-exact with ``IntegerKernels.silu_mul`` (docs/numerics.md):

    i    = clamp(rshift_round(gate, FRAC_A - SIG_IN_FRAC), -SIG_RANGE, SIG_RANGE - 1)
    silu = rshift_round(gate * SIG[i], PROB_FRAC)          SIG: the sigmoid table, a ROM
    out  = bq(silu * up, 2 FRAC_A)

One (gate, up) pair per cycle; the table read takes a cycle, then the products stream into a
``BlockQuantiser``.
"""
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from airfoil import numerics as nx
from airfoil.hw.block_quantiser import BlockQuantiser, rshift_round

__all__ = ["SiluMulUnit"]


class SiluMulUnit(wiring.Component):
    """SiLU(gate) * up over rows of up to ``max_n`` elements. Input ``in_valid``/``in_ready``,
    ``in_last`` ends a row; output as ``BlockQuantiser``."""

    def __init__(self, max_n: int, width: int = 32):
        self.max_n, self.width = max_n, width
        super().__init__({
            "in_valid": In(1), "in_ready": Out(1), "in_last": In(1),
            "gate": In(signed(width)), "up": In(signed(width)),
            "out_valid": Out(1), "q": Out(signed(8)), "out_last": Out(1), "exponent": Out(signed(8)),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width
        table = nx.sigmoid_table()
        m.submodules.sig = sig = Memory(shape=unsigned(nx.PROB_FRAC + 1), depth=len(table), init=table.tolist())
        rd = sig.read_port()
        m.submodules.bq = bq = BlockQuantiser(self.max_n, 2 * w + nx.PROB_FRAC + 2, 2 * nx.FRAC_A)
        # stage 0: the table index; the ROM answers next cycle
        i = Signal(signed(w))
        m.d.comb += i.eq(rshift_round(self.gate, nx.FRAC_A - nx.SIG_IN_FRAC, 0))
        idx = Mux(i < -nx.SIG_RANGE, -nx.SIG_RANGE, Mux(i > nx.SIG_RANGE - 1, nx.SIG_RANGE - 1, i))
        take = self.in_valid & self.in_ready
        gate, up, valid, last = Signal.like(self.gate), Signal.like(self.up), Signal(), Signal()
        # a row's last element in stage 1 closes the quantiser's input for its row: hold the next
        m.d.comb += [rd.addr.eq(idx + nx.SIG_RANGE), rd.en.eq(1), self.in_ready.eq(bq.in_ready & ~(valid & last))]
        m.d.sync += [gate.eq(self.gate), up.eq(self.up), valid.eq(take), last.eq(self.in_last)]
        # stage 1: silu and the product, into the quantiser
        silu = Signal(signed(w + 2))
        m.d.comb += [silu.eq(rshift_round(gate * rd.data, nx.PROB_FRAC, 0)),
                     bq.v.eq(silu * up), bq.in_valid.eq(valid), bq.in_last.eq(last)]
        m.d.comb += [self.out_valid.eq(bq.out_valid), self.q.eq(bq.q), self.out_last.eq(bq.out_last),
                     self.exponent.eq(bq.exponent)]
        return m
