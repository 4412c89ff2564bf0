"""The weight decoder: a lane-interleaved tile of the weight image (``compiler/weight_image.py``)
in, the DSP chains' operands out, one beat per cycle.

A tile is four bit-packed sections: codes, positions, scales, zeros.  Its rows come in groups of
``lanes`` (the chain count), each section of a group ordered unit by unit, lane by lane
(``pack_tile(lanes=, d=)``).  ``LaneGroupDecoder`` reads the four with four *bit windows*
(``BitWindowCache``) over the weight buffer, one per section and as wide as one unit of every
lane (the code window half a unit of 8-bit codes where that is wider than half a word: such a
beat takes two cycles, ``split_lanes``), and emits per beat, for each lane of a row group, the D
kept weights ``w8 = code - zero`` with their 4-bit positions in their 16-block (what the chain's sparse MUXes take) and the quant
group's 16-bit scale, and per DSP group the block number (every lane's: the rows share the
format).  Each lane's field sits at an offset that depends only on its lane number and the
format, so the per-lane logic is a choice among the four code widths, not a window of its own.
The image's sections start at whole words and a short last row group is padded to a multiple
of the lanes' largest power-of-two factor, so every window moves in steps of a power of two
(``unit_alignment``), which is what its rotation is built for.

The per-tile numbers (where each section of the decoder's first row group starts, strides
between its groups, how many it takes, the format) come in as a ``GroupGeometry``;
``group_geometry`` computes them from the tile's shape, and the MV unit does the same from the
instruction's fields.

Formats: codes of 2, 3, 4 or 8 bits; N:16 with N in 2, 4, 8, 16; quant groups of a power of two
inputs, at least 16 (``group_log2`` = log2(group / 16)), spanning whole beats.  Reference:
``unpack_tile``, bit for bit.
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from airfoil.compiler.compress import SCALE_BITS
from airfoil.compiler.weight_image import decoder_slice_lanes, unit_alignment, zero_field_bits
from airfoil.config import SPARSE_M, position_bits_per_block

__all__ = ["LaneGroupDecoder", "BitWindowCache", "GroupGeometry", "group_geometry", "engine_geometries",
           "group_beat_layout", "lane_group_windows", "lane_unit_bits", "split_lanes", "beat_cycles", "BITS_CODE",
           "N_CODE", "WINDOW_SLOTS"]

BITS_CODE = {2: 0, 3: 1, 4: 2, 8: 3}  # the 2-bit width field
N_CODE = {2: 0, 4: 1, 8: 2, 16: 3}  # log2(N) - 1
WINDOW_SLOTS = 4  # words a bit window caches: the two it reads and two fetched ahead
BLOCK_BITS = 12  # block number within a row: K up to 65,536


class BitWindowCache(wiring.Component):
    """``width`` bits of a word-addressed memory from bit address ``addr`` on, out of a cache of
    ``WINDOW_SLOTS`` words (slot = word address mod 4; the words in distributed RAM, their tags
    in flip-flops).  It asks for the two words the window
    spans first (``blocking``), then the next two ahead, so a window moving forward through a
    section finds its words already there.  Memory reads take one cycle: a word granted in one
    cycle arrives on ``fill_data`` the next.  ``flush`` forgets every word (the buffer was
    rewritten): a word on its way then is dropped, and nothing is asked for in that cycle.

    ``granule``: a power of two that every ``addr`` is a multiple of (the image's
    ``unit_alignment``); the window then shifts in granules, log2(word_bits / granule) steps of
    the rotation instead of log2(word_bits).  Its low address bits are ignored."""

    def __init__(self, width: int, word_bits: int, depth: int, granule: int = 1):
        assert width <= word_bits
        exact_log2(granule)
        self.width, self.word_bits, self.depth, self.granule = width, word_bits, depth, granule
        self.addr_bits = exact_log2(depth * word_bits)
        super().__init__({
            "addr": In(unsigned(self.addr_bits)),
            "window": Out(width),
            "hit": Out(1),
            "req": Out(1),
            "blocking": Out(1),
            "req_word": Out(unsigned(exact_log2(depth))),
            "grant": In(1),
            "flush": In(1),
            "fill": In(1),
            "fill_data": In(word_bits),
        })

    def elaborate(self, platform):
        m = Module()
        wbits = exact_log2(self.word_bits)
        word_w = exact_log2(self.depth)
        tag = Array(Signal(word_w, name=f"tag{i}") for i in range(WINDOW_SLOTS))
        valid = Array(Signal(name=f"valid{i}") for i in range(WINDOW_SLOTS))
        pending = Array(Signal(name=f"pending{i}") for i in range(WINDOW_SLOTS))
        # the cached words, in distributed RAM read without a clock: the window's first word whole,
        # and of its second only the first ``width`` bits it can reach (as flip-flops behind two
        # 4-way multiplexers, a U280 slice decoder's four windows took 5,037 LUT, now 2,495 + 1,392
        # LUTRAM: docs/accelerator.md, the device fit)
        m.submodules.first_words = first = Memory(shape=unsigned(self.word_bits), depth=WINDOW_SLOTS, init=[])
        m.submodules.second_words = second = Memory(shape=unsigned(self.width), depth=WINDOW_SLOTS, init=[])
        first_in, second_in = first.write_port(), second.write_port()
        first_out, second_out = first.read_port(domain="comb"), second.read_port(domain="comb")
        w = Signal(word_w)
        m.d.comb += w.eq(self.addr[wbits:])
        want = [Signal(word_w, name=f"want{j}") for j in range(WINDOW_SLOTS)]
        have = [Signal(name=f"have{j}") for j in range(WINDOW_SLOTS)]
        ready = [Signal(name=f"ready{j}") for j in range(WINDOW_SLOTS)]
        for j in range(WINDOW_SLOTS):
            slot = want[j][:2]
            m.d.comb += [
                want[j].eq(w + j),
                ready[j].eq((tag[slot] == want[j]) & valid[slot]),
                have[j].eq((tag[slot] == want[j]) & (valid[slot] | pending[slot])),
            ]
        m.d.comb += [
            self.hit.eq(ready[0] & ready[1]),
            first_out.addr.eq(want[0][:2]), second_out.addr.eq(want[1][:2]),
            self.window.eq(Cat(first_out.data, second_out.data).bit_select(
                Cat(Const(0, exact_log2(self.granule)), self.addr[exact_log2(self.granule):wbits]), self.width)),
        ]
        # the first word not there or on its way
        with m.If(self.flush):
            pass
        with m.Elif(~have[0]):
            m.d.comb += [self.req.eq(1), self.blocking.eq(1), self.req_word.eq(want[0])]
        with m.Elif(~have[1]):
            m.d.comb += [self.req.eq(1), self.blocking.eq(1), self.req_word.eq(want[1])]
        for j in range(2, WINDOW_SLOTS):
            with m.Elif(~have[j]):
                m.d.comb += [self.req.eq(1), self.req_word.eq(want[j])]
        fill_slot = Signal(2)
        dropped = Signal()  # the word arriving now was asked for before a flush
        m.d.sync += dropped.eq(self.flush)
        m.d.comb += [first_in.addr.eq(fill_slot), first_in.data.eq(self.fill_data),
                     second_in.addr.eq(fill_slot), second_in.data.eq(self.fill_data[:self.width])]
        with m.If(self.fill & ~dropped):
            m.d.comb += [first_in.en.eq(1), second_in.en.eq(1)]
            m.d.sync += [valid[fill_slot].eq(1), pending[fill_slot].eq(0)]
        with m.If(self.grant):  # after the fill: a slot granted again in the fill's cycle stays invalid
            slot = self.req_word[:2]
            m.d.sync += [tag[slot].eq(self.req_word), valid[slot].eq(0), pending[slot].eq(1),
                         fill_slot.eq(slot)]
        with m.If(self.flush):
            m.d.sync += [valid[i].eq(0) for i in range(WINDOW_SLOTS)]
            m.d.sync += [pending[i].eq(0) for i in range(WINDOW_SLOTS)]
        return m


def _times_bits(m: Module, value, bits_code, width: int, name: str) -> Signal:
    """value * b for the code width b in {2, 3, 4, 8} (shifts and one add)."""
    out = Signal(width, name=name)
    with m.Switch(bits_code):
        for b, c in BITS_CODE.items():
            with m.Case(c):
                m.d.comb += out.eq(value * b)
    return out


def _serve_windows(m: Module, win: dict, n_code, dec) -> None:
    """The decoder's one read port among its bit windows: blocking requests first, then fetches
    ahead, in window order.  Dense tiles (N = 16) have no positions: their position window asks
    for nothing, or its wandering through the next section's words would take the port at every
    row step.  ``dec``: the decoder's ``mem_*`` ports and ``start`` (which flushes the windows)."""
    readers = list(win.values())
    asks = [r.req & (n_code != N_CODE[16]) if name == "pos" else r.req for name, r in win.items()]
    grant = [Signal(name=f"grant{i}") for i in range(len(readers))]
    grants, taken = [Const(0, 1)] * len(readers), Const(0, 1)
    for blocking in (True, False):
        for i, r in enumerate(readers):
            want = asks[i] & r.blocking if blocking else asks[i]
            grants[i] = grants[i] | (want & ~taken)
            taken = taken | want
    m.d.comb += [g.eq(e) for g, e in zip(grant, grants)]
    filled = Signal(len(readers))
    m.d.sync += filled.eq(Cat(*grant))
    for i, r in enumerate(readers):
        m.d.comb += [r.grant.eq(grant[i]), r.fill.eq(filled[i]), r.fill_data.eq(dec.mem_data),
                     r.flush.eq(dec.start)]
        with m.If(grant[i]):
            m.d.comb += [dec.mem_addr.eq(r.req_word), dec.mem_en.eq(1)]


def _set_bit_position(mask, rank) -> Value:
    """For a 16-bit mask with 8 set bits: the position of its ``rank``-th set bit (rank 0..7).
    Bit i is the one where it is set and ``rank`` bits are set below it (a prefix popcount); a set
    bit has at most 7 below it, so 3 bits of the count decide, and exactly one i matches."""
    before = [sum((mask[j] for j in range(i)), start=Const(0, 5)) for i in range(SPARSE_M)]
    acc = Const(0, 4)
    for i in range(1, SPARSE_M):  # bit 0 contributes position 0: nothing to OR in
        acc = acc | Mux(mask[i] & (before[i][:3] == rank), i, 0)
    return acc


# ------------------------------------------------------------------------------ the decoder
def GroupGeometry(addr_bits: int, lanes: int) -> data.StructLayout:  # noqa: N802 (a layout, named like a type)
    """Where the sections of a ``LaneGroupDecoder``'s first row group start and how far apart its
    groups are, in bits of the weight buffer, how many groups it takes and the rows of its last
    one, and the tile's format."""
    a = unsigned(addr_bits)
    return data.StructLayout({
        "code_base": a, "code_stride": a,
        "pos_base": a, "pos_stride": a,
        "scale_base": a, "scale_stride": a,
        "zero_base": a, "zero_stride": a,
        "groups": unsigned(16),  # row groups this decoder emits
        "last_lanes": range(lanes + 1),  # rows of its last group (the others: lanes)
        "kept": unsigned(16),  # kept weights per row (a multiple of D)
        "bits": unsigned(2),  # BITS_CODE
        "n": unsigned(2),  # N_CODE
        "group_log2": unsigned(4),  # log2(group_size / 16)
    })


def group_geometry(base_byte: int, tile_rows: int, k: int, bits: int, n: int, group_size: int, lanes: int,
                   first_group: int = 0, group_step: int = 1) -> dict:
    """The ``GroupGeometry`` of row groups ``first_group, first_group + group_step, ...`` of a
    lane-interleaved tile (``pack_tile(lanes=...)``) stored at ``base_byte``."""
    from airfoil.compiler.weight_image import tile_sections

    if bits not in BITS_CODE or n not in N_CODE:
        raise ValueError(f"weight format {bits}-bit {n}:16 has no decoder mode")
    if group_size < SPARSE_M or group_size & (group_size - 1):
        raise ValueError(f"group_size {group_size}: the decoder takes powers of two from 16")
    n_groups = -(-tile_rows // lanes)
    mine = list(range(first_group, n_groups, group_step))
    s_codes, s_pos, s_scale, _ = tile_sections(tile_rows, k, bits, n, group_size, lanes)
    kept, groups = k * n // SPARSE_M, k // group_size
    per_row = {"code": kept * bits, "pos": (k // SPARSE_M) * position_bits_per_block(n),
               "scale": groups * SCALE_BITS, "zero": groups * zero_field_bits(bits, lanes)}
    start = {"code": 0, "pos": s_codes, "scale": s_codes + s_pos, "zero": s_codes + s_pos + s_scale}
    g = {f"{s}_base": 8 * (base_byte + start[s]) + first_group * lanes * per_row[s] for s in per_row}
    g.update({f"{s}_stride": group_step * lanes * per_row[s] for s in per_row})
    g.update(groups=len(mine), last_lanes=min(lanes, tile_rows - mine[-1] * lanes) if mine else 1,
             kept=kept, bits=BITS_CODE[bits], n=N_CODE[n], group_log2=exact_log2(group_size // SPARSE_M))
    return g


def engine_geometries(base_byte: int, tile_rows: int, k: int, bits: int, n: int, group_size: int, chains: int,
                      pair: bool, d: int = 0, word_bits: int = 512) -> list[dict]:
    """The ``LinearEngine``'s decoders' geometries, as the MV unit sets them: the low lanes'
    decoder takes every row group of ``chains`` rows, or the even ones where rows ``pair``; the
    high lanes' the odd ones, or none.  With the beat's ``d``, where the tile is cut in decoder
    slices (``weight_image.decoder_slice_lanes``), each side has a decoder per slice, each on its
    sub-tile: the low lanes' slices, then the high lanes'."""
    from airfoil.compiler.weight_image import decoder_slice_lanes, slice_row_counts, tile_bytes

    step = 2 if pair else 1
    lanes = decoder_slice_lanes(chains, d, word_bits) if d else chains
    sides: list[list[dict]] = [[], []]
    at = base_byte
    for rows in slice_row_counts(tile_rows, chains, lanes):
        high = 1 if pair else -(-rows // lanes)  # past the last group: no groups
        for side, first in enumerate((0, high)):
            sides[side].append(group_geometry(at, rows, k, bits, n, group_size, lanes, first, step))
        at += tile_bytes(rows, k, bits, n, group_size, lanes)
    return sides[0] + sides[1]


def group_beat_layout(d: int, lanes: int) -> data.StructLayout:
    return data.StructLayout({
        "weight": data.ArrayLayout(data.ArrayLayout(signed(8), d), lanes),  # per lane: w8 = code - zero
        "index": data.ArrayLayout(data.ArrayLayout(unsigned(4), d), lanes),  # per lane: positions in the 16-block
        "block": data.ArrayLayout(unsigned(BLOCK_BITS), d // 2),  # per DSP group: its 16-block (every lane's)
        "scale": data.ArrayLayout(unsigned(SCALE_BITS), lanes),  # per lane: the beat's quant group's S
        "lanes": unsigned(lanes),  # the lanes with a row in this group
        "row": unsigned(16),  # which of the decoder's row groups (0, 1, ...)
        "first": unsigned(1),
        "last": unsigned(1),
    })


def lane_unit_bits(section: str, bits: int, n: int, d: int, lanes: int) -> int:
    """Bits of one lane's unit in a section of a tile interleaved in ``lanes`` lanes
    (``compiler/weight_image.py``)."""
    return {"code": d * bits, "pos": _pos_lane_bits(n, d) if n < SPARSE_M else 0, "scale": SCALE_BITS,
            "zero": zero_field_bits(bits, lanes)}[section]


def _pos_lane_bits(n: int, d: int) -> int:
    """Bits of one lane's unit in a lane-interleaved position section (weight_image's
    ``position_unit_blocks`` blocks of ``position_bits_per_block`` bits)."""
    from airfoil.compiler.weight_image import position_unit_blocks

    return position_unit_blocks(n, d) * position_bits_per_block(n)


def split_lanes(lanes: int, d: int, word_bits: int) -> int:
    """The lanes of a row group whose 8-bit codes a ``LaneGroupDecoder`` takes in a beat's first
    cycle, the others' in a second; 0 where the whole unit comes at once.  The code window is at
    most half a buffer word wide (a lane's codes more where the lanes are odd): that reads codes
    of up to 4 bits a beat a cycle, while a window a whole word wide for 8-bit codes took some
    2,800 LUT of a U280 slice decoder's 9,600.  No projected plan has 8-bit layers, and decode
    reads each 8-bit weight's byte from HBM more slowly than even the half-rate beats take it."""
    return lanes // 2 if lanes >= 2 and lanes * d * 8 > word_bits // 2 else 0


def beat_cycles(bits: int, chains: int, d: int, word_bits: int) -> int:
    """Cycles the weight decoders of ``chains`` chains of ``d`` kept weights a beat (in decoder
    slices where a row group's 8-bit codes are wider than a word) take a beat of ``bits``-bit
    codes at best."""
    return 2 if bits == 8 and split_lanes(decoder_slice_lanes(chains, d, word_bits), d, word_bits) else 1


def lane_group_windows(d: int, lanes: int, word_bits: int, dense_only: bool = False) -> dict[str, int]:
    """The bit windows' widths of a ``LaneGroupDecoder`` (one unit of every lane, at the widest
    format, or its half of 8-bit codes: ``split_lanes``); ValueError where one is wider than the
    buffer word it reads."""
    half = split_lanes(lanes, d, word_bits)
    widths = {"code": (lanes - half) * 8 * d, "pos": lanes * max(_pos_lane_bits(n, d) for n in (2, 4, 8)),
              "scale": lanes * SCALE_BITS, "zero": lanes * max(zero_field_bits(b, lanes) for b in BITS_CODE)}
    if dense_only:
        del widths["pos"]
    too_wide = {s: w for s, w in widths.items() if w > word_bits}
    if too_wide:
        raise ValueError(f"a row group of {lanes} lanes of d = {d} needs bit windows {too_wide} wider than the "
                         f"{word_bits}-bit buffer word")
    return widths


class LaneGroupDecoder(wiring.Component):
    """One weight decoder for ``lanes`` row lanes: a lane-interleaved tile (``pack_tile(lanes,
    d)``) in, per beat ``d`` kept weights for each lane of a row group out, through one read port
    of a weight buffer of ``depth`` words of ``word_bits``.

    One bit window per section, as wide as a unit of every lane (``lanes`` x ``d`` 8-bit codes at
    most), moves forward through a row group unit by unit; lane j's field sits at j times the
    unit's bits, which depend only on the format.  So the per-lane logic is a choice among the
    four code widths (and the index and zero extraction), not a bit window of its own: that is
    what lets the decoder scale with the lane count (``docs/accelerator.md``, the device fit).

    The geometry names the decoder's row groups (``group_geometry``): every group, or every
    other one (two decoders taking two rows a chain: the low and the high lanes).  Each quant
    group must span whole beats (``group * N / 16 >= d``), as the MV unit requires.
    ``dense_only``: no position window (the high lanes' decoder).

    Where a unit of 8-bit codes is wider than half a word (``split_lanes``: a U280 slice, 4 x 16
    codes), such a beat takes two cycles: the first puts the low lanes' operands in the output
    register (not yet valid), the second the high lanes' and the rest, the code window half a
    unit on."""

    def __init__(self, d: int, lanes: int, word_bits: int = 512, depth: int = 1024, dense_only: bool = False):
        exact_log2(d)
        assert d >= 2 and lanes >= 1
        self.d, self.lanes, self.word_bits, self.depth, self.dense_only = d, lanes, word_bits, depth, dense_only
        self.widths = lane_group_windows(d, lanes, word_bits, dense_only)
        self.split = split_lanes(lanes, d, word_bits)
        self.alignment = unit_alignment(lanes, d)
        self.addr_bits = exact_log2(depth * word_bits)
        self.geometry_layout = GroupGeometry(self.addr_bits, lanes)
        self.beat_layout = group_beat_layout(d, lanes)
        super().__init__({
            "start": In(1),
            "geometry": In(self.geometry_layout),
            "busy": Out(1),
            "beats": Out(stream.Signature(self.beat_layout)),
            "mem_addr": Out(unsigned(exact_log2(depth))),
            "mem_en": Out(1),
            "mem_data": In(word_bits),
        })

    def elaborate(self, platform):
        m = Module()
        d, L, ab = self.d, self.lanes, self.addr_bits
        geo = Signal(self.geometry_layout)
        win = {}
        for name, width in self.widths.items():
            win[name] = m.submodules[f"{name}_window"] = BitWindowCache(width, self.word_bits, self.depth,
                                                                        self.alignment[name])
        _serve_windows(m, win, geo.n, self)

        # ---- where the beat is: the row group, the kept index of its first weight, each section's
        # group base and the running address of its current unit
        group = Signal(16)
        # the kept index of the beat's first weight, a multiple of d: kept as its beat count, so
        # that synthesis sees its low bits constant (each weight's index and block then follow
        # from s, not from an adder)
        beat_in_row = Signal(16 - exact_log2(d))
        kbase = Signal(16)
        m.d.comb += kbase.eq(Cat(Const(0, exact_log2(d)), beat_in_row))

        def kept_index(s: int) -> Value:  # the beat's weight s: kbase + s with no adder
            return Cat(Const(s, exact_log2(d)), beat_in_row)
        gbase = {s: Signal(ab, name=f"{s}_group_base") for s in win}
        addr = {s: Signal(ab, name=f"{s}_addr") for s in win}
        for s in win:
            m.d.comb += win[s].addr.eq(addr[s])
        in_group = Signal(range(L + 1))  # rows of this group
        last_group = Signal()
        m.d.comb += [last_group.eq(group + 1 == geo.groups), in_group.eq(Mux(last_group, geo.last_lanes, L))]
        # one unit of every lane of the group: the windows' steps.  The image pads a short last
        # group to a multiple of L & -L lanes (weight_image.padded_rows), which keeps its units at
        # the full groups' alignment
        step = L & -L
        image_lanes = Signal(range(L + step))
        m.d.comb += image_lanes.eq((in_group + step - 1) & ~(step - 1))
        code_unit = _times_bits(m, image_lanes * d, geo.bits, ab, "code_unit")
        # a zero point's field (weight_image.zero_field_bits: a nibble, a byte at 8-bit codes), one
        # case per field width rather than per code width, so at L > 1 the choice is two-way
        zero_unit = Signal(ab)
        zero_cases: dict[int, list[int]] = {}
        for b, c in BITS_CODE.items():
            zero_cases.setdefault(zero_field_bits(b, L), []).append(c)
        with m.Switch(geo.bits):
            for z, cases in zero_cases.items():
                with m.Case(*cases):
                    m.d.comb += zero_unit.eq(image_lanes * z)
        scale_unit = image_lanes * SCALE_BITS
        pos_unit = Signal(ab)
        with m.Switch(geo.n):
            for n, c in N_CODE.items():
                if n < SPARSE_M:
                    with m.Case(c):
                        m.d.comb += pos_unit.eq(image_lanes * _pos_lane_bits(n, d))
        # a unit of positions covers max(d, n) kept weights; a quant group 2^(group_log2) N
        pos_span_mask = Signal(16)
        with m.Switch(geo.n):
            for n, c in N_CODE.items():
                with m.Case(c):
                    m.d.comb += pos_span_mask.eq(max(d, n) - 1)
        quant_mask = Signal(16)
        n_log2 = Signal(3)
        m.d.comb += [n_log2.eq(geo.n + 1), quant_mask.eq((1 << (geo.group_log2 + n_log2)) - 1)]

        # ---- the beat, from the windows
        beat = Signal(self.beat_layout)
        cw, zw, sw = (win[s].window for s in ("code", "zero", "scale"))
        pw = win["pos"].window if "pos" in win else None
        for g in range(d // 2):
            block = Signal(16, name=f"block{g}")
            self._block_of(m, geo, block, kept_index(2 * g))
            m.d.comb += beat.block[g].eq(block)
        for j in range(L):
            m.d.comb += [beat.scale[j].eq(sw[j * SCALE_BITS:(j + 1) * SCALE_BITS]), beat.lanes[j].eq(j < in_group)]
            zero = Signal(8, name=f"zero_lane{j}")
            codes = [Signal(8, name=f"code_lane{j}_{s}") for s in range(d)]
            with m.Switch(geo.bits):
                for z, cases in zero_cases.items():
                    with m.Case(*cases):
                        m.d.comb += zero.eq(zw[j * z:(j + 1) * z])
            with m.Switch(geo.bits):
                for b, c in BITS_CODE.items():
                    with m.Case(c):
                        # a split beat's high lanes: their 8-bit codes from the window's start, half a unit on
                        at = (j - self.split) * d if b == 8 and self.split and j >= self.split else j * d
                        m.d.comb += [codes[s].eq(cw[(at + s) * b:(at + s + 1) * b]) for s in range(d)]
            for s in range(d):
                m.d.comb += beat.weight[j][s].eq(codes[s] - zero)
                self._index(m, geo, pw, beat.index[j][s], kept_index(s), j, s)
        last_in_row = Signal()
        m.d.comb += [last_in_row.eq(kbase + d == geo.kept), beat.row.eq(group), beat.first.eq(kbase == 0),
                     beat.last.eq(last_in_row)]

        # ---- issue: every window hit and the output register free
        running = Signal()
        hit = win["code"].hit & win["zero"].hit & win["scale"].hit
        if pw is not None:
            hit &= win["pos"].hit | (geo.n == N_CODE[16])
        free = ~self.beats.valid | self.beats.ready
        nxt = kbase + d
        with m.If(self.beats.valid & self.beats.ready):
            m.d.sync += self.beats.valid.eq(0)
        split_beat = Signal()  # 8-bit codes wider than the code window: a beat in two cycles
        second_half = Signal()  # its low lanes' operands are in the output register
        half_step = self.split * d * 8
        if self.split:
            m.d.comb += split_beat.eq(geo.bits == BITS_CODE[8])
            with m.If(running & hit & free & split_beat & ~second_half):
                m.d.sync += [self.beats.payload.weight[j].eq(beat.weight[j]) for j in range(self.split)]
                m.d.sync += [second_half.eq(1), addr["code"].eq(addr["code"] + half_step)]
        with m.If(running & hit & free & (~split_beat | second_half)):
            m.d.sync += [self.beats.payload.eq(beat), self.beats.valid.eq(1), beat_in_row.eq(beat_in_row + 1),
                         second_half.eq(0), addr["code"].eq(addr["code"] + code_unit - Mux(split_beat, half_step, 0))]
            with m.If(split_beat):  # the low lanes' operands from the first cycle
                m.d.sync += [self.beats.payload.weight[j].eq(self.beats.payload.weight[j])
                             for j in range(self.split)]
            if pw is not None:
                with m.If((nxt & pos_span_mask) == 0):
                    m.d.sync += addr["pos"].eq(addr["pos"] + pos_unit)
            with m.If((nxt & quant_mask) == 0):
                m.d.sync += [addr["scale"].eq(addr["scale"] + scale_unit), addr["zero"].eq(addr["zero"] + zero_unit)]
            with m.If(last_in_row):  # the next row group: every section from its next base
                m.d.sync += [beat_in_row.eq(0), group.eq(group + 1)]
                m.d.sync += [gbase[s].eq(gbase[s] + geo[f"{s}_stride"]) for s in win]
                m.d.sync += [addr[s].eq(gbase[s] + geo[f"{s}_stride"]) for s in win]
                with m.If(last_group):
                    m.d.sync += running.eq(0)
        with m.If(self.start):
            m.d.sync += [geo.eq(self.geometry), group.eq(0), beat_in_row.eq(0), running.eq(self.geometry.groups != 0),
                         second_half.eq(0)]
            m.d.sync += [gbase[s].eq(self.geometry[f"{s}_base"]) for s in win]
            m.d.sync += [addr[s].eq(self.geometry[f"{s}_base"]) for s in win]
        m.d.comb += self.busy.eq(running | self.beats.valid)
        return m

    def _block_of(self, m: Module, geo, block: Signal, kept_index) -> None:
        if self.dense_only:
            m.d.comb += block.eq(kept_index >> exact_log2(SPARSE_M))
            return
        with m.Switch(geo.n):
            for n, c in N_CODE.items():
                with m.Case(c):
                    m.d.comb += block.eq(kept_index >> exact_log2(n))

    def _index(self, m: Module, geo, pw, index, kidx, j: int, s: int) -> None:
        """Lane j's weight s: its position in its 16-block.  Dense: the kept index itself.  N <= 4:
        the 4-bit index at its place in the lane's unit (a unit covers max(d, N) kept weights).
        N = 8: the rank-th set bit of its block's mask, rank = kept index mod 8."""
        d = self.d
        if pw is None:
            m.d.comb += index.eq(kidx[:4])
            return
        with m.Switch(geo.n):
            with m.Case(N_CODE[16]):
                m.d.comb += index.eq(kidx[:4])
            for n in (2, 4):
                with m.Case(N_CODE[n]):
                    lane = j * _pos_lane_bits(n, d)
                    if d >= n:  # the unit is this beat: weight s's index at 4 s
                        m.d.comb += index.eq(pw[lane + 4 * s:lane + 4 * s + 4])
                    else:  # a unit spans n / d beats: kbase's place in it
                        m.d.comb += index.eq(pw.bit_select(lane + 4 * (kidx[:exact_log2(n)]), 4))
            with m.Case(N_CODE[8]):
                lane = j * _pos_lane_bits(8, d)
                mask = pw[lane + 16 * (s // 8):lane + 16 * (s // 8) + 16]  # d >= 8: s // 8's block; else the one
                m.d.comb += index.eq(_set_bit_position(mask, kidx[:3]))
