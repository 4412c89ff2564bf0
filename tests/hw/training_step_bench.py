"""cocotb bench: one training step of a linear layer + L1 norm on the integer-training
datapath.  The five integer stages run in RTL; between them this bench applies the host's
quantisers to what the RTL returned, in the order ``linear_l1_training_step`` does.  Inputs
(AIRFOIL_STEP, JSON) and every stage's integers out (AIRFOIL_RESULTS)."""
import json
import os

import cocotb
import torch
from amaranth.hdl import Const

from airfoil.host.integer_training import (L1_FRAC, forward_operands, gradient_quantise, gradient_value, norm_input,
                                           shift_gemm, tensor_quantise, tile_tags)
from airfoil.hw.shiftquant import SHIFTQUANT_LATENCY, ShiftQuantDot
from airfoil.hw.training_step import TRAINING_B_GROUPS
from tests.hw.l1norm_bench import dot_rows, l1_rows, start


async def gemm(dut, layout, lanes, a, b) -> torch.Tensor:
    """a.q [M, K] times b.q [N, K]^T (groups along K) on the dot tile, one output per row."""
    m_, k = a.q.shape
    beats = []
    for i in range(m_):
        for j in range(b.q.shape[0]):
            ta, tb = tile_tags(a, b, i, j, b_groups=TRAINING_B_GROUPS)
            for c in range(0, k, lanes):
                pad = max(0, c + lanes - k)
                sl = slice(c, min(c + lanes, k))
                beats.append(Const.cast(layout.const({
                    "a": a.q[i, sl].tolist() + [0] * pad, "b": b.q[j, sl].tolist() + [0] * pad,
                    "group": ta[sl].tolist() + [0] * pad, "b_group": tb[sl].tolist() + [0] * pad,
                    "first": int(c == 0), "last": int(c + lanes >= k)})).value)
    y = await dot_rows(dut, "gemm__", beats, m_ * b.q.shape[0], SHIFTQUANT_LATENCY)
    return torch.tensor(y, dtype=torch.int64).reshape(m_, b.q.shape[0])


@cocotb.test()
async def training_step(dut):
    cfg = json.load(open(os.environ["AIRFOIL_STEP"]))
    bits, lanes = cfg["bits"], cfg["lanes"]
    layout = ShiftQuantDot(bits, lanes, b_groups=TRAINING_B_GROUPS).beat_layout
    x, w, gy = (torch.tensor(cfg[k], dtype=torch.float64) for k in ("x", "w", "gy"))
    gen = torch.Generator().manual_seed(cfg["seed"])
    await start(dut)
    xq, wq = forward_operands(x, w, bits)
    z = await gemm(dut, layout, lanes, xq, wq)
    zn = norm_input(z, wq)
    fwd = await l1_rows(dut, "norm__", [{"mode": 0, "x": row} for row in zn.tolist()])
    g = torch.round(gy * 2 ** L1_FRAC).to(torch.int64)
    bwd = await l1_rows(dut, "norm__", [{"mode": 1, "g": gr, "y": f["value"], "sgn": f["sgn"], "s": f["s"]}
                                        for gr, f in zip(g.tolist(), fwd)])
    dz = torch.tensor([r["value"] for r in bwd], dtype=torch.int64)
    dzv = gradient_value(dz, xq, wq, shift_gemm(xq, wq)[2])
    gq = gradient_quantise(dzv, bits, gen)
    dx = await gemm(dut, layout, lanes, gq, tensor_quantise(w.T.contiguous(), bits, per_row=True))
    gq_t = gradient_quantise(dzv.T.contiguous(), bits, gen)
    dw = await gemm(dut, layout, lanes, gq_t, tensor_quantise(x.T.contiguous(), bits, per_row=True))
    json.dump({"z": z.tolist(), "zn": zn.tolist(), "y": [f["value"] for f in fwd], "sgn": [f["sgn"] for f in fwd],
               "s": [f["s"] for f in fwd], "dz": dz.tolist(), "dx": dx.tolist(), "dw": dw.tolist()},
              open(os.environ["AIRFOIL_RESULTS"], "w"))
