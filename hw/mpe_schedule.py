"""How a GEMM tile maps onto the MPE's beats (the MM and MV mappings), and its expected result.

This is the operand feeder the controller implements in hardware; here it drives the benches.
A tile is ``x`` [T, K] INT8 activations and a sparse weight ``w8`` [R, K] (INT8 operands in
[-127, 127], zero where the N:16 mask drops them). All chains see the same activation blocks,
so every chain advances through K in step; chain c works on its own rows.
"""
from dataclasses import dataclass

import numpy as np

from airfoil.config import SPARSE_M, position_bits_per_block
from airfoil.hw.sparse_chain import ChainMode

__all__ = ["Beat", "schedule", "reference_outputs", "kept_positions"]


@dataclass
class Beat:
    act_hi: np.ndarray  # [groups, 16]
    act_lo: np.ndarray  # [groups, 16]
    weight_hi: np.ndarray  # [chains, D]
    weight_lo: np.ndarray  # [chains, D]
    index: np.ndarray  # [chains, D]
    mode: int
    first: bool
    last: bool


def kept_positions(mask_row: np.ndarray, n: int) -> np.ndarray:
    """K positions of a row's kept weights, in K order (exactly n per block of 16)."""
    pos = np.flatnonzero(mask_row)
    if len(pos) != len(mask_row) * n // SPARSE_M:
        raise ValueError(f"row keeps {len(pos)} weights, not {n} of every {SPARSE_M}")
    return pos


def schedule(x: np.ndarray, w8: np.ndarray, mask: np.ndarray, n: int, mode: ChainMode, chains: int,
             groups: int) -> tuple[list[Beat], list[list[tuple[int, int, int]]]]:
    """Beats for the whole tile, and for each result beat the (chain -> (row, token) pairs) it carries:
    ``outputs[i][c] = (row_hi, row_lo, token_hi, token_lo)`` with -1 where a lane is unused."""
    T, K = x.shape
    R = w8.shape[0]
    d = 2 * groups
    kept = K * n // SPARSE_M
    if kept % d:
        raise ValueError(f"K={K} with {n}:16 keeps {kept} weights per row, not a multiple of the chain's {d} slices")
    beats_per_row = kept // d
    if mode == ChainMode.MV and n != SPARSE_M:
        raise ValueError("MV packs two rows per slice and needs dense (16:16) weights; use MV_SPARSE")
    rows_per_chain = 2 if mode == ChainMode.MV else 1
    tokens_per_pass = 2 if mode == ChainMode.MM else 1
    beats: list[Beat] = []
    outputs = []
    row_groups = range(0, R, chains * rows_per_chain)
    for t0 in range(0, T, tokens_per_pass):
        tok_hi = t0
        tok_lo = t0 + 1 if mode == ChainMode.MM and t0 + 1 < T else -1
        for r0 in row_groups:
            rows = []
            for c in range(chains):
                base = r0 + c * rows_per_chain
                rows.append((base if base < R else -1,
                             base + 1 if rows_per_chain == 2 and base + 1 < R else -1))
            pos = {r: kept_positions(mask[r], n) for pair in rows for r in pair if r >= 0}
            for bt in range(beats_per_row):
                idx = np.zeros((chains, d), np.int64)
                whi = np.zeros((chains, d), np.int64)
                wlo = np.zeros((chains, d), np.int64)
                ahi = np.zeros((groups, SPARSE_M), np.int64)
                alo = np.zeros((groups, SPARSE_M), np.int64)
                for s in range(d):
                    k_index = bt * d + s
                    block = k_index // n  # the same for every row: all rows share the pattern
                    g = s // 2
                    sl = slice(block * SPARSE_M, (block + 1) * SPARSE_M)
                    ahi[g] = x[tok_hi, sl]
                    alo[g] = x[tok_lo, sl] if tok_lo >= 0 else 0
                    for c, (ra, rb) in enumerate(rows):
                        if ra < 0:
                            continue
                        k = pos[ra][k_index]
                        idx[c, s] = k - block * SPARSE_M
                        if mode == ChainMode.MV_SPARSE:  # one row, in the low lane
                            wlo[c, s] = w8[ra, k]
                            continue
                        whi[c, s] = w8[ra, k]
                        if rb >= 0:
                            wlo[c, s] = w8[rb, k]
                beats.append(Beat(ahi, alo, whi, wlo, idx, int(mode), bt == 0, bt == beats_per_row - 1))
            outputs.append([(ra, rb, tok_hi, tok_lo) for ra, rb in rows])
    return beats, outputs


def reference_outputs(x: np.ndarray, w8: np.ndarray, mode: ChainMode,
                      outputs: list) -> list[list[tuple[int, int]]]:
    """numpy int64 GEMM, arranged like the result stream: per result beat, per chain (hi, lo)."""
    y = x.astype(np.int64) @ w8.astype(np.int64).T  # [T, R]
    res = []
    for beat in outputs:
        row = []
        for ra, rb, th, tl in beat:
            if ra < 0:
                row.append((0, 0))
            elif mode == ChainMode.MM:
                row.append((int(y[th, ra]), int(y[tl, ra]) if tl >= 0 else 0))
            elif mode == ChainMode.MV:
                row.append((int(y[th, ra]), int(y[th, rb]) if rb >= 0 else 0))
            else:
                row.append((0, int(y[th, ra])))
        res.append(row)
    return res


def encode_beats(layout, beats: list[Beat]) -> list[int]:
    """Each beat as the integer value of the MPE's ``operands.payload`` port."""
    from amaranth.hdl import Const

    out = []
    for b in beats:
        init = {"act_hi": b.act_hi.tolist(), "act_lo": b.act_lo.tolist(), "weight_hi": b.weight_hi.tolist(),
                "weight_lo": b.weight_lo.tolist(), "index": b.index.tolist(), "mode": b.mode,
                "first": int(b.first), "last": int(b.last)}
        out.append(Const.cast(layout.const(init)).value)
    return out


def decode_results(layout, values: list[int], chains: int) -> list[list[tuple[int, int]]]:
    out = []
    for v in values:
        r = layout.from_bits(v)
        out.append([(int(r.hi[c]), int(r.lo[c])) for c in range(chains)])
    return out


def mv_weight_bytes_per_cycle(cfg, bits: int, n: int) -> float:
    """Weight-image bytes one core's MPE consumes per cycle in decode (MV): every slice takes
    two dense weights (MV) or one kept weight with its position (MV_SPARSE) per cycle; group
    scale (16 bits) and zero (b bits) are amortised over the group's kept weights."""
    slices = cfg.chains_per_core * cfg.dsp_per_chain
    weights = slices * (2 if n == SPARSE_M else 1)
    kept_per_group = cfg.quant_group_size * n // SPARSE_M
    bits_per_weight = bits + position_bits_per_block(n) / n + (16 + bits) / kept_per_group
    return weights * bits_per_weight / 8


def hbm_bytes_per_cycle_per_core(cfg) -> float:
    return cfg.hbm_bytes_per_cycle / cfg.cores
