"""One core's linear-layer datapath for decode: a tile of the weight image and one token's INT8
activations in, the layer's INT32 outputs out, bit-exact with ``IntegerKernels.linear``:

    acc[o, g] = sum_{k in g} q[k] * w8[o, k];   Y[o] = sum_g S[o, g] acc[o, g]
    out[o]    = sat(rshift_round(Y[o], shift), 32),   shift = E - e - F

    weight buffer --> LaneGroupDecoder x 1 or 2 -+--> MatrixProcessingEngine --> RequantisePath x 2C
    activation buffer (16-byte blocks) ----------+        (C chains)                  (one per row lane)

There are 2C *row lanes*, each with its own requantiser (in the MV unit only its accumulator,
``GroupScaleAccumulator``: the unit rounds the results it writes in a cycle, ``requantise=False``): lane j < C is chain j's low lane, lane
C + j its high lane.  The weight image is lane-interleaved by row groups of C
(``compiler/weight_image.py``, ``lane_interleave``), and one ``LaneGroupDecoder`` decodes a group's
C rows at once, on one weight buffer read port.  With ``pair_rows`` (dense weights: every row of
a beat reads the same activations) a beat carries two rows per chain, the MV mapping: the low
lanes' decoder takes the even row groups, the high lanes' (dense-only) decoder the odd ones, so
lane j takes rows j, j + 2C, ... and each output beat holds rows r * 2C .. r * 2C + 2C - 1.
Without it (N:16 sparse: each row has its own indices) one row per chain rides the low lane,
MV_SPARSE: the low lanes' decoder takes every group (lane j rows j, j + C, ...) and the high
lanes' decoder none (zero operands).  Both decoders advance together: a beat goes into the MPE
when both have one (a decoder out of groups counts as ready with zero weights, and so does a
lane without a row in the tile's last group), with the activation blocks the low decoder's DSP
groups name (all lanes share them).

Where a unit of a row group's 8-bit codes is wider than a buffer word, the tiles come in
*decoder slices* (``weight_image.decoder_slice_lanes``: 18 of 4 lanes at the U280's 72 chains of D = 16),
and each side is one decoder a slice, each on its own sub-tile and its own read port: "the low
lanes' decoder" is then all the low lanes' slices in step (slice 0's sub-tile has every row
group, so its beats lead).

With ``two_tokens`` (MM's two-token pass, where rows cannot pair: the chain's MM mode) the low
lanes' decoder carries the rows, one per chain, and each beat's weights meet two tokens'
activations: token 0's blocks from the ``a_rd_*`` ports, token 1's from ``a1_rd_data`` (the
host reads them at the same block offsets in token 1's row).  The chain puts token 0's sums in
its high lane and token 1's in its low lane, so an output beat holds token 1's rows in lanes
0 .. C-1 and token 0's in lanes C .. 2C-1, each requantised with its token's shift
(``shift`` / ``shift_token1``) and the low lane's group scales.

Quant groups: the chain's accumulator restarts at each quant group (``first``/``last`` mark group
boundaries, not row boundaries), so each chain result is one group's sum; its scale S travels
beside it through a small queue. This needs a quant group to span whole beats, ``kg = group *
N / 16 >= D`` (true for every format of the ``sim`` preset with groups of 32; smaller groups
need the adder-tree tap of docs/accelerator.md).
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from airfoil.compiler.weight_image import decoder_slice_lanes
from airfoil.config import SPARSE_M
from airfoil.hw.requantise import LATENCY as REQUANT_LATENCY, GroupScaleAccumulator, RequantisePath
from airfoil.numerics import ACC_BITS
from airfoil.hw.sparse_chain import ChainMode, MatrixProcessingEngine
from airfoil.hw.weight_decoder import LaneGroupDecoder

__all__ = ["LinearEngine"]

SCALE_QUEUE = 16  # group results in flight between the MPE's input and output


class LinearEngine(wiring.Component):
    """``chains`` chains of ``groups`` DSP groups (D = 2 groups), a weight buffer of ``wdepth``
    words of ``word_bits`` and an activation buffer of ``max_k`` inputs.

    The host (the MV unit in the top) writes the buffers through ``w_*`` and ``a_*``, sets one
    ``geometry`` per decoder (``group_geometry``: the low lanes', then the high lanes'),
    ``pair_rows``, ``beats_per_group`` (kg / D), ``shift``, and pulses ``start``. Outputs: a
    stream of 2C INT32 results a beat (lane j's rows in order; with ``requantise=False`` their
    48-bit Y, unrounded) and the lanes that carry a row (``out_mask``)."""

    def __init__(self, chains: int, groups: int, word_bits: int = 512, wdepth: int = 1024, max_k: int = 2048,
                 own_buffers: bool = True, pairs: bool = True, requantise: bool = True, mm: bool = True,
                 cores: int = 1):
        # ``pairs=False``: C lanes only, one row per chain always (where 2C results do not divide
        # the user's output word, the MV unit never pairs: no high lanes are built).
        # ``requantise=False``: ``out`` carries each lane's Y = sum_g S acc (48 bits), the last
        # stage (``requantise.round_shift_saturate``) left to the consumer, which needs it only
        # for the results it writes in a cycle (the MV unit: one GLOBAL word's), not per lane
        self.requantise = requantise
        # ``mm=False``: chains without MM's mode (``config.mm_token_pairs``), so no two-token passes
        self.mm = mm
        # ``cores``: the chains in that many MPEs of C / cores chains, fed in lock step (a board's
        # cores running one instruction stream, docs/accelerator.md; one MPE's operand port of
        # all a U280's 216 chains would be a single 71,172-bit value, past what Amaranth builds)
        if chains % cores:
            raise ValueError(f"LinearEngine: {chains} chains do not split into {cores} cores")
        self.cores = cores
        self.chains, self.groups, self.d = chains, groups, 2 * groups
        self.lanes = 2 * chains if pairs else chains
        self.word_bits, self.wdepth, self.max_k = word_bits, wdepth, max_k
        self.own_buffers = own_buffers
        # one decoder per slice of a row group (weight_image's decoder slices: one slice of all C
        # lanes where a unit of their codes fits a word); the low lanes' slices, then the high
        # lanes'.  The high lanes only ever take paired rows, which are dense: no position window
        self.slice_lanes = decoder_slice_lanes(chains, self.d, word_bits)
        self.slices = chains // self.slice_lanes
        self.decoders = [LaneGroupDecoder(self.d, self.slice_lanes, word_bits, wdepth) for _ in range(self.slices)]
        if pairs:
            self.decoders += [LaneGroupDecoder(self.d, self.slice_lanes, word_bits, wdepth, dense_only=True)
                              for _ in range(self.slices)]
        nd = len(self.decoders)
        geo = self.decoders[0].geometry_layout
        block = data.ArrayLayout(signed(8), SPARSE_M)
        if own_buffers:  # the buffers inside, written through w_* / a_*
            ports = {"w_en": In(1), "w_addr": In(unsigned(exact_log2(wdepth))), "w_data": In(word_bits),
                     "a_en": In(1), "a_addr": In(range(max_k // SPARSE_M)), "a_data": In(block)}
        else:  # read ports of buffers outside (one cycle of latency): one per decoder, one per DSP group
            ports = {"w_rd_en": Out(nd), "w_rd_addr": Out(data.ArrayLayout(unsigned(exact_log2(wdepth)), nd)),
                     "w_rd_data": In(data.ArrayLayout(unsigned(word_bits), nd)),
                     "a_rd_en": Out(groups), "a_rd_addr": Out(data.ArrayLayout(unsigned(16), groups)),
                     "a_rd_data": In(data.ArrayLayout(block, groups))}
            if pairs and mm:  # token 1's blocks in a two-token pass, read by the host at a_rd_addr's offsets
                ports["a1_rd_data"] = In(data.ArrayLayout(block, groups))
        super().__init__({
            **ports,
            "geometry": In(data.ArrayLayout(geo, nd)),
            "pair_rows": In(1),  # two rows per chain (MV); dense weights only
            "two_tokens": In(1),  # two tokens per beat (MM), one row per chain; needs pairs and outside buffers
            "beats_per_group": In(unsigned(8)),
            **({"shift": In(signed(8)),  # every lane's, or token 0's in a two-token pass
                "shift_token1": In(signed(8))}  # token 1's (lanes 0 .. C-1) in a two-token pass
               if requantise else {}),
            "start": In(1),
            "busy": Out(1),
            "out": Out(stream.Signature(data.ArrayLayout(signed(32 if requantise else ACC_BITS), self.lanes))),
            "out_mask": Out(self.lanes),  # which lanes' results ``out`` carries this cycle
        })

    def decoder_of(self, lane: int) -> int:
        """The decoder of row lane ``lane``: its side (low lanes, high lanes), then its slice."""
        side, j = divmod(lane, self.chains)
        return side * self.slices + j // self.slice_lanes

    def elaborate(self, platform):
        m = Module()
        C, G, L = self.chains, self.groups, self.lanes
        if self.own_buffers:
            m.submodules.wbuf = wbuf = Memory(shape=unsigned(self.word_bits), depth=self.wdepth, init=[])
            wp = wbuf.write_port()
            m.d.comb += [wp.en.eq(self.w_en), wp.addr.eq(self.w_addr), wp.data.eq(self.w_data)]
            m.submodules.abuf = abuf = Memory(shape=data.ArrayLayout(signed(8), SPARSE_M),
                                              depth=self.max_k // SPARSE_M, init=[])
            ap = abuf.write_port()
            m.d.comb += [ap.en.eq(self.a_en), ap.addr.eq(self.a_addr), ap.data.eq(self.a_data)]
            act_ports = [abuf.read_port() for _ in range(G)]
            weight_ports = [wbuf.read_port() for _ in self.decoders]
        else:
            act_ports = [_ReadPort(self.a_rd_en[g], self.a_rd_addr[g], self.a_rd_data[g]) for g in range(G)]
            weight_ports = [_ReadPort(self.w_rd_en[i], self.w_rd_addr[i], self.w_rd_data[i])
                            for i in range(len(self.decoders))]
        per_core = C // self.cores
        mpes = [MatrixProcessingEngine(per_core, G, mm=self.mm) for _ in range(self.cores)]
        for p, mpe in enumerate(mpes):
            m.submodules["mpe" if self.cores == 1 else f"mpe{p}"] = mpe

        # ---- decoders, each on its own read port of the weight buffer
        beats = []
        for i, dec in enumerate(self.decoders):
            m.submodules[f"decoder{i}"] = dec
            rp = weight_ports[i]
            m.d.comb += [rp.en.eq(dec.mem_en), rp.addr.eq(dec.mem_addr), dec.mem_data.eq(rp.data),
                         dec.start.eq(self.start), dec.geometry.eq(self.geometry[i])]
            beats.append(dec.beats)

        # ---- feeder stage 1: take a beat from every decoder, read the activation blocks
        # a decoder that has emitted all its groups counts as ready with zero weights; the low
        # lanes' first slice always has the most (its sub-tile has every row group)
        all_valid = Signal()
        m.d.comb += all_valid.eq(beats[0].valid & Cat(*(b.valid | ~d.busy for b, d in zip(beats, self.decoders))).all())
        for b in beats:
            m.d.comb += b.ready.eq(all_valid)
        first_beat = beats[0].payload
        for g in range(G):
            m.d.comb += [act_ports[g].addr.eq(first_beat.block[g]), act_ports[g].en.eq(all_valid)]
        held = [Signal(b.payload.shape(), name=f"held{i}") for i, b in enumerate(beats)]
        held_valid = Signal()
        m.d.sync += held_valid.eq(all_valid)
        # a beat of no decoder (out of groups) is zeros, and so are the weights of a lane without a
        # row in the group: written as the flip-flops' synchronous reset over their enable (an
        # FDRE's R), not as a multiplexer a bit (a LUT each: 25,000 at the U280's 72 chains)
        for h, b in zip(held, beats):
            with m.If(all_valid):
                m.d.sync += h.eq(b.payload.as_value())
            with m.If(all_valid & ~b.valid):
                m.d.sync += h.eq(0)
            for i in range(self.slice_lanes):
                with m.If(all_valid & ~(b.valid & b.payload.lanes[i])):
                    m.d.sync += h.weight[i].eq(0)

        def lane_beat(j: int):  # row lane j's decoder's beat, and j's lane in it
            return held[self.decoder_of(j)], j % self.slice_lanes

        def lane_weight(j: int):  # row lane j's beat (zero where its lane has no row in the group)
            h, i = lane_beat(j)
            return h.weight[i].as_value()

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

        # ---- feeder stage 2: the MPEs' operands (chain c: MPE c // per_core's chain c % per_core)
        # MV and MV_SPARSE run alike in the chain; the high lanes' decoder has no rows (zero
        # weights) without pair_rows.  Paired rows are dense: the high row's positions are the low's.
        # MM (two tokens) takes the weight from weight_hi: the low lanes' decoder carries the rows.
        two = self.two_tokens if L > C and not self.own_buffers and self.mm else 0
        single_mode = Mux(self.pair_rows, ChainMode.MV, ChainMode.MV_SPARSE) if L > C else ChainMode.MV_SPARSE
        for mpe in mpes:
            op = mpe.operands.payload
            m.d.comb += [mpe.operands.valid.eq(held_valid), op.mode.eq(Mux(two, ChainMode.MM, single_mode)),
                         op.first.eq(group_first), op.last.eq(group_last)]
            for g in range(G):
                m.d.comb += op.act_hi[g].eq(act_ports[g].data)
                if L > C and not self.own_buffers and self.mm:
                    m.d.comb += op.act_lo[g].eq(self.a1_rd_data[g])
        for c in range(C):
            h, i = lane_beat(c)
            op, k = mpes[c // per_core].operands.payload, c % per_core
            m.d.comb += [op.weight_lo[k].eq(lane_weight(c)),
                         op.weight_hi[k].eq(Mux(two, lane_weight(c), lane_weight(C + c)) if L > C else 0),
                         op.index[k].eq(h.index[i])]

        # ---- each finished group's scales (and whether it starts/ends its row) wait beside the MPE,
        # in a small memory read without a clock (distributed RAM: 2L x 16 bits of flip-flops a
        # place and a 16-way multiplexer a bit before, most of the MV unit's LUTs at 72 chains)
        entry = data.StructLayout({"scale": data.ArrayLayout(unsigned(16), L), "row_first": 1, "row_last": 1})
        m.submodules.scale_queue = queue = Memory(shape=entry, depth=SCALE_QUEUE, init=[])
        queue_in, queue_out = queue.write_port(), queue.read_port(domain="comb")
        head, tail = Signal(range(SCALE_QUEUE)), Signal(range(SCALE_QUEUE))
        row_open = Signal()  # the next finished group starts a row
        e = queue_in.data
        m.d.comb += [queue_in.addr.eq(tail), queue_in.en.eq(held_valid & group_last),
                     e.row_first.eq(~row_open), e.row_last.eq(held[0].last)]
        # a two-token pass's high lanes (token 0) have the low lanes' rows, and their scales
        for j in range(L):
            h, i = lane_beat(j)
            if j >= C:
                lo, i_lo = lane_beat(j - C)
                m.d.comb += e.scale[j].eq(Mux(two, lo.scale[i_lo], h.scale[i]))
            else:
                m.d.comb += e.scale[j].eq(h.scale[i])
        with m.If(held_valid & group_last):
            m.d.sync += [row_open.eq(~held[0].last), tail.eq(tail + 1)]
        with m.If(self.start):
            m.d.sync += [head.eq(0), tail.eq(0), row_open.eq(0)]
        res = mpes[0].results  # the MPEs' results come in the same cycles
        m.d.comb += queue_out.addr.eq(head)
        front = queue_out.data
        with m.If(res.valid):
            m.d.sync += head.eq(head + 1)

        # ---- requantisation, one path per row lane (or its accumulator: ``requantise``)
        rq_valid = Signal()
        for j in range(L):
            rq = RequantisePath() if self.requantise else GroupScaleAccumulator()
            m.submodules[f"requantise{j}"] = rq
            s = rq.sums.payload
            lane = mpes[(j % C) // per_core].results.payload
            acc = lane.lo[j % per_core] if j < C else lane.hi[j % per_core]
            m.d.comb += [rq.sums.valid.eq(res.valid), s.acc.eq(acc), s.scale.eq(front.scale[j]),
                         s.first.eq(front.row_first), s.last.eq(front.row_last),
                         self.out.payload[j].eq(rq.out.payload)]
            if self.requantise:
                m.d.comb += s.shift.eq(Mux(two, self.shift_token1, self.shift) if j < C and L > C else self.shift)
            if j == 0:
                m.d.comb += rq_valid.eq(rq.out.valid)
        m.d.comb += [self.out.valid.eq(rq_valid), *(mpe.results.ready.eq(1) for mpe in mpes)]
        # a lane whose decoder had fewer rows (the tile's last rows) leaves a zero result: mark it.
        # Every lane has as many results out as the others: one count, and two comparisons a
        # decoder (its lanes in the last group, and the others)
        rows_done = Signal(16)
        with m.If(rq_valid):
            m.d.sync += rows_done.eq(rows_done + 1)
        with m.If(self.start):
            m.d.sync += rows_done.eq(0)
        below = []  # per decoder: a lane of the last group has a row left, a lane of the others has
        for geo in self.geometry:
            last, other = Signal(), Signal()
            m.d.comb += [last.eq((geo.groups != 0) & (rows_done < geo.groups)),
                         other.eq((geo.groups != 0) & (rows_done + 1 < geo.groups))]
            below.append((last, other))

        def lane_mask(j: int):  # rows_done below lane j's rows: its decoder's groups, less the last where not in it
            last, other = below[self.decoder_of(j)]
            return Mux(j % self.slice_lanes < self.geometry[self.decoder_of(j)].last_lanes, last, other)

        for j in range(L):
            mask = lane_mask(j)
            if j >= C:  # a two-token pass: token 0's results are the low lanes' rows
                mask = Mux(two, lane_mask(j - C), mask)
            m.d.comb += self.out_mask[j].eq(mask)

        recent = Signal(REQUANT_LATENCY)  # results still in the requantisers
        m.d.sync += recent.eq(Cat(res.valid, recent[:-1]))
        m.d.comb += self.busy.eq(Cat(*(d.busy for d in self.decoders)).any() | held_valid | (head != tail)
                                 | recent.any())
        return m


class _ReadPort:
    """An outside memory's read port, with the names of Amaranth's ``ReadPort``."""

    def __init__(self, en, addr, data):
        self.en, self.addr, self.data = en, addr, data
