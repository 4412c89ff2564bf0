"""Random GEMM tiles with N:16 sparse weights, shared by the MPE tests, and random packed
weight-image tiles, shared by the weight decoder and linear engine tests."""
import numpy as np

from airfoil.compiler.weight_image import lane_interleave, pack_tile
from airfoil.config import SPARSE_M


def random_tile(rng, T, K, R, n, extreme=False):
    x = rng.integers(-128, 128, (T, K))
    w = rng.integers(-127, 128, (R, K))
    if extreme:
        x[:] = -128
        w[:] = rng.choice([-127, 127], (R, K))
    mask = np.zeros((R, K), bool)
    for r in range(R):
        for b in range(K // 16):
            mask[r, b * 16 + np.sort(rng.choice(16, n, replace=False))] = True
    return x, np.where(mask, w, 0), mask


def random_packed_tile(rng, rows, k, bits, n, gs, lanes=1, d=1, cfg=None, slice_lanes=0) -> bytes:
    """A random tile in the weight image's format (exactly n kept per 16-block; zero 128 at 8
    bits), lane-interleaved for ``lanes`` > 1, or as the compiler packs it for ``cfg``'s core."""
    if cfg is not None:
        lanes, d, slice_lanes = lane_interleave(cfg.chains_per_core, cfg.dsp_per_chain, n, gs, cfg.axi_data_bits)
    groups = k // gs
    mask = np.zeros((rows, k // SPARSE_M, SPARSE_M), bool)
    for r in range(rows):
        for b in range(k // SPARSE_M):
            mask[r, b, rng.choice(SPARSE_M, n, replace=False)] = True
    mask = mask.reshape(rows, k)
    codes = rng.integers(0, 1 << bits, (rows, k))
    zero = np.full((rows, groups), 128) if bits == 8 else rng.integers(0, 1 << bits, (rows, groups))
    scale = rng.integers(0, 1 << 16, (rows, groups))
    return pack_tile(codes, mask, scale, zero, bits, n, gs, lanes=lanes, d=d, slice_lanes=slice_lanes)
