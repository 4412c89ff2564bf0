"""Instruction fetch from HBM: the dispatcher asks for instruction pc, this unit reads the word at
``base + 64 * pc`` of one pseudo-channel and keeps reading ahead, so a straight run of
instructions costs one cycle each once the first has arrived.  A jump (a loop going round, or
the next start) outside the words read ahead starts over from the new pc; answers still in
flight for the old run are told apart by an epoch bit and dropped.

    dispatcher.fetch (pc) --> window [head, head + DEPTH) of slots --> HBM reads, tagged (epoch, slot)
    dispatcher.word       <-- the slot of pc, once its word is in

The compiled programs (2,276 instructions for SmolLM2) are far longer than an on-chip
instruction queue (512 in the sim preset), so they stay in HBM and stream through here.
"""
from __future__ import annotations

from amaranth import Array, Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from airfoil.hw.dispatcher import PC_BITS
from airfoil.hw.hbm_model import BEAT_BYTES, read_request_layout, read_response_layout
from airfoil.isa import INSTRUCTION_LAYOUT

__all__ = ["InstructionFetch", "FETCH_TAG_BITS"]

DEPTH = 8  # words read ahead
FETCH_TAG_BITS = 2 + exact_log2(DEPTH)  # slot, the pc's wrap bit, epoch


class InstructionFetch(wiring.Component):
    """``channel`` and ``base`` (byte address, a multiple of 64) say where the program is.

    Word pc lives in slot pc mod DEPTH; a slot remembers the wrap bit (pc bit log2 DEPTH) of the
    read it waits for, so a late answer for an earlier pc of the same slot is never taken for
    the next.  A restart toggles the epoch and empties every slot; the dispatcher waits for each
    word, so answers of at most one older run are ever in flight."""

    def __init__(self):
        super().__init__({
            "channel": In(7), "base": In(unsigned(40)),
            "fetch": In(stream.Signature(unsigned(PC_BITS))),
            "word": Out(stream.Signature(INSTRUCTION_LAYOUT)),
            "rd_valid": Out(1), "rd_ready": In(1, init=1), "rd": Out(read_request_layout(FETCH_TAG_BITS)),
            "rd_resp_valid": In(1), "rd_resp": In(read_response_layout(FETCH_TAG_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        sb = exact_log2(DEPTH)
        words = Array(Signal(INSTRUCTION_LAYOUT.size, name=f"slot{i}") for i in range(DEPTH))
        valid = Array(Signal(name=f"valid{i}") for i in range(DEPTH))
        wrap = Array(Signal(name=f"wrap{i}") for i in range(DEPTH))
        head = Signal(PC_BITS)  # the oldest pc in the window
        ahead = Signal(PC_BITS)  # the next pc to read
        epoch = Signal()
        started = Signal()  # a run is going (after reset nothing is read)

        # the dispatcher's request: inside what was read -> wait for its word; else start over
        pc = self.fetch.payload
        pending, want = Signal(), Signal(PC_BITS)
        restart = Signal()
        in_window = started & ((pc - head)[:PC_BITS] < (ahead - head)[:PC_BITS])
        m.d.comb += self.fetch.ready.eq(~pending)
        with m.If(self.fetch.valid & self.fetch.ready):
            m.d.sync += [pending.eq(1), want.eq(pc), head.eq(pc)]
            with m.If(~in_window):
                m.d.comb += restart.eq(1)
                m.d.sync += [ahead.eq(pc), epoch.eq(~epoch), started.eq(1)]
                m.d.sync += [valid[i].eq(0) for i in range(DEPTH)]
        slot = want[:sb]
        m.d.comb += [self.word.valid.eq(pending & valid[slot] & (wrap[slot] == want[sb])),
                     self.word.payload.eq(words[slot])]
        with m.If(self.word.valid & self.word.ready):
            m.d.sync += pending.eq(0)

        # answers of the current run fill their slot (a restart this cycle drops them too)
        t_slot, t_wrap, t_epoch = self.rd_resp.tag[:sb], self.rd_resp.tag[sb], self.rd_resp.tag[sb + 1]
        with m.If(self.rd_resp_valid & (t_epoch == epoch) & (t_wrap == wrap[t_slot]) & ~restart):
            m.d.sync += [words[t_slot].eq(self.rd_resp.data), valid[t_slot].eq(1)]

        # read ahead while the window has room; a slot being read again is empty until its answer
        room = (ahead - head)[:PC_BITS] < DEPTH
        m.d.comb += [self.rd_valid.eq(started & room & ~restart), self.rd.space.eq(self.channel),
                     self.rd.addr.eq((self.base >> exact_log2(BEAT_BYTES)) + ahead),
                     self.rd.tag.eq(Cat(ahead[:sb], ahead[sb], epoch))]
        with m.If(self.rd_valid & self.rd_ready):
            m.d.sync += [ahead.eq(ahead + 1), valid[ahead[:sb]].eq(0), wrap[ahead[:sb]].eq(ahead[sb])]
        return m
