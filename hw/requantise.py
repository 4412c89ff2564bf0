"""The requantisation path: a linear layer's group sums in, INT32 fixed point out.

Per output (row o, token t) the chain delivers one integer sum per quant group,
``acc[g] = sum_{k in g} q[t,k] * w8[o,k]``; this path computes (docs/numerics.md, Linear layer)

    Y   = sum_g S[o,g] * acc[g]                      48-bit accumulator (|Y| < 2^47)
    out = sat(rshift_round(Y, shift), 32)            shift = E - e[t] - F

``rshift_round`` rounds half up for ``shift > 0`` and shifts left exactly for ``shift <= 0``;
shifts above 62 act as 62 (``MAX_SHIFT``). Reference: ``IntegerKernels.requantise``.
One group sum per cycle; an output ``LATENCY`` cycles after its last group.  The products and
Y are two DSP48E2 instances' (``hw/dsp48e2.py``); Verilator runs them on ``sim/hdl/DSP48E2.sv``.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from airfoil.hw.dsp48e2 import Z_P, Z_ZERO, Dsp48e2, opmode
from airfoil.numerics import ACC_BITS

__all__ = ["RequantisePath", "GroupScaleAccumulator", "RoundShiftSaturate", "round_shift_saturate",
           "group_sum_layout", "MIN_SHIFT", "LATENCY"]

MIN_SHIFT = -16  # left shifts the path takes; a row's exponent keeps |Y << -shift| < 2^63
LATENCY = 3  # product register (M), accumulator (P), Y's register (the rounding follows it, combinational)
SPLIT = 17  # acc's low part, unsigned, in one DSP48E2; the rest, signed, in another
# |y| <= 2^47 rounds to 0 at any right shift of 48 or more (MAX_SHIFT is 62)
SHIFT_CAP = ACC_BITS


def group_sum_layout(acc_width: int = 32) -> data.StructLayout:
    return data.StructLayout({
        "acc": signed(acc_width),  # one quant group's integer sum
        "scale": unsigned(16),  # its S[o, g]
        "shift": signed(8),  # E - e[t] - F, read with the output's last group
        "first": unsigned(1),  # first group of an output: restart Y
        "last": unsigned(1),  # last group: emit the output
    })


class GroupScaleAccumulator(wiring.Component):
    """Stages 1 and 2 of the path: group sums in, each output's Y = sum_g S * acc out (48 bits),
    registered, ``LATENCY`` cycles after its last group.  Where outputs leave a few at a time (the
    MV unit writes one GLOBAL word a cycle) the last stage, ``round_shift_saturate``, need not be
    built once per lane: the MV unit has one per element of the word it writes."""

    def __init__(self, acc_width: int = 32):
        if not SPLIT < acc_width <= SPLIT + 27:
            raise ValueError(f"GroupScaleAccumulator: acc_width {acc_width}: the high part above bit {SPLIT} must "
                             f"fit a 27-bit multiplier input")
        self.acc_width = acc_width
        super().__init__({
            "sums": In(stream.Signature(group_sum_layout(acc_width))),  # its ``shift`` is not read
            "out": Out(stream.Signature(signed(ACC_BITS))),
        })

    def elaborate(self, platform):
        m = Module()
        s = self.sums.payload
        m.d.comb += self.sums.ready.eq(1)
        # S * acc is wider than one multiplier (27 x 18), so acc splits at bit 17: a low part,
        # unsigned, and a high part, signed, each times S (unsigned, 16 bits) in its own DSP, whose
        # P accumulates its part's products from `first` on (Z = P, or 0 to restart): Y = P_hi *
        # 2^17 + P_lo.  The products go into M, the sums into P, as in the primitive, where Yosys
        # would leave both in the fabric (see hw/dsp48e2.py).
        # registered beside the products: `first` steers the Z mux in the cycle they reach P
        p_valid, p_first, p_last = Signal(), Signal(), Signal()
        m.d.sync += [p_valid.eq(self.sums.valid), p_first.eq(s.first), p_last.eq(s.last)]
        mode = opmode(Mux(p_first, Const(Z_ZERO, 3), Const(Z_P, 3)))
        scale = Cat(s.scale, Const(0, 1)).as_signed()
        lo = Dsp48e2(m, "mac_lo", a=Cat(s.acc[:SPLIT], Const(0, 1)).as_signed(), b=scale, opmode=mode, ce_p=p_valid)
        hi = Dsp48e2(m, "mac_hi", a=s.acc[SPLIT:].as_signed(), b=scale, opmode=mode, ce_p=p_valid)
        y = Signal(signed(ACC_BITS))
        y_done = Signal()
        # |Y| < 2^47: the sum modulo 2^48 is Y (the high part alone may come near 2^47)
        m.d.comb += y.eq((hi.p << SPLIT) + lo.p)
        m.d.sync += y_done.eq(p_valid & p_last)
        # stage 3's register holds Y itself: the rounding follows it, in the same cycle
        m.d.sync += [self.out.valid.eq(y_done), self.out.payload.eq(y)]
        return m


def round_shift_saturate(m: Module, y, shift, name: str = "requantised") -> Signal:
    """Stage 3, combinational: sat(rshift_round(y, shift), 32) for a 48-bit ``y`` and ``shift``
    in [MIN_SHIFT, 127] (8 bits, signed).  Round half up (right) or shift left exactly: one right
    shifter does both.  With u = (y << (1 - MIN_SHIFT)) >> (shift - MIN_SHIFT), (u + 1) >> 1 is
    y << -shift exactly for shift <= 0 (the bits that round are zeros) and rshift_round(y, shift)
    for shift > 0 (u is y >> (shift - 1), floored).  From SHIFT_CAP up u is 0 or -1 for every
    48-bit y, so the result is 0, as the reference's is up to MAX_SHIFT: the shifter stops there."""
    amount = Signal(range(SHIFT_CAP - MIN_SHIFT + 1), name=f"{name}_amount")
    m.d.comb += amount.eq(Mux(shift > SHIFT_CAP, SHIFT_CAP - MIN_SHIFT, shift - MIN_SHIFT))
    u = Signal(signed(ACC_BITS + 1 - MIN_SHIFT), name=f"{name}_u")
    m.d.comb += u.eq((y << (1 - MIN_SHIFT)).as_signed() >> amount)
    full = Signal(signed(ACC_BITS + 1 - MIN_SHIFT), name=f"{name}_full")
    m.d.comb += full.eq((u + 1) >> 1)
    lo, hi = -(1 << 31), (1 << 31) - 1
    out = Signal(signed(32), name=name)
    m.d.comb += out.eq(Mux(full > hi, hi, Mux(full < lo, lo, full)))
    return out


class RoundShiftSaturate(wiring.Component):
    """``round_shift_saturate`` on its own: what one such stage costs (``hw/synth.py``)."""

    def __init__(self):
        super().__init__({"y": In(signed(ACC_BITS)), "shift": In(signed(8)), "out": Out(signed(32))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.out.eq(round_shift_saturate(m, self.y, self.shift))
        return m


class RequantisePath(wiring.Component):
    """Group sums in, requantised outputs out (one per output whose ``last`` group came in):
    ``GroupScaleAccumulator`` and ``round_shift_saturate`` after its register, with the shift
    read with the output's last group.  A fixed pipeline like the MPE: it always takes a sum, and
    its consumer takes every output (``out.ready`` is not looked at).  ``shift`` must lie in
    [MIN_SHIFT, 127]."""

    def __init__(self, acc_width: int = 32):
        self.acc_width = acc_width
        self._acc = GroupScaleAccumulator(acc_width)
        super().__init__({
            "sums": In(stream.Signature(group_sum_layout(acc_width))),
            "out": Out(stream.Signature(signed(32))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.accumulate = acc = self._acc
        s = self.sums.payload
        m.d.comb += [acc.sums.valid.eq(self.sums.valid), acc.sums.payload.eq(s), self.sums.ready.eq(1)]
        # the shift of each output, read with its last group, beside Y through the pipeline
        shift = [Signal(signed(8), name=f"shift{i}") for i in range(LATENCY)]
        with m.If(self.sums.valid & s.last):
            m.d.sync += shift[0].eq(s.shift)
        m.d.sync += [shift[i].eq(shift[i - 1]) for i in range(1, LATENCY)]
        m.d.comb += [self.out.valid.eq(acc.out.valid),
                     self.out.payload.eq(round_shift_saturate(m, acc.out.payload, shift[-1]))]
        return m
