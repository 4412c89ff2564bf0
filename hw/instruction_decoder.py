"""The controller's instruction checker: one 512-bit word in, the ErrorCode that ``isa.decode``
would raise out (NONE for a legal word), in the same order of checks, so the first illegal field
the RTL reports is the one the Python decoder names.

Everything is read from the shared layouts (``airfoil.isa``): which enum fields can hold an
illegal value, where the affine fields sit, how many body bits each opcode uses.  All checks
are combinational except ``k % group_size``, which a sequential divider does in 20 cycles
(only for MM/MV, whose execution takes far longer)."""
from __future__ import annotations

from functools import reduce
from operator import or_

from amaranth import Module, Mux, Signal
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from airfoil.isa import BODY_LAYOUTS, BUFFER_ELEMENT_BYTES, INSTRUCTION_LAYOUT, OPCODE_QUEUE, Buffer, ErrorCode, Opcode
from airfoil.hw.sequential_arith import SequentialDivider

__all__ = ["InstructionDecoder"]

# (k / 16) % (group_size / 16): k is u24, group_size u10
_K_BLOCKS, _G_BLOCKS = 20, 6


def _is_affine(shape) -> bool:
    return isinstance(shape, data.StructLayout) and "use_reg" in shape.members


def _field_errors(body: data.View, layout: data.StructLayout) -> list[tuple[object, ErrorCode]]:
    """(condition, code) per enum and affine field, in layout order (isa.decode's order)."""
    out = []
    for name, shape in layout.members.items():
        v = body[name]
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            legal = {m.value for m in shape}
            if len(legal) < 1 << v.as_value().shape().width:
                raw = v.as_value()
                out.append((~reduce(or_, [raw == x for x in sorted(legal)]), ErrorCode.ENUM_VALUE))
        elif _is_affine(shape):
            out.append((~v.use_reg & ((v.reg != 0) | (v.scale != 0)), ErrorCode.AFFINE_UNUSED))
    return out


class InstructionDecoder(wiring.Component):
    """Pulse ``start`` with ``word`` held; ``done`` pulses with ``error`` valid (1 cycle later,
    or 21 for MM/MV).  ``hbm_channels`` is the config's pseudo-channel count."""

    def __init__(self, hbm_channels: int):
        self.hbm_channels = hbm_channels
        super().__init__({"word": In(INSTRUCTION_LAYOUT), "start": In(1), "done": Out(1), "error": Out(ErrorCode)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.divider = div = SequentialDivider(_K_BLOCKS, _G_BLOCKS)
        hdr, body = self.word.header, self.word.body
        raw_op = hdr.opcode.as_value()

        # checks ahead of GROUP_SIZE's remainder (pre) and after it (per_op_post); the first that holds wins
        pre = []
        pre.append((~reduce(or_, [raw_op == op.value for op in Opcode]), ErrorCode.OPCODE))
        pre.append((hdr.reserved != 0, ErrorCode.RESERVED))
        per_op_pre, per_op_post = {}, {}
        group_bad = Signal()  # group_size 0 or not a multiple of 16 (the part without the remainder)
        for op in Opcode:
            layout = BODY_LAYOUTS[op]
            checks = []
            if layout.size < len(body):
                checks.append((body[layout.size:] != 0, ErrorCode.UNUSED_BITS))
            after = []
            if layout.size:
                v = layout(body[:layout.size])
                checks += _field_errors(v, layout)
                if op in (Opcode.LD, Opcode.ST):
                    checks.append((v.row_bytes == 0, ErrorCode.ROW_BYTES))
                    if op == Opcode.ST:
                        checks.append((v.buffer == Buffer.INSTR, ErrorCode.ST_INSTR))
                    checks.append((v.channels == 0, ErrorCode.CHANNELS))
                    size = Mux(v.buffer == Buffer.GLOBAL, BUFFER_ELEMENT_BYTES[Buffer.GLOBAL], 1)
                    assert all(n == 1 for b, n in BUFFER_ELEMENT_BYTES.items() if b != Buffer.GLOBAL)
                    checks.append(((v.elem_bytes != size) | ((v.buffer == Buffer.GLOBAL) & (v.row_bytes[:2] != 0)),
                                   ErrorCode.ELEM_BYTES))
                    checks.append((v.channel + v.channels > self.hbm_channels, ErrorCode.CHANNEL_RANGE))
                if op in (Opcode.MM, Opcode.MV):
                    checks.append(((v.k == 0) | (v.k[:4] != 0), ErrorCode.K))
                    m.d.comb += [div.a.eq(v.k[4:]), div.b.eq(v.group_size[4:])]
                    group_bad_op = (v.group_size == 0) | (v.group_size[:4] != 0)
                    after.append((v.rows == 0, ErrorCode.ROWS))
                    if op == Opcode.MV:
                        t = v.tokens
                        after.append((t.use_reg | (t.base != 1), ErrorCode.MV_TOKENS))
                    per_op_post[op] = (group_bad_op, after)
                if op == Opcode.LOOP:
                    checks.append((v.body == 0, ErrorCode.LOOP_BODY))
                if op == Opcode.SETR:
                    checks.append((v.lo > v.hi, ErrorCode.SETR_CLAMP))
            if OPCODE_QUEUE[op] is None:
                checks.append(((hdr.wait != 0) | (hdr.release != 0), ErrorCode.DISPATCHER_TOKENS))
            per_op_pre[op] = checks

        def first(checks, default):
            """The code of the first condition that holds (a priority chain), else ``default``."""
            out = Signal(ErrorCode)
            m.d.comb += out.eq(default)
            for cond, code in reversed(checks):
                with m.If(cond):
                    m.d.comb += out.eq(code)
            return out

        pre_code = Signal(ErrorCode)
        post_code = Signal(ErrorCode)
        needs_remainder = Signal()
        with m.Switch(raw_op):
            for op in Opcode:
                with m.Case(op.value):
                    m.d.comb += pre_code.eq(first(pre + per_op_pre[op], ErrorCode.NONE))
                    if op in per_op_post:
                        g_bad, after = per_op_post[op]
                        m.d.comb += [group_bad.eq(g_bad), post_code.eq(first(after, ErrorCode.NONE)),
                                     needs_remainder.eq(1)]
            with m.Default():
                m.d.comb += pre_code.eq(ErrorCode.OPCODE)

        # start -> (MM/MV with no earlier error and a group of whole blocks: divide) -> done
        dividing = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            with m.If(pre_code != ErrorCode.NONE):
                m.d.sync += [self.done.eq(1), self.error.eq(pre_code)]
            with m.Elif(needs_remainder & group_bad):
                m.d.sync += [self.done.eq(1), self.error.eq(ErrorCode.GROUP_SIZE)]
            with m.Elif(needs_remainder):
                m.d.comb += div.start.eq(1)
                m.d.sync += dividing.eq(1)
            with m.Else():
                m.d.sync += [self.done.eq(1), self.error.eq(ErrorCode.NONE)]
        with m.If(dividing & div.done):
            m.d.sync += [dividing.eq(0), self.done.eq(1)]
            with m.If(div.r != 0):
                m.d.sync += self.error.eq(ErrorCode.GROUP_SIZE)
            with m.Else():
                m.d.sync += self.error.eq(post_code)
        return m
