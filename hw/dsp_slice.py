"""A DSP48E2-shaped slice that computes two INT8 MACs per cycle in one multiplier.

Two activations that share one weight are packed into the 27-bit A port:
``A = a_hi * 2^18 + a_lo``; the 18-bit B port takes the weight. The 48-bit accumulator then
holds ``(sum a_hi*w) * 2^18 + (sum a_lo*w)``. The low lane is the sign-extended low 18 bits;
the high lane is ``(P - lo) >> 18``: subtracting the sign-extended low lane is the
sign-correction term (a negative low lane borrows one from the high lane).

The low lane is exact while ``|sum a_lo*w| < 2^17``: with INT8 activations and weights in
[-127, 127] (the weight decoder never emits -128, see docs/numerics.md) each product is at
most 128*127 = 16,256 in magnitude, so up to ``MAX_PACKED_ACCUMULATIONS`` = 8 products fit;
the chain's reduction nodes unpack the lanes after two (see ``sparse_chain``).

The packed operand needs no 27-bit adder: its low 18 bits are ``a_lo`` sign-extended and its
high 9 bits ``a_hi - sign(a_lo)`` (the borrow), so the fabric spends an 8-bit decrement on it.

Pipeline as the primitive's AREG/BREG (1 or 2), MREG=1, PREG=1: latency ``SLICE_LATENCY`` plus
any extra input register.  The post-adder's Z-mux selects ``pcin`` (the cascade from the slice
below, PCIN) when ``first`` starts a sum, else the slice's own P (accumulate).

Two elaborations of the same slice, chosen by ``primitive``:

* ``primitive=True`` (what the boards get): a ``DSP48E2`` instance, so that synthesis keeps the
  operand packing in the pre-adder (D = a_hi * 2^18, A = a_lo: AD = D + A), every pipeline
  register in the DSP and the cascade sum in its post-adder (PCIN from the slice below's PCOUT).
  Inferring it does not work here: Yosys' ``synth_xilinx -family xcup`` packs no register, pre- or
  post-adder into a DSP48E2 (it maps the multiplier alone and leaves the rest in LUTs and
  flip-flops).  Verilator simulates it with ``sim/hdl/DSP48E2.sv``, a model of UG579's subset.
* ``primitive=False``: the same arithmetic in plain Amaranth, the reference the primitive is
  tested against and what Amaranth's own simulator runs (it cannot run an instance).
"""

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from airfoil.hw.dsp48e2 import Z_C, Z_P, Z_PCIN, Dsp48e2, opmode

__all__ = ["DspSlice", "unpack_lanes", "split_lanes", "LANE_SHIFT", "MAX_PACKED_ACCUMULATIONS",
           "SLICE_LATENCY", "ACC_WIDTH"]

LANE_SHIFT = 18
ACC_WIDTH = 48
MAX_PACKED_ACCUMULATIONS = 8
SLICE_LATENCY = 3


def unpack_lanes(p: int) -> tuple[int, int]:
    """(hi, lo) lane sums of a packed accumulator value (the reference for ``split_lanes``)."""
    lo = p & ((1 << LANE_SHIFT) - 1)
    lo -= (lo >> (LANE_SHIFT - 1)) << LANE_SHIFT
    return (p - lo) >> LANE_SHIFT, lo


def split_lanes(p: Value, lane_width: int) -> tuple[Value, Value, Value]:
    """The lanes of a packed value (hardware) whose lanes fit ``lane_width`` bits, signed, as
    ``(hi_bits, lo, borrow)``, where ``unpack_lanes``' hi = hi_bits + borrow: ``lo`` is the low
    bits, ``hi_bits`` the bits above the low lane and ``borrow`` the sign of the low lane (a
    negative ``lo`` borrowed one from the high lane).  No 48-bit subtraction, and the borrow
    stays a bit of its own, so a sum of many high lanes adds the borrows once."""
    return p[LANE_SHIFT:LANE_SHIFT + lane_width + 1].as_signed(), p[:lane_width].as_signed(), p[LANE_SHIFT - 1]


class DspSlice(wiring.Component):
    """``p`` = ``pcin`` + running sum of ``(a_hi*2^18 + a_lo) * w`` since the last ``first``
    (both valid).  ``input_regs`` = 2 delays the operands one more cycle (AREG/BREG = 2), which
    lines a slice up with the P output of the cascaded slice below it.  ``accumulate=False``:
    every product starts a sum, ``p`` = ``pcin`` + product (``first`` is not looked at): a fixed
    post-adder without the Z-mux and without P fed back (OPMODE fixed at PCIN + M).  ``primitive``:
    a DSP48E2 instance, else behavioural (the module docstring).  ``cascade_in``: ``pcin`` is the
    ``pcout`` of a slice below (the instance takes it on PCIN, the dedicated route, which nothing
    else may drive); otherwise ``pcin`` comes from the fabric and the instance takes it on C."""

    a_hi: In(signed(8))
    a_lo: In(signed(8))
    w: In(signed(8))
    valid: In(1)
    first: In(1)  # this product starts a new sum (the Z-mux selects pcin instead of P)
    pcin: In(signed(ACC_WIDTH))  # the cascade input (0 when unconnected): the slice below's pcout
    p: Out(signed(ACC_WIDTH))
    pcout: Out(signed(ACC_WIDTH))  # p on the dedicated cascade route (PCOUT), for the slice above's pcin
    p_valid: Out(1)  # p was updated this cycle (latency cycles after the inputs)

    def __init__(self, input_regs: int = 1, accumulate: bool = True, primitive: bool = True, cascade_in: bool = False):
        if input_regs not in (1, 2):
            raise ValueError(f"input_regs must be 1 or 2 (the DSP48E2's AREG/BREG), not {input_regs}")
        self.input_regs, self.accumulate, self.primitive, self.cascade_in = input_regs, accumulate, primitive, cascade_in
        self.latency = SLICE_LATENCY + input_regs - 1
        super().__init__()

    def elaborate(self, platform):
        return self._elaborate_primitive() if self.primitive else self._elaborate_behavioural()

    def _control_pipeline(self, m: Module) -> tuple[Value, Value]:
        """``valid`` and ``first`` delayed to the multiplier's output register (M): (mv, mf)."""
        v, f = self.valid, self.first
        for i in range(self.input_regs + 1):
            rv, rf = Signal(name=f"vreg{i}"), Signal(name=f"freg{i}")
            m.d.sync += [rv.eq(v), rf.eq(f)]
            v, f = rv, rf
        m.d.sync += self.p_valid.eq(v)
        return v, f

    def _elaborate_primitive(self):
        m = Module()
        mv, mf = self._control_pipeline(m)
        # the post-adder's Z input: the sum below (PCIN from a slice, else C) or P to accumulate; X = Y = M
        z_in = Z_PCIN if self.cascade_in else Z_C
        mode = opmode(Mux(mf, Const(z_in, 3), Const(Z_P, 3)) if self.accumulate else z_in)
        # D and A meet in the pre-adder: a_hi * 2^18 + a_lo, with the borrow done by the adder.
        # A two-deep input takes AREG = 1 plus ADREG (D has one register at most); B follows.
        sum_in = {"pcin": self.pcin} if self.cascade_in else {"c": self.pcin}
        dsp = Dsp48e2(m, "dsp", a=self.a_lo, b=self.w, d=Cat(Const(0, LANE_SHIFT), self.a_hi).as_signed(), **sum_in,
                      opmode=mode, ce_p=mv, areg=1, breg=self.input_regs, dreg=1, adreg=self.input_regs - 1)
        m.d.comb += [self.p.eq(dsp.p), self.pcout.eq(dsp.pcout)]
        return m

    def _elaborate_behavioural(self):
        m = Module()
        m.d.comb += self.pcout.eq(self.p)
        lo18 = Signal(signed(LANE_SHIFT))
        hi9 = Signal(signed(27 - LANE_SHIFT))
        m.d.comb += [lo18.eq(self.a_lo), hi9.eq(self.a_hi - self.a_lo[7])]
        packed = Cat(lo18, hi9).as_signed()

        # input registers (A/B ports), then M, then P; valid and first travel beside them
        mv, mf = self._control_pipeline(m)
        a, b = packed, self.w
        for i in range(self.input_regs):
            ra, rb = Signal(signed(27), name=f"areg{i}"), Signal(signed(18), name=f"breg{i}")
            m.d.sync += [ra.eq(a), rb.eq(b)]
            a, b = ra, rb
        prod = Signal(signed(45))
        m.d.sync += prod.eq(a * b)
        with m.If(mv):
            m.d.sync += self.p.eq(prod + (Mux(mf, self.pcin, self.p) if self.accumulate else self.pcin))
        return m
