"""Runs programs on the Verilator ``TransferHarness`` and on fsim from the same HBM and buffer
contents, and checks that both leave every byte of HBM and of the buffers the same, with the
same status (the LD/ST, MV and SFU tests)."""
from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import numpy as np

from airfoil.compiler.model import model_spec
from airfoil.config import preset
from airfoil.host.integer_reference import IntegerKernels
from airfoil.hw.buffers import DMA_BUFFERS, buffer_bytes
from airfoil.hw.sfu_unit import RopeTable
from airfoil.isa import BUFFER_ELEMENT_BYTES, Affine, Buffer, ErrorCode, Instruction, Opcode, SfuFunc, encode
from airfoil.sim.fsim import FsimError, FunctionalSimulator
from airfoil.sim.rtl_top import buffer_image, from_hex_words, hex_words
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench
from tests.hw.transfer_harness import TransferHarness


def _first_difference(a: bytes, b: bytes) -> int:
    return next(k for k in range(len(a)) if a[k] != b[k])


def run_programs(tmp_path, name: str, cfg, channel_bytes: int, latency: int, hbm: list[bytearray], programs,
                 rng, kernels=None, mv: tuple[int, ...] | None = None, sfu: dict | None = None,
                 regs: list[tuple[int, int]] | None = None, buffers: dict | None = None, imem_depth: int = 64,
                 watchdog_cycles: int = 1024, stall: bool = False) -> list[dict]:
    """Run ``programs`` one after the other from ``hbm`` and ``buffers`` (fsim's ``buf``; None:
    random), with (R0, R1) = ``regs`` (default (1, 0)); assert that RTL and fsim agree on status,
    bytes moved and memory after each; return the RTL results.  ``mv``: (chains, DSP groups), and
    the cores the chains are in (the MPEs run in lock step), if not one."""
    sizes = buffer_bytes(cfg)
    regs = regs or [(1, 0)] * len(programs)
    sim = FunctionalSimulator(SimpleNamespace(images=hbm, cfg=cfg, sections={}), kernels)
    for b in DMA_BUFFERS:  # random starting contents, as the buffers' element types hold them
        if buffers is not None:
            sim.buf[b][:] = buffers[b]
            continue
        raw = rng.bytes(sizes[b])
        sim.buf[b][:] = (np.frombuffer(raw, "<i4") if b == Buffer.GLOBAL else
                         np.frombuffer(raw, np.uint8 if b == Buffer.WEIGHT else np.int8)).astype(sim.buf[b].dtype)
    case = {"max_cycles": 200_000, "settle": 64, "eps_q": getattr(kernels, "eps_q", 0),
            "c_qk": getattr(kernels, "c_qk", 0),
            "hbm": {str(c): hex_words(bytes(sim.hbm[c])) for c in range(cfg.hbm_channels)},
            "buffers": {str(b.value): hex_words(buffer_image(sim.buf[b], b)) for b in DMA_BUFFERS},
            "programs": [{"words": [hex(encode(i, cfg.hbm_channels)) for i in p], "r0": r0, "r1": r1}
                         for p, (r0, r1) in zip(programs, regs)]}
    (tmp_path / "case.json").write_text(json.dumps(case))
    build_dir = BUILD_ROOT / name
    harness = TransferHarness(cfg.hbm_channels, channel_bytes, latency, sizes, cfg.weight_half_bytes, imem_depth,
                              watchdog_cycles, mv=mv and (*mv[:2], cfg.mm_token_pairs, *mv[2:]), sfu=sfu,
                              stall=stall)
    runner = build_component(harness, "transfer_harness", build_dir)
    run_bench(runner, "transfer_harness", build_dir, "tests.hw.transfer_bench", tmp_path,
              {"AIRFOIL_CASE": str(tmp_path / "case.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    out = json.loads((tmp_path / "out.json").read_text())
    assert len(out) == len(programs)
    for i, (prog, r, (r0, r1)) in enumerate(zip(programs, out, regs)):
        where = f"program {i}"
        sim.prog.sections = {"p": prog}
        before = sum(sim.stats.channel_bytes.values())
        try:
            sim.run("p", r0, r1)
            code = ErrorCode.NONE
        except FsimError as e:
            code = e.code
        r["fsim_code"] = code
        assert not r["hung"], f"{where}: hung"
        if ErrorCode(r["error"]) == ErrorCode.UNSUPPORTED:
            continue  # fsim runs what the RTL cannot yet; the caller checks these
        assert ErrorCode(r["error"]) == code, f"{where}: RTL {ErrorCode(r['error']).name}, fsim {code.name}"
        if code == ErrorCode.NONE:
            assert r["moved_bytes"] == sum(sim.stats.channel_bytes.values()) - before, f"{where}: bytes moved"
        for c in range(cfg.hbm_channels):
            got, want = from_hex_words(r["hbm"][c]), bytes(sim.hbm[c])
            assert got == want, f"{where}: HBM channel {c} differs first at byte {_first_difference(got, want)}"
        for b in DMA_BUFFERS:
            got, want = from_hex_words(r["buffers"][str(b.value)]), buffer_image(sim.buf[b], b)
            assert got == want, f"{where}: {b.name} differs first at byte {_first_difference(got, want)}"
    return out


def row_transfer(op: Opcode, buffer: Buffer, hbm: int, buf: int, n: int, channel: int = 0, *, rows: int = 1,
                 hbm_stride: int = 0, buf_stride: int = 0, channels: int = 1, phase: int = 0, buf_group_stride: int = 0,
                 **kw) -> Instruction:
    """A LD or ST of ``rows`` rows of ``n`` bytes (one by default) between HBM byte ``hbm`` of
    ``channel`` (over ``channels`` from ``phase``, ``hbm_stride`` apart) and element ``buf`` of
    ``buffer`` (``buf_stride`` elements apart, ``buf_group_stride`` more at each wrap to the first
    channel); ``kw``: the dependency tokens."""
    return Instruction(op, {"channel": channel, "channels": channels, "phase": Affine(phase), "buffer": buffer,
                            "hbm": Affine(hbm), "buf": Affine(buf), "rows": Affine(rows), "row_bytes": n,
                            "hbm_stride": hbm_stride, "buf_stride": buf_stride,
                            "elem_bytes": BUFFER_ELEMENT_BYTES[buffer], "buf_group_stride": buf_group_stride}, **kw)


# MV/MM formats the MV unit runs, (rows, k, bits, N, group) with kg = group * N / 16 >= D: every
# width, N and group size, rows that do not divide by the chains, SmolLM2's k of 576 and 1,536
MV_FORMATS = [(10, 576, 4, 16, 32), (12, 576, 4, 8, 32), (7, 256, 2, 16, 64), (8, 192, 8, 16, 32),
              (9, 320, 3, 8, 32), (5, 512, 4, 4, 64), (6, 256, 2, 2, 128), (3, 1536, 4, 8, 32)]


# The datapath harness the MV and SFU tests share (one Verilator build): small buffers, the sim
# preset's MV geometry, an SFU as wide as SmolLM2's widest row (the FFN's 1,536) with its RoPE
# table and attention over the first 64 positions.
DATAPATH_CFG = preset("sim").replace(act_buffer_kib=4, global_buffer_kib=8, weight_buffer_kib=8, kv_buffer_kib=4)
DATAPATH_CHANNEL_BYTES = 65536
DATAPATH_POSITIONS = 64
SFU_MAX_WIDTH = 1536


@functools.cache
def datapath_kernels() -> IntegerKernels:
    """SmolLM2's integer kernels (EPS_Q, the RoPE table, C_QK), the SFU's golden model."""
    return IntegerKernels(model_spec("smollm2"), device="cpu")


def run_datapath_programs(tmp_path, hbm: list[bytearray], programs, rng, kernels: IntegerKernels | None = None,
                          **kw) -> list[dict]:
    """``run_programs`` on the shared MV + SFU harness (room for 512 instructions, a watchdog of
    2^16 cycles), with SmolLM2's kernels unless ``kernels`` (of a model with SmolLM2's head size
    and theta: the RoPE ROM is built from them) are given."""
    cfg, kernels = DATAPATH_CFG, kernels or datapath_kernels()
    spec = kernels.spec
    sfu = {"max_width": SFU_MAX_WIDTH, "max_positions": DATAPATH_POSITIONS,
           "rope": RopeTable(spec.head_dim, spec.rope_theta, DATAPATH_POSITIONS)}
    return run_programs(tmp_path, "datapath_sim", cfg, DATAPATH_CHANNEL_BYTES, 16, hbm, programs, rng, kernels,
                        mv=(cfg.chains_per_core, cfg.dsp_groups_per_chain), sfu=sfu, imem_depth=512,
                        watchdog_cycles=1 << 16, **kw)


def sfu_operand_values(rng, func: SfuFunc, n: int, operand: int) -> np.ndarray:
    """``n`` values of SFU operand ``operand`` (0, 1, or 2: RMSNORM's gain) in the ranges the
    model's rows take, and their extremes."""
    if func == SfuFunc.RMSNORM:
        if operand == 2:  # the gain, FRAC_G
            return rng.integers(-(1 << 21), 1 << 21, n)
        big = rng.random() < 0.3  # rows wider than 24 bits take the pre-shift path
        return rng.integers(-(1 << 28), 1 << 28, n) if big else rng.integers(-(1 << 18), 1 << 18, n)
    if func == SfuFunc.SILU_MUL:
        return rng.integers(-(1 << 17), 1 << 17, n)
    if func == SfuFunc.ROPE:  # the model's q and k rows, and rows that saturate after rotation
        return rng.integers(-(1 << 31), 1 << 31, n) if rng.random() < 0.3 else rng.integers(-(1 << 20), 1 << 20, n)
    if func == SfuFunc.ADD:  # saturation included
        return rng.integers(-(1 << 31), 1 << 31, n) if rng.random() < 0.3 else rng.integers(-(1 << 24), 1 << 24, n)
    return rng.integers(-(1 << 31), 1 << 31, n) if rng.random() < 0.2 else rng.integers(-(1 << 20), 1 << 20, n)
