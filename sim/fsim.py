"""Functional simulator: executes a compiled program on a memory image, instruction by instruction.

It is the golden model of the RTL (issue: full accelerator).  The dispatcher reads the stream in
order, runs SETR/LOOP itself (length registers), evaluates every affine field and hands each
instruction to its queue.  The four queues then run *decoupled*: the scheduler always advances
the first queue, in the order LOAD, STORE, SFU, COMPUTE, whose head instruction has its
dependency tokens (and, for weight loads, a free half of the double buffer), so loads run as
far ahead as the tokens allow; a missing token shows up as a wrong result, a missing release
as a deadlock (an error naming the stuck queue heads), and a token left over at END as an error.

Numerics are the integer reference's stages (``IntegerKernels``), applied to what the
instructions address: weights come from the weight image bytes through the weight decoder
(``compiler.weight_image.unpack_tile``), activations and the KV cache from the buffers and HBM.
Counts: instructions per opcode, bytes per HBM channel, MACs per MM/MV and per SFU function.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from airfoil.errors import AirfoilError
from airfoil.isa import (EVAL_BITS, MAX_LOOP_DEPTH, OPCODE_QUEUE, SFU_DESTINATION, Affine, Buffer, ErrorCode, Instruction,
                         Opcode, Queue, SfuFunc, transfer_buffer_element, transfer_hbm_address)
from airfoil.compiler.weight_image import core_sub_tile_bytes, core_weight_bank_bytes, lane_interleave, unpack_tile
from airfoil.host.integer_reference import block_quantise, sat

__all__ = ["FsimError", "FunctionalSimulator", "FsimStats", "dispatch", "drain_queues", "input_region", "logits_region",
           "logits_from_bytes"]

QUEUE_ORDER = (Queue.LOAD, Queue.STORE, Queue.SFU, Queue.COMPUTE)


class FsimError(AirfoilError):
    """The program did something the machine cannot: deadlock, out-of-range address, bad operand.
    ``code`` is the ErrorCode the RTL controller stops with (None: a check only fsim makes yet)."""

    def __init__(self, message: str, code: ErrorCode | None = None):
        super().__init__(message)
        self.code = code


@dataclass
class FsimStats:
    instructions: Counter = field(default_factory=Counter)
    channel_bytes: Counter = field(default_factory=Counter)
    macs: Counter = field(default_factory=Counter)  # "MM", "MV", "ATTENTION"


@dataclass
class _Issued:
    ins: Instruction
    f: dict  # affine fields evaluated
    index: int


def _evaluate(a: Affine, regs, where: str) -> int:
    v = a.evaluate(regs)
    if not -(1 << (EVAL_BITS - 1)) <= v < 1 << (EVAL_BITS - 1):
        raise FsimError(f"{where}: evaluates to {v}, outside signed {EVAL_BITS} bits", ErrorCode.FIELD_RANGE)
    return v


def dispatch(prog: list[Instruction], regs: list[int], lo: int = 0, hi: int | None = None, depth: int = 0):
    """The dispatcher: runs SETR and LOOP on ``regs`` and yields every other instruction with its
    affine fields evaluated, in program order.  ``hi`` is the end of the enclosing loop body
    (None: the program), ``depth`` the loops open around it."""
    pc, end = lo, len(prog) if hi is None else hi
    while pc < end:
        if pc >= len(prog):
            raise FsimError(f"instruction {pc}: fetch past the program's {len(prog)} instructions", ErrorCode.PC_RANGE)
        ins = prog[pc]
        if ins.opcode == Opcode.SETR:
            f = ins.fields
            v = (regs[f["rs"]] * f["mul"] if f["use_rs"] else 0) + (regs[f["rt"]] * f["mul_t"] if f["use_rt"] else 0)
            regs[f["rd"]] = min(max((v + f["add"]) >> f["shift"], f["lo"]), f["hi"])
            pc += 1
        elif ins.opcode == Opcode.LOOP:
            n = _evaluate(ins["count"], regs, f"instruction {pc} (LOOP): field 'count'")
            body = ins["body"]
            if hi is not None and pc + 1 + body > hi:
                raise FsimError(f"instruction {pc} (LOOP): its body ends at {pc + 1 + body}, beyond the enclosing "
                                f"loop's body (ends at {hi})", ErrorCode.LOOP_NESTING)
            if n > 0 and depth == MAX_LOOP_DEPTH:
                raise FsimError(f"instruction {pc} (LOOP): more than {MAX_LOOP_DEPTH} loops open", ErrorCode.LOOP_DEPTH)
            for it in range(max(0, n)):
                regs[ins["reg"]] = it
                yield from dispatch(prog, regs, pc + 1, pc + 1 + body, depth + 1)
            pc += 1 + body
        else:
            yield ins, {k: (_evaluate(v, regs, f"instruction {pc} ({ins.opcode.name}): field {k!r}")
                            if isinstance(v, Affine) else v) for k, v in ins.fields.items()}
            pc += 1


def drain_queues(pending: dict[Queue, list[_Issued]], execute, half_bytes: int, full: list[bool]) -> None:
    """Run the four queues' pending instructions to the end (BARRIER/END): always the first queue,
    in QUEUE_ORDER, whose head has its dependency tokens (and, for a weight load, a free half of
    the double buffer: a weight load that releases a token, the one that hands its tile over,
    marks its half full, and the MM/MV reading it frees it; a tile's other loads, its sub-tiles'
    stripes, leave the flag).  ``execute(it)`` does the work;
    ``full`` (the two halves' flags) lasts the whole run, across barriers."""
    tokens: Counter = Counter()  # (from, to) -> count
    heads = dict.fromkeys(Queue, 0)
    while True:
        progressed = False
        for q in QUEUE_ORDER:
            lst = pending[q]
            while heads[q] < len(lst):
                it = lst[heads[q]]
                if any(tokens[(w, q)] == 0 for w in it.ins.wait):
                    break
                half = None
                if it.ins.opcode == Opcode.LD and it.f["buffer"] == Buffer.WEIGHT:
                    half = int(it.f["buf"] >= half_bytes)
                    if full[half]:
                        break
                for w in it.ins.wait:
                    tokens[(w, q)] -= 1
                execute(it)
                if half is not None and it.ins.release:  # the LD that hands the tile over fills the half
                    full[half] = True
                if it.ins.opcode in (Opcode.MM, Opcode.MV):
                    full[int(it.f["weight"] >= half_bytes)] = False
                for r in it.ins.release:
                    tokens[(q, r)] += 1
                heads[q] += 1
                progressed = True
            if progressed:
                break  # restart from the load queue: loads run as far ahead as allowed
        if all(heads[q] == len(pending[q]) for q in Queue):
            break
        if not progressed:
            stuck = {q.name: (pending[q][heads[q]].index, pending[q][heads[q]].ins.opcode.name,
                              getattr(pending[q][heads[q]].ins.fields.get("func"), "name", ""),
                              sorted(w.name for w in pending[q][heads[q]].ins.wait))
                     for q in Queue if heads[q] < len(pending[q])}
            raise FsimError(f"deadlock: queue heads waiting for tokens {stuck}", ErrorCode.WATCHDOG)
    left = {f"{a.name}->{b.name}": n for (a, b), n in tokens.items() if n}
    if left:
        raise FsimError(f"tokens released but never taken: {left}", ErrorCode.TOKENS_LEFT)
    for q in Queue:
        pending[q].clear()


def input_region(program, h0: np.ndarray) -> tuple[int, int, bytes]:
    """(channel, byte offset, bytes) of a chunk's embedding rows (INT32, FRAC_H) in HBM, where
    the host writes them on any backend."""
    inp = program.hbm["inputs"]
    raw = np.asarray(h0, dtype="<i4").tobytes()
    if len(raw) > inp["bytes"]:
        raise FsimError(f"{len(h0)} input rows exceed the input region (max length {program.hbm['max_len']})")
    return inp["channel"], inp["offset"], raw


def logits_region(program) -> tuple[int, int, int]:
    """(channel, byte offset, bytes) of the logits (INT32, FRAC_L) in HBM."""
    lg = program.hbm["logits"]
    return lg["channel"], lg["offset"], program.spec.vocab * 4


def logits_from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, "<i4").astype(np.int64)


class FunctionalSimulator:
    def __init__(self, program, kernels):
        if program.images is None:
            raise FsimError("the program has no weight image (compiled from a shape-only model)")
        self.prog, self.k = program, kernels
        cfg = program.cfg
        self.hbm = [np.frombuffer(bytes(img), dtype=np.uint8).copy() for img in program.images]
        self.half = cfg.weight_half_bytes
        self.buf = {
            Buffer.ACT: np.zeros(cfg.act_buffer_kib * 1024, np.int64),
            Buffer.KV: np.zeros(cfg.kv_buffer_kib * 1024, np.int64),
            Buffer.GLOBAL: np.zeros(cfg.global_buffer_kib * 1024 // 4, np.int64),
            Buffer.WEIGHT: np.zeros(2 * self.half, np.uint8),
        }
        self.stats = FsimStats()
        self._decoded: dict = {}
        # trace(layer, op, rows): called with each residual add's output ("attn_residual",
        # "ffn_residual"), the integer reference's trace points; None: off
        self.trace = None
        self._adds = 0

    # ------------------------------------------------------------------ host side
    def write_inputs(self, h0: np.ndarray) -> None:
        """The host writes the chunk's embedding rows (INT32, FRAC_H) into the input region."""
        channel, offset, raw = input_region(self.prog, h0)
        self.hbm[channel][offset:offset + len(raw)] = np.frombuffer(raw, np.uint8)

    def read_logits(self) -> np.ndarray:
        channel, offset, n = logits_region(self.prog)
        return logits_from_bytes(self.hbm[channel][offset:offset + n].tobytes())

    def run(self, section: str, tokens: int, position: int) -> None:
        """Run a section with R0 = tokens and R1 = position."""
        regs = [0] * 16
        regs[0], regs[1] = tokens, position
        self._adds = 0
        self._full = [False, False]  # the weight double buffer's halves, as the controller resets them at start
        pending: dict[Queue, list[_Issued]] = {q: [] for q in Queue}
        count = 0
        for ins, f in dispatch(self.prog.sections[section], regs):
            self.stats.instructions[ins.opcode.name] += 1
            if ins.opcode in (Opcode.BARRIER, Opcode.END):
                self._drain(pending)
                if ins.opcode == Opcode.END:
                    return
                continue
            if ins.opcode == Opcode.NOP:
                continue
            pending[OPCODE_QUEUE[ins.opcode]].append(_Issued(ins, f, count))
            count += 1
        raise FsimError(f"section {section!r} ended without END", ErrorCode.PC_RANGE)

    # ------------------------------------------------------------------ queues
    def _drain(self, pending: dict[Queue, list[_Issued]]) -> None:
        drain_queues(pending, self._execute, self.half, self._full)

    # ------------------------------------------------------------------ execution
    def _rows(self, buf: Buffer, base: int, stride: int, rows: int, width: int) -> np.ndarray:
        idx = base + stride * np.arange(rows)[:, None] + np.arange(width)[None, :]
        mem = self.buf[buf]
        if rows and (idx.min() < 0 or idx.max() >= len(mem)):
            raise FsimError(f"{buf.name} access [{idx.min()}, {idx.max()}] outside the buffer ({len(mem)} elements)",
                            ErrorCode.ADDRESS)
        return mem[idx] if rows else np.zeros((0, width), np.int64)

    def _store_rows(self, buf: Buffer, base: int, stride: int, values: np.ndarray) -> None:
        rows, width = values.shape
        if not rows:
            return
        idx = base + stride * np.arange(rows)[:, None] + np.arange(width)[None, :]
        mem = self.buf[buf]
        if idx.min() < 0 or idx.max() >= len(mem):
            raise FsimError(f"{buf.name} write [{idx.min()}, {idx.max()}] outside the buffer ({len(mem)} elements)",
                            ErrorCode.ADDRESS)
        mem[idx] = values

    def _execute(self, it: _Issued) -> None:
        op, f = it.ins.opcode, it.f
        if op in (Opcode.LD, Opcode.ST):
            self._transfer(op, f)
        elif op in (Opcode.MM, Opcode.MV):
            self._gemm(op, f)
        elif op == Opcode.SFU:
            self._sfu(f)

    def _transfer(self, op: Opcode, f: dict) -> None:
        """A byte copy between HBM and a buffer (elem_bytes is the buffer's element size, so an
        element is its little-endian bytes), row by row, each row checked before it moves."""
        buf, eb = f["buffer"], f["elem_bytes"]
        if f["phase"] < 0:
            raise FsimError(f"{op.name}: field 'phase' = {f['phase']} is negative", ErrorCode.ADDRESS)
        if buf not in self.buf:
            raise FsimError(f"{op.name}: the {buf.name} buffer is not addressable by LD/ST", ErrorCode.ADDRESS)
        for i in range(f["rows"]):
            j = f["phase"] + i  # the row's index in the striped region
            ch = f["channel"] + j % f["channels"]
            a = transfer_hbm_address(f, i)
            n = f["row_bytes"]
            mem = self.hbm[ch]
            if a < 0 or a + n > len(mem):
                raise FsimError(f"{op.name}: HBM channel {ch} bytes [{a}, {a + n}) outside its {len(mem)} bytes",
                                ErrorCode.ADDRESS)
            self.stats.channel_bytes[ch] += n
            dst = transfer_buffer_element(f, i)
            if buf == Buffer.WEIGHT:
                if dst < 0 or dst + n > len(self.buf[buf]):
                    raise FsimError(f"{op.name}: WEIGHT bytes [{dst}, {dst + n}) outside the buffer", ErrorCode.ADDRESS)
                if op == Opcode.ST:
                    mem[a:a + n] = self.buf[buf][dst:dst + n]
                else:
                    self.buf[buf][dst:dst + n] = mem[a:a + n]
                continue
            if op == Opcode.LD:
                vals = np.frombuffer(mem[a:a + n].tobytes(), "<i1" if eb == 1 else "<i4").astype(np.int64)
                self._store_rows(buf, dst, 0, vals[None, :])
            else:
                vals = self._rows(buf, dst, 0, 1, n // eb)[0]
                lim = 1 << (8 * eb - 1)
                if vals.min(initial=0) < -lim or vals.max(initial=0) >= lim:
                    raise FsimError(f"ST: a value does not fit {eb} byte(s)")
                mem[a:a + n] = np.frombuffer(vals.astype("<i1" if eb == 1 else "<i4").tobytes(), np.uint8)

    def _gemm(self, op: Opcode, f: dict) -> None:
        rows, k, T, gs = f["rows"], f["k"], f["tokens"], f["group_size"]
        bits, n = f["width"].bits, f["pattern"].n
        w = f["weight"]
        cfg = self.prog.cfg
        wbuf = self.buf[Buffer.WEIGHT]
        sizes = core_sub_tile_bytes(rows, k, bits, n, gs, cfg)
        if len(sizes) == 1:  # one piece at w
            if w < 0 or w + sizes[0] > len(wbuf):
                raise FsimError(f"{op.name}: the tile's WEIGHT bytes [{w}, {w + sizes[0]}) are outside the buffer",
                                ErrorCode.ADDRESS)
            raw = wbuf[w:w + sizes[0]].tobytes()
        else:  # sub-tile s at w + s bank, each inside its bank (weight_image: weight banks)
            bank = core_weight_bank_bytes(cfg)
            if w < 0 or w >= len(wbuf) or w % self.half + max(sizes) > bank:
                raise FsimError(f"{op.name}: the tile's sub-tiles of up to {max(sizes)} bytes at WEIGHT {w} leave "
                                f"their banks of {bank} bytes (or the buffer)", ErrorCode.ADDRESS)
            raw = b"".join(wbuf[w + s * bank:w + s * bank + size].tobytes() for s, size in enumerate(sizes))
        key = (hash(raw), rows, k, bits, n, gs)
        if key not in self._decoded:  # the weight decoder is a pure function of the tile's bytes
            w8, s = unpack_tile(raw, rows, k, bits, n, gs,
                                *lane_interleave(cfg.chains_per_core, cfg.dsp_per_chain, n, gs, cfg.axi_data_bits))
            self._decoded[key] = (w8.astype(np.int16), s.astype(np.int32), raw)
        w8, s, seen = self._decoded[key]
        if seen != raw:
            raise FsimError("weight-decoder cache collision")
        if T <= 0:  # a pass of no tokens (a length register of 0): the tile is checked, nothing moves
            return
        ws = w8.astype(np.int64) * np.repeat(s.astype(np.int64), gs, axis=1)
        act = self._rows(Buffer.ACT, f["act"], f["act_stride"], T, k + 1)
        q, e = act[:, :k], act[:, k]
        y = np.rint(q.astype(np.float64) @ ws.T.astype(np.float64)).astype(np.int64)  # exact: sums < 2^53
        if f["accumulate"]:
            y = y + self._rows(Buffer.GLOBAL, f["out"], f["out_stride"], T, rows)
        if f["requantise"]:
            y = self.k.requantise(torch.from_numpy(y), f["scale_exp"], torch.from_numpy(e), f["out_frac"],
                                  f"MM at weight {w}").numpy()
        self._store_rows(Buffer.GLOBAL, f["out"], f["out_stride"], y)
        self.stats.macs[op.name] += T * rows * k * n // 16

    def _sfu(self, f: dict) -> None:
        fn, rows, width = f["func"], f["rows"], f["width"]
        if rows <= 0:
            return
        G, A, KV = Buffer.GLOBAL, Buffer.ACT, Buffer.KV
        dst = SFU_DESTINATION.get(fn)  # ACT: INT8 rows and their exponents; GLOBAL: INT32 rows
        t = torch.from_numpy

        def put_q(q, e):
            self._store_rows(dst, f["dst"], f["stride_d"], np.concatenate([q.numpy(), e.numpy()[:, None]], 1))

        if fn == SfuFunc.RMSNORM:
            h = self._rows(G, f["src0"], f["stride0"], rows, width)
            gain = self._rows(G, f["param"], 0, 1, width)[0]
            put_q(*self.k.rmsnorm(t(h), t(gain)))
        elif fn == SfuFunc.ROPE:
            hd = f["param"]
            x = self._rows(G, f["src0"], f["stride0"], rows, width)
            x3 = t(x).view(rows, width // hd, hd).transpose(0, 1)
            pos = torch.arange(f["pos"], f["pos"] + rows)
            y = self.k.rope(x3, pos).transpose(0, 1).reshape(rows, width)
            self._store_rows(dst, f["dst"], f["stride_d"], y.numpy())
        elif fn == SfuFunc.REQUANT:
            put_q(*block_quantise(t(self._rows(G, f["src0"], f["stride0"], rows, width)), f["frac"]))
        elif fn == SfuFunc.ATTENTION:
            start = f["pos"]
            length = start + rows
            qa = self._rows(A, f["src0"], f["stride0"], rows, width + 1)
            ka = self._rows(KV, f["src1"], f["stride1"], length, width + 1)
            va = self._rows(KV, f["src2"], f["stride1"], length, width + 1)
            out = self.k.attention(t(qa[None, :, :width]), t(qa[None, :, width]), t(ka[None, :, :width]),
                                   t(ka[None, :, width]), t(va[None, :, :width]), t(va[None, :, width]), start)
            self._store_rows(dst, f["dst"], f["stride_d"], out.numpy())
            self.stats.macs["ATTENTION"] += 2 * rows * length * width
        elif fn == SfuFunc.SILU_MUL:
            g = self._rows(G, f["src0"], f["stride0"], rows, width)
            u = self._rows(G, f["src1"], f["stride1"], rows, width)
            put_q(*self.k.silu_mul(t(g), t(u)))
        elif fn == SfuFunc.ADD:
            a = self._rows(G, f["src0"], f["stride0"], rows, width)
            b = self._rows(G, f["src1"], f["stride1"], rows, width)
            out = sat(t(a + b), 32).numpy()
            self._store_rows(dst, f["dst"], f["stride_d"], out)
            if self.trace is not None:  # the residual adds: two per layer, in order, each chunk
                n = self._adds % (2 * self.prog.spec.n_layers)
                self.trace(n // 2, "ffn_residual" if n % 2 else "attn_residual", out)
            self._adds += 1
        elif fn == SfuFunc.RELU:
            x = self._rows(G, f["src0"], f["stride0"], rows, width)
            put_q(*block_quantise(t(np.maximum(x, 0)), f["frac"]))
        else:
            raise FsimError(f"SFU {fn.name} has no integer algorithm in docs/numerics.md yet")
