"""ShiftQuant dot-product tile for integer training (host/integer_training.py is its reference).

Each cycle takes ``lanes`` pairs of b-bit signed operands and each pair's group tags (the
power-of-two factors of its channel).  The first operand's tag picks the accumulator its product
is summed into (channels are never moved: the tag picks the accumulator); the second operand's
tag, where it has groups (``b_groups`` > 1: the forward GEMM's weights), shifts its code left by
``b_groups - 1 - tag`` on its way into the multiplier.  At the end of a row the accumulators
are shift-aligned and added: ``y = sum_g acc_g << (groups - 1 - g)``, which is ``shift_gemm``'s
integer result (the host gives the tags of ``tile_tags``).

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
    def __init__(self, bits: int, lanes: int, groups: int = 4, acc_width: int = 32, b_groups: int = 1):
        if bits not in (4, 6, 8):
            raise ValueError(f"ShiftQuant operands are 4, 6 or 8 bits, not {bits}")
        self.bits, self.lanes, self.groups, self.acc_width, self.b_groups = bits, lanes, groups, acc_width, b_groups
        fields = {
            "a": data.ArrayLayout(signed(bits), lanes),
            "b": data.ArrayLayout(signed(bits), lanes),
            "group": data.ArrayLayout(unsigned(max(1, ceil_log2(groups))), lanes),
            "first": unsigned(1),  # first beat of a row: the accumulators restart
            "last": unsigned(1),  # last beat: emit y
        }
        if b_groups > 1:  # the second operand's tags: its code shifted left by b_groups - 1 - tag
            fields["b_group"] = data.ArrayLayout(unsigned(ceil_log2(b_groups)), lanes)
        self.beat_layout = data.StructLayout(fields)
        self.out_width = acc_width + groups - 1
        super().__init__({"beat": In(self.beat_layout), "valid": In(1),
                          "y": Out(signed(self.out_width)), "y_valid": Out(1)})

    def elaborate(self, platform):
        m = Module()
        b = self.beat
        top_b = self.b_groups - 1
        pw = 2 * self.bits + top_b
        prod = [Signal(signed(pw), name=f"prod{i}") for i in range(self.lanes)]
        tag = [Signal.like(b.group[i], name=f"tag{i}") for i in range(self.lanes)]
        v1, f1, l1 = Signal(), Signal(), Signal()
        for i in range(self.lanes):
            bi = b.b[i] if top_b == 0 else (b.b[i] << top_b) >> b.b_group[i]  # exact: the low bits are 0
            m.d.sync += [prod[i].eq(b.a[i] * bi), tag[i].eq(b.group[i])]
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
