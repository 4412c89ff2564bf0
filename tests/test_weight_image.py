"""The weight image's tile format: what the weight decoder reads back is what was compressed."""
import numpy as np
import pytest
import torch

from airfoil.compiler.compress import LayerRecipe, compress_linear
from airfoil.compiler.weight_image import (AXI_BEAT, core_tile_bytes, decoder_slice_lanes, lane_interleave, pack_bits,
                                           pack_tile, padded_rows, position_unit_blocks, slice_row_counts, tile_bytes,
                                           tile_sections, unit_alignment, unpack_bits, unpack_tile)
from airfoil.config import position_bits_per_block, preset


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_tile_round_trip_and_size(bits, n):
    torch.manual_seed(bits * 17 + n)
    c = compress_linear(torch.randn(24, 128), LayerRecipe(bits, n, "magnitude"), 32)
    blob = pack_tile(c.codes, c.mask, c.scale, c.zero, bits, n, 32)
    assert len(blob) == tile_bytes(24, 128, bits, n, 32) and len(blob) % AXI_BEAT == 0
    assert len(blob) - c.storage_bits() // 8 < AXI_BEAT + 8  # the stored bits, then beat padding
    w8, s = unpack_tile(blob, 24, 128, bits, n, 32)
    assert np.array_equal(w8, c.operand()) and np.array_equal(s, c.scale)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 8, 16])
def test_bit_packing_round_trip(width):
    rng = np.random.default_rng(width)
    v = rng.integers(0, 1 << width, 301)
    assert np.array_equal(unpack_bits(pack_bits(v, width), width, 301), v)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n", [2, 4, 8, 16])
@pytest.mark.parametrize("lanes,d,rows", [(4, 4, 22), (3, 16, 24), (6, 4, 13), (100, 16, 203)])
def test_lane_interleaved_tile_round_trip(bits, n, lanes, d, rows):
    """The lane interleave permutes a tile's bits, a short last row group padded to a multiple of
    lanes & -lanes and each section from a whole AXI beat: the same operands back, one beat's
    codes of every lane of a row group side by side, and every unit of every section at a
    multiple of ``unit_alignment`` (what lets the decoder's windows move in coarse steps)."""
    torch.manual_seed(bits * 17 + n + lanes)
    k = 256
    c = compress_linear(torch.randn(rows, k), LayerRecipe(bits, n, "magnitude"), 32)
    plain = pack_tile(c.codes, c.mask, c.scale, c.zero, bits, n, 32)
    blob = pack_tile(c.codes, c.mask, c.scale, c.zero, bits, n, 32, lanes=lanes, d=d)
    assert len(blob) == tile_bytes(rows, k, bits, n, 32, lanes) and len(blob) % AXI_BEAT == 0
    sections = tile_sections(rows, k, bits, n, 32, lanes)
    assert all(s % AXI_BEAT == 0 for s in sections)
    kept, groups = k * n // 16, k // 32
    row_bits = kept * bits + (k // 16) * position_bits_per_block(n) + groups * (16 + max(bits, 4))
    pad_rows = padded_rows(rows, lanes) - rows
    widened = -(-padded_rows(rows, lanes) * groups * (max(bits, 4) - bits) // 8)  # zero points of a nibble
    # the paddings and the zeros' bytes, no more
    assert len(blob) - len(plain) < 4 * AXI_BEAT + pad_rows * row_bits // 8 + widened + 4
    w8, s = unpack_tile(blob, rows, k, bits, n, 32, lanes=lanes, d=d)
    assert np.array_equal(w8, c.operand()) and np.array_equal(s, c.scale)
    codes = unpack_bits(blob, bits, padded_rows(rows, lanes) * kept)
    plain_codes = c.codes[c.mask].reshape(rows, kept)
    image_rows = padded_rows(rows, lanes)
    assert image_rows - rows < lanes & -lanes and image_rows % (lanes & -lanes) == 0

    def width(g):  # lanes of group g in the image
        return min(lanes, image_rows - g * lanes)

    for r in (0, lanes + 1, rows - 1):  # a full group's lane, the last group's last lane
        g, j = divmod(r, lanes)
        for u in (0, kept // d - 1):
            at = g * lanes * kept + u * width(g) * d + j * d
            assert np.array_equal(codes[at:at + d], plain_codes[r, u * d:(u + 1) * d]), (r, u)
    # every unit's bit address: section start + group stride + unit steps, all multiples
    align = unit_alignment(lanes, d)
    per_row = {"code": kept * bits, "pos": (k // 16) * position_bits_per_block(n), "scale": groups * 16,
               "zero": groups * max(bits, 4)}  # zero points of at least a nibble when interleaved
    lane_unit = {"code": d * bits, "scale": 16, "zero": max(bits, 4),
                 "pos": position_unit_blocks(n, d) * position_bits_per_block(n)}
    starts = dict(zip(("code", "pos", "scale", "zero"), np.cumsum([0, *sections[:3]]) * 8))
    for sec in ("code", "scale", "zero") + (("pos",) if n < 16 else ()):
        for g in range(-(-rows // lanes)):
            for u in range(per_row[sec] // lane_unit[sec]):
                at = starts[sec] + g * lanes * per_row[sec] + u * width(g) * lane_unit[sec]
                assert at % align[sec] == 0, (sec, g, u)


def test_decoder_slices_of_the_presets():
    """A row group's unit of 8-bit codes wider than the 512-bit buffer word is cut into decoder
    slices of a power of two of lanes that divides the chains; otherwise one slice takes it all."""
    assert decoder_slice_lanes(4, 4, 512) == 4 and decoder_slice_lanes(6, 4, 512) == 6  # the sim kernels
    assert decoder_slice_lanes(16, 4, 512) == 16  # 16 x 4 codes: one word exactly
    assert decoder_slice_lanes(100, 16, 512) == 4  # the boards': 25 slices of 4 x 16 codes
    assert decoder_slice_lanes(6, 16, 512) == 2 and decoder_slice_lanes(32, 4, 512) == 16
    for board in ("u280", "vhk158"):
        cfg = preset(board)
        assert lane_interleave(cfg.chains_per_core, cfg.dsp_per_chain, 16, 128, cfg.axi_data_bits) == (
            cfg.chains_per_core, 16, 4)
    assert decoder_slice_lanes(72, 16, 512) == 4  # the U280's: 18 slices
    assert lane_interleave(100, 16, 2, 32) == (1, 1, 0)  # quant groups within a beat: the plain order


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("n", [8, 16])
@pytest.mark.parametrize("lanes,slice_lanes,rows", [(6, 2, 13), (6, 2, 3), (100, 4, 203), (100, 4, 4096)])
def test_sliced_tile_is_its_slices_sub_tiles(bits, n, lanes, slice_lanes, rows):
    """A tile cut in decoder slices is the sub-tiles one after the other, sub-tile s the lane-
    interleaved tile (of ``slice_lanes`` lanes) of lanes s L .. s L + L - 1 of every row group:
    full, partly in the short last group, or a group fewer (or empty, for a tile of 3 rows), none
    padded to another; the same operands come back."""
    torch.manual_seed(bits * 31 + n + rows)
    k, d = 256, 16
    c = compress_linear(torch.randn(rows, k), LayerRecipe(bits, n, "magnitude"), 32)
    blob = pack_tile(c.codes, c.mask, c.scale, c.zero, bits, n, 32, lanes, d, slice_lanes)
    counts = slice_row_counts(rows, lanes, slice_lanes)
    assert sum(counts) == rows and len(set(counts)) <= 3 and max(counts) - min(counts) <= slice_lanes
    assert len(blob) == tile_bytes(rows, k, bits, n, 32, lanes, d, slice_lanes)
    off = 0
    for s, count in enumerate(counts):
        r = np.array([g * lanes + s * slice_lanes + j for g in range(-(-rows // lanes)) for j in range(slice_lanes)
                      if g * lanes + s * slice_lanes + j < rows], int)
        assert len(r) == count
        sub = pack_tile(c.codes[r], c.mask[r], c.scale[r], c.zero[r], bits, n, 32, slice_lanes, d) if count else b""
        assert blob[off:off + len(sub)] == sub, s
        off += len(sub)
    assert off == len(blob)
    w8, scale = unpack_tile(blob, rows, k, bits, n, 32, lanes, d, slice_lanes)
    assert np.array_equal(w8, c.operand()) and np.array_equal(scale, c.scale)


def test_decoder_slices_cost_llama2_almost_no_bytes():
    """LLaMA2-7B's 4-bit rows are whole words in every section, so the sub-tiles' paddings add
    nothing to a tile on the boards' cores; its 3-bit FFN-down rows only in the zero section's
    (86 groups of 3 bits): 0.03% (the projections' bytes are the sliced image's)."""
    cfg = preset("u280")
    for rows, k, bits, n in ((1835, 4096, 4, 8), (1366, 4096, 4, 16), (203, 4096, 4, 16)):
        assert core_tile_bytes(rows, k, bits, n, 128, cfg) == tile_bytes(rows, k, bits, n, 128, 100), (rows, k)
    whole = tile_bytes(1366, 11008, 3, 16, 128, 100)
    assert 0 < core_tile_bytes(1366, 11008, 3, 16, 128, cfg) - whole < 0.0004 * whole


def test_unit_alignment_of_the_presets():
    """The sim preset's decoder (4 lanes of d 4) and a board's slices (4 lanes of d 16)."""
    assert unit_alignment(4, 4) == {"code": 16, "pos": 64, "scale": 64, "zero": 16}
    assert unit_alignment(4, 16) == {"code": 64, "pos": 128, "scale": 64, "zero": 16}
    assert unit_alignment(6, 4) == {"code": 8, "pos": 32, "scale": 32, "zero": 8}
