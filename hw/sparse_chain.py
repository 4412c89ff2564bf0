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
  the low lane (1 MAC per slice per cycle; sparse weights carry 4 index bits, so bytes per
  cycle still exceed the HBM share, see ``sim/perf`` and the tests).

Each DSP group's *reduction node* adds its two slices' packed products (2 products: far from
the 8 that fit a lane) and unpacks them into two lanes (the overflow adjust: lanes are
separated before any sum could exceed 18 bits, whatever the chain length); an adder tree sums
the groups, and a row accumulator sums beats from ``first`` to ``last``.
"""
import enum

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from airfoil.config import SPARSE_M
from airfoil.hw.dsp_slice import SLICE_LATENCY, DspSlice, unpack_lanes

__all__ = ["ChainMode", "SparseDspChain", "MatrixProcessingEngine", "CHAIN_LATENCY", "OUT_WIDTH"]

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


# slice pipeline + reduction node register + adder-tree register + row accumulator
CHAIN_LATENCY = SLICE_LATENCY + 3


class SparseDspChain(wiring.Component):
    """One sparse DSP chain of ``groups`` DSP groups (2 slices each)."""

    def __init__(self, groups: int):
        self.groups = groups
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
        d = 2 * self.groups
        slices = []
        for s in range(d):
            sl = DspSlice()
            m.submodules[f"slice{s}"] = sl
            slices.append(sl)
            g = s // 2
            idx = b.index[s]
            x_hi = b.act_hi[g][idx]  # the sparse MUX: 1 of 16 by the 4-bit index
            x_lo = b.act_lo[g][idx]
            with m.Switch(b.mode):
                with m.Case(ChainMode.MM):
                    m.d.comb += [sl.a_hi.eq(x_hi), sl.a_lo.eq(x_lo), sl.w.eq(b.weight_hi[s])]
                with m.Case(ChainMode.MV):
                    m.d.comb += [sl.a_hi.eq(b.weight_hi[s]), sl.a_lo.eq(b.weight_lo[s]), sl.w.eq(x_hi)]
                with m.Default():  # MV_SPARSE: one row, low lane only
                    m.d.comb += [sl.a_hi.eq(0), sl.a_lo.eq(b.weight_hi[s]), sl.w.eq(x_hi)]
            m.d.comb += [sl.valid.eq(self.valid), sl.first.eq(1)]

        # control delayed to the slices' output
        ctl = [Signal(3, name=f"ctl{i}") for i in range(SLICE_LATENCY + 2)]
        m.d.sync += ctl[0].eq(Mux(self.valid, (b.last << 2) | (b.first << 1) | 1, 0))
        for i in range(1, len(ctl)):
            m.d.sync += ctl[i].eq(ctl[i - 1])

        # reduction nodes: packed sum of a group's two slices, then split into lanes
        rn_hi = [Signal(signed(OUT_WIDTH), name=f"rn{g}_hi") for g in range(self.groups)]
        rn_lo = [Signal(signed(OUT_WIDTH), name=f"rn{g}_lo") for g in range(self.groups)]
        for g in range(self.groups):
            packed = slices[2 * g].p + slices[2 * g + 1].p
            hi, lo = unpack_lanes(packed)
            m.d.sync += [rn_hi[g].eq(hi), rn_lo[g].eq(lo)]
        # adder tree over the groups
        tree_hi = Signal(signed(OUT_WIDTH))
        tree_lo = Signal(signed(OUT_WIDTH))
        m.d.sync += [tree_hi.eq(sum(rn_hi)), tree_lo.eq(sum(rn_lo))]
        # row accumulator
        acc_hi = Signal(signed(OUT_WIDTH))
        acc_lo = Signal(signed(OUT_WIDTH))
        at = ctl[SLICE_LATENCY + 1]  # aligned with tree_*
        new_hi = tree_hi + Mux(at[1], 0, acc_hi)
        new_lo = tree_lo + Mux(at[1], 0, acc_lo)
        m.d.sync += self.out_valid.eq(0)
        with m.If(at[0]):
            m.d.sync += [acc_hi.eq(new_hi), acc_lo.eq(new_lo)]
            with m.If(at[2]):
                m.d.sync += [self.out_hi.eq(new_hi), self.out_lo.eq(new_lo), self.out_valid.eq(1)]
        return m


class MatrixProcessingEngine(wiring.Component):
    """One core's MPE: ``chains`` VPUs that share the activations of each beat and work on
    different output rows (the MPU arrangement), fed by an operand stream and emitting a
    result stream with one (hi, lo) pair per chain."""

    def __init__(self, chains: int, groups: int):
        self.chains, self.groups = chains, groups
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
            ch = SparseDspChain(self.groups)
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
