"""The SFU queue's unit: runs an issued SFU instruction over rows of the on-chip buffers with the
SFU's function units and writes the results back.  The golden model is fsim's ``_sfu``.

    issued SFU --> address checks (every operand's first and last element in its buffer)
               --> per row r: GLOBAL[src0 + stride0 r + j] and GLOBAL[src1 + stride1 r + j]
                   (RMSNORM: the gain GLOBAL[param + j]; ROPE: the pair x[j], x[j + hd/2] of
                   each head and the table's C, Sn at position pos + r) through a 4-deep FIFO
                   into the function unit, one element (RoPE: one pair) per cycle; both
                   operands through one GLOBAL read port (each keeps its last word, and a word is
                   fetched an item ahead where both cross words together)
               --> INT8 codes into ACT[dst + stride_d r + j], the row's exponent into
                   ACT[dst + stride_d r + width]  (RMSNORM, SILU_MUL, REQUANT, RELU)
                   or INT32 into GLOBAL[dst + stride_d r + j]                    (ADD, ROPE)
    ATTENTION  --> ``AttentionUnit`` (Q from ACT, K and V from KV, the result into GLOBAL)

Function units: ``RmsNormUnit``, ``SiluMulUnit``, a ``BlockQuantiser`` (REQUANT, and RELU on
``max(x, 0)``; the instruction's ``frac`` is subtracted from the exponent), ``SaturatingAdd``,
``RotaryPair`` with the RoPE table in a ROM (``rope``: the model's head size, theta and the
positions it covers), and ``AttentionUnit``.  What this build does not execute yet stops the
machine with UNSUPPORTED (fsim executes it): LAYERNORM, SOFTMAX, MUL, rows wider than
``max_width``, RoPE of another head size or past the table, attention heads wider than
``max_head_dim`` or not a multiple of 16, contexts past ``max_positions``, ``rows`` of 2^24
or more.  An operand outside its buffer stops it with ADDRESS before anything is written, as
fsim checks every row before it stores one.  Rows whose destination overlaps a source other
than element for element (ADD and RoPE in place) are outside the contract: the unit streams,
fsim reads every row first.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from airfoil import numerics as nx
from airfoil.hw.attention_unit import AttentionUnit
from airfoil.hw.block_quantiser import BlockQuantiser
from airfoil.hw.elementwise import RotaryPair, SaturatingAdd
from airfoil.hw.hbm_model import BEAT_BYTES, write_request_layout
from airfoil.hw.rmsnorm import RmsNormUnit
from airfoil.hw.silu_mul import SiluMulUnit
from airfoil.isa import EVAL_BITS, ISSUE_LAYOUT, ISSUED_LAYOUTS, SFU_DESTINATION, Buffer, ErrorCode, Opcode, SfuFunc

__all__ = ["SfuUnit", "RopeTable", "SFU_SUPPORTED", "SFU_TWO_OPERANDS"]

SFU_SUPPORTED = (SfuFunc.RMSNORM, SfuFunc.SILU_MUL, SfuFunc.REQUANT, SfuFunc.RELU, SfuFunc.ADD, SfuFunc.ROPE,
                 SfuFunc.ATTENTION)
# the functions whose element feed reads a second GLOBAL operand (b: the gain, up, the addend,
# RoPE's x2); their first item waits a cycle for it (one read port)
SFU_TWO_OPERANDS = (SfuFunc.RMSNORM, SfuFunc.SILU_MUL, SfuFunc.ADD, SfuFunc.ROPE)
_ROWS_BITS = 24
_FIFO_DEPTH = 4
_LANES = BEAT_BYTES // 4  # INT32 elements per GLOBAL word


@dataclass(frozen=True)
class RopeTable:
    """The model's RoPE: head size, theta, and the positions the ROM covers."""
    head_dim: int
    theta: float
    positions: int


def _writes(fn, buffer: Buffer):
    """``fn`` is a function whose rows go to ``buffer``, as ``isa.SFU_DESTINATION`` says (fsim and
    the controller's interlock read the same table)."""
    return Cat(*(fn == f for f, b in SFU_DESTINATION.items() if b == buffer)).any()


def _slot_layout(fn, ins, global_elems, act_elems, kv_elems):
    """Per address-check slot: (base, stride, elements per row, row count, buffer elements, used)."""
    att = fn == SfuFunc.ATTENTION
    binary = (fn == SfuFunc.SILU_MUL) | (fn == SfuFunc.ADD)
    to_global = _writes(fn, Buffer.GLOBAL)
    positions = ins.pos + ins.rows
    return [
        (ins.src0, ins.stride0, Mux(att, ins.width + 1, ins.width), ins.rows, Mux(att, act_elems, global_elems),
         Const(1)),
        (ins.src1, ins.stride1, Mux(att, ins.width + 1, ins.width), Mux(att, positions, ins.rows),
         Mux(att, kv_elems, global_elems), binary | att),
        (Mux(att, ins.src2, ins.param), Mux(att, ins.stride1, 0), Mux(att, ins.width + 1, ins.width),
         Mux(att, positions, 1), Mux(att, kv_elems, global_elems), (fn == SfuFunc.RMSNORM) | att),
        (ins.dst, ins.stride_d, Mux(to_global, ins.width, ins.width + 1), ins.rows,
         Mux(to_global, global_elems, act_elems), Const(1)),
    ]


class SfuUnit(wiring.Component):
    """Rows of up to ``max_width`` elements; the buffers' sizes in bytes bound the addresses.
    ``eps_q`` (EPS_Q, docs/numerics.md RMSNorm) and ``c_qk`` (the attention's score constant)
    are the model's, settings of the machine."""

    def __init__(self, max_width: int, act_bytes: int, global_bytes: int, kv_bytes: int,
                 rope: RopeTable | None = None, max_head_dim: int = 128, max_positions: int = 1024):
        self.max_width, self.act_bytes, self.global_bytes, self.kv_bytes = max_width, act_bytes, global_bytes, kv_bytes
        self.rope, self.max_head_dim, self.max_positions = rope, max_head_dim, max_positions
        super().__init__({
            "issue": In(stream.Signature(ISSUE_LAYOUT)),
            "done": Out(1), "fault": Out(ErrorCode),
            "eps_q": In(unsigned(32)), "c_qk": In(unsigned(16)),
            "g_rd_en": Out(1), "g_rd_addr": Out(unsigned(32)), "g_rd_data": In(unsigned(8 * BEAT_BYTES)),
            "g_wr_valid": Out(1), "g_wr": Out(write_request_layout()),
            "a_wr_valid": Out(1), "a_wr": Out(write_request_layout()),
            "act_rd_en": Out(2), "act_rd_addr": Out(unsigned(32)).array(2),
            "act_rd_data": In(unsigned(8 * BEAT_BYTES)).array(2),
            "kv_rd_en": Out(2), "kv_rd_addr": Out(unsigned(32)).array(2),
            "kv_rd_data": In(unsigned(8 * BEAT_BYTES)).array(2),
        })

    def elaborate(self, platform):
        m = Module()
        layout = ISSUED_LAYOUTS[Opcode.SFU]
        ins = Signal(layout)
        opcode = Signal(5)
        fn = ins.func
        n_rows = ins.rows
        rope_fn, att_fn = fn == SfuFunc.ROPE, fn == SfuFunc.ATTENTION
        to_act = _writes(fn, Buffer.ACT)

        m.submodules.rms = rms = RmsNormUnit(self.max_width)
        m.submodules.silu = silu = SiluMulUnit(self.max_width)
        m.submodules.bq = bq = BlockQuantiser(self.max_width, 32, 0)
        m.submodules.add = add = SaturatingAdd()
        m.submodules.rope = rope = RotaryPair()
        m.submodules.attention = att = AttentionUnit(self.max_head_dim, self.max_positions)
        m.submodules.fifo = fifo = SyncFIFO(width=97, depth=_FIFO_DEPTH)

        # ---- the RoPE table: C and Sn per (position, pair), a ROM
        half = self.rope.head_dim // 2 if self.rope else 1
        if self.rope:
            cos, sin = nx.rope_table(self.rope.head_dim, self.rope.theta, self.rope.positions)
            init = [(int(c) & 0xFFFF) | (int(s) & 0xFFFF) << 16 for c, s in zip(cos.ravel(), sin.ravel())]
            m.submodules.rope_table = table = Memory(shape=unsigned(32), depth=len(init), init=init)
            table_rd = table.read_port()
            rope_positions = self.rope.positions
        else:
            rope_positions = 0

        # ---- the address checks: one operand per cycle through one multiplier
        slot = Signal(range(4))
        base, stride, span, count, size, used = (Signal(signed(EVAL_BITS)), Signal(unsigned(24)), Signal(unsigned(25)),
                                                 Signal(signed(EVAL_BITS)), Signal(unsigned(32)), Signal())
        slots = _slot_layout(fn, ins, self.global_bytes // 4, self.act_bytes, self.kv_bytes)
        with m.Switch(slot):
            for i, (b, st, sp, n, sz, u) in enumerate(slots):
                with m.Case(i):
                    m.d.comb += [base.eq(b), stride.eq(st), span.eq(sp), count.eq(n), size.eq(sz), used.eq(u)]
        last_elem = Signal(signed(EVAL_BITS + 26))
        m.d.comb += last_elem.eq(base + stride * (count - 1)[:_ROWS_BITS] + span - 1)
        bad = used & ((base < 0) | (last_elem >= size))

        unsupported = Signal()
        m.d.comb += unsupported.eq((opcode != Opcode.SFU.value) | (ins.width == 0) | (ins.width > self.max_width)
                                   | (n_rows >= 1 << _ROWS_BITS))
        with m.Switch(fn):
            with m.Case(*SFU_SUPPORTED):
                pass
            with m.Default():
                m.d.comb += unsupported.eq(1)
        if self.rope is None:
            with m.If(rope_fn):
                m.d.comb += unsupported.eq(1)
        else:
            with m.If(rope_fn & ((ins.param != 2 * half) | (ins.width % (2 * half) != 0) | (ins.pos < 0)
                                 | (ins.pos + n_rows > rope_positions))):
                m.d.comb += unsupported.eq(1)
        with m.If(att_fn & ((ins.width[:4] != 0) | (ins.width > self.max_head_dim) | (ins.pos < 0)
                            | (ins.pos + n_rows > self.max_positions))):
            m.d.comb += unsupported.eq(1)

        # ---- the element feed: each item (an element, or RoPE's pair) takes operand a (and b) from
        # GLOBAL through one read port, answered the next cycle.  Each operand keeps the word it
        # read last (its tag and data), so a row's operand needs the port once per 16 elements;
        # where both need a new word for the same item (rows on the same alignment cross words
        # together) the port fetches a's the item before, while that item finds both its words
        # held, or else the item waits a cycle (a's first, then b's with the item).  One read port
        # instead of two: GLOBAL is one block-RAM copy fewer (hw/buffers.py).
        row = Signal(_ROWS_BITS)
        j = Signal(24)  # items of this row issued (elements; RoPE: pairs)
        off, jj = Signal(24), Signal(24)  # the item's element offset in the row; RoPE: its pair in the head
        items = Signal(24)
        m.d.comb += items.eq(Mux(rope_fn, ins.width >> 1, ins.width))
        a_row, b_row = Signal(signed(EVAL_BITS)), Signal(signed(EVAL_BITS))
        table_row = Signal(signed(EVAL_BITS))  # (pos + row) * hd/2
        a_elem, b_elem = a_row + off, b_row + off
        b_step = Mux(fn == SfuFunc.RMSNORM, 0, Mux(rope_fn, ins.stride0, ins.stride1))  # b_row's, a row on
        feeding = Signal()
        inflight, inflight_last = Signal(), Signal()
        a_lane, b_lane = Signal(4), Signal(4)
        b_used = Signal()
        with m.Switch(fn):
            with m.Case(*SFU_TWO_OPERANDS):
                m.d.comb += b_used.eq(1)
        word_bits = EVAL_BITS - 4  # GLOBAL word addresses (the operands' are checked: within GLOBAL)
        a_word, b_word = Signal(word_bits), Signal(word_bits)
        m.d.comb += [a_word.eq(a_elem[4:]), b_word.eq(b_elem[4:])]
        tag_a, tag_b, held_a, held_b = Signal(word_bits), Signal(word_bits), Signal(), Signal()
        data_a, data_b = Signal(8 * BEAT_BYTES), Signal(8 * BEAT_BYTES)
        miss_a = ~held_a | (tag_a != a_word)
        miss_b = b_used & (~held_b | (tag_b != b_word))
        # the next item's words (next_item's offsets, the next row's at a row's end)
        row_end = j + 1 == items
        next_off = Mux(row_end, 0, Mux(rope_fn & (jj + 1 == half), off + 1 + half, off + 1))
        next_a = (Mux(row_end, a_row + ins.stride0, a_row) + next_off)[4:]
        next_b = (Mux(row_end, b_row + b_step, b_row) + next_off)[4:]
        has_next = ~row_end | (row + 1 != n_rows)
        room = feeding & (fifo.level + inflight < _FIFO_DEPTH)
        issue_read = room & ~(miss_a & miss_b)
        fetch_a, fetch_b, prefetch_a = Signal(), Signal(), Signal()
        m.d.comb += [fetch_a.eq(room & miss_a), fetch_b.eq(room & ~miss_a & miss_b),
                     prefetch_a.eq(room & ~miss_a & ~miss_b & has_next & (tag_a != next_a[:word_bits])
                                   & b_used & (tag_b != next_b[:word_bits]))]
        m.d.comb += [self.g_rd_en.eq(fetch_a | fetch_b | prefetch_a),
                     self.g_rd_addr.eq(Mux(fetch_b, b_word, Mux(fetch_a, a_word, next_a[:word_bits])))]
        with m.If(fetch_a | prefetch_a):
            m.d.sync += [tag_a.eq(Mux(fetch_a, a_word, next_a[:word_bits])), held_a.eq(1)]
        with m.If(fetch_b):
            m.d.sync += [tag_b.eq(b_word), held_b.eq(1)]
        fill_a, fill_b = Signal(), Signal()  # the port's word this cycle is a's (b's)
        a_from_port, b_from_port = Signal(), Signal()  # ... and the item in flight reads it
        m.d.sync += [fill_a.eq(fetch_a | prefetch_a), fill_b.eq(fetch_b),
                     a_from_port.eq(fetch_a), b_from_port.eq(fetch_b)]
        with m.If(fill_a):
            m.d.sync += data_a.eq(self.g_rd_data)
        with m.If(fill_b):
            m.d.sync += data_b.eq(self.g_rd_data)
        if self.rope:
            m.d.comb += table_rd.addr.eq(table_row + jj)
        m.d.sync += [inflight.eq(issue_read), inflight_last.eq(j + 1 == items)]

        def next_item(off_s, jj_s):
            """The next item's offset: RoPE skips each head's second half."""
            with m.If(rope_fn & (jj_s + 1 == half)):
                m.d.sync += [jj_s.eq(0), off_s.eq(off_s + 1 + half)]
            with m.Else():
                m.d.sync += [jj_s.eq(jj_s + 1), off_s.eq(off_s + 1)]

        with m.If(issue_read):
            m.d.sync += [a_lane.eq(a_elem[:4]), b_lane.eq(b_elem[:4]), j.eq(j + 1)]
            next_item(off, jj)
            with m.If(j + 1 == items):
                m.d.sync += [j.eq(0), off.eq(0), jj.eq(0), row.eq(row + 1), a_row.eq(a_row + ins.stride0),
                             b_row.eq(b_row + b_step), table_row.eq(table_row + half)]
                with m.If(row + 1 == n_rows):
                    m.d.sync += feeding.eq(0)
        a_val = Mux(a_from_port, self.g_rd_data, data_a).word_select(a_lane, 32)
        b_val = Mux(b_from_port, self.g_rd_data, data_b).word_select(b_lane, 32)
        cs = table_rd.data if self.rope else Const(0, 32)
        m.d.comb += [fifo.w_en.eq(inflight), fifo.w_data.eq(Cat(a_val, b_val, inflight_last, cs))]

        a, b, last = fifo.r_data[:32].as_signed(), fifo.r_data[32:64].as_signed(), fifo.r_data[64]
        c_entry, s_entry = fifo.r_data[65:81].as_signed(), fifo.r_data[81:97].as_signed()
        ready = Signal()
        took = Signal()  # RoPE: a pair taken last cycle (its two results take two cycles to write)
        with m.Switch(fn):
            with m.Case(SfuFunc.RMSNORM):
                m.d.comb += ready.eq(rms.in_ready)
            with m.Case(SfuFunc.SILU_MUL):
                m.d.comb += ready.eq(silu.in_ready)
            with m.Case(SfuFunc.REQUANT, SfuFunc.RELU):
                m.d.comb += ready.eq(bq.in_ready)
            with m.Case(SfuFunc.ROPE):
                m.d.comb += ready.eq(~took)
            with m.Default():
                m.d.comb += ready.eq(1)
        take = Signal()
        m.d.comb += [take.eq(fifo.r_rdy & ready), fifo.r_en.eq(take)]
        m.d.sync += took.eq(take & rope_fn)
        m.d.comb += [rms.h.eq(a), rms.gain.eq(b), rms.eps_q.eq(self.eps_q), rms.in_last.eq(last),
                     rms.in_valid.eq(take & (fn == SfuFunc.RMSNORM)),
                     silu.gate.eq(a), silu.up.eq(b), silu.in_last.eq(last),
                     silu.in_valid.eq(take & (fn == SfuFunc.SILU_MUL)),
                     bq.v.eq(Mux((fn == SfuFunc.RELU) & (a < 0), 0, a)), bq.in_last.eq(last),
                     bq.in_valid.eq(take & ((fn == SfuFunc.REQUANT) | (fn == SfuFunc.RELU))),
                     add.a.eq(a), add.b.eq(b), add.valid.eq(take & (fn == SfuFunc.ADD)),
                     rope.x1.eq(a), rope.x2.eq(b), rope.c.eq(c_entry), rope.s.eq(s_entry),
                     rope.valid.eq(take & rope_fn)]

        # ---- results: INT8 codes (then the row's exponent) into ACT, or INT32 into GLOBAL
        out_row = Signal(_ROWS_BITS)
        oj = Signal(24)  # items of this row written
        o_off, o_jj = Signal(24), Signal(24)
        d_row = Signal(signed(EVAL_BITS))
        q_valid, q, q_last, q_exp = Signal(), Signal(signed(8)), Signal(), Signal(signed(8))
        with m.Switch(fn):
            with m.Case(SfuFunc.RMSNORM):
                m.d.comb += [q_valid.eq(rms.out_valid), q.eq(rms.q), q_last.eq(rms.out_last), q_exp.eq(rms.exponent)]
            with m.Case(SfuFunc.SILU_MUL):
                m.d.comb += [q_valid.eq(silu.out_valid), q.eq(silu.q), q_last.eq(silu.out_last),
                             q_exp.eq(silu.exponent)]
            with m.Case(SfuFunc.REQUANT, SfuFunc.RELU):
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
                     self.a_wr_valid.eq(exp_pending | (q_valid & to_act))]

        # GLOBAL: ADD's sum, RoPE's y1 then (next cycle) y2, or the attention's results
        y2_pending = Signal()
        y2 = Signal(signed(32))
        g_valid, g_elem, g_value = Signal(), Signal(signed(EVAL_BITS)), Signal(signed(32))
        with m.If(add.out_valid):
            m.d.comb += [g_valid.eq(1), g_elem.eq(d_row + oj), g_value.eq(add.y)]
        with m.Elif(rope.out_valid):
            m.d.comb += [g_valid.eq(1), g_elem.eq(d_row + o_off), g_value.eq(rope.y1)]
            m.d.sync += [y2_pending.eq(1), y2.eq(rope.y2)]
        with m.Elif(y2_pending):
            m.d.comb += [g_valid.eq(1), g_elem.eq(d_row + o_off + half), g_value.eq(y2)]
            m.d.sync += y2_pending.eq(0)
        with m.If(att_fn):
            m.d.comb += [self.g_wr.eq(att.g_wr), self.g_wr_valid.eq(att.g_wr_valid)]
        with m.Else():
            m.d.comb += [self.g_wr.addr.eq(g_elem >> 4), self.g_wr.space.eq(0),
                         self.g_wr.data.eq(g_value.replicate(_LANES)),
                         self.g_wr.mask.eq(Const(0xF, BEAT_BYTES) << Cat(Const(0, 2), g_elem[:4])),
                         self.g_wr_valid.eq(g_valid)]

        m.d.sync += exp_pending.eq(0)
        row_out = Signal()  # a row's last result (ACT: its exponent) is written this cycle
        m.d.comb += row_out.eq(exp_pending | ((add.out_valid | y2_pending) & (oj + 1 == items)))
        with m.If(q_valid & to_act):
            m.d.sync += oj.eq(oj + 1)
            with m.If(q_last):
                m.d.sync += [exp_pending.eq(1), exp_byte.eq(q_exp), exp_addr.eq(d_row + ins.width)]
        with m.If(add.out_valid | y2_pending):
            m.d.sync += oj.eq(oj + 1)
            next_item(o_off, o_jj)
        with m.If(row_out):
            m.d.sync += [oj.eq(0), o_off.eq(0), o_jj.eq(0), out_row.eq(out_row + 1), d_row.eq(d_row + ins.stride_d)]

        # ---- attention: its own unit on the ACT and KV read ports
        m.d.comb += [att.ins.eq(ins), att.c_qk.eq(self.c_qk), att.start.eq(0),
                     self.act_rd_en.eq(att.act_rd_en), self.kv_rd_en.eq(att.kv_rd_en)]
        for i in range(2):
            m.d.comb += [self.act_rd_addr[i].eq(att.act_rd_addr[i]), att.act_rd_data[i].eq(self.act_rd_data[i]),
                         self.kv_rd_addr[i].eq(att.kv_rd_addr[i]), att.kv_rd_data[i].eq(self.kv_rd_data[i])]

        m.d.sync += self.done.eq(0)
        with m.FSM(name="sfu"):
            with m.State("IDLE"):
                m.d.comb += self.issue.ready.eq(1)
                with m.If(self.issue.valid):
                    m.d.sync += [ins.eq(self.issue.payload.body[:layout.size]), opcode.eq(self.issue.payload.opcode),
                                 slot.eq(0), self.fault.eq(ErrorCode.NONE)]
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
                with m.Elif((slot == 3) & att_fn):
                    m.d.comb += att.start.eq(1)
                    m.next = "ATTENTION"
                with m.Elif(slot == 3):
                    m.d.sync += [row.eq(0), j.eq(0), off.eq(0), jj.eq(0), a_row.eq(ins.src0),
                                 b_row.eq(Mux(fn == SfuFunc.RMSNORM, ins.param,
                                              Mux(rope_fn, ins.src0 + half, ins.src1))),
                                 table_row.eq(ins.pos * half),
                                 out_row.eq(0), oj.eq(0), o_off.eq(0), o_jj.eq(0), d_row.eq(ins.dst), feeding.eq(1),
                                 held_a.eq(0), held_b.eq(0)]  # GLOBAL may have changed since the last
                    m.next = "RUN"
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)
            with m.State("RUN"):
                with m.If(out_row == n_rows):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
            with m.State("ATTENTION"):
                with m.If(att.done):
                    m.d.sync += [self.fault.eq(att.fault), self.done.eq(att.fault == ErrorCode.NONE)]
                    m.next = "IDLE"
        return m
