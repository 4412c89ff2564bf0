"""The accelerator's controller: the dispatcher, one FIFO per queue, the dependency tokens, the
weight double buffer's interlock, a watchdog and the performance counters.  The execution units
(LD/ST DMA, the linear engine, the SFU) sit on ``unit[q]``: each takes one instruction at a time
and pulses ``unit_done[q]`` when it has finished it.

    dispatcher --issue[q]--> FIFO[q] --head--> (tokens, weight half free?) --unit[q]--> unit
                                                    ^                              |
                                                    +-------- unit_done[q] ---------+

The rules are fsim's (``sim.fsim.drain_queues``):

* queue q starts its head when every ``wait`` bit a has a token in the counter a -> q (it takes
  one from each) and, for a LD into the weight buffer, the addressed half is free;
* when the unit is done, one token goes into q -> b for every ``release`` bit b;
* a LD into the weight buffer that releases a token (the one that hands its tile over: a tile
  cut in decoder slices takes an LD per stripe of sub-tiles) marks its half full at its start;
  the MM/MV reading that half frees it when done;
* BARRIER and END wait until every FIFO is empty and every unit idle; a token left over then
  stops the machine with TOKENS_LEFT (fsim raises the same);
* the write-port interlock: each on-chip buffer has one write port, so queue q does not start an
  instruction that writes a buffer (``isa.written_buffer``) while another queue's unit writing
  the same buffer runs or starts in the same cycle (a lower queue number goes first).  Only the
  timing changes: a legal program's units never write the same bytes unordered, so fsim, which
  runs one instruction at a time, needs no such rule.

The watchdog counts cycles in which nothing moves (no instruction retired by the dispatcher,
none started or running in a unit); at ``watchdog_cycles`` it stops the machine with WATCHDOG,
which is how a deadlocked program ends (fsim: "deadlock").  A unit that cannot finish
sets ``unit_fault[q]`` (ADDRESS, UNSUPPORTED) instead of pulsing done: the machine stops with
that code and the pc of that instruction (``error_pc``; for WATCHDOG it is the dispatcher's pc).  Errors are sticky until the next
``start``; units already running finish, nothing new starts; ``start`` clears the queues (a
stopped program's units must have finished by then).

Counters (cleared at ``start``): ``cycles`` from start to done or error, ``busy_cycles[q]``
(a unit holds an instruction), ``executed[q]`` (instructions finished per queue).  For the
instruction trace (``sim/hdl/airfoil_trace.sv``): ``unit_start[q]`` pulses when queue q's unit
takes an instruction (``unit_start_pc[q]`` its pc), ``unit_finish[q]`` when it finishes one.
"""
from __future__ import annotations

from amaranth import Cat, Module, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from airfoil.hw.buffers import DMA_BUFFERS
from airfoil.hw.dispatcher import PC_BITS, Dispatcher
from airfoil.isa import (INSTRUCTION_LAYOUT, ISSUE_LAYOUT, ISSUED_LAYOUTS, REG_BITS, SFU_DESTINATION, Buffer, ErrorCode,
                         Opcode, Queue)

__all__ = ["Controller", "TOKEN_BITS", "COUNTER_BITS"]

TOKEN_BITS = 16  # tokens outstanding per ordered pair of queues
COUNTER_BITS = 48
NQ = len(Queue)


_WRITABLE = DMA_BUFFERS  # the buffers a unit writes, one bit each in the interlock's masks


def _written_buffers(m: Module, head) -> Signal:
    """One bit per ``_WRITABLE`` buffer: the one the issued instruction ``head`` writes
    (``isa.written_buffer`` in logic)."""
    bits = Signal(len(_WRITABLE))
    ld = ISSUED_LAYOUTS[Opcode.LD](head.body[:ISSUED_LAYOUTS[Opcode.LD].size])
    sfu = ISSUED_LAYOUTS[Opcode.SFU](head.body[:ISSUED_LAYOUTS[Opcode.SFU].size])
    with m.Switch(head.opcode):
        with m.Case(Opcode.LD):
            for i, b in enumerate(_WRITABLE):
                m.d.comb += bits[i].eq(ld.buffer == b)
        with m.Case(Opcode.MM, Opcode.MV):
            m.d.comb += bits[_WRITABLE.index(Buffer.GLOBAL)].eq(1)
        with m.Case(Opcode.SFU):
            with m.Switch(sfu.func):
                for fn, b in SFU_DESTINATION.items():
                    with m.Case(fn):
                        m.d.comb += bits[_WRITABLE.index(b)].eq(1)
    return bits


class Controller(wiring.Component):
    """``hbm_channels`` and ``weight_half_bytes`` from the config; ``fifo_depth`` entries per
    queue; ``watchdog_cycles`` of no progress before WATCHDOG."""

    def __init__(self, hbm_channels: int, weight_half_bytes: int, fifo_depth: int = 4, watchdog_cycles: int = 4096):
        self.hbm_channels, self.half_bytes = hbm_channels, weight_half_bytes
        self.fifo_depth, self.watchdog_cycles = fifo_depth, watchdog_cycles
        super().__init__({
            "start": In(1), "program_words": In(unsigned(PC_BITS)),
            "r0": In(signed(REG_BITS)), "r1": In(signed(REG_BITS)),
            "fetch": Out(stream.Signature(unsigned(PC_BITS))),
            "word": In(stream.Signature(INSTRUCTION_LAYOUT)),
            "unit": Out(stream.Signature(ISSUE_LAYOUT)).array(NQ),
            "unit_done": In(unsigned(NQ)), "unit_fault": In(data.ArrayLayout(ErrorCode, NQ)),
            "busy": Out(1), "done": Out(1), "error": Out(ErrorCode), "error_pc": Out(unsigned(PC_BITS)),
            "cycles": Out(unsigned(COUNTER_BITS)),
            "busy_cycles": Out(data.ArrayLayout(unsigned(COUNTER_BITS), NQ)),
            "executed": Out(data.ArrayLayout(unsigned(32), NQ)),
            # per queue: its unit takes an instruction (and its pc), its unit finishes one (the trace)
            "unit_start": Out(unsigned(NQ)), "unit_start_pc": Out(data.ArrayLayout(unsigned(PC_BITS), NQ)),
            "unit_finish": Out(unsigned(NQ)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.dispatcher = dsp = Dispatcher(self.hbm_channels)
        m.d.comb += [dsp.start.eq(self.start), dsp.program_words.eq(self.program_words), dsp.r0.eq(self.r0),
                     dsp.r1.eq(self.r1)]
        wiring.connect(m, dsp.fetch, wiring.flipped(self.fetch))
        wiring.connect(m, wiring.flipped(self.word), dsp.word)

        stop_code = Signal(ErrorCode)  # the controller's own stops: WATCHDOG, a unit's fault
        stop_pc = Signal(PC_BITS)
        halted = Signal()
        m.d.comb += halted.eq((stop_code != ErrorCode.NONE) | (dsp.error != ErrorCode.NONE))
        m.d.comb += dsp.halt.eq(stop_code != ErrorCode.NONE)

        # token counters: tokens[a][b], released by queue a towards queue b
        tokens = [[Signal(unsigned(TOKEN_BITS), name=f"tokens_{a.name}_{b.name}") for b in Queue] for a in Queue]
        full = Signal(2)  # the weight double buffer's halves
        running = Signal(NQ)
        current = [Signal(ISSUE_LAYOUT, name=f"current_{q.name}") for q in Queue]
        current_pc = [Signal(PC_BITS, name=f"current_pc_{q.name}") for q in Queue]
        starts = Signal(NQ)
        dones = Signal(NQ)
        m.d.comb += dones.eq(self.unit_done & running)
        m.d.comb += [self.unit_start.eq(starts), self.unit_finish.eq(dones)]

        ld = ISSUED_LAYOUTS[Opcode.LD]
        mm = ISSUED_LAYOUTS[Opcode.MM]
        heads = []
        head_writes, current_writes = [], [Signal(len(_WRITABLE), name=f"writes_{q.name}") for q in Queue]
        for q in Queue:
            f = fifo.SyncFIFOBuffered(width=ISSUE_LAYOUT.size + PC_BITS, depth=self.fifo_depth)
            # a new start flushes what a stopped program left queued
            m.submodules[f"fifo_{q.name.lower()}"] = ResetInserter(self.start)(f)
            m.d.comb += [f.w_data.eq(Cat(dsp.issue[q.value].payload, dsp.pc)), f.w_en.eq(dsp.issue[q.value].valid),
                         dsp.issue[q.value].ready.eq(f.w_rdy)]
            head = ISSUE_LAYOUT(f.r_data[:ISSUE_LAYOUT.size])
            heads.append((f, head))
            waits_ok = Cat(~head.wait[a.value] | (tokens[a.value][q.value] != 0) for a in Queue).all()
            half_ok = 1
            if q == Queue.LOAD:
                lbody = ld(head.body[:ld.size])
                weight_load = (head.opcode == Opcode.LD) & (lbody.buffer == Buffer.WEIGHT)
                half = lbody.buf >= self.half_bytes
                half_ok = ~weight_load | ~full.bit_select(half, 1)
            # the write-port interlock: no other unit writing the same buffer running or starting
            writes = _written_buffers(m, head)
            head_writes.append(writes)
            port_ok = ~Cat(*[running[p.value] & (current_writes[p.value] & writes).any() for p in Queue if p != q],
                           *[starts[p.value] & (head_writes[p.value] & writes).any() for p in Queue if p.value < q.value]
                           ).any()
            unit = self.unit[q.value]
            m.d.comb += [unit.valid.eq(f.r_rdy & ~running[q.value] & waits_ok & half_ok & port_ok & ~halted),
                         unit.payload.eq(head),
                         starts[q.value].eq(unit.valid & unit.ready),
                         f.r_en.eq(starts[q.value])]
            m.d.comb += self.unit_start_pc[q.value].eq(f.r_data[ISSUE_LAYOUT.size:])
            with m.If(starts[q.value]):
                m.d.sync += [running[q.value].eq(1), current[q.value].eq(head), current_writes[q.value].eq(writes),
                             current_pc[q.value].eq(f.r_data[ISSUE_LAYOUT.size:])]
            with m.Elif(dones[q.value]):
                m.d.sync += running[q.value].eq(0)
            with m.If((self.unit_fault[q.value] != ErrorCode.NONE) & running[q.value]):  # the unit stopped
                m.d.sync += running[q.value].eq(0)
                with m.If(stop_code == ErrorCode.NONE):
                    m.d.sync += [stop_code.eq(self.unit_fault[q.value]), stop_pc.eq(current_pc[q.value])]

        # token arithmetic: + a release when a's unit is done, - a wait when b starts
        for a in Queue:
            for b in Queue:
                inc = dones[a.value] & current[a.value].release[b.value]
                dec = starts[b.value] & heads[b.value][1].wait[a.value]
                t = tokens[a.value][b.value]
                m.d.sync += t.eq(t + inc - dec)
        tokens_left = Signal()
        m.d.comb += tokens_left.eq(Cat(tokens[a.value][b.value] != 0 for a in Queue for b in Queue).any())

        # the weight halves: freed by the MM/MV that read them, taken by the loads that fill them
        cbody = mm(current[Queue.COMPUTE.value].body[:mm.size])
        with m.If(dones[Queue.COMPUTE.value]):
            m.d.sync += full.bit_select(cbody.weight >= self.half_bytes, 1).eq(0)
        lhead = ld(heads[Queue.LOAD.value][1].body[:ld.size])
        with m.If(starts[Queue.LOAD.value] & (heads[Queue.LOAD.value][1].opcode == Opcode.LD)
                  & (lhead.buffer == Buffer.WEIGHT) & heads[Queue.LOAD.value][1].release.any()):
            m.d.sync += full.bit_select(lhead.buf >= self.half_bytes, 1).eq(1)

        idle = Signal()
        m.d.comb += idle.eq(~running.any() & ~Cat(f.r_rdy for f, _ in heads).any()
                            & Cat(f.level == 0 for f, _ in heads).all())
        m.d.comb += [dsp.queues_idle.eq(idle), dsp.tokens_left.eq(tokens_left)]

        # watchdog
        stall = Signal(range(self.watchdog_cycles + 1))
        moving = dsp.progress | starts.any() | running.any()
        with m.If(self.busy & ~moving):
            m.d.sync += stall.eq(stall + 1)
            with m.If((stall == self.watchdog_cycles - 1) & (stop_code == ErrorCode.NONE)):
                m.d.sync += [stop_code.eq(ErrorCode.WATCHDOG), stop_pc.eq(dsp.pc)]
        with m.Else():
            m.d.sync += stall.eq(0)

        # status and counters
        m.d.comb += [self.busy.eq((dsp.busy | ~idle) & ~halted), self.done.eq(dsp.done),
                     self.error_pc.eq(dsp.error_pc)]
        m.d.comb += self.error.eq(dsp.error)
        with m.If(stop_code != ErrorCode.NONE):
            m.d.comb += [self.error.eq(stop_code), self.error_pc.eq(stop_pc)]
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        for q in Queue:
            with m.If(running[q.value]):
                m.d.sync += self.busy_cycles[q.value].eq(self.busy_cycles[q.value] + 1)
            with m.If(dones[q.value]):
                m.d.sync += self.executed[q.value].eq(self.executed[q.value] + 1)
        with m.If(self.start):
            m.d.sync += [stop_code.eq(ErrorCode.NONE), stall.eq(0), full.eq(0), running.eq(0), self.cycles.eq(0)]
            m.d.sync += [t.eq(0) for row in tokens for t in row]
            m.d.sync += [self.busy_cycles[q.value].eq(0) for q in Queue]
            m.d.sync += [self.executed[q.value].eq(0) for q in Queue]
        return m
