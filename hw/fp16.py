"""IEEE 754 binary16 multiply-add, the cost baseline for the ShiftQuant datapath.

``r = fp16(fp16(a * b) + c)``: a correctly rounded multiply, then a correctly rounded add, both
round-to-nearest-even, with subnormals, infinities and NaN (numpy's float16 arithmetic gives
the same bits: each operation is exact in float32 before its one rounding to float16).

Both operations end in ``_round_pack``: an exact (or sticky-exact) value ``M * 2^E`` with M an
unsigned integer is normalised by a leading-one detector and a shifter and rounded to the
binary16 grid (the subnormal quantum 2^-24 below the normal range).  The adder aligns the
smaller operand with guard, round and sticky bits, as hardware adders do.
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Fp16MulAdd", "Fp16MacArray"]

EXP_BIAS = 15
QUANTUM_EXP = -24  # the subnormal step 2^-24
NAN = 0x7E00


def _unpack(x):
    """(sign, exponent E, significand M) with value M * 2^E, and (is_inf, is_nan)."""
    sign, exp, frac = x[15], x[10:15], x[:10]
    sub = exp == 0
    m = Mux(sub, frac, Cat(frac, Const(1, 1)))
    e = Mux(sub, QUANTUM_EXP, exp - (EXP_BIAS + 10))
    is_special = exp == 31
    return sign, e, m, is_special & (frac == 0), is_special & (frac != 0)


def _leading_one(m, width):
    """Position of the highest set bit of m (0 when m == 0)."""
    pos = Const(0, range(width))
    for i in range(width):
        pos = Mux(m[i], i, pos)
    return pos


class _RoundPack(wiring.Component):
    """Combinational: ``bits`` = binary16 of (-1)^sign * m * 2^e, rounded to nearest even."""

    def __init__(self, width: int):
        self.width = width
        super().__init__({"m": In(unsigned(width)), "e": In(signed(10)), "sign": In(1), "bits": Out(16)})

    def elaborate(self, platform):
        m_ = Module()
        w = self.width
        m, e = self.m, self.e
        p = Signal(range(w))
        m_.d.comb += p.eq(_leading_one(m, w))
        q_norm = Signal(signed(12))
        qexp = Signal(signed(12))
        shift = Signal(signed(12))  # right shift of m that lands on the quantum
        m_.d.comb += [q_norm.eq(e + p - 10), qexp.eq(Mux(q_norm > QUANTUM_EXP, q_norm, QUANTUM_EXP)),
                      shift.eq(qexp - e)]
        # q = m scaled so that the quantum is its bit 0; guard = the next bit; sticky = any below
        q = Signal(unsigned(12))
        guard = Signal()
        sticky = Signal()
        with m_.If(shift <= 0):
            m_.d.comb += q.eq(m << (-shift).as_unsigned()[:4])
        with m_.Else():
            sr = Signal(range(w + 2))
            sr1 = Signal(range(w + 2))  # sr - 1: the guard bit's position
            m_.d.comb += [sr.eq(Mux(shift > w + 1, w + 1, shift)), sr1.eq(sr - 1)]
            below = Signal(unsigned(w + 1))
            m_.d.comb += [q.eq(m >> sr), guard.eq((m >> sr1)[0]),
                          below.eq((Const(1, w + 1) << sr1) - 1),
                          sticky.eq((m & below) != 0)]
        up = Signal()
        m_.d.comb += up.eq(guard & (sticky | q[0]))
        qr = Signal(unsigned(12))
        m_.d.comb += qr.eq(q + up)
        # a carry out of the 11-bit significand moves to the next binade (or from subnormal to normal)
        exp_field = Signal(signed(12))
        frac = Signal(10)
        m_.d.comb += [exp_field.eq(Mux(qr >= 1 << 10, qexp + 10 + EXP_BIAS + Mux(qr[11], 1, 0), 0)),
                      frac.eq(Mux(qr[11], qr[1:11], qr[:10]))]
        with m_.If(m == 0):
            m_.d.comb += self.bits.eq(Cat(Const(0, 15), self.sign))
        with m_.Elif(exp_field >= 31):
            m_.d.comb += self.bits.eq(Cat(Const(0, 10), Const(31, 5), self.sign))
        with m_.Else():
            m_.d.comb += self.bits.eq(Cat(frac, exp_field[:5], self.sign))
        return m_


class Fp16MulAdd(wiring.Component):
    """r = fp16(fp16(a*b) + c), registered (latency 1)."""

    a: In(16)
    b: In(16)
    c: In(16)
    r: Out(16)

    def elaborate(self, platform):
        m = Module()
        # ---- multiply: exact 22-bit product, then round
        sa, ea, ma, ia, na = _unpack(self.a)
        sb, eb, mb, ib, nb = _unpack(self.b)
        mul = m.submodules.mul_round = _RoundPack(22)
        m.d.comb += [mul.m.eq(ma * mb), mul.e.eq(ea + eb), mul.sign.eq(sa ^ sb)]
        zero_a, zero_b = ma == 0, mb == 0
        prod = Signal(16)
        with m.If(na | nb | (ia & zero_b) | (ib & zero_a)):
            m.d.comb += prod.eq(NAN)
        with m.Elif(ia | ib):
            m.d.comb += prod.eq(Cat(Const(0, 10), Const(31, 5), sa ^ sb))
        with m.Else():
            m.d.comb += prod.eq(mul.bits)
        # ---- add prod + c: align the smaller operand (guard, round, sticky), add or subtract, round
        sp, ep, mp, ip, np_ = _unpack(prod)
        sc, ec, mc, ic, nc = _unpack(self.c)
        p_big = Signal()
        m.d.comb += p_big.eq((ep > ec) | ((ep == ec) & (mp >= mc)))
        s_big, e_big, m_big = Mux(p_big, sp, sc), Mux(p_big, ep, ec), Mux(p_big, mp, mc)
        s_small, e_small, m_small = Mux(p_big, sc, sp), Mux(p_big, ec, ep), Mux(p_big, mc, mp)
        d = Signal(signed(8))
        m.d.comb += d.eq(e_big - e_small)
        s3 = Signal(unsigned(14))
        m.d.comb += s3.eq(m_small << 3)
        dc = Signal(range(15))
        m.d.comb += dc.eq(Mux(d > 14, 14, d))
        aligned = Signal(unsigned(14))
        sticky = Signal()
        m.d.comb += [aligned.eq(s3 >> dc),
                     sticky.eq((s3 & ((Const(1, 15) << dc) - 1)[:14]) != 0)]
        big3 = Signal(unsigned(14))
        m.d.comb += big3.eq(m_big << 3)
        small_g = aligned | sticky  # the sticky bit joins the aligned operand's lowest bit
        total = Signal(unsigned(16))
        m.d.comb += total.eq(Mux(s_big == s_small, big3 + small_g, big3 - small_g))
        add = m.submodules.add_round = _RoundPack(16)
        m.d.comb += [add.m.eq(total), add.e.eq(e_big - 3), add.sign.eq(s_big)]
        result = Signal(16)
        with m.If(np_ | nc | (ip & ic & (sp != sc))):
            m.d.comb += result.eq(NAN)
        with m.Elif(ip | ic):
            m.d.comb += result.eq(Mux(ip, prod, self.c))
        with m.Elif(total == 0):  # an exact zero: -0 only when both addends are -0 (round to nearest)
            m.d.comb += result.eq(Cat(Const(0, 15), sp & sc))
        with m.Else():
            m.d.comb += result.eq(add.bits)
        m.d.sync += self.r.eq(result)
        return m


class Fp16MacArray(wiring.Component):
    """``lanes`` FP16 multiply-accumulate lanes: acc_i = fp16(fp16(a_i*b_i) + acc_i) each cycle —
    the same MAC throughput as a ShiftQuantDot of ``lanes`` lanes."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__({"a": In(data.ArrayLayout(16, lanes)), "b": In(data.ArrayLayout(16, lanes)),
                          "first": In(1), "acc": Out(data.ArrayLayout(16, lanes))})

    def elaborate(self, platform):
        m = Module()
        for i in range(self.lanes):
            u = m.submodules[f"lane{i}"] = Fp16MulAdd()
            m.d.comb += [u.a.eq(self.a[i]), u.b.eq(self.b[i]), u.c.eq(Mux(self.first, 0, u.r)),
                         self.acc[i].eq(u.r)]
        return m
