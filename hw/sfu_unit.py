"""The SFU queue's unit: runs an issued SFU instruction over rows of the global buffer with the
SFU's function units and writes the results back, one element per cycle.  The golden model is
fsim's ``_sfu``.

    issued SFU --> address checks (every operand's first and last element in its buffer)
               --> per row r, element j: GLOBAL[src0 + stride0 r + j] and GLOBAL[src1 + stride1 r + j]
                   (RMSNORM: the gain GLOBAL[param + j]) through a 4-deep FIFO into the function unit
               --> INT8 codes into ACT[dst + stride_d r + j], the row's exponent into
                   ACT[dst + stride_d r + width]  (RMSNORM, SILU_MUL, REQUANT, RELU)
                   or INT32 into GLOBAL[dst + stride_d r + j]                    (ADD)

Function units: ``RmsNormUnit``, ``SiluMulUnit``, a ``BlockQuantiser`` (REQUANT, and RELU on
``max(x, 0)``; the instruction's ``frac`` is subtracted from the exponent) and
``SaturatingAdd``.  What this build does not execute yet stops the machine with UNSUPPORTED
(fsim executes it): ROPE, ATTENTION, LAYERNORM, SOFTMAX, MUL, rows wider than ``max_width``,
``rows`` of 2^24 or more.  An operand outside its buffer stops it with ADDRESS before anything
is written, as fsim checks every row before it stores one.  Rows whose destination overlaps a
source other than element for element (ADD in place) are outside the contract: the unit
streams, fsim reads every row first.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from airfoil.hw.block_quantiser import BlockQuantiser
from airfoil.hw.elementwise import SaturatingAdd
from airfoil.hw.hbm_model import BEAT_BYTES, write_request_layout
from airfoil.hw.rmsnorm import RmsNormUnit
from airfoil.hw.silu_mul import SiluMulUnit
from airfoil.isa import EVAL_BITS, ISSUE_LAYOUT, ISSUED_LAYOUTS, ErrorCode, Opcode, SfuFunc

__all__ = ["SfuUnit", "SFU_SUPPORTED"]

SFU_SUPPORTED = (SfuFunc.RMSNORM, SfuFunc.SILU_MUL, SfuFunc.REQUANT, SfuFunc.RELU, SfuFunc.ADD)
_ROWS_BITS = 24
_FIFO_DEPTH = 4
_LANES = BEAT_BYTES // 4  # INT32 elements per GLOBAL word


class SfuUnit(wiring.Component):
    """Rows of up to ``max_width`` elements; the buffers' sizes in bytes bound the addresses.
    ``eps_q`` is the model's EPS_Q (docs/numerics.md, RMSNorm), a setting of the machine."""

    def __init__(self, max_width: int, act_bytes: int, global_bytes: int):
        self.max_width, self.act_bytes, self.global_bytes = max_width, act_bytes, global_bytes
        super().__init__({
            "issue": In(stream.Signature(ISSUE_LAYOUT)),
            "done": Out(1), "fault": Out(ErrorCode),
            "eps_q": In(unsigned(32)),
            "g_rd_en": Out(2), "g_rd_addr": Out(unsigned(32)).array(2),
            "g_rd_data": In(unsigned(8 * BEAT_BYTES)).array(2),
            "g_wr_valid": Out(1), "g_wr": Out(write_request_layout()),
            "a_wr_valid": Out(1), "a_wr": Out(write_request_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        layout = ISSUED_LAYOUTS[Opcode.SFU]
        ins = Signal(layout)
        opcode = Signal(5)
        fn = ins.func
        binary = (fn == SfuFunc.SILU_MUL) | (fn == SfuFunc.ADD)
        to_global = fn == SfuFunc.ADD

        m.submodules.rms = rms = RmsNormUnit(self.max_width)
        m.submodules.silu = silu = SiluMulUnit(self.max_width)
        m.submodules.bq = bq = BlockQuantiser(self.max_width, 32, 0)
        m.submodules.add = add = SaturatingAdd()
        m.submodules.fifo = fifo = SyncFIFO(width=65, depth=_FIFO_DEPTH)

        # ---- the address checks: one operand per cycle through one multiplier
        slot = Signal(range(4))
        base, stride, span, size, used = (Signal(signed(EVAL_BITS)), Signal(unsigned(24)), Signal(unsigned(25)),
                                          Signal(unsigned(32)), Signal())
        n_rows = ins.rows
        global_elems, act_elems = self.global_bytes // 4, self.act_bytes
        with m.Switch(slot):
            with m.Case(0):
                m.d.comb += [base.eq(ins.src0), stride.eq(ins.stride0), span.eq(ins.width), size.eq(global_elems),
                             used.eq(1)]
            with m.Case(1):
                m.d.comb += [base.eq(ins.src1), stride.eq(ins.stride1), span.eq(ins.width), size.eq(global_elems),
                             used.eq(binary)]
            with m.Case(2):
                m.d.comb += [base.eq(ins.param), stride.eq(0), span.eq(ins.width), size.eq(global_elems),
                             used.eq(fn == SfuFunc.RMSNORM)]
            with m.Case(3):
                m.d.comb += [base.eq(ins.dst), stride.eq(ins.stride_d), used.eq(1),
                             span.eq(Mux(to_global, ins.width, ins.width + 1)),
                             size.eq(Mux(to_global, global_elems, act_elems))]
        last_elem = Signal(signed(EVAL_BITS + 26))
        m.d.comb += last_elem.eq(base + stride * (n_rows - 1)[:_ROWS_BITS] + span - 1)
        bad = used & ((base < 0) | (last_elem >= size))

        unsupported = Signal()
        m.d.comb += unsupported.eq((opcode != Opcode.SFU.value) | (ins.width == 0) | (ins.width > self.max_width)
                                   | (n_rows >= 1 << _ROWS_BITS))
        with m.Switch(fn):
            with m.Case(*SFU_SUPPORTED):
                pass
            with m.Default():
                m.d.comb += unsupported.eq(1)

        # ---- the element feed: two GLOBAL reads per element, answered the next cycle
        row = Signal(_ROWS_BITS)
        j = Signal(24)
        a_row, b_row = Signal(signed(EVAL_BITS)), Signal(signed(EVAL_BITS))
        a_elem, b_elem = a_row + j, b_row + j
        feeding = Signal()
        inflight, inflight_last = Signal(), Signal()
        a_lane, b_lane = Signal(4), Signal(4)
        issue_read = feeding & (fifo.level + inflight < _FIFO_DEPTH)
        m.d.comb += [self.g_rd_addr[0].eq(a_elem >> 4), self.g_rd_addr[1].eq(b_elem >> 4),
                     self.g_rd_en.eq(Mux(issue_read, 0b11, 0))]
        m.d.sync += [inflight.eq(issue_read), inflight_last.eq(j + 1 == ins.width)]
        with m.If(issue_read):
            m.d.sync += [a_lane.eq(a_elem[:4]), b_lane.eq(b_elem[:4]), j.eq(j + 1)]
            with m.If(j + 1 == ins.width):
                m.d.sync += [j.eq(0), row.eq(row + 1), a_row.eq(a_row + ins.stride0),
                             b_row.eq(b_row + Mux(fn == SfuFunc.RMSNORM, 0, ins.stride1))]
                with m.If(row + 1 == n_rows):
                    m.d.sync += feeding.eq(0)
        a_val = self.g_rd_data[0].word_select(a_lane, 32)
        b_val = self.g_rd_data[1].word_select(b_lane, 32)
        m.d.comb += [fifo.w_en.eq(inflight), fifo.w_data.eq(Cat(a_val, b_val, inflight_last))]

        a, b, last = fifo.r_data[:32].as_signed(), fifo.r_data[32:64].as_signed(), fifo.r_data[64]
        ready = Signal()
        with m.Switch(fn):
            with m.Case(SfuFunc.RMSNORM):
                m.d.comb += ready.eq(rms.in_ready)
            with m.Case(SfuFunc.SILU_MUL):
                m.d.comb += ready.eq(silu.in_ready)
            with m.Case(SfuFunc.REQUANT, SfuFunc.RELU):
                m.d.comb += ready.eq(bq.in_ready)
            with m.Default():
                m.d.comb += ready.eq(1)
        take = Signal()
        m.d.comb += [take.eq(fifo.r_rdy & ready), fifo.r_en.eq(take)]
        m.d.comb += [rms.h.eq(a), rms.gain.eq(b), rms.eps_q.eq(self.eps_q), rms.in_last.eq(last),
                     rms.in_valid.eq(take & (fn == SfuFunc.RMSNORM)),
                     silu.gate.eq(a), silu.up.eq(b), silu.in_last.eq(last),
                     silu.in_valid.eq(take & (fn == SfuFunc.SILU_MUL)),
                     bq.v.eq(Mux((fn == SfuFunc.RELU) & (a < 0), 0, a)), bq.in_last.eq(last),
                     bq.in_valid.eq(take & ((fn == SfuFunc.REQUANT) | (fn == SfuFunc.RELU))),
                     add.a.eq(a), add.b.eq(b), add.valid.eq(take & (fn == SfuFunc.ADD))]

        # ---- results: INT8 codes (then the row's exponent) into ACT, or INT32 into GLOBAL
        out_row = Signal(_ROWS_BITS)
        oj = Signal(24)
        d_row = Signal(signed(EVAL_BITS))
        q_valid, q, q_last, q_exp = Signal(), Signal(signed(8)), Signal(), Signal(signed(8))
        with m.Switch(fn):
            with m.Case(SfuFunc.RMSNORM):
                m.d.comb += [q_valid.eq(rms.out_valid), q.eq(rms.q), q_last.eq(rms.out_last), q_exp.eq(rms.exponent)]
            with m.Case(SfuFunc.SILU_MUL):
                m.d.comb += [q_valid.eq(silu.out_valid), q.eq(silu.q), q_last.eq(silu.out_last),
                             q_exp.eq(silu.exponent)]
            with m.Default():
                m.d.comb += [q_valid.eq(bq.out_valid), q.eq(bq.q), q_last.eq(bq.out_last),
                             q_exp.eq(bq.exponent - ins.frac)]
        exp_pending = Signal()
        exp_byte = Signal(8)
        exp_addr = Signal(signed(EVAL_BITS))
        act_addr = Signal(signed(EVAL_BITS))
        act_byte = Signal(8)
        m.d.comb += [act_addr.eq(Mux(exp_pending, exp_addr, d_row + oj)), act_byte.eq(Mux(exp_pending, exp_byte, q)),
                     self.a_wr.addr.eq(act_addr >> 6), self.a_wr.space.eq(0),
                     self.a_wr.data.eq(act_byte.replicate(BEAT_BYTES)),
                     self.a_wr.mask.eq(Const(1, BEAT_BYTES) << act_addr[:6]),
                     self.a_wr_valid.eq(exp_pending | (q_valid & ~to_global))]
        g_elem = d_row + oj
        m.d.comb += [self.g_wr.addr.eq(g_elem >> 4), self.g_wr.space.eq(0),
                     self.g_wr.data.eq(add.y.replicate(_LANES)),
                     self.g_wr.mask.eq(Const(0xF, BEAT_BYTES) << Cat(Const(0, 2), g_elem[:4])),
                     self.g_wr_valid.eq(add.out_valid)]
        m.d.sync += exp_pending.eq(0)
        row_out = Signal()  # a row's last result (ACT: its exponent) is written this cycle
        m.d.comb += row_out.eq(exp_pending | (add.out_valid & (oj + 1 == ins.width)))
        with m.If(q_valid & ~to_global):
            m.d.sync += oj.eq(oj + 1)
            with m.If(q_last):
                m.d.sync += [exp_pending.eq(1), exp_byte.eq(q_exp), exp_addr.eq(d_row + ins.width)]
        with m.If(add.out_valid):
            m.d.sync += oj.eq(oj + 1)
        with m.If(row_out):
            m.d.sync += [oj.eq(0), out_row.eq(out_row + 1), d_row.eq(d_row + ins.stride_d)]

        m.d.sync += self.done.eq(0)
        with m.FSM(name="sfu"):
            with m.State("IDLE"):
                m.d.comb += self.issue.ready.eq(1)
                with m.If(self.issue.valid):
                    payload = self.issue.payload.body[:layout.size]
                    m.d.sync += [ins.eq(payload), opcode.eq(self.issue.payload.opcode), slot.eq(0),
                                 self.fault.eq(ErrorCode.NONE)]
                    m.next = "START"
            with m.State("START"):
                with m.If(n_rows <= 0):  # nothing to do (fsim returns)
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Elif(unsupported):
                    m.d.sync += self.fault.eq(ErrorCode.UNSUPPORTED)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(bad):
                    m.d.sync += self.fault.eq(ErrorCode.ADDRESS)
                    m.next = "IDLE"
                with m.Elif(slot == 3):
                    m.d.sync += [row.eq(0), j.eq(0), a_row.eq(ins.src0), b_row.eq(Mux(fn == SfuFunc.RMSNORM,
                                                                                       ins.param, ins.src1)),
                                 out_row.eq(0), oj.eq(0), d_row.eq(ins.dst), feeding.eq(1)]
                    m.next = "RUN"
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)
            with m.State("RUN"):
                with m.If(out_row == n_rows):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        return m
