"""The weight image's tile format: what the weight decoder reads back is what was compressed."""
import numpy as np
import pytest
import torch

from airfoil.compiler.compress import LayerRecipe, compress_linear
from airfoil.compiler.weight_image import (AXI_BEAT, pack_bits, pack_tile, padded_rows, position_unit_blocks, tile_bytes,
                                           tile_sections, unit_alignment, unpack_bits, unpack_tile)
from airfoil.config import position_bits_per_block


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
    row_bits = kept * bits + (k // 16) * position_bits_per_block(n) + groups * (16 + bits)
    pad_rows = padded_rows(rows, lanes) - rows
    assert len(blob) - len(plain) < 4 * AXI_BEAT + pad_rows * row_bits // 8 + 4  # the paddings, no more
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
               "zero": groups * bits}
    lane_unit = {"code": d * bits, "scale": 16, "zero": bits,
                 "pos": position_unit_blocks(n, d) * position_bits_per_block(n)}
    starts = dict(zip(("code", "pos", "scale", "zero"), np.cumsum([0, *sections[:3]]) * 8))
    for sec in ("code", "scale", "zero") + (("pos",) if n < 16 else ()):
        for g in range(-(-rows // lanes)):
            for u in range(per_row[sec] // lane_unit[sec]):
                at = starts[sec] + g * lanes * per_row[sec] + u * width(g) * lane_unit[sec]
                assert at % align[sec] == 0, (sec, g, u)


def test_unit_alignment_of_the_presets():
    """The sim preset's decoder (4 lanes of d 4) and a board's slices (4 lanes of d 16)."""
    assert unit_alignment(4, 4) == {"code": 16, "pos": 64, "scale": 64, "zero": 4}
    assert unit_alignment(4, 16) == {"code": 64, "pos": 128, "scale": 64, "zero": 4}
    assert unit_alignment(6, 4) == {"code": 8, "pos": 32, "scale": 32, "zero": 2}
