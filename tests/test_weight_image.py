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
