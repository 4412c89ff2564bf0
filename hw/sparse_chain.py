"""The configurable sparse DSP chain (one VPU) and the matrix processing engine (MPE).

One *beat* of a chain is D = 2 * groups consecutive kept weights of one output row. Slice s
takes weight ``weight[s]`` and, through its sparse MUX, activation ``index[s]`` (4 bits) of the
16-activation block of its DSP group. With N:16 sparsity the feeder gives every DSP group the
block its weights come from (for N=2 each group covers a whole block, for N=16 all groups see
the same block for 16/D beats); the chain itself needs no other knowledge of N, so the pattern
is chosen per instruction, at run time.

Modes (per beat, ``mode``):

* ``MM`` (prefill GEMM): two tokens share each weight: the slices' packed operand is
  (token0, token1) activations, the 18-bit operand the weight.  Outputs: row . token0 (``hi``)
  and row . token1 (``lo``).
* ``MV`` (decode GEMV, dense weights): two *rows* share each activation: the packed operand is
  (row r, row r+1) weights, the 18-bit operand the activation.  Outputs: row r (``hi``) and
  row r+1 (``lo``).
* ``MV_SPARSE`` (decode GEMV, N < 16): rows have their own indices, so one row per beat in
  the low lane; the feeder zeroes the high row's weights and the chain runs it as MV (1 MAC per
  slice per cycle; sparse weights carry their positions, so bytes per cycle still exceed the
  HBM share, see ``mpe_schedule.mv_weight_bytes_per_cycle`` and the tests).

Within a DSP group the upper slice adds the lower slice's packed product through the DSP
cascade (PCIN, no fabric adder). Each group's *reduction node* breaks the cascade: it unpacks
the group's packed sum (2 products: far from the 8 that fit a lane) into two 16-bit lanes (the
overflow adjust: lanes are separated before any sum could exceed 18 bits, whatever the chain
length); a balanced adder tree sums the groups, and a row accumulator sums beats from
``first`` to ``last``.
"""
import enum

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.utils import ceil_log2
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from airfoil.config import SPARSE_M
from airfoil.hw.dsp_slice import SLICE_LATENCY, DspSlice, split_lanes

__all__ = ["ChainMode", "SparseDspChain", "MatrixProcessingEngine", "CHAIN_LATENCY", "GROUP_LATENCY", "OUT_WIDTH"]

OUT_WIDTH = 32


class ChainMode(enum.IntEnum):
    MM = 0
    MV = 1
    MV_SPARSE = 2


def _beat_layout(groups: int) -> data.StructLayout:
    d = 2 * groups
    return data.StructLayout({
        "act_hi": data.ArrayLayout(data.ArrayLayout(signed(8), SPARSE_M), groups),  # token0 (MM) / the token (MV)
        "act_lo": data.ArrayLayout(data.ArrayLayout(signed(8), SPARSE_M), groups),  # token1 (MM)
        "weight_hi": data.ArrayLayout(signed(8), d),  # row r
        "weight_lo": data.ArrayLayout(signed(8), d),  # row r+1 (MV only)
        "index": data.ArrayLayout(unsigned(4), d),
        "mode": unsigned(2),
        "first": unsigned(1),  # first beat of an output row (pair)
        "last": unsigned(1),  # last beat: emit the sums
    })


# A group's sum leaves the upper slice one cycle after the lower slice's P (its extra input register).
GROUP_LATENCY = SLICE_LATENCY + 1
# group sum + reduction node register + adder-tree register + row accumulator
CHAIN_LATENCY = GROUP_LATENCY + 3
# One lane of a group sum: two products of at most 128 * 127 in magnitude.
LANE_WIDTH = 16


class SparseDspChain(wiring.Component):
    """One sparse DSP chain of ``groups`` DSP groups (2 slices each); ``primitive``: the slices as
    DSP48E2 instances (the boards'), else behavioural (see ``dsp_slice``).  ``mm``: the MM mode
    is built (token 1's sparse MUX a slice, the operands' swap); without it a beat in MM mode
    runs as MV (``config.mm_token_pairs``: its feeder never sends one)."""

    def __init__(self, groups: int, primitive: bool = True, mm: bool = True):
        self.groups, self.primitive, self.mm = groups, primitive, mm
        self.beat_layout = _beat_layout(groups)
        super().__init__({
            "beat": In(self.beat_layout),
            "valid": In(1),
            "out_hi": Out(signed(OUT_WIDTH)),
            "out_lo": Out(signed(OUT_WIDTH)),
            "out_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        b = self.beat
        mm = Signal()
        m.d.comb += mm.eq(b.mode == ChainMode.MM)
        rn_hi = [Signal(signed(LANE_WIDTH), name=f"rn{g}_hi") for g in range(self.groups)]
        rn_lo = [Signal(signed(LANE_WIDTH), name=f"rn{g}_lo") for g in range(self.groups)]
        borrow = Signal(self.groups)  # each group's low-lane sign: the high lane's borrow
        for g in range(self.groups):
            # the group's two slices: the upper one adds the lower one's P through the cascade.
            # Every beat starts a new sum (the chain accumulates after the reduction), so the
            # slices have no Z-mux and no P fed back: only the P bits the reduction node reads
            # are built.
            lower = DspSlice(input_regs=1, accumulate=False, primitive=self.primitive)
            upper = DspSlice(input_regs=2, accumulate=False, primitive=self.primitive, cascade_in=True)
            m.submodules[f"slice{2 * g}"], m.submodules[f"slice{2 * g + 1}"] = lower, upper
            m.d.comb += upper.pcin.eq(lower.pcout)
            for s, sl in ((2 * g, lower), (2 * g + 1, upper)):
                idx = b.index[s]
                x_hi = b.act_hi[g][idx]  # the sparse MUX: 1 of 16 by the 4-bit index
                m.d.comb += sl.valid.eq(self.valid)
                if not self.mm:  # MV's operands only: two rows share the activation
                    m.d.comb += [sl.a_hi.eq(b.weight_hi[s]), sl.a_lo.eq(b.weight_lo[s]), sl.w.eq(x_hi)]
                    continue
                x_lo = b.act_lo[g][idx]
                # MM: two tokens share the weight. MV (and MV_SPARSE, whose feeder zeroes the high
                # row): two rows share the activation.
                m.d.comb += [
                    sl.a_hi.eq(Mux(mm, x_hi, b.weight_hi[s])),
                    sl.a_lo.eq(Mux(mm, x_lo, b.weight_lo[s])),
                    sl.w.eq(Mux(mm, b.weight_hi[s], x_hi)),
                ]
            # the reduction node breaks the cascade: it splits the packed group sum into lanes.
            # Each lane holds two products (|sum| <= 2 * 128 * 127 < 2^15), so 16 bits carry it.
            # The high lane's borrows go into the adder tree as one bit each, cheaper than an
            # increment per group.
            hi_bits, lo, borrow_bit = split_lanes(upper.p, LANE_WIDTH)
            m.d.sync += [rn_hi[g].eq(hi_bits), rn_lo[g].eq(lo), borrow[g].eq(borrow_bit)]

        # control delayed to the reduction nodes' output
        ctl = [Signal(3, name=f"ctl{i}") for i in range(GROUP_LATENCY + 2)]
        m.d.sync += ctl[0].eq(Mux(self.valid, (b.last << 2) | (b.first << 1) | 1, 0))
        for i in range(1, len(ctl)):
            m.d.sync += ctl[i].eq(ctl[i - 1])

        # adder tree over the groups (widths grow one bit per level), the high lane's with the borrows
        tree_hi = Signal(signed(LANE_WIDTH + ceil_log2(self.groups)))
        tree_lo = Signal(signed(LANE_WIDTH + ceil_log2(self.groups)))
        m.d.sync += [tree_hi.eq(_balanced_sum(rn_hi + [borrow[g] for g in range(self.groups)])),
                     tree_lo.eq(_balanced_sum(rn_lo))]
        # row accumulator
        acc_hi = Signal(signed(OUT_WIDTH))
        acc_lo = Signal(signed(OUT_WIDTH))
        at = ctl[GROUP_LATENCY + 1]  # aligned with tree_*
        new_hi = tree_hi + Mux(at[1], 0, acc_hi)
        new_lo = tree_lo + Mux(at[1], 0, acc_lo)
        m.d.sync += self.out_valid.eq(0)
        with m.If(at[0]):
            m.d.sync += [acc_hi.eq(new_hi), acc_lo.eq(new_lo)]
            with m.If(at[2]):
                m.d.sync += [self.out_hi.eq(new_hi), self.out_lo.eq(new_lo), self.out_valid.eq(1)]
        return m


def _balanced_sum(values):
    """A balanced adder tree (a linear ``sum`` would widen every partial sum by one more bit)."""
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class MatrixProcessingEngine(wiring.Component):
    """One core's MPE: ``chains`` VPUs that share the activations of each beat and work on
    different output rows (the MPU arrangement), fed by an operand stream and emitting a
    result stream with one (hi, lo) pair per chain.  ``primitive`` and ``mm`` as in
    ``SparseDspChain``."""

    def __init__(self, chains: int, groups: int, primitive: bool = True, mm: bool = True):
        self.chains, self.groups, self.primitive, self.mm = chains, groups, primitive, mm
        d = 2 * groups
        shared = _beat_layout(groups)
        self.operand_layout = data.StructLayout({
            "act_hi": shared["act_hi"].shape,
            "act_lo": shared["act_lo"].shape,
            "weight_hi": data.ArrayLayout(data.ArrayLayout(signed(8), d), chains),
            "weight_lo": data.ArrayLayout(data.ArrayLayout(signed(8), d), chains),
            "index": data.ArrayLayout(data.ArrayLayout(unsigned(4), d), chains),
            "mode": unsigned(2), "first": unsigned(1), "last": unsigned(1),
        })
        self.result_layout = data.StructLayout({
            "hi": data.ArrayLayout(signed(OUT_WIDTH), chains),
            "lo": data.ArrayLayout(signed(OUT_WIDTH), chains),
        })
        super().__init__({
            # The engine is a fixed pipeline: it always accepts a beat, and its consumer (the
            # output buffer) must take every result; `results.ready` is not looked at.
            "operands": In(stream.Signature(self.operand_layout)),
            "results": Out(stream.Signature(self.result_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        op = self.operands.payload
        m.d.comb += self.operands.ready.eq(1)
        for c in range(self.chains):
            ch = SparseDspChain(self.groups, self.primitive, self.mm)
            m.submodules[f"chain{c}"] = ch
            m.d.comb += [
                ch.valid.eq(self.operands.valid),
                ch.beat.act_hi.eq(op.act_hi), ch.beat.act_lo.eq(op.act_lo),
                ch.beat.weight_hi.eq(op.weight_hi[c]), ch.beat.weight_lo.eq(op.weight_lo[c]),
                ch.beat.index.eq(op.index[c]),
                ch.beat.mode.eq(op.mode), ch.beat.first.eq(op.first), ch.beat.last.eq(op.last),
                self.results.payload.hi[c].eq(ch.out_hi), self.results.payload.lo[c].eq(ch.out_lo),
            ]
            if c == 0:
                m.d.comb += self.results.valid.eq(ch.out_valid)
        return m
