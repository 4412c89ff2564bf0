"""Random GEMM tiles with N:16 sparse weights, shared by the MPE tests."""
import numpy as np


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
