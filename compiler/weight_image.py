"""The weight image: the exact bytes the weight decoder reads, tile by tile.

A *tile* is ``rows`` consecutive output rows of one linear layer with all of its ``k`` inputs,
the unit one LD brings into a half of the weight double buffer and one MM/MV consumes.  Its
bytes, in the order the decoder consumes them (each section bit-packed LSB first and padded to
a whole byte; the tile padded to a 64-byte AXI beat):

1. codes: the kept weights' b-bit codes, row by row, in input order;
2. positions (N < 16 only): per row and 16-block, N 4-bit indices (N <= 4) or a 16-bit mask
   (N = 8), as ``airfoil.config.position_bits_per_block`` counts them;
3. scales: per row and group, the 16-bit mantissa S;
4. zeros: per row and group, the b-bit zero point (in a lane-interleaved tile, below, at least
   a nibble: ``zero_field_bits``).

**Lane interleave** (``lanes``, ``d``; the default ``lanes = 1`` is the order above). A decoder
that feeds ``lanes`` row lanes at once (``hw/weight_decoder.py: LaneGroupDecoder``) reads a tile
whose rows come in groups of ``lanes`` (the last group may be short), each section of a group
ordered *unit by unit, lane by lane*: codes in units of ``d`` kept weights (one DSP chain beat),
positions in units of the blocks such a beat covers (at least one), scales and zeros in units of
one quant group.  So one beat's data for every lane of a group lies side by side, and each lane's
field sits at an offset that depends only on its lane number and the format.  Two paddings keep
every unit at an aligned bit address, so a decoder's bit windows move in steps of a fixed power
of two (``unit_alignment``) and not bit by bit: the last row group is padded to a multiple of
the largest power of two dividing ``lanes`` (``padded_rows``: 4 rows of 4 or of 100 lanes, 2 of
6; code 0, zero point 0, scale 0, the first N positions of each block kept), and every section
starts at a whole AXI beat (a buffer word).  Otherwise the bits are the plain order's, permuted,
but for one widening: a zero point takes at least a nibble (``zero_field_bits``: 4 bits for
codes of 2, 3 or 4 bits, 8 for 8).  That keeps the zero section's units at whole nibbles at
every code width, so the decoder's zero window moves in steps of 4 bits per lane (a 32-bit
window of 4 lanes: 32 places in a word, against 128 at b-bit zeros; about 750 LUTs less per
decoder) and takes each lane's zero from one of two places, not four.  The cost: one bit per
row and quant group at 3-bit codes, two at 2-bit; none at 4 or 8.

**Decoder slices** (``slice_lanes``).  Where one unit of a whole row group's 8-bit codes, ``lanes
x d`` bytes, is wider than a buffer word (the boards' 80 or 100 chains of D = 16: 1,280 or 1,600 bytes
against 64), no one decoder can read a row group a beat; the group is cut into slices of ``slice_lanes``
lanes (``decoder_slice_lanes``), each its own decoder on its own part of the weight buffer.  The
tile is then one *sub-tile* per slice, one after the other: sub-tile s holds lanes s L .. s L +
L - 1 of every row group (L = ``slice_lanes``), and is itself a lane-interleaved tile of L lanes
(its sections whole beats, its last group padded).  Slices past the tile's last rows hold one
group fewer, or nothing; none is padded to another's (L being a power of two, the slice partly
in the last group is padded to the full ones' size: two sizes), so the tile's bytes grow only by
the sub-tiles' section paddings (none for LLaMA2-7B's 4-bit layers, whose rows are whole words
in every section).

**Weight banks** (``weight_bank_bytes``).  Each decoder slice reads only its own sub-tile, so in
the weight buffer sub-tile s of a tile at address ``w`` lies at ``w + s * bank`` (``sub_tile_bytes``
its size): each half of the double buffer is cut in one bank a slice, which the hardware builds
as a memory of its own read by that slice's decoders alone, instead of a copy of the whole buffer
a decoder.  A tile that is not cut (one slice, or a format in the plain order) lies as one piece
at ``w``.

In HBM a tile's bytes are striped over the pseudo-channels in equal chunks of whole AXI beats:
chunk c in channel ``c``, every tile at the same offset in each, so that one LD with ``channels
= C`` reads it at the aggregate bandwidth of C channels.  A tile cut in slices is striped sub-tile
by sub-tile (the compiler's ``tile_stripes``): sub-tile s's chunks follow sub-tile s - 1's in
every channel, so that an LD whose buffer side steps a bank each time its rows wrap to the first
channel (``buf_group_stride``) lands each sub-tile in its bank.
"""
from __future__ import annotations

import numpy as np

from airfoil.compiler.compress import SCALE_BITS
from airfoil.config import SPARSE_M, position_bits_per_block

__all__ = ["AXI_BEAT", "tile_sections", "tile_bytes", "pack_tile", "unpack_tile", "pack_bits", "unpack_bits",
           "position_unit_blocks", "lane_interleave", "padded_rows", "unit_alignment", "core_tile_bytes",
           "decoder_slice_lanes", "slice_rows", "zero_field_bits", "sub_tile_bytes", "weight_bank_bytes",
           "core_sub_tile_bytes", "core_weight_bank_bytes"]

AXI_BEAT = 64


def _ceil_bytes(bits: int) -> int:
    return (bits + 7) // 8


def zero_field_bits(bits: int, lanes: int) -> int:
    """Bits of one zero point in a tile's zero section: ``bits`` in the plain order, at least a
    nibble in a lane-interleaved tile (``lanes`` > 1), where the decoder takes each lane's zero
    from a nibble or a byte whatever the code width."""
    return max(bits, 4) if lanes > 1 else bits


def padded_rows(rows: int, lanes: int) -> int:
    """Rows a tile's image holds: a lane-interleaved tile's rows rounded up to a multiple of the
    largest power of two dividing ``lanes``.  That keeps the last (short) row group's units at
    the alignment of the full groups' (``unit_alignment``, whose power of two the lanes give
    only that factor of), at a cost of at most 3 rows a tile for 100 lanes."""
    step = lanes & -lanes
    return -(-rows // step) * step


def tile_sections(rows: int, k: int, bits: int, n: int, group_size: int, lanes: int = 1) -> tuple[int, int, int, int]:
    """Bytes of a tile's four sections: codes, positions, scales, zeros (before the tile's
    padding; ``lanes`` > 1: the lane interleave's padded rows, each section whole AXI beats)."""
    kept = k * n // SPARSE_M
    groups = k // group_size
    r = padded_rows(rows, lanes)
    sizes = (_ceil_bytes(r * kept * bits), _ceil_bytes(r * (k // SPARSE_M) * position_bits_per_block(n)),
             _ceil_bytes(r * groups * SCALE_BITS), _ceil_bytes(r * groups * zero_field_bits(bits, lanes)))
    if lanes > 1:
        sizes = tuple(-(-s // AXI_BEAT) * AXI_BEAT for s in sizes)
    return sizes


def tile_bytes(rows: int, k: int, bits: int, n: int, group_size: int, lanes: int = 1, d: int = 1,
               slice_lanes: int = 0) -> int:
    """Bytes of one tile in the weight image (padded to an AXI beat); ``lanes``: its interleave;
    ``slice_lanes`` below ``lanes``: one sub-tile per decoder slice (``d`` changes nothing: it
    takes a ``lane_interleave`` triple as it is)."""
    if 0 < slice_lanes < lanes:
        return sum(sub_tile_bytes(rows, k, bits, n, group_size, lanes, d, slice_lanes))
    total = sum(tile_sections(rows, k, bits, n, group_size, lanes))
    return -(-total // AXI_BEAT) * AXI_BEAT


def decoder_slice_lanes(chains: int, d: int, word_bits: int) -> int:
    """Row lanes one weight decoder slice takes (the module docstring): a whole row group where
    one unit of its 8-bit codes (``chains`` x ``d`` bytes) fits a ``word_bits`` buffer word, else
    the largest power of two of lanes whose unit fits and which divides ``chains``."""
    if chains * d * 8 <= word_bits:
        return chains
    lanes = 1
    while 2 * lanes * d * 8 <= word_bits and chains % (2 * lanes) == 0:
        lanes *= 2
    return lanes


def sub_tile_bytes(rows: int, k: int, bits: int, n: int, group_size: int, lanes: int = 1, d: int = 1,
                   slice_lanes: int = 0) -> list[int]:
    """Bytes of each decoder slice's sub-tile of a tile (``tile_bytes``'s terms: 0 for a slice
    without rows); one entry, the whole tile's bytes, where the tile is not cut in slices."""
    if 0 < slice_lanes < lanes:
        return [tile_bytes(r, k, bits, n, group_size, slice_lanes) if r else 0
                for r in slice_row_counts(rows, lanes, slice_lanes)]
    return [tile_bytes(rows, k, bits, n, group_size, lanes, d)]


def weight_bank_bytes(half_bytes: int, slices: int) -> int:
    """Bytes of one decoder slice's bank in a half of the weight buffer: the half cut in
    ``slices`` equal banks of whole AXI beats (what is left, under a beat a slice, unused); the
    whole half for one slice."""
    return half_bytes if slices <= 1 else half_bytes // slices // AXI_BEAT * AXI_BEAT


def slice_row_counts(rows: int, lanes: int, slice_lanes: int) -> list[int]:
    """Rows of each slice's sub-tile: whole row groups of ``slice_lanes`` and the share of the
    tile's last, short group that falls in the slice's lanes."""
    full, last = divmod(rows, lanes)
    return [full * slice_lanes + min(max(last - s * slice_lanes, 0), slice_lanes) for s in range(lanes // slice_lanes)]


def slice_rows(rows: int, lanes: int, slice_lanes: int) -> list[np.ndarray]:
    """The tile's rows each slice's sub-tile holds, in its order: lanes s L .. s L + L - 1 of every
    row group of ``lanes``."""
    r = np.arange(rows)
    return [r[(r % lanes) // slice_lanes == s] for s in range(lanes // slice_lanes)]


def pack_bits(values: np.ndarray, width: int) -> bytes:
    v = np.asarray(values, dtype=np.uint64).ravel()
    bits = ((v[:, None] >> np.arange(width, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(bits.ravel(), bitorder="little").tobytes()


def unpack_bits(buf: bytes | np.ndarray, width: int, count: int) -> np.ndarray:
    raw = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, (bytes, bytearray)) else np.asarray(buf, np.uint8)
    if width == 8:
        return raw[:count].astype(np.int64)
    if width == 16:
        return np.ascontiguousarray(raw[:2 * count]).view("<u2").astype(np.int64)
    if width in (1, 2, 4):
        per = 8 // width
        v = (raw[:-(-count // per)].astype(np.int64)[:, None] >> (np.arange(per) * width)) & ((1 << width) - 1)
        return v.ravel()[:count]
    bits = np.unpackbits(raw[:_ceil_bytes(count * width)], bitorder="little")[:count * width]
    return bits.reshape(count, width).astype(np.int64) @ (np.int64(1) << np.arange(width, dtype=np.int64))


def _positions(mask: np.ndarray, n: int) -> np.ndarray:
    """Per row and 16-block: n indices (n <= 4) or the 16-bit mask (n = 8)."""
    rows, k = mask.shape
    blocks = mask.reshape(rows, k // SPARSE_M, SPARSE_M)
    if n == 8:
        return (blocks.astype(np.int64) << np.arange(SPARSE_M)).sum(-1)
    return np.nonzero(blocks)[2].reshape(rows, k // SPARSE_M, n)


def lane_interleave(chains: int, d: int, n: int, group_size: int, word_bits: int = 8 * AXI_BEAT) -> tuple[int, int, int]:
    """``(lanes, d, slice_lanes)`` of a tile's lane interleave on a core of ``chains`` chains taking
    ``d`` kept weights a beat, as the compiler packs it and fsim and the MV unit read it: row groups
    of the chain count, in decoder slices of ``decoder_slice_lanes``, for the formats the MV unit
    decodes (quant groups spanning whole beats, ``group N / 16 >= d``); other formats (which the
    RTL refuses as UNSUPPORTED) keep the plain order."""
    if group_size * n // SPARSE_M >= d:
        return chains, d, decoder_slice_lanes(chains, d, word_bits)
    return 1, 1, 0


def core_tile_bytes(rows: int, k: int, bits: int, n: int, group_size: int, cfg) -> int:
    """``tile_bytes`` of a tile as the compiler packs it for ``cfg``'s core (its lane interleave)."""
    return tile_bytes(rows, k, bits, n, group_size,
                      *lane_interleave(cfg.chains_per_core, cfg.dsp_per_chain, n, group_size, cfg.axi_data_bits))


def core_sub_tile_bytes(rows: int, k: int, bits: int, n: int, group_size: int, cfg) -> list[int]:
    """``sub_tile_bytes`` of a tile as the compiler packs it for ``cfg``'s core."""
    return sub_tile_bytes(rows, k, bits, n, group_size,
                          *lane_interleave(cfg.chains_per_core, cfg.dsp_per_chain, n, group_size, cfg.axi_data_bits))


def core_weight_bank_bytes(cfg) -> int:
    """``weight_bank_bytes`` of ``cfg``'s weight buffer: a half cut in one bank a decoder slice."""
    lanes = decoder_slice_lanes(cfg.chains_per_core, cfg.dsp_per_chain, cfg.axi_data_bits)
    return weight_bank_bytes(cfg.weight_half_bytes, cfg.chains_per_core // lanes)


def position_unit_blocks(n: int, d: int) -> int:
    """16-blocks in one unit of the position section's lane interleave: those a beat of ``d``
    kept weights covers, at least one (at N = 8 and d < 8 a block's mask serves two beats)."""
    return max(1, d // n)


def unit_alignment(lanes: int, d: int) -> dict[str, int]:
    """The power of two (in bits, at most an AXI beat's) that every unit's address of each section
    of a lane-interleaved tile is a multiple of, at any format, relative to the tile's start: a
    section starts at a whole beat, a unit of every lane of a group is ``lanes`` times a lane's
    unit (the last group's a multiple of lanes & -lanes times it: ``padded_rows``), whose bits are
    d b (codes), the position blocks of a beat, 16 (scales) or the zero field (``zero_field_bits``), for every width b and
    sparse N of the ISA (``WeightWidth``, ``SparsePattern``)."""
    from math import gcd

    from airfoil.isa import SparsePattern, WeightWidth

    widths = gcd(*(w.bits for w in WeightWidth))
    pos = gcd(*(position_unit_blocks(p.n, d) * position_bits_per_block(p.n) for p in SparsePattern if p.n < SPARSE_M))
    zero = gcd(*(zero_field_bits(w.bits, lanes) for w in WeightWidth))
    lane = {"code": d * widths, "pos": pos, "scale": SCALE_BITS, "zero": zero}
    return {s: min((lanes * u) & -(lanes * u), 8 * AXI_BEAT) for s, u in lane.items()}


def _lane_order(rows: int, units: int, per_unit: int, lanes: int) -> np.ndarray:
    """Where each element of a lane-interleaved section comes from in the plain row-major
    [rows, units * per_unit] order: rows in groups of ``lanes``, each group unit by unit, each
    unit lane by lane."""
    idx = np.arange(rows * units * per_unit).reshape(rows, units, per_unit)
    return np.concatenate([idx[g:g + lanes].transpose(1, 0, 2).ravel() for g in range(0, rows, lanes)])


def _section_units(rows: int, k: int, n: int, group_size: int, d: int) -> list[tuple[int, int]]:
    """(units per row, elements per unit) of each section present, in order, for the interleave."""
    kept, nb, groups = k * n // SPARSE_M, k // SPARSE_M, k // group_size
    if kept % d:
        raise ValueError(f"lane interleave: {kept} kept weights a row is not a multiple of d = {d}")
    out = [(kept // d, d)]
    if n < SPARSE_M:
        ub = position_unit_blocks(n, d)
        if nb % ub:
            raise ValueError(f"lane interleave: {nb} blocks a row is not a multiple of the {ub}-block unit")
        out.append((nb // ub, ub * (1 if n == 8 else n)))
    return out + [(groups, 1), (groups, 1)]


def pack_tile(codes: np.ndarray, mask: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int, n: int,
              group_size: int, lanes: int = 1, d: int = 1, slice_lanes: int = 0) -> bytes:
    """One tile (rows x k) of a compressed layer in the decoder's byte order (``lanes`` > 1: the
    lane interleave of groups of ``lanes`` rows, beats of ``d`` kept weights; ``slice_lanes``
    below ``lanes``: one sub-tile per decoder slice)."""
    rows, k = codes.shape
    if 0 < slice_lanes < lanes:
        return b"".join(pack_tile(codes[r], mask[r], scale[r], zero[r], bits, n, group_size, slice_lanes, d)
                        for r in slice_rows(rows, lanes, slice_lanes) if len(r))
    if lanes > 1 and padded_rows(rows, lanes) > rows:  # weights code 0 - zero 0, scale 0
        pad = padded_rows(rows, lanes) - rows
        filler = np.zeros((pad, k // SPARSE_M, SPARSE_M), bool)
        filler[:, :, :n] = True
        codes = np.concatenate([codes, np.zeros((pad, k), codes.dtype)])
        mask = np.concatenate([mask, filler.reshape(pad, k)])
        scale = np.concatenate([scale, np.zeros((pad, scale.shape[1]), np.asarray(scale).dtype)])
        zero = np.concatenate([zero, np.zeros((pad, zero.shape[1]), np.asarray(zero).dtype)])
        rows += pad
    values = [(codes[mask].reshape(rows, k * n // SPARSE_M), bits)]
    if n < SPARSE_M:
        values.append((_positions(mask, n), 16 if n == 8 else 4))
    values += [(scale, SCALE_BITS), (zero, zero_field_bits(bits, lanes))]
    if lanes > 1:
        units = _section_units(rows, k, n, group_size, d)
        values = [(np.asarray(v).ravel()[_lane_order(rows, u, per, lanes)], w)
                  for (v, w), (u, per) in zip(values, units)]
    sections = [pack_bits(v, w) for v, w in values]
    if lanes > 1:  # every section from a whole AXI beat
        sections = [b + bytes(-len(b) % AXI_BEAT) for b in sections]
    blob = b"".join(sections)
    return blob + bytes(tile_bytes(rows, k, bits, n, group_size, lanes) - len(blob))


def unpack_tile(buf: bytes | np.ndarray, rows: int, k: int, bits: int, n: int,
                group_size: int, lanes: int = 1, d: int = 1, slice_lanes: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The weight decoder: (w8 [rows, k] signed operands, 0 where pruned; S [rows, groups]);
    ``lanes``, ``d``, ``slice_lanes``: the tile's lane interleave, as ``pack_tile`` took them."""
    raw = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, (bytes, bytearray)) else np.asarray(buf, np.uint8)
    if 0 < slice_lanes < lanes:
        w8, scale = np.zeros((rows, k), np.int64), np.zeros((rows, k // group_size), np.int64)
        off = 0
        for r in slice_rows(rows, lanes, slice_lanes):
            if not len(r):
                continue
            size = tile_bytes(len(r), k, bits, n, group_size, slice_lanes)
            w8[r], scale[r] = unpack_tile(raw[off:off + size], len(r), k, bits, n, group_size, slice_lanes, d)
            off += size
        return w8, scale
    s_codes, s_pos, s_scale, s_zero = tile_sections(rows, k, bits, n, group_size, lanes)
    rows_out, rows = rows, padded_rows(rows, lanes)
    kept = k * n // SPARSE_M
    groups = k // group_size
    units = iter(_section_units(rows, k, n, group_size, d) if lanes > 1 else [])

    def section(data, width: int, count: int) -> np.ndarray:  # the plain row-major order
        v = unpack_bits(data, width, count)
        if lanes > 1:
            u, per = next(units)
            plain = np.empty_like(v)
            plain[_lane_order(rows, u, per, lanes)] = v
            v = plain
        return v

    off = 0
    codes = section(raw[off:off + s_codes], bits, rows * kept).reshape(rows, kept)
    off += s_codes
    if n < SPARSE_M:
        nb = k // SPARSE_M
        if n == 8:
            m = section(raw[off:off + s_pos], 16, rows * nb).reshape(rows, nb)
            mask = ((m[..., None] >> np.arange(SPARSE_M)) & 1).astype(bool).reshape(rows, k)
        else:
            idx = section(raw[off:off + s_pos], 4, rows * nb * n).reshape(rows, nb, n)
            mask = np.zeros((rows, nb, SPARSE_M), bool)
            np.put_along_axis(mask, idx, True, axis=2)
            mask = mask.reshape(rows, k)
        off += s_pos
    else:
        mask = np.ones((rows, k), bool)
    scale = section(raw[off:off + s_scale], SCALE_BITS, rows * groups).reshape(rows, groups)
    off += s_scale
    zero = section(raw[off:off + s_zero], zero_field_bits(bits, lanes), rows * groups).reshape(rows, groups)
    full = np.zeros((rows, k), np.int64)
    full[mask] = codes.ravel()
    w8 = np.where(mask, full - np.repeat(zero, group_size, axis=1), 0)
    return w8[:rows_out], scale[:rows_out]
