"""The controller's front end: fetches the instruction stream, checks each word, runs the
dispatcher instructions itself and hands every other instruction, its affine fields evaluated,
to its queue.  The golden model is ``sim.fsim.dispatch``: the same words in give the same
issued instructions out (``isa.issue_word``), in the same order, and the same ErrorCode.

    fetch (pc) --> word --> InstructionDecoder --> NOP / SETR / LOOP: here
                                               --> LD, ST, MM, MV, SFU: evaluate, issue[queue]
                                               --> BARRIER / END: wait until the queues are idle

Length registers R0..R15 (signed 36 bits): R0, R1 come from the host at ``start``, the others
start at 0.  A LOOP with a positive count pushes (first pc, end pc, count, iteration, register)
on a stack of MAX_LOOP_DEPTH entries; when pc reaches the top entry's end the loop repeats or
pops.  A stopped machine (``error`` != NONE, or ``halt`` from the controller's watchdog) goes
back to IDLE and fetches nothing until the next ``start``.

One instruction every few cycles (fetch, check, execute); the queues' work is hundreds of
cycles per instruction, so this is not on the critical path.
"""
from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from airfoil.hw.instruction_decoder import InstructionDecoder
from airfoil.isa import (BODY_LAYOUTS, EVAL_BITS, INSTRUCTION_LAYOUT, ISSUE_LAYOUT, ISSUED_BODY_BITS, ISSUED_LAYOUTS,
                         MAX_LOOP_DEPTH, N_REGS, OPCODE_QUEUE, REG_BITS, ErrorCode, Opcode, Queue)

__all__ = ["Dispatcher", "PC_BITS"]

PC_BITS = 24  # instruction addresses (16M instructions)
_WIDE = 80  # an affine product before its range check: s36 * s36 + s36 needs 73 bits


def _affine_fields(op: Opcode) -> list[str]:
    return [n for n, s in BODY_LAYOUTS[op].members.items()
            if isinstance(s, data.StructLayout) and "use_reg" in s.members]


_SLOTS = max(len(_affine_fields(op)) for op in Opcode)


class Dispatcher(wiring.Component):
    """``fetch`` asks for the word at an instruction index, ``word`` answers (any latency).
    ``issue[q]`` carries ``ISSUE_LAYOUT`` entries to queue q.  ``queues_idle`` and
    ``tokens_left`` come from the queues (BARRIER and END wait for the first and fail on the
    second).  ``progress`` pulses for each instruction retired here (the watchdog's heartbeat)."""

    def __init__(self, hbm_channels: int):
        self.hbm_channels = hbm_channels
        super().__init__({
            "start": In(1), "program_words": In(unsigned(PC_BITS)),
            "r0": In(signed(REG_BITS)), "r1": In(signed(REG_BITS)),
            "fetch": Out(stream.Signature(unsigned(PC_BITS))),
            "word": In(stream.Signature(INSTRUCTION_LAYOUT)),
            "issue": Out(stream.Signature(ISSUE_LAYOUT)).array(len(Queue)),
            "queues_idle": In(1), "tokens_left": In(1), "halt": In(1),
            "busy": Out(1), "done": Out(1), "error": Out(ErrorCode), "error_pc": Out(unsigned(PC_BITS)),
            "pc": Out(unsigned(PC_BITS)), "progress": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = dec = InstructionDecoder(self.hbm_channels)
        regs = Array(Signal(signed(REG_BITS), name=f"r{i}") for i in range(N_REGS))
        word = Signal(INSTRUCTION_LAYOUT)
        m.d.comb += dec.word.eq(word)
        hdr, body = word.header, word.body
        opcode = hdr.opcode.as_value()
        pc = self.pc
        next_pc = pc + 1

        # the loop stack
        depth = MAX_LOOP_DEPTH
        l_start = Array(Signal(unsigned(PC_BITS), name=f"loop_start{i}") for i in range(depth))
        l_end = Array(Signal(unsigned(PC_BITS + 1), name=f"loop_end{i}") for i in range(depth))
        l_count = Array(Signal(signed(EVAL_BITS), name=f"loop_count{i}") for i in range(depth))
        l_iter = Array(Signal(signed(EVAL_BITS), name=f"loop_iter{i}") for i in range(depth))
        l_reg = Array(Signal(4, name=f"loop_reg{i}") for i in range(depth))
        sp = Signal(range(depth + 1))
        top = sp - 1

        # affine fields of the current word, evaluated: slot i is the op's i-th affine field
        ev = [Signal(signed(_WIDE), name=f"ev{i}") for i in range(_SLOTS)]
        ev_ok = [Signal(name=f"ev_ok{i}") for i in range(_SLOTS)]
        used = [Signal(name=f"ev_used{i}") for i in range(_SLOTS)]
        for i in range(_SLOTS):
            base, use, reg, scale = (Signal(signed(36), name=f"a{i}_base"), Signal(name=f"a{i}_use"),
                                     Signal(4, name=f"a{i}_reg"), Signal(signed(36), name=f"a{i}_scale"))
            with m.Switch(opcode):
                for op in Opcode:
                    names = _affine_fields(op)
                    if i < len(names):
                        with m.Case(op.value):
                            a = BODY_LAYOUTS[op](body[:BODY_LAYOUTS[op].size])[names[i]]
                            m.d.comb += [base.eq(a.base), use.eq(a.use_reg), reg.eq(a.reg), scale.eq(a.scale),
                                         used[i].eq(1)]
            m.d.comb += ev[i].eq(base + Mux(use, scale * regs[reg], 0))
            top_bits = ev[i][EVAL_BITS - 1:]
            m.d.comb += ev_ok[i].eq((top_bits == 0) | (top_bits == (1 << len(top_bits)) - 1) | ~used[i])
        fields_ok = Signal()
        m.d.comb += fields_ok.eq(Cat(*ev_ok).all())

        # the issued body: the word's fields with each affine field replaced by its value
        issued = Signal(ISSUED_BODY_BITS)
        with m.Switch(opcode):
            for op, layout in ISSUED_LAYOUTS.items():
                with m.Case(op.value):
                    v = BODY_LAYOUTS[op](body[:BODY_LAYOUTS[op].size])
                    names = _affine_fields(op)
                    parts = [ev[names.index(n)][:EVAL_BITS] if n in names else Value.cast(v[n]) for n in layout.members]
                    m.d.comb += issued.eq(Cat(*parts))
        queue = Signal(range(len(Queue)))
        with m.Switch(opcode):
            for op, q in OPCODE_QUEUE.items():
                if q is not None:
                    with m.Case(op.value):
                        m.d.comb += queue.eq(q.value)

        # SETR: R[rd] = clamp((R[rs]*mul + R[rt]*mul_t + add) >> shift, lo, hi)
        setr = BODY_LAYOUTS[Opcode.SETR](body[:BODY_LAYOUTS[Opcode.SETR].size])
        s_sum = Signal(signed(64))
        s_val = Signal(signed(64))
        m.d.comb += [s_sum.eq(Mux(setr.use_rs, regs[setr.rs] * setr.mul, 0)
                              + Mux(setr.use_rt, regs[setr.rt] * setr.mul_t, 0) + setr.add),
                     s_val.eq(s_sum >> setr.shift)]
        loop = BODY_LAYOUTS[Opcode.LOOP](body[:BODY_LAYOUTS[Opcode.LOOP].size])
        loop_end = Signal(unsigned(PC_BITS + 1))
        m.d.comb += loop_end.eq(pc + 1 + loop.body)

        def stop(code):
            m.d.sync += [self.error.eq(code), self.error_pc.eq(pc)]
            m.next = "IDLE"

        m.d.sync += [dec.start.eq(0), self.progress.eq(0)]
        with m.FSM(name="dispatch"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(0), sp.eq(0), self.done.eq(0), self.error.eq(ErrorCode.NONE)]
                    m.d.sync += [regs[i].eq(0) for i in range(2, N_REGS)]
                    m.d.sync += [regs[0].eq(self.r0), regs[1].eq(self.r1)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.halt):
                    m.next = "IDLE"
                with m.Elif(pc >= self.program_words):
                    stop(ErrorCode.PC_RANGE)
                with m.Else():
                    m.d.comb += [self.fetch.valid.eq(1), self.fetch.payload.eq(pc)]
                    with m.If(self.fetch.ready):
                        m.next = "WORD"
            with m.State("WORD"):
                m.d.comb += [self.busy.eq(1), self.word.ready.eq(1)]
                with m.If(self.word.valid):
                    m.d.sync += [word.eq(self.word.payload), dec.start.eq(1)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += self.busy.eq(1)
                with m.If(dec.done):
                    with m.If(dec.error != ErrorCode.NONE):
                        stop(dec.error)
                    with m.Else():
                        m.next = "EXECUTE"
            with m.State("EXECUTE"):
                m.d.comb += self.busy.eq(1)
                with m.Switch(opcode):
                    with m.Case(Opcode.NOP.value):
                        m.d.sync += [pc.eq(next_pc), self.progress.eq(1)]
                        m.next = "NEXT"
                    with m.Case(Opcode.SETR.value):
                        clamped = Signal(signed(64))
                        with m.If(s_val < setr.lo):
                            m.d.comb += clamped.eq(setr.lo)
                        with m.Elif(s_val > setr.hi):
                            m.d.comb += clamped.eq(setr.hi)
                        with m.Else():
                            m.d.comb += clamped.eq(s_val)
                        m.d.sync += [regs[setr.rd].eq(clamped), pc.eq(next_pc), self.progress.eq(1)]
                        m.next = "NEXT"
                    with m.Case(Opcode.LOOP.value):
                        count = ev[0]
                        with m.If(~ev_ok[0]):
                            stop(ErrorCode.FIELD_RANGE)
                        with m.Elif((sp != 0) & (loop_end > l_end[top])):
                            stop(ErrorCode.LOOP_NESTING)
                        with m.Elif(count > 0):
                            with m.If(sp == depth):
                                stop(ErrorCode.LOOP_DEPTH)
                            with m.Else():
                                m.d.sync += [l_start[sp].eq(next_pc), l_end[sp].eq(loop_end),
                                             l_count[sp].eq(count), l_iter[sp].eq(0), l_reg[sp].eq(loop.reg),
                                             sp.eq(sp + 1), regs[loop.reg].eq(0), pc.eq(next_pc), self.progress.eq(1)]
                                m.next = "NEXT"
                        with m.Else():
                            m.d.sync += [pc.eq(loop_end), self.progress.eq(1)]
                            m.next = "NEXT"
                    with m.Case(Opcode.BARRIER.value, Opcode.END.value):
                        m.next = "SYNC"
                    with m.Default():
                        with m.If(~fields_ok):
                            stop(ErrorCode.FIELD_RANGE)
                        with m.Else():
                            m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += self.busy.eq(1)
                for q in Queue:
                    m.d.comb += [self.issue[q.value].valid.eq(queue == q.value),
                                 self.issue[q.value].payload.opcode.eq(hdr.opcode),
                                 self.issue[q.value].payload.wait.eq(hdr.wait),
                                 self.issue[q.value].payload.release.eq(hdr.release),
                                 self.issue[q.value].payload.body.eq(issued)]
                with m.If(self.halt):
                    m.next = "IDLE"
                with m.Elif(Array(self.issue[q.value].ready for q in Queue)[queue]):
                    m.d.sync += [pc.eq(next_pc), self.progress.eq(1)]
                    m.next = "NEXT"
            with m.State("SYNC"):  # BARRIER, END: every queue idle, no token left over
                m.d.comb += self.busy.eq(1)
                with m.If(self.halt):
                    m.next = "IDLE"
                with m.Elif(self.queues_idle):
                    with m.If(self.tokens_left):
                        stop(ErrorCode.TOKENS_LEFT)
                    with m.Elif(opcode == Opcode.END.value):
                        m.d.sync += [self.done.eq(1), self.progress.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [pc.eq(next_pc), self.progress.eq(1)]
                        m.next = "NEXT"
            with m.State("NEXT"):  # the end of a loop body: repeat, or pop and look again
                m.d.comb += self.busy.eq(1)
                with m.If((sp != 0) & (pc >= l_end[top])):
                    with m.If(l_iter[top] + 1 < l_count[top]):
                        m.d.sync += [l_iter[top].eq(l_iter[top] + 1), regs[l_reg[top]].eq(l_iter[top] + 1),
                                     pc.eq(l_start[top])]
                        m.next = "FETCH"
                    with m.Else():
                        m.d.sync += sp.eq(sp - 1)
                with m.Else():
                    m.next = "FETCH"
        return m
