"""The compute queue's unit for MV and MM: turns an issued MV/MM into the linear engine's
settings, runs the engine on the shared buffers and writes the INT32 results into the global
buffer.  The golden model is fsim's ``_gemm``.

    issued MV/MM --> tile geometry per lane group decoder (the compiler's tile_sections, in RTL)
    token t      --> its exponent e = ACT[act_t + k], shift = scale_exp - e - out_frac
                 --> LinearEngine (decoders on WEIGHT read ports, activation blocks from ACT)
                 --> rows r*L .. r*L + L-1 of each output beat into GLOBAL[out_t + row]
    act_t = act + t * act_stride,  out_t = out + t * out_stride,  t = 0 .. tokens - 1

L = 2C rows a beat (two per chain, the MV packing) where the rows can share their activations:
dense weights (16:16), ``out`` a multiple of 2C (and ``out_stride`` too when there are several
tokens).  Otherwise L = C, one row per chain (MV_SPARSE).

Any chain count C: the tile's row groups are ceil(rows / C), a constant division done as one
multiplication (``reciprocal``) while the instruction's sections are computed, and so are the
alignment checks (remainders by C and 2C).  Where L does not divide 16 (6 chains; a board's
100) an output beat of L results, starting at a multiple of L, spans up to ``out_words(L)``
GLOBAL words (13 for 200): its first word is written with the beat, the others from a register
in the cycles after it, before the next beat (a row takes at least that many beats, or
UNSUPPORTED), and the pass ends when the last beat's words are written.

MM runs its tokens in passes over the tile (the decoders decode the tile again for every pass).
Where the rows pair, a pass is one token with two rows per chain.  Where they cannot (N:16
sparse weights, or results off a multiple of 2C) a pass takes *two tokens* (``token_pairs``):
the DSPs' two lanes carry tokens t and t + 1 on one row per chain (the chain's MM mode, the
packing of ``hw/mpe_schedule.py``), so such an MM of T tokens costs ceil(T / 2) passes, not T.
An output beat then holds C rows of each token, written into GLOBAL one after the other: token
t's ``out_words(C)`` words, then token t + 1's as many, before the next output beat (a row takes
at least twice that many beats, ``kept >= 2 D out_words(C)``; 2 beats for C of 1, 2, 4, 8 or
16, 14 for a board's 100; a shorter row runs one token a pass).  Token t + 1's results must not
be overwritten by token t's later rows, as they would be where they start inside token t's
(``0 < out_stride < rows``): there the tokens run one a pass, in fsim's order (so where
``out_stride`` is 0 token t + 1's results, written last, are the ones left).

What this build does not execute yet stops the machine with UNSUPPORTED (fsim executes it):
``accumulate``, raw sums (``requantise`` 0), quant groups that are not a power of two or hold
fewer kept weights than a beat (kg < D: the adder-tree tap of docs/accelerator.md), a tile
whose WEIGHT address is not a whole 64-byte word (the decoders' windows move in the aligned
steps of the image's ``unit_alignment``, counted from the tile's start), rows of
fewer beats than an output beat's words (k N / 16 < D out_words(C), only where C does not divide
16), ``out`` not a multiple of the chain count, MM strides that would break those alignments
(``act_stride`` not a multiple of 16, ``out_stride`` not a multiple of the chain count), shifts
outside the requantiser's [-16, 127] (checked per pass, both tokens' in a two-token pass: the
passes before it have been written).  A tile, an activation row or a result row outside its
buffer (or, where tiles are cut in decoder slices, a sub-tile outside its slice's bank of the
weight buffer: ``weight_image.weight_bank_bytes``) stops it with ADDRESS before anything is
written; MM of no tokens checks only the tile, as fsim does.
"""
from __future__ import annotations

import math

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from airfoil.compiler.compress import SCALE_BITS
from airfoil.compiler.weight_image import AXI_BEAT, decoder_slice_lanes, weight_bank_bytes, zero_field_bits
from airfoil.config import SPARSE_M, position_bits_per_block
from airfoil.hw.buffers import half_offset
from airfoil.hw.hbm_model import BEAT_BYTES, write_request_layout
from airfoil.hw.linear_engine import LinearEngine
from airfoil.hw.requantise import MIN_SHIFT, RoundShiftSaturate
from airfoil.hw.weight_decoder import lane_group_windows
from airfoil.isa import EVAL_BITS, ISSUE_LAYOUT, ISSUED_LAYOUTS, ErrorCode, Opcode, SparsePattern, WeightWidth
from airfoil.numerics import ACC_BITS

__all__ = ["MvUnit", "act_readers", "lane_count", "mv_unit_problem", "out_words", "reciprocal", "row_lanes",
           "round_stages", "sub_tile_cycles", "token_pairs", "weight_readers"]


def lane_count(chains: int) -> int:
    """Row lanes (requantisers, result lanes) the MV unit builds: 2C, so that rows can pair (two
    per chain a beat) at any chain count."""
    return 2 * chains


def round_stages(chains: int) -> int:
    """The requantisers' last stages (``requantise.round_shift_saturate``) the MV unit builds: one
    per result of the GLOBAL word it writes in a cycle (16), or per row lane where an output beat
    fills part of one word (``out_words`` 1: 2C divides 16).  The row lanes have only their
    accumulators (``GroupScaleAccumulator``)."""
    lanes = lane_count(chains)
    return lanes if max(out_words(lanes), out_words(chains)) == 1 else BEAT_BYTES // 4


def out_words(results: int) -> int:
    """GLOBAL words an output beat of ``results`` INT32 results (C rows, or 2C paired), starting at
    a multiple of that count, may span: 1 where the count divides a word's 16 (the beats then tile
    the words); else up to ceil((o + 4 results) / 64) for the largest byte offset o such a start
    can have within a word (64 - 4 gcd(results, 16))."""
    per_word = BEAT_BYTES // 4
    if per_word % results == 0:
        return 1
    return -(-(BEAT_BYTES - 4 * math.gcd(results, per_word) + 4 * results) // BEAT_BYTES)


def reciprocal(divisor: int, bits: int) -> tuple[int, int]:
    """(M, s) with ``x // divisor == (x * M) >> s`` for every 0 <= x < 2^bits: s = bits +
    ceil(log2 divisor), M = ceil(2^s / divisor).  (M = (2^s + e) / divisor with e < divisor, so
    the product's excess x e / (divisor 2^s) stays under 1 / divisor.)  A constant division in
    one multiplier, where a divider array would chain ``bits`` subtractions in one cycle."""
    s = bits + (divisor - 1).bit_length()
    return -(-(1 << s) // divisor), s


def _quotient(x, divisor: int, bits: int):
    """floor(x / divisor) of the low ``bits`` bits of x, unsigned (``reciprocal``)."""
    if divisor & (divisor - 1) == 0:
        return x[:bits] >> exact_log2(divisor)
    mul, s = reciprocal(divisor, bits)
    return (x[:bits] * mul) >> s


def _remainder(x, divisor: int, bits: int):
    """(x mod 2^bits) mod divisor."""
    if divisor & (divisor - 1) == 0:
        return x[:exact_log2(divisor)]
    return x[:bits] - _quotient(x, divisor, bits) * divisor


def row_lanes(chains: int, n: int, out: int, tokens: int, out_stride: int) -> int:
    """Rows an MV/MM beat carries, as ``MvUnit`` decides it (its ``pair_ok``): two per chain for
    dense weights whose results (``out``, and ``out_stride`` for several tokens) start on a
    multiple of 2C elements, where the unit has 2C lanes (``lane_count``); else one per chain."""
    lanes = lane_count(chains)
    aligned = out % lanes == 0 and (tokens <= 1 or out_stride % lanes == 0)
    return lanes if lanes > chains and n == SPARSE_M and aligned else chains


def mv_unit_problem(chains: int, groups: int) -> str | None:
    """Why the MV unit cannot be built for a core of ``chains`` chains of ``groups`` DSP groups,
    or None: its lane group decoders' windows must fit the 512-bit buffer word
    (``lane_group_windows``), one decoder a slice of the row group where the compiler cuts the
    tiles in decoder slices (``weight_image.decoder_slice_lanes``).  Any chain count is built: row
    groups divide by C (``reciprocal``), and an output beat of C results is written over
    ``out_words`` GLOBAL words."""
    lanes = decoder_slice_lanes(chains, 2 * groups, 8 * BEAT_BYTES)
    try:
        lane_group_windows(2 * groups, lanes, 8 * BEAT_BYTES)
    except ValueError as e:
        return str(e)
    if lanes == 1 < chains:  # the image's one-lane sub-tiles keep the plain order, which no decoder reads
        return f"{chains} chains of {2 * groups} DSPs: an odd chain count whose row group exceeds the weight word"
    return None


def sub_tile_cycles(chains: int, groups: int) -> int:
    """Cycles the MV unit spends on an instruction's decoder slices before it checks it: where the
    tile is cut in S > 1 slices, one to size the two sub-tiles (with and without a row of the
    tile's last group; each lies in its slice's bank, at a constant place); none for one slice."""
    return 1 if _decoder_slices(chains, groups) > 1 else 0


def weight_readers(chains: int, groups: int) -> int:
    """WEIGHT read ports the MV unit takes: one per lane group decoder (one a decoder slice), the
    high lanes' too where it has 2C lanes (``LinearEngine``)."""
    return _decoder_slices(chains, groups) * (2 if lane_count(chains) > chains else 1)


def _decoder_slices(chains: int, groups: int) -> int:
    """Decoder slices of a row group (``weight_image.decoder_slice_lanes``), as ``LinearEngine``
    builds them from the buffer word."""
    return chains // decoder_slice_lanes(chains, 2 * groups, 8 * BEAT_BYTES)


def act_readers(chains: int, groups: int, mm: bool = True) -> int:
    """ACT read ports the MV unit takes: one per DSP group for token t, and as many for token
    t + 1 where it runs two-token passes (it has 2C lanes and its chains MM's mode: ``mm``,
    ``config.mm_token_pairs``)."""
    return 2 * groups if lane_count(chains) > chains and mm else groups


def token_pairs(chains: int, groups: int, n: int, k: int, rows: int, out: int, tokens: int, out_stride: int,
                mm: bool = True) -> bool:
    """Whether an MV/MM runs its tokens two a pass, as ``MvUnit`` decides it (its ``two_ok``):
    where the unit has 2C lanes and its chains MM's mode (``mm``), the rows do not pair
    (``row_lanes``), there are two tokens or more, a row takes at least as many beats as both
    tokens' results of a beat take GLOBAL words (k N / 16 >= 2 out_words(C) D), and token t + 1's
    results do not start inside token t's (``out_stride`` 0 or at least ``rows``)."""
    return (mm and lane_count(chains) > chains and row_lanes(chains, n, out, tokens, out_stride) == chains
            and tokens >= 2 and k * n // SPARSE_M >= 2 * out_words(chains) * 2 * groups
            and (out_stride == 0 or out_stride >= rows))


_W = EVAL_BITS + 8  # geometry arithmetic


class MvUnit(wiring.Component):
    """``chains`` x ``groups`` DSP groups (in ``cores`` MPEs in lock step: ``LinearEngine``'s
    cores); the buffers' sizes in bytes bound the addresses."""

    def __init__(self, chains: int, groups: int, weight_bytes: int, act_bytes: int, global_bytes: int,
                 max_k: int = 4096, mm: bool = True, cores: int = 1):
        problem = mv_unit_problem(chains, groups)
        if problem:
            raise ValueError(f"MvUnit: {problem}")
        self.chains, self.groups, self.d, self.lanes = chains, groups, 2 * groups, lane_count(chains)
        self.out_words = max(out_words(self.lanes), out_words(chains))
        self.mm = mm  # the chains' MM mode: two tokens a pass where rows cannot pair (else one)
        self.act_readers = act_readers(chains, groups, mm)
        self.weight_bytes, self.act_bytes, self.global_bytes, self.max_k = weight_bytes, act_bytes, global_bytes, max_k
        # the decoders' address space: the buffer's words to a power of two (its halves need not be
        # one: half_offset)
        wdepth = 1 << ceil_log2(weight_bytes // BEAT_BYTES)
        self.engine = LinearEngine(chains, groups, 8 * BEAT_BYTES, wdepth, max_k, own_buffers=False,
                                   pairs=self.lanes > chains, requantise=False, mm=mm, cores=cores)
        self.slices, self.slice_lanes = self.engine.slices, self.engine.slice_lanes
        self.weight_readers = nw = weight_readers(chains, groups)
        assert nw == len(self.engine.decoders)
        wa = ceil_log2(weight_bytes // BEAT_BYTES)
        super().__init__({
            "issue": In(stream.Signature(ISSUE_LAYOUT)),
            "done": Out(1), "fault": Out(ErrorCode),
            "w_rd_en": Out(nw), "w_rd_addr": Out(data.ArrayLayout(unsigned(wa), nw)),
            "w_rd_data": In(data.ArrayLayout(unsigned(8 * BEAT_BYTES), nw)),
            "a_rd_en": Out(self.act_readers), "a_rd_addr": Out(data.ArrayLayout(unsigned(32), self.act_readers)),
            "a_rd_data": In(data.ArrayLayout(unsigned(8 * BEAT_BYTES), self.act_readers)),
            "g_wr_valid": Out(1), "g_wr": Out(write_request_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        C, G, D, L = self.chains, self.groups, self.d, self.lanes
        m.submodules.engine = eng = self.engine
        layout = ISSUED_LAYOUTS[Opcode.MV]
        ins = Signal(layout)
        opcode = Signal(5)

        # ---- the tile's geometry (compiler/weight_image.py's tile_sections, per chain)
        k, rows = ins.k, ins.rows
        n_log2 = Signal(3)  # log2 N: 1..4
        m.d.comb += n_log2.eq(ins.pattern.as_value() + 1)
        bits = Signal(4)
        zero_bits = Signal(4)  # a zero point's field in the lane-interleaved image (zero_field_bits)
        with m.Switch(ins.width):
            for w in WeightWidth:
                with m.Case(w):
                    m.d.comb += [bits.eq(w.bits), zero_bits.eq(zero_field_bits(w.bits, self.slice_lanes))]
        kept = Signal(_W)
        m.d.comb += kept.eq((k << n_log2) >> 4)
        pos_bits = Signal(5)
        with m.Switch(ins.pattern):
            for p in SparsePattern:
                with m.Case(p):
                    m.d.comb += pos_bits.eq(position_bits_per_block(p.n))
        g_log2 = Signal(range(16))  # log2(group_size)
        g_pow2 = Signal()
        m.d.comb += g_pow2.eq((ins.group_size & (ins.group_size - 1)) == 0)
        for i in range(4, 11):
            with m.If(ins.group_size == 1 << i):
                m.d.comb += g_log2.eq(i)
        groups = Signal(_W)
        m.d.comb += groups.eq(k >> g_log2)
        interleaved = Signal()  # quant groups span whole beats: the lane-interleaved image the decoders read
        m.d.comb += interleaved.eq(((ins.group_size << n_log2) >> 4) >= D)
        per_row = {"code": Signal(_W, name="code_per_row"), "pos": Signal(_W, name="pos_per_row"),
                   "scale": Signal(_W, name="scale_per_row"), "zero": Signal(_W, name="zero_per_row")}
        m.d.comb += [per_row["code"].eq(kept * bits), per_row["pos"].eq((k >> 4) * pos_bits),
                     per_row["scale"].eq(groups * SCALE_BITS),
                     per_row["zero"].eq(groups * Mux(interleaved, zero_bits, bits))]
        section = {s: Signal(_W + 24, name=f"{s}_bytes") for s in per_row}  # registered: rows * per_row / 8
        start = {"code": 0, "pos": section["code"], "scale": section["code"] + section["pos"],
                 "zero": section["code"] + section["pos"] + section["scale"]}
        total = section["code"] + section["pos"] + section["scale"] + section["zero"]
        plain_bytes = (total + AXI_BEAT - 1) >> exact_log2(AXI_BEAT) << exact_log2(AXI_BEAT)
        # decoder slices (weight_image's: S > 1 where a row group's codes exceed a word): sub-tile
        # s holds lanes s Ls .. s Ls + Ls - 1 of every row group, and the first q slices (those with
        # a row in the tile's last group, padded to a whole group: Ls is a power of two) take one
        # group more than the others; their sections, and each sub-tile in its slice's bank of the
        # weight buffer, at weight + s bank (weight_image's weight banks)
        S, Ls = self.slices, self.slice_lanes
        full_groups = Signal(17)  # registered in SECTIONS: rows // C
        last_part = Signal(range(C + 1))  # rows in the tile's last, short group (0: none)
        q = Signal(range(S + 1))  # slices with a row in it
        if S > 1:  # Ls a power of two
            m.d.comb += [last_part.eq(rows - full_groups * C), q.eq((last_part + Ls - 1) >> exact_log2(Ls))]
        sub = {c: {x: Signal(_W + 24, name=f"{x}_bytes_{c}") for x in per_row} for c in ("more", "fewer")}
        sub_total = {c: sum(sub[c].values()) for c in sub}
        bank = weight_bank_bytes(self.weight_bytes // 2, S)

        # ---- the token in flight (and token + 1 in a two-token pass): its activation row and its
        # results' first element
        token = Signal(signed(EVAL_BITS))
        act_t, out_t = Signal(signed(EVAL_BITS)), Signal(signed(EVAL_BITS))
        act_t1 = act_t + ins.act_stride
        last_act, last_out = Signal(signed(EVAL_BITS + 26)), Signal(signed(EVAL_BITS + 26))  # the last token's

        # ---- two rows per chain (L lanes) or one (C lanes)
        several = ins.tokens > 1
        pair = Signal()  # registered in SECTIONS, for the whole instruction (the rule of row_lanes)
        out_limit = self.global_bytes // 4  # GLOBAL's INT32 elements
        out_bits = out_limit.bit_length()  # remainders: only results below the buffer's end matter
        if L > C:  # lane_count (C lanes only: the engine's pairs=False, not built today)
            pair_ok = ((ins.pattern == SparsePattern.DENSE) & (_remainder(ins.out, L, out_bits) == 0)
                       & (~several | (_remainder(ins.out_stride, L, out_bits) == 0)))
        else:
            pair_ok = 0
        # ---- or two tokens a pass, one row per chain (the rule of token_pairs)
        two = Signal()  # registered in SECTIONS, for the whole instruction
        two_pass = Signal()  # this pass takes tokens token and token + 1
        if L > C and self.mm:  # (the writer puts both tokens' words out before the next output beat)
            two_ok = (~pair_ok & several & (kept >= 2 * out_words(C) * D)
                      & ((ins.out_stride == 0) | (ins.out_stride >= rows)))
        else:
            two_ok = 0

        # ---- the engine's settings
        e, e1 = Signal(signed(8)), Signal(signed(8))  # the exponents of token and token + 1
        shift, shift1 = Signal(signed(10)), Signal(signed(10))
        m.d.comb += [shift.eq(ins.scale_exp - e - ins.out_frac), shift1.eq(ins.scale_exp - e1 - ins.out_frac)]
        # the decoders' row groups of C rows (the image's lane interleave): the low lanes' decoder
        # takes every group, or the even ones where rows pair; the high lanes' the odd ones
        row_groups = Signal(17)  # registered in SECTIONS: ceil(rows / C), rows < 2^16 (or UNSUPPORTED)
        last_rows = Signal(range(C + 1))  # rows of the tile's last group
        m.d.comb += last_rows.eq(rows - (row_groups - 1) * C)
        for i in range(len(eng.decoders)):
            geo = eng.geometry[i]
            side, sl = divmod(i, S)  # the low or the high lanes' decoder of slice sl
            if S == 1:  # the tile is the one sub-tile
                sub_at, sub_start, sub_groups, sub_last = 0, start, row_groups, last_rows
            else:
                more = Signal(name=f"slice{sl}_side{side}_more")  # the slice has a row in the last group
                m.d.comb += more.eq(sl < q)
                sec = {x: Mux(more, sub["more"][x], sub["fewer"][x]) for x in per_row}
                sub_at, sub_start = sl * bank, {"code": 0, "pos": sec["code"], "scale": sec["code"] + sec["pos"],
                                                 "zero": sec["code"] + sec["pos"] + sec["scale"]}
                sub_groups = full_groups + more
                sub_last = Mux(more & (last_part < (sl + 1) * Ls), last_part - sl * Ls, Ls)
            for x in per_row:
                stride = Mux(pair, per_row[x] * 2 * Ls, per_row[x] * Ls) if L > C else per_row[x] * Ls
                m.d.comb += [getattr(geo, f"{x}_base").eq(8 * (ins.weight + sub_at + sub_start[x])
                                                          + per_row[x] * (side * Ls)),
                             getattr(geo, f"{x}_stride").eq(stride)]
            if side == 0:
                groups_i = Mux(pair, (sub_groups + 1) >> 1, sub_groups)
                last_i = Mux(~pair | sub_groups[0], sub_last, Ls)
            else:  # the odd groups, where rows pair
                groups_i = Mux(pair, sub_groups >> 1, 0)
                last_i = Mux(sub_groups[0], Ls, sub_last)
            m.d.comb += [geo.groups.eq(Mux(rows > 0, groups_i, 0)), geo.last_lanes.eq(last_i), geo.kept.eq(kept),
                         geo.bits.eq(ins.width), geo.n.eq(ins.pattern), geo.group_log2.eq(g_log2 - 4)]
        m.d.comb += [eng.pair_rows.eq(pair), eng.two_tokens.eq(two_pass),
                     eng.beats_per_group.eq((ins.group_size << n_log2) >> (4 + exact_log2(D)))]

        # ---- buffer ports: the engine's, with activation blocks offset by the row's start
        m.d.comb += [self.w_rd_en.eq(eng.w_rd_en), self.w_rd_addr.eq(eng.w_rd_addr), eng.w_rd_data.eq(self.w_rd_data)]
        lane = [Signal(2, name=f"lane{g}") for g in range(G)]
        exp_read = Signal()
        exp_addr = Signal(signed(EVAL_BITS + 4))
        exp_lane = Signal(6)
        for g in range(G):
            block = (act_t >> 4) + eng.a_rd_addr[g]  # act_t is a multiple of 16 (checked)
            m.d.comb += [self.a_rd_en[g].eq(eng.a_rd_en[g]), self.a_rd_addr[g].eq(block >> 2)]
            m.d.sync += lane[g].eq(block[:2])
            m.d.comb += eng.a_rd_data[g].eq(self.a_rd_data[g].word_select(lane[g], 8 * SPARSE_M))
            if L > C and self.mm:  # token + 1's block at the same offset in its row (act_stride: a multiple of 16)
                lane1 = Signal(2, name=f"lane{g}_token1")
                block1 = (act_t1 >> 4) + eng.a_rd_addr[g]
                m.d.comb += [self.a_rd_en[G + g].eq(eng.a_rd_en[g] & two_pass), self.a_rd_addr[G + g].eq(block1 >> 2)]
                m.d.sync += lane1.eq(block1[:2])
                m.d.comb += eng.a1_rd_data[g].eq(self.a_rd_data[G + g].word_select(lane1, 8 * SPARSE_M))
        with m.If(exp_read):
            m.d.comb += [self.a_rd_en[0].eq(1), self.a_rd_addr[0].eq(exp_addr >> 6)]

        # ---- results into GLOBAL: output beat r holds rows r*L .. r*L + L - 1 (L lanes in use); in
        # a two-token pass token's rows r*C .. r*C + C - 1 (lanes C ..) now, token + 1's (lanes 0 ..
        # C - 1, held in `second`) once token's words are out.  The engine's lanes carry Y (48 bits
        # each); the word written in a cycle is rounded, shifted and saturated on its way out, by
        # one last stage per element of the word (``round_stages``), not one per lane
        out_beats = Signal(_W)
        written = Signal(_W)
        beat_off = Signal(_W)  # written * (rows a beat): the beat's first result after out_t
        Y = ACC_BITS
        src_data = Signal(Y * L)
        src_mask = Signal(L)
        elem = Signal(signed(EVAL_BITS + 2 + _W))
        m.d.comb += [src_data.eq(eng.out.payload.as_value()), src_mask.eq(eng.out_mask), elem.eq(out_t + beat_off)]
        W = self.out_words
        draining = Signal()  # the last beat's other words go out (W > 1: below)
        word_shift = Signal(signed(10))  # the shift of the results written now: token's or token + 1's
        m.d.comb += word_shift.eq(shift)
        if L > C:
            second = Signal(Y * C)
            second_mask = Signal(C)
            second_elem = Signal(signed(EVAL_BITS + 2 + _W))
            second_pending = Signal()  # token + 1's results wait for token's words
            second_go = Signal()  # ... and go out now (their first word)
            m.d.comb += second_go.eq(second_pending & ~draining)
            with m.If(second_go):
                m.d.sync += second_pending.eq(0)
            with m.If(eng.out.valid & two_pass):
                m.d.comb += [src_data.eq(eng.out.payload.as_value()[Y * C:]), src_mask.eq(eng.out_mask[C:])]
                m.d.sync += [second.eq(eng.out.payload.as_value()[:Y * C]), second_mask.eq(eng.out_mask[:C]),
                             second_elem.eq(elem + ins.out_stride), second_pending.eq(1)]
            with m.If(second_go):  # never with an output beat: a row takes 2 out_words(C) beats or more
                m.d.comb += [src_data.eq(second), src_mask.eq(second_mask), elem.eq(second_elem),
                             word_shift.eq(shift1)]
        else:
            second_pending = second_go = 0
        byte = Signal(_W + 2)
        m.d.comb += byte.eq(elem << 2)
        mask = Cat(*[src_mask[j].replicate(4) for j in range(L)])
        m.d.comb += [self.g_wr.addr.eq(byte >> 6), self.g_wr.space.eq(0)]
        words_after = Mux(pair, out_words(L) - 1, out_words(C) - 1)  # the beat's words after its first
        last_write = Signal()  # the pass's last GLOBAL write after its last output beat is now

        def requantised(ys, count: int):  # the last stage of each of `count` results
            stages = []
            for i in range(count):
                m.submodules[f"round{i}"] = stage = RoundShiftSaturate()
                m.d.comb += [stage.y.eq(ys[Y * i:Y * (i + 1)].as_signed()), stage.shift.eq(word_shift)]
                stages.append(stage.out)
            return Cat(*stages)

        if W == 1:  # the beat lies within one word (L divides 16, and so does C)
            lane_off = byte[:6]
            m.d.comb += [self.g_wr.data.eq(requantised(src_data, round_stages(C)) << (lane_off * 8)),
                         self.g_wr.mask.eq(mask << lane_off), last_write.eq(second_go)]
        else:
            # the beat's words: its first now, the others from `rest` in the next cycles (the next beat
            # comes no sooner: a row takes at least as many beats, or UNSUPPORTED; in a two-token pass
            # token + 1's words follow token's, and a row takes twice as many beats, or the tokens run
            # one a pass).  The beat starts at a multiple of C (or 2C), so at a multiple of
            # g = gcd(C, 16) results into its word.
            g = math.gcd(C, BEAT_BYTES // 4)
            E = BEAT_BYTES // 4  # results a word
            spread, spread_mask = Signal(Y * E * W), Signal(BEAT_BYTES * W)
            with m.Switch(elem[:4]):
                for o in range(0, E, g):
                    with m.Case(o):
                        m.d.comb += [spread.eq(src_data << (Y * o)), spread_mask.eq(mask << (4 * o))]
            rest, rest_mask = Signal(Y * E * (W - 1)), Signal(BEAT_BYTES * (W - 1))
            rest_addr = Signal.like(self.g_wr.addr)
            rest_left = Signal(range(W))
            rest_token1 = Signal()  # `rest` holds token + 1's results
            m.d.comb += [draining.eq(rest_left != 0),
                         last_write.eq(Mux(draining, (rest_left == 1) & ~second_pending,
                                           second_go & (words_after == 0)))]
            word = Signal(Y * E)  # the Ys of the word written now
            with m.If(draining):
                m.d.comb += [self.g_wr.addr.eq(rest_addr), word.eq(rest[:Y * E]), self.g_wr.mask.eq(rest_mask[:BEAT_BYTES])]
                if L > C:
                    m.d.comb += word_shift.eq(Mux(rest_token1, shift1, shift))
                m.d.sync += [rest.eq(rest >> Y * E), rest_mask.eq(rest_mask >> BEAT_BYTES),
                             rest_addr.eq(rest_addr + 1), rest_left.eq(rest_left - 1)]
            with m.Else():
                m.d.comb += [word.eq(spread[:Y * E]), self.g_wr.mask.eq(spread_mask[:BEAT_BYTES])]
            m.d.comb += self.g_wr.data.eq(requantised(word, round_stages(C)))
            with m.If(eng.out.valid | second_go):
                m.d.sync += [rest.eq(spread[Y * E:]), rest_mask.eq(spread_mask[BEAT_BYTES:]),
                             rest_addr.eq(self.g_wr.addr + 1), rest_left.eq(words_after), rest_token1.eq(second_go)]

        # results off a multiple of C (registered in SECTIONS): only ``out`` below out_limit matters,
        # and only ``out_stride`` below it where there are several tokens (else ADDRESS stops first)
        off_chains, stride_off_chains = Signal(), Signal()
        unsupported = (((opcode != Opcode.MV.value) & (opcode != Opcode.MM.value)) | ins.accumulate | ~ins.requantise
                       | ~g_pow2 | ~interleaved | (ins.weight[:exact_log2(AXI_BEAT)] != 0)
                       | (k > self.max_k) | (rows >= 1 << 16)
                       | off_chains | (ins.act[:4] != 0)
                       | (several & ((ins.act_stride[:4] != 0) | stride_off_chains)))
        if W > 1:  # a row of fewer beats than an output beat's words would bring the next beat too soon
            unsupported |= kept < (words_after + 1) * D
        bad_tile = (ins.weight < 0) | (ins.weight + plain_bytes > self.weight_bytes)
        if S > 1:  # each sub-tile inside its bank: the largest at weight's place in its half
            largest = Mux(q != 0, sub_total["more"], sub_total["fewer"])
            bad_tile = Mux(interleaved, (ins.weight < 0) | (ins.weight >= self.weight_bytes)
                           | (half_offset(ins.weight, self.weight_bytes // 2)[1] + largest > bank), bad_tile)
        bad_rows = (ins.act < 0) | (last_act + k + 1 > self.act_bytes) | (ins.out < 0) | (last_out + rows > out_limit)
        bad_address = bad_tile | ((ins.tokens > 0) & bad_rows)

        m.d.sync += [self.done.eq(0), eng.start.eq(0)]
        with m.FSM(name="mv"):
            with m.State("IDLE"):
                m.d.comb += self.issue.ready.eq(1)
                with m.If(self.issue.valid):
                    m.d.sync += [ins.eq(self.issue.payload.body[:layout.size]), opcode.eq(self.issue.payload.opcode),
                                 self.fault.eq(ErrorCode.NONE), written.eq(0), beat_off.eq(0), two_pass.eq(0)]
                    if L > C:
                        m.d.sync += second_pending.eq(0)
                    m.next = "SECTIONS"
            with m.State("SECTIONS"):
                # a lane-interleaved tile (compiler/weight_image.py): rows padded to a multiple of
                # C & -C (padded_rows), each section whole words; other formats (UNSUPPORTED) the
                # plain order
                image_rows = Signal(17)  # rows < 2^16 (or UNSUPPORTED), padded: one multiplier a section
                image_bits = {s: Signal(_W + 24, name=f"{s}_image_bits") for s in per_row}
                row_step = C & -C
                m.d.comb += image_rows.eq(Mux(interleaved, (rows + row_step - 1) & ~(row_step - 1), rows))
                for s in per_row:
                    m.d.comb += image_bits[s].eq(image_rows * per_row[s])
                    m.d.sync += section[s].eq(Mux(interleaved,
                                                  ((image_bits[s] + 8 * AXI_BEAT - 1)
                                                   >> exact_log2(8 * AXI_BEAT)) << exact_log2(AXI_BEAT),
                                                  (image_bits[s] + 7) >> 3))
                m.d.sync += [row_groups.eq(_quotient(rows + C - 1, C, 25)),
                             off_chains.eq(_remainder(ins.out, C, out_bits) != 0),
                             stride_off_chains.eq(_remainder(ins.out_stride, C, out_bits) != 0)]
                m.d.sync += [pair.eq(pair_ok), two.eq(two_ok), token.eq(0), act_t.eq(ins.act),
                             out_t.eq(ins.out), last_act.eq(ins.act + (ins.tokens - 1) * ins.act_stride),
                             last_out.eq(ins.out + (ins.tokens - 1) * ins.out_stride)]
                if S > 1:
                    m.d.sync += full_groups.eq(_quotient(rows, C, 25))
                    m.next = "SUB_TILES"
                else:
                    m.next = "CHECK"
            if S > 1:
                with m.State("SUB_TILES"):  # the two sub-tile sizes: whole groups of Ls rows, one more or not
                    for c, extra in (("more", Ls), ("fewer", 0)):
                        sub_rows = (full_groups << exact_log2(Ls)) + extra
                        for x in per_row:
                            m.d.sync += sub[c][x].eq(((sub_rows * per_row[x] + 8 * AXI_BEAT - 1)
                                                      >> exact_log2(8 * AXI_BEAT)) << exact_log2(AXI_BEAT))
                    m.next = "CHECK"
            with m.State("CHECK"):
                # fsim's order: the tile, then the activation row, then the results
                m.d.sync += out_beats.eq(Mux(pair, _quotient(rows + L - 1, L, 25), row_groups) if L > C else row_groups)
                with m.If(bad_address):
                    m.d.sync += self.fault.eq(ErrorCode.ADDRESS)
                    m.next = "IDLE"
                with m.Elif(unsupported):
                    m.d.sync += self.fault.eq(ErrorCode.UNSUPPORTED)
                    m.next = "IDLE"
                with m.Elif(ins.tokens <= 0):  # MM of no tokens: nothing to read or write
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "TOKEN"
            with m.State("TOKEN"):  # the token's exponent, at the end of its activation row
                m.d.comb += [exp_read.eq(1), exp_addr.eq(act_t + k)]
                m.d.sync += [exp_lane.eq(exp_addr[:6]), two_pass.eq(two & (token + 1 < ins.tokens))]
                m.next = "EXPONENT"
            with m.State("EXPONENT"):
                m.d.sync += e.eq(self.a_rd_data[0].word_select(exp_lane, 8))
                m.d.comb += exp_addr.eq(act_t1 + k)
                with m.If(two_pass):  # and token + 1's
                    m.d.comb += exp_read.eq(1)
                    m.d.sync += exp_lane.eq(exp_addr[:6])
                    m.next = "EXPONENT1"
                with m.Else():
                    m.next = "SHIFT"
            with m.State("EXPONENT1"):
                m.d.sync += e1.eq(self.a_rd_data[0].word_select(exp_lane, 8))
                m.next = "SHIFT"
            with m.State("SHIFT"):  # a two-token pass checks both shifts before it writes either
                with m.If((shift < MIN_SHIFT) | (shift > 127) | (two_pass & ((shift1 < MIN_SHIFT) | (shift1 > 127)))):
                    m.d.sync += self.fault.eq(ErrorCode.UNSUPPORTED)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += eng.start.eq(1)
                    m.next = "RUN"
            step = Mux(two_pass, 2, 1)  # the tokens this pass took

            def next_pass():
                with m.If(token + step == ins.tokens):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [token.eq(token + step), act_t.eq(act_t + (ins.act_stride << two_pass)),
                                 out_t.eq(out_t + (ins.out_stride << two_pass)), written.eq(0), beat_off.eq(0)]
                    m.next = "TOKEN"

            with m.State("RUN"):
                m.d.comb += self.g_wr_valid.eq(eng.out.valid | second_go | draining)
                with m.If(eng.out.valid):
                    m.d.sync += [written.eq(written + 1), beat_off.eq(beat_off + (Mux(pair, L, C) if L > C else C))]
                    with m.If(written + 1 == out_beats):
                        with m.If(two_pass | (words_after != 0)):
                            m.next = "FLUSH"
                        with m.Else():
                            next_pass()
            with m.State("FLUSH"):  # the last output beat's other words, token + 1's after token's
                m.d.comb += self.g_wr_valid.eq(1)
                with m.If(last_write):
                    next_pass()
        return m
