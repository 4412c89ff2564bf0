"""The weight image's tile format: what the weight decoder reads back is what was compressed."""
import numpy as np
import pytest
import torch

from airfoil.compiler.compress import LayerRecipe, compress_linear
from airfoil.compiler.weight_image import AXI_BEAT, pack_bits, pack_tile, tile_bytes, unpack_bits, unpack_tile


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
@pytest.mark.parametrize("lanes,d,rows", [(4, 4, 22), (3, 16, 24)])
def test_lane_interleaved_tile_round_trip(bits, n, lanes, d, rows):
    """The lane interleave permutes a tile's bits: the same size, the same operands back, and
    one beat's codes of every lane of a row group side by side (the last group short)."""
    torch.manual_seed(bits * 17 + n + lanes)
    k = 256
    c = compress_linear(torch.randn(rows, k), LayerRecipe(bits, n, "magnitude"), 32)
    plain = pack_tile(c.codes, c.mask, c.scale, c.zero, bits, n, 32)
    blob = pack_tile(c.codes, c.mask, c.scale, c.zero, bits, n, 32, lanes=lanes, d=d)
    assert len(blob) == len(plain) and blob != plain
    w8, s = unpack_tile(blob, rows, k, bits, n, 32, lanes=lanes, d=d)
    assert np.array_equal(w8, c.operand()) and np.array_equal(s, c.scale)
    kept = k * n // 16
    codes = unpack_bits(blob, bits, rows * kept)
    plain_codes = c.codes[c.mask].reshape(rows, kept)
    for r in (0, lanes + 1, rows - 1):  # a full group's lane, the last group's last lane
        g, j = divmod(r, lanes)
        in_group = min(lanes, rows - g * lanes)
        for u in (0, kept // d - 1):
            at = g * lanes * kept + u * in_group * d + j * d
            assert np.array_equal(codes[at:at + d], plain_codes[r, u * d:(u + 1) * d]), (r, u)
