"""ShiftQuant dot-product tile for integer training (host/integer_training.py is its reference).

Each cycle takes ``lanes`` pairs of b-bit signed operands and each pair's group tag (the
power-of-two factor of its channel, 2 bits).  Products are summed per tag into one accumulator
per group (channels are never moved: the tag picks the accumulator), and at the end of a row the
accumulators are shift-aligned and added: ``y = sum_g acc_g << (groups - 1 - g)``, which is
``shift_gemm``'s integer result for a ShiftQuant operand against a per-tensor one.

Pipeline: products (1) -> per-group partial sums (2) -> accumulators, and on ``last`` the
aligned sum (3).
"""
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["ShiftQuantDot", "SHIFTQUANT_LATENCY"]

SHIFTQUANT_LATENCY = 3


class ShiftQuantDot(wiring.Component):
    def __init__(self, bits: int, lanes: int, groups: int = 4, acc_width: int = 32):
        if bits not in (4, 6, 8):
            raise ValueError(f"ShiftQuant operands are 4, 6 or 8 bits, not {bits}")
        self.bits, self.lanes, self.groups, self.acc_width = bits, lanes, groups, acc_width
        self.beat_layout = data.StructLayout({
            "a": data.ArrayLayout(signed(bits), lanes),
            "b": data.ArrayLayout(signed(bits), lanes),
            "group": data.ArrayLayout(unsigned(max(1, ceil_log2(groups))), lanes),
            "first": unsigned(1),  # first beat of a row: the accumulators restart
            "last": unsigned(1),  # last beat: emit y
        })
        self.out_width = acc_width + groups - 1
        super().__init__({"beat": In(self.beat_layout), "valid": In(1),
                          "y": Out(signed(self.out_width)), "y_valid": Out(1)})

    def elaborate(self, platform):
        m = Module()
        b = self.beat
        pw = 2 * self.bits
        prod = [Signal(signed(pw), name=f"prod{i}") for i in range(self.lanes)]
        tag = [Signal.like(b.group[i], name=f"tag{i}") for i in range(self.lanes)]
        v1, f1, l1 = Signal(), Signal(), Signal()
        for i in range(self.lanes):
            m.d.sync += [prod[i].eq(b.a[i] * b.b[i]), tag[i].eq(b.group[i])]
        m.d.sync += [v1.eq(self.valid), f1.eq(b.first), l1.eq(b.last)]

        sw = pw + ceil_log2(self.lanes)
        psum = [Signal(signed(sw), name=f"psum{g}") for g in range(self.groups)]
        v2, f2, l2 = Signal(), Signal(), Signal()
        for g in range(self.groups):
            m.d.sync += psum[g].eq(sum(Mux(tag[i] == g, prod[i], 0) for i in range(self.lanes)))
        m.d.sync += [v2.eq(v1), f2.eq(f1), l2.eq(l1)]

        acc = [Signal(signed(self.acc_width), name=f"acc{g}") for g in range(self.groups)]
        new = [Mux(f2, 0, acc[g]) + psum[g] for g in range(self.groups)]
        m.d.sync += self.y_valid.eq(0)
        with m.If(v2):
            m.d.sync += [acc[g].eq(new[g]) for g in range(self.groups)]
            with m.If(l2):
                m.d.sync += [self.y.eq(sum(new[g] << (self.groups - 1 - g) for g in range(self.groups))),
                             self.y_valid.eq(1)]
        return m
