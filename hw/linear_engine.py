"""One core's linear-layer datapath for decode: a tile of the weight image and one token's INT8
activations in, the layer's INT32 outputs out, bit-exact with ``IntegerKernels.linear``:

    acc[o, g] = sum_{k in g} q[k] * w8[o, k];   Y[o] = sum_g S[o, g] acc[o, g]
    out[o]    = sat(rshift_round(Y[o], shift), 32),   shift = E - e - F

    weight buffer --> WeightDecoder x C --+--> MatrixProcessingEngine --> RequantisePath x C
    activation buffer (16-byte blocks) ---+        (C chains)                  (one per chain)

Chain c takes rows c, c + C, ... of the tile (its decoder's ``row_first``/``row_step``). All
decoders advance together: a beat goes into the MPE when every decoder has one, with the
activation blocks its DSP groups name. A beat carries one row per chain in the low lane (the
MV_SPARSE mapping, also for dense weights: half the MACs of MV's two-row packing; the two-row
feeder is still to come).

Quant groups: the chain's accumulator restarts at each quant group (``first``/``last`` mark group
boundaries, not row boundaries), so each chain result is one group's sum; its scale S travels
beside it through a small queue. This needs a quant group to span whole beats, ``kg = group *
N / 16 >= D`` (true for every format of the ``sim`` preset with groups of 32; smaller groups
need the adder-tree tap of docs/accelerator.md).
"""
from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from airfoil.config import SPARSE_M
from airfoil.hw.requantise import LATENCY as REQUANT_LATENCY, RequantisePath
from airfoil.hw.sparse_chain import ChainMode, MatrixProcessingEngine
from airfoil.hw.weight_decoder import WeightDecoder

__all__ = ["LinearEngine"]

SCALE_QUEUE = 16  # group results in flight between the MPE's input and output


class LinearEngine(wiring.Component):
    """``chains`` chains of ``groups`` DSP groups (D = 2 groups), a weight buffer of ``wdepth``
    words of ``word_bits`` and an activation buffer of ``max_k`` inputs.

    The host (later the controller and the LD unit) writes the buffers through ``w_*`` and
    ``a_*``, sets one ``geometry`` per chain, ``beats_per_group`` (kg / D), ``shift``, and pulses
    ``start``. Outputs: per chain a stream of INT32 results, its rows in order."""

    def __init__(self, chains: int, groups: int, word_bits: int = 512, wdepth: int = 1024, max_k: int = 2048,
                 own_buffers: bool = True):
        self.chains, self.groups, self.d = chains, groups, 2 * groups
        self.word_bits, self.wdepth, self.max_k = word_bits, wdepth, max_k
        self.own_buffers = own_buffers
        self.decoders = [WeightDecoder(self.d, word_bits, wdepth) for _ in range(chains)]
        geo = self.decoders[0].geometry_layout
        block = data.ArrayLayout(signed(8), SPARSE_M)
        if own_buffers:  # the buffers inside, written through w_* / a_*
            ports = {"w_en": In(1), "w_addr": In(unsigned(exact_log2(wdepth))), "w_data": In(word_bits),
                     "a_en": In(1), "a_addr": In(range(max_k // SPARSE_M)), "a_data": In(block)}
        else:  # read ports of buffers outside (one cycle of latency): one per decoder, one per DSP group
            ports = {"w_rd_en": Out(chains), "w_rd_addr": Out(data.ArrayLayout(unsigned(exact_log2(wdepth)), chains)),
                     "w_rd_data": In(data.ArrayLayout(unsigned(word_bits), chains)),
                     "a_rd_en": Out(groups), "a_rd_addr": Out(data.ArrayLayout(unsigned(16), groups)),
                     "a_rd_data": In(data.ArrayLayout(block, groups))}
        super().__init__({
            **ports,
            "geometry": In(data.ArrayLayout(geo, chains)),
            "beats_per_group": In(unsigned(8)),
            "shift": In(signed(8)),
            "start": In(1),
            "busy": Out(1),
            "out": Out(stream.Signature(data.ArrayLayout(signed(32), chains))),
            "out_mask": Out(chains),  # which chains' results ``out`` carries this cycle
        })

    def elaborate(self, platform):
        m = Module()
        C, G = self.chains, self.groups
        if self.own_buffers:
            m.submodules.wbuf = wbuf = Memory(shape=unsigned(self.word_bits), depth=self.wdepth, init=[])
            wp = wbuf.write_port()
            m.d.comb += [wp.en.eq(self.w_en), wp.addr.eq(self.w_addr), wp.data.eq(self.w_data)]
            m.submodules.abuf = abuf = Memory(shape=data.ArrayLayout(signed(8), SPARSE_M),
                                              depth=self.max_k // SPARSE_M, init=[])
            ap = abuf.write_port()
            m.d.comb += [ap.en.eq(self.a_en), ap.addr.eq(self.a_addr), ap.data.eq(self.a_data)]
            act_ports = [abuf.read_port() for _ in range(G)]
            weight_ports = [wbuf.read_port() for _ in range(C)]
        else:
            act_ports = [_ReadPort(self.a_rd_en[g], self.a_rd_addr[g], self.a_rd_data[g]) for g in range(G)]
            weight_ports = [_ReadPort(self.w_rd_en[c], self.w_rd_addr[c], self.w_rd_data[c]) for c in range(C)]
        m.submodules.mpe = mpe = MatrixProcessingEngine(C, G)

        # ---- decoders, each on its own read port of the weight buffer
        beats = []
        for c, dec in enumerate(self.decoders):
            m.submodules[f"decoder{c}"] = dec
            rp = weight_ports[c]
            m.d.comb += [rp.en.eq(dec.mem_en), rp.addr.eq(dec.mem_addr), dec.mem_data.eq(rp.data),
                         dec.start.eq(self.start), dec.geometry.eq(self.geometry[c])]
            beats.append(dec.beats)

        # ---- feeder stage 1: take a beat from every decoder, read the activation blocks
        # a decoder that has emitted all its rows (the tile's rows need not divide by C) counts
        # as ready with zero weights; chain 0 always has the most rows
        all_valid = Signal()
        m.d.comb += all_valid.eq(beats[0].valid & Cat(*(b.valid | ~d.busy for b, d in zip(beats, self.decoders))).all())
        for b in beats:
            m.d.comb += b.ready.eq(all_valid)
        first_beat = beats[0].payload
        for g in range(G):
            m.d.comb += [act_ports[g].addr.eq(first_beat.block[g]), act_ports[g].en.eq(all_valid)]
        held = [Signal(b.payload.shape(), name=f"held{c}") for c, b in enumerate(beats)]
        held_valid = Signal()
        m.d.sync += held_valid.eq(all_valid)
        with m.If(all_valid):
            m.d.sync += [h.eq(Mux(b.valid, b.payload.as_value(), 0)) for h, b in zip(held, beats)]
        # the beat's place in its quant group (all chains' rows share the pattern)
        in_group = Signal(8)
        group_first = Signal()
        group_last = Signal()
        m.d.comb += [group_first.eq(held[0].first | (in_group == 0)),
                     group_last.eq(in_group + 1 == self.beats_per_group)]
        with m.If(held_valid):
            m.d.sync += in_group.eq(in_group + 1)
            with m.If(group_last | held[0].last):
                m.d.sync += in_group.eq(0)
        with m.If(self.start):
            m.d.sync += in_group.eq(0)

        # ---- feeder stage 2: the MPE's operands
        op = mpe.operands.payload
        m.d.comb += [mpe.operands.valid.eq(held_valid), op.mode.eq(ChainMode.MV_SPARSE),
                     op.first.eq(group_first), op.last.eq(group_last)]
        for g in range(G):
            m.d.comb += op.act_hi[g].eq(act_ports[g].data)
        for c in range(C):
            m.d.comb += [op.weight_lo[c].eq(held[c].weight), op.index[c].eq(held[c].index)]

        # ---- each finished group's scales (and whether it starts/ends its row) wait beside the MPE
        entry = data.StructLayout({"scale": data.ArrayLayout(unsigned(16), C), "row_first": 1, "row_last": 1})
        queue = Array(Signal(entry, name=f"queue{i}") for i in range(SCALE_QUEUE))
        head, tail = Signal(range(SCALE_QUEUE)), Signal(range(SCALE_QUEUE))
        row_open = Signal()  # the next finished group starts a row
        with m.If(held_valid & group_last):
            e = queue[tail]
            m.d.sync += [e.row_first.eq(~row_open), e.row_last.eq(held[0].last), row_open.eq(~held[0].last),
                         tail.eq(tail + 1)]
            m.d.sync += [e.scale[c].eq(held[c].scale[0]) for c in range(C)]
        with m.If(self.start):
            m.d.sync += [head.eq(0), tail.eq(0), row_open.eq(0)]
        res = mpe.results
        front = queue[head]
        with m.If(res.valid):
            m.d.sync += head.eq(head + 1)

        # ---- requantisation, one path per chain
        rq_valid = Signal()
        for c in range(C):
            rq = RequantisePath()
            m.submodules[f"requantise{c}"] = rq
            s = rq.sums.payload
            m.d.comb += [rq.sums.valid.eq(res.valid), s.acc.eq(res.payload.lo[c]), s.scale.eq(front.scale[c]),
                         s.shift.eq(self.shift), s.first.eq(front.row_first), s.last.eq(front.row_last),
                         self.out.payload[c].eq(rq.out.payload)]
            if c == 0:
                m.d.comb += rq_valid.eq(rq.out.valid)
        m.d.comb += [self.out.valid.eq(rq_valid), res.ready.eq(1)]
        # a chain whose decoder had fewer rows (the tile's last rows) leaves a zero result: mark it
        rows_done = [Signal(16, name=f"rows_done{c}") for c in range(C)]
        for c in range(C):
            m.d.comb += self.out_mask[c].eq(rows_done[c] < self.geometry[c].rows)
            with m.If(rq_valid):
                m.d.sync += rows_done[c].eq(rows_done[c] + 1)
            with m.If(self.start):
                m.d.sync += rows_done[c].eq(0)

        recent = Signal(REQUANT_LATENCY)  # results still in the requantisers
        m.d.sync += recent.eq(Cat(res.valid, recent[:-1]))
        m.d.comb += self.busy.eq(Cat(*(d.busy for d in self.decoders)).any() | held_valid | (head != tail)
                                 | recent.any())
        return m


class _ReadPort:
    """An outside memory's read port, with the names of Amaranth's ``ReadPort``."""

    def __init__(self, en, addr, data):
        self.en, self.addr, self.data = en, addr, data
