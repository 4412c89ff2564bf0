"""The LD and ST units: move rows between HBM pseudo-channels and an on-chip buffer, one 64-byte
beat per cycle, any byte alignment at either end.  The golden model is fsim's ``_transfer``: an
element is the buffer's ``elem_bytes`` little-endian bytes, so a transfer is a byte copy.

Row i of an LD/ST (j = phase + i) lives in channel ``channel + j mod channels`` at HBM byte
``hbm + (j div channels) * hbm_stride`` and in the buffer at element ``buf + i * buf_stride + w *
buf_group_stride``, w the times the rows have wrapped to the first channel since row 0 ((j div
channels) - (phase div channels)).  The buffer side's two levels mirror the HBM side's, so one LD
can bring a tile whose decoder slices are each striped over the channels on its own into a bank
a slice.
The unit divides ``phase`` by ``channels`` once per instruction (only when phase >= channels)
and then steps channel and address row by row.

Requests and answers are decoupled: the request side walks the source beats of every row and
tags each with where its bytes go; the answer side (any fixed latency: the HBM model, or the
buffer's one cycle) rotates each source beat by the row's byte offset and writes one destination
word per beat, merging the previous beat's spill, with byte enables for the row's ends.  The
last beat's spill goes out in the next cycle, with the answers held back (``src_resp_ready``
low) if one comes then; the request side leaves a free cycle after every row, so answers at a
fixed latency (the buffers') are never held.

    source beat s --rotate by d = (dst - src) mod 64--> lanes [d, 64) to word W(s),
                                                        lanes [0, d) to word W(s) + 1 (next beat)

A row outside its HBM channel or buffer, a negative phase or a buffer LD/ST cannot reach stops
the unit with ``error`` (the controller reports ADDRESS), as fsim raises; rows before it have
moved.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from airfoil.hw.buffers import DMA_BUFFERS
from airfoil.hw.hbm_model import BEAT_BYTES, read_request_layout, read_response_layout, write_request_layout
from airfoil.hw.sequential_arith import SequentialDivider
from airfoil.isa import BUFFER_ELEMENT_BYTES, EVAL_BITS, ISSUE_LAYOUT, ISSUED_LAYOUTS, Buffer, ErrorCode, Opcode

__all__ = ["TransferEngine", "TAG_LAYOUT"]

ADDR_BITS = 40  # byte addresses inside a channel or buffer
TAG_LAYOUT = data.StructLayout({
    "word": signed(ADDR_BITS),  # destination word of this beat's lanes [d, 64)
    "d": unsigned(6),  # rotation: destination lane of source lane 0
    "lo": signed(ADDR_BITS), "hi": signed(ADDR_BITS),  # the row's destination bytes [lo, hi)
    "space": unsigned(7),  # destination channel or buffer
    "last": unsigned(1),  # the row's last source beat
})


def _lane_mask(m: Module, word, lo, hi, below=None):
    """Byte enables of destination ``word`` for bytes [lo, hi) (and lanes < ``below`` only)."""
    base = word * BEAT_BYTES

    def lane(x):  # clamp a byte address into the word's lanes [0, 64]
        v = Signal(range(BEAT_BYTES + 1))
        m.d.comb += v.eq(Mux(x - base < 0, 0, Mux(x - base > BEAT_BYTES, BEAT_BYTES, (x - base)[:7])))
        return v

    a, b = lane(lo), lane(hi)
    ones = Const((1 << BEAT_BYTES) - 1, BEAT_BYTES)
    mask = Signal(BEAT_BYTES)
    m.d.comb += mask.eq((ones << a)[:BEAT_BYTES] & ~(ones << b)[:BEAT_BYTES])
    if below is not None:
        low = Signal(BEAT_BYTES)
        m.d.comb += low.eq(~(ones << below)[:BEAT_BYTES])
        return mask & low
    return mask


class TransferEngine(wiring.Component):
    """``store`` False: the LD unit (HBM -> buffer); True: the ST unit (buffer -> HBM).
    ``channel_bytes`` per pseudo-channel and ``buffer_bytes`` per buffer bound the addresses."""

    def __init__(self, store: bool, channel_bytes: int, buffer_bytes: dict[Buffer, int]):
        self.store, self.channel_bytes, self.buffer_bytes = store, channel_bytes, buffer_bytes
        tag = TAG_LAYOUT.size
        super().__init__({
            "issue": In(stream.Signature(ISSUE_LAYOUT)),
            "done": Out(1), "fault": Out(ErrorCode),
            # src_ready: the source takes the request (HBM through the AXI read bridge; the
            # buffers always); dst_idle: every write sent has landed (the AXI write bridge's B)
            "src_valid": Out(1), "src_ready": In(1, init=1), "src": Out(read_request_layout(tag)),
            "dst_idle": In(1, init=1),
            # src_resp_ready: low in the cycle a row's last spill is written (HBM answers may come
            # back to back; the buffers' never do: the request side leaves a cycle after each row)
            "src_resp_valid": In(1), "src_resp_ready": Out(1), "src_resp": In(read_response_layout(tag)),
            "dst_valid": Out(1), "dst": Out(write_request_layout()),
            "moved_valid": Out(1), "moved_channel": Out(7), "moved_bytes": Out(24),  # per row: HBM bytes
        })

    def elaborate(self, platform):
        m = Module()
        layout = ISSUED_LAYOUTS[Opcode.ST if self.store else Opcode.LD]
        ins = Signal(layout)
        m.submodules.divider = div = SequentialDivider(EVAL_BITS, 7)

        rows, i = Signal(signed(EVAL_BITS)), Signal(signed(EVAL_BITS))
        r = Signal(8)  # j mod channels
        hbm_addr = Signal(signed(EVAL_BITS + 40))  # hbm + (j div channels) * hbm_stride
        buf_elem = Signal(signed(EVAL_BITS + 26))  # buf + i * buf_stride
        # element sizes: GLOBAL's INT32, every other buffer's bytes (isa.BUFFER_ELEMENT_BYTES)
        assert all(n == 1 for b, n in BUFFER_ELEMENT_BYTES.items() if b != Buffer.GLOBAL)
        esize_log2 = Mux(ins.buffer == Buffer.GLOBAL, exact_log2(BUFFER_ELEMENT_BYTES[Buffer.GLOBAL]), 0)
        buf_byte = Signal(signed(EVAL_BITS + 28))
        m.d.comb += buf_byte.eq(buf_elem << esize_log2)
        n = ins.row_bytes
        buf_limit = Signal(32)
        with m.Switch(ins.buffer):
            for b in DMA_BUFFERS:
                with m.Case(b):
                    m.d.comb += buf_limit.eq(self.buffer_bytes[b])
        reachable = Cat(ins.buffer == b for b in DMA_BUFFERS).any()

        # the row in source and destination terms
        if self.store:
            src_start, dst_start = buf_byte, hbm_addr
            src_space, dst_space = ins.buffer.as_value(), ins.channel + r
        else:
            src_start, dst_start = hbm_addr, buf_byte
            src_space, dst_space = ins.channel + r, ins.buffer.as_value()
        beat, last_beat = Signal(ADDR_BITS), Signal(ADDR_BITS)
        off = Signal(signed(ADDR_BITS + 1))
        m.d.comb += off.eq(dst_start - src_start)

        outstanding = Signal(16)
        sent = Signal()
        m.d.comb += sent.eq(self.src_valid & self.src_ready)
        flush_pending = Signal()
        got = Signal()
        m.d.comb += [self.src_resp_ready.eq(~flush_pending), got.eq(self.src_resp_valid & self.src_resp_ready)]
        with m.If(sent & ~got):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~sent & got):
            m.d.sync += outstanding.eq(outstanding - 1)

        m.d.sync += [self.done.eq(0), self.moved_valid.eq(0)]
        with m.FSM(name="transfer"):
            with m.State("IDLE"):
                m.d.comb += self.issue.ready.eq(1)
                with m.If(self.issue.valid):
                    m.d.sync += [ins.eq(self.issue.payload.body[:layout.size]), self.fault.eq(ErrorCode.NONE)]
                    m.next = "SETUP"
            with m.State("SETUP"):
                m.d.sync += [rows.eq(ins.rows), i.eq(0), buf_elem.eq(ins.buf)]
                with m.If(~reachable | (ins.phase < 0)):
                    m.next = "ERROR"
                with m.Elif(ins.rows <= 0):
                    m.next = "DRAIN"
                with m.Elif(ins.phase < ins.channels):
                    m.d.sync += [r.eq(ins.phase), hbm_addr.eq(ins.hbm)]
                    m.next = "ROW"
                with m.Else():
                    m.d.comb += [div.start.eq(1), div.a.eq(ins.phase), div.b.eq(ins.channels)]
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                with m.If(div.done):
                    m.d.sync += [r.eq(div.r), hbm_addr.eq(ins.hbm + div.q * ins.hbm_stride)]
                    m.next = "ROW"
            with m.State("ROW"):  # check the row, then walk its source beats
                bad = ((hbm_addr < 0) | (hbm_addr + n > self.channel_bytes)
                       | (buf_byte < 0) | (buf_byte + n > buf_limit))
                with m.If(bad):
                    m.next = "ERROR"
                with m.Else():
                    m.d.sync += [beat.eq(src_start >> 6), last_beat.eq((src_start + n - 1) >> 6),
                                 self.moved_valid.eq(1), self.moved_channel.eq(ins.channel + r),
                                 self.moved_bytes.eq(n)]
                    m.next = "BEATS"
            with m.State("BEATS"):
                t = TAG_LAYOUT(self.src.tag)
                m.d.comb += [self.src_valid.eq(1), self.src.space.eq(src_space), self.src.addr.eq(beat),
                             t.word.eq((Cat(Const(0, 6), beat).as_signed() + off) >> 6), t.d.eq(off[:6]),
                             t.lo.eq(dst_start), t.hi.eq(dst_start + n), t.space.eq(dst_space),
                             t.last.eq(beat == last_beat)]
                with m.If(self.src_ready):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == last_beat):
                        m.next = "NEXT_ROW"
            with m.State("NEXT_ROW"):  # also the free cycle for the row's last spill
                m.d.sync += [i.eq(i + 1), buf_elem.eq(buf_elem + ins.buf_stride)]
                with m.If(r + 1 == ins.channels):  # the rows wrap to the first channel
                    m.d.sync += [r.eq(0), hbm_addr.eq(hbm_addr + ins.hbm_stride),
                                 buf_elem.eq(buf_elem + ins.buf_stride + ins.buf_group_stride)]
                with m.Else():
                    m.d.sync += r.eq(r + 1)
                with m.If(i + 1 == rows):
                    m.next = "DRAIN"
                with m.Else():
                    m.next = "ROW"
            with m.State("DRAIN"):
                with m.If((outstanding == 0) & ~self.src_resp_valid & ~flush_pending & self.dst_idle):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
            with m.State("ERROR"):
                with m.If((outstanding == 0) & ~self.src_resp_valid & ~flush_pending & self.dst_idle):
                    m.d.sync += self.fault.eq(ErrorCode.ADDRESS)
                    m.next = "IDLE"

        # the answer side: rotate, merge with the previous beat's spill, write
        resp_tag = TAG_LAYOUT(self.src_resp.tag)
        rotated = Signal(8 * BEAT_BYTES)
        data2 = Cat(self.src_resp.data, self.src_resp.data)
        m.d.comb += rotated.eq(data2.bit_select(Cat(Const(0, 3), (BEAT_BYTES - resp_tag.d)[:7]), 8 * BEAT_BYTES))
        carry = Signal(8 * BEAT_BYTES)
        flush = Signal(TAG_LAYOUT)
        low_lanes = Signal(BEAT_BYTES)  # lanes [0, d)
        m.d.comb += low_lanes.eq(~(Const((1 << BEAT_BYTES) - 1, BEAT_BYTES + 1) << resp_tag.d)[:BEAT_BYTES])
        merged = Signal(8 * BEAT_BYTES)
        m.d.comb += merged.eq(Cat(*[Mux(low_lanes[x], carry[8 * x:8 * x + 8], rotated[8 * x:8 * x + 8])
                                    for x in range(BEAT_BYTES)]))
        with m.If(got):
            mask = _lane_mask(m, resp_tag.word, resp_tag.lo, resp_tag.hi)
            m.d.comb += [self.dst_valid.eq(mask != 0), self.dst.space.eq(resp_tag.space),
                         self.dst.addr.eq(resp_tag.word), self.dst.data.eq(merged), self.dst.mask.eq(mask)]
            m.d.sync += [carry.eq(rotated), flush_pending.eq(resp_tag.last), flush.eq(resp_tag)]
        with m.Elif(flush_pending):
            word = flush.word + 1
            mask = _lane_mask(m, word, flush.lo, flush.hi, below=flush.d)
            m.d.comb += [self.dst_valid.eq(mask != 0), self.dst.space.eq(flush.space), self.dst.addr.eq(word),
                         self.dst.data.eq(carry), self.dst.mask.eq(mask)]
            m.d.sync += flush_pending.eq(0)
        return m
