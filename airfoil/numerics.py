"""The constants and tables of docs/numerics.md, defined once.

Tables are computed on the host with NumPy in IEEE double precision and rounded to integers;
devices (CPU, CUDA, fsim, RTL) only ever read them.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

FRAC_H = 14  # residual stream
FRAC_A = 12  # fixed activations: q, k, v, gate, up, attention output
FRAC_G = 20  # norm gains (smoothing folds small factors into them)
FRAC_N = 16  # RMSNorm's normalised value before block quantisation
FRAC_L = 16  # logits
FRAC_S = 10  # attention scores in the base-2 log domain
ROPE_FRAC = 14
PROB_FRAC = 15  # EXP2 and SIG tables
INV_RMS_SHIFT = 46
INV_SUM_SHIFT = 40
SIG_IN_FRAC = 8
SIG_RANGE = 4096  # SIG index in [-SIG_RANGE, SIG_RANGE)
MAX_SHIFT = 62
ACC_BITS = 48  # DSP48E2 accumulator


def eps_q(eps: float) -> int:
    return int(round(eps * 2.0 ** (2 * FRAC_H)))


def c_qk(head_dim: int) -> int:
    return int(round(math.log2(math.e) / math.sqrt(head_dim) * 2.0 ** 15))


def gain_q(g: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(g, dtype=np.float64) * 2.0 ** FRAC_G).astype(np.int64)


@lru_cache(maxsize=None)
def exp2_table() -> np.ndarray:
    f = np.arange(1 << FRAC_S, dtype=np.float64)
    return np.round(2.0 ** PROB_FRAC * np.exp2(-f / (1 << FRAC_S))).astype(np.int64)


@lru_cache(maxsize=None)
def sigmoid_table() -> np.ndarray:
    """SIG[i + SIG_RANGE] = round(2^15 * sigmoid(i / 256)) for i in [-SIG_RANGE, SIG_RANGE)."""
    i = np.arange(-SIG_RANGE, SIG_RANGE, dtype=np.float64)
    return np.round(2.0 ** PROB_FRAC / (1.0 + np.exp(-i / (1 << SIG_IN_FRAC)))).astype(np.int64)


def rope_table(head_dim: int, theta: float, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, Sn) [positions, head_dim/2] in Q.14."""
    half = head_dim // 2
    inv_freq = theta ** (-np.arange(half, dtype=np.float64) * 2.0 / head_dim)
    ang = np.arange(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    scale = 2.0 ** ROPE_FRAC
    return np.round(np.cos(ang) * scale).astype(np.int64), np.round(np.sin(ang) * scale).astype(np.int64)
