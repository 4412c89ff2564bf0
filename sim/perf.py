"""Performance model: cycles of a compiled program, instruction by instruction, for any length.

It runs the same dispatcher as the functional simulator (``sim.fsim.dispatch``: SETR, LOOP and
the affine fields) and schedules every instruction on the machine's units in time:

* the four queues (LOAD, COMPUTE, SFU, STORE) each run their instructions in order, one at a
  time; an instruction starts when its queue is free, its ``wait`` tokens have been released
  (a token carries its release time) and the unit it needs is free;
* units: the HBM pseudo-channels (LD and ST share them), the MPE (MM/MV, and attention's two
  products), the SFU; a weight LD also waits for its half of the double buffer to be consumed;
  an instruction that writes a buffer waits until the other queues' writes into it have ended
  (each buffer has one write port: the controller's interlock).

Cycle costs (``OpTiming``; the constants below, with where each comes from):

* LD/ST: row i goes to channel ``channel + (phase + i) mod channels``; a channel moves its bytes at its
  share of the peak (``hbm_channel_gbps`` at ``clock_mhz``) times ``HBM_EFFICIENCY``, each burst
  of b beats costing ``b + BURST_GAP_BEATS`` beat times; its data lands ``hbm_latency_cycles``
  after the last burst is issued, but the queue issues its next transfer at once (the DMA keeps
  several transactions outstanding, as AXI allows).
* MM/MV: the MPE mapping of ``hw/mpe_schedule.py``: D = dsp_per_chain kept weights per row per
  beat; MM takes two tokens per pass and one row per chain, MV two rows per chain (dense) or one
  (N < 16); all ``cores x chains_per_core`` chains work on a tile's rows; a beat of 8-bit codes
  takes two cycles where the weight decoders' slices are wider than half a word (the boards':
  ``hw.weight_decoder.split_lanes``).  Plus the pipeline (``CHAIN_LATENCY`` and the
  requantisation path).
* SFU: ``passes x elements / (sfu_lanes x cores)`` plus a pipeline latency; attention's
  score and P.V products run on the MPE at MV rate (an ATTENTION instruction holds both units).

Those are the target machine's costs (``OpTiming``): its MM/MV beat counts are the MPE's,
measured in Verilator (tests/hw/test_mpe_verilator.py), its HBM and SFU costs are assumptions,
and several of its parts are not in the RTL yet.  ``RtlTiming`` (``PerfModel(..., timing="rtl")``)
costs the RTL as built, calibrated against Verilator's instruction trace (``airfoil calibrate``,
``reports/calibration.json``, docs/perf.md).
"""
from __future__ import annotations

import functools
import math
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from airfoil.config import SPARSE_M, AirfoilConfig
from airfoil.hw.hbm_model import AXI_BOUNDARY_BYTES, BEAT_BYTES, MAX_BURST_BEATS
from airfoil.errors import AirfoilError
from airfoil.isa import OPCODE_QUEUE, Buffer, Opcode, Queue, SfuFunc, written_buffer
from airfoil.sim.fsim import QUEUE_ORDER, dispatch

__all__ = ["PerfModel", "PerfError", "SectionTiming", "OpTiming", "project", "HBM_EFFICIENCY", "BURST_GAP_BEATS"]

# Best measured U280 HBM throughput over its 460 GB/s peak (Shuhai, FCCM'20): 425 / 460.
HBM_EFFICIENCY = 425 / 460
# One idle beat per AXI burst (address phase and turnaround not hidden): ours, an assumption that
# makes short rows (a KV-cache head row) cost more than long sequential tiles.
BURST_GAP_BEATS = 1
REQUANT_LATENCY = 4  # group scale multiply, sum, shift, saturate (cycles)
SFU_LATENCY = 16
SFU_PASSES = {SfuFunc.RMSNORM: 2, SfuFunc.LAYERNORM: 2, SfuFunc.SOFTMAX: 3, SfuFunc.SILU_MUL: 1, SfuFunc.RELU: 2,
              SfuFunc.ROPE: 1, SfuFunc.ADD: 1, SfuFunc.MUL: 1, SfuFunc.REQUANT: 2, SfuFunc.ATTENTION: 3}


class PerfError(AirfoilError):
    pass


@dataclass
class OpTiming:
    """Cycle costs of single instructions on one configuration."""

    cfg: AirfoilConfig

    @property
    def channel_bytes_per_cycle(self) -> float:
        c = self.cfg
        return min(c.hbm_channel_gbps * 1e9 / (c.clock_mhz * 1e6), c.axi_bytes_per_cycle) * HBM_EFFICIENCY

    def transfer(self, f: dict) -> tuple[dict[int, float], int]:
        """(cycles each channel is busy, latency) of an LD/ST."""
        beat = self.cfg.axi_bytes_per_cycle
        beats = math.ceil(f["row_bytes"] / beat)
        bursts = math.ceil(beats / MAX_BURST_BEATS)
        per_row = (beats + bursts * BURST_GAP_BEATS) * beat / self.channel_bytes_per_cycle
        full, extra = divmod(f["rows"], f["channels"])
        first = f["phase"] % f["channels"]  # the channel offset of row 0
        busy = {}
        for i in range(f["channels"]):
            n = full + (1 if (i - first) % f["channels"] < extra else 0)
            if n:
                busy[f["channel"] + i] = n * per_row
        return busy, self.cfg.hbm_latency_cycles

    def gemm(self, op: Opcode, f: dict) -> int:
        from airfoil.hw.sparse_chain import CHAIN_LATENCY
        from airfoil.hw.weight_decoder import beat_cycles

        c = self.cfg
        chains = c.cores * c.chains_per_core
        n = f["pattern"].n
        beats_per_row = math.ceil(f["k"] * n // SPARSE_M / c.dsp_per_chain) * beat_cycles(
            f["width"].bits, c.chains_per_core, c.dsp_per_chain, c.axi_data_bits)
        if op == Opcode.MV or f["tokens"] == 1 or not c.mm_token_pairs:
            # (chains without MM's mode, config.mm_token_pairs: every MM a token a pass, dense rows
            # paired)
            rows_per_beat = chains * (2 if n == SPARSE_M else 1)
            passes = f["tokens"]
        else:
            rows_per_beat = chains
            passes = math.ceil(f["tokens"] / 2)
        return passes * math.ceil(f["rows"] / rows_per_beat) * beats_per_row + CHAIN_LATENCY + REQUANT_LATENCY

    def attention_products(self, f: dict) -> int:
        c = self.cfg
        length = f["pos"] + f["rows"]
        macs = 2 * f["rows"] * length * f["width"]
        # MV mapping: one MAC per slice per cycle with a single query row
        return math.ceil(macs / (c.cores * c.chains_per_core * c.dsp_per_chain * (2 if f["rows"] > 1 else 1)))

    def sfu(self, f: dict) -> int:
        c = self.cfg
        fn = f["func"]
        elements = f["rows"] * f["width"]
        if fn == SfuFunc.ATTENTION:
            elements = f["rows"] * (f["pos"] + f["rows"])  # the softmax over the scores
        return math.ceil(SFU_PASSES[fn] * elements / (c.sfu_lanes * c.cores)) + SFU_LATENCY


# ------------------------------------------------------------------ the RTL as built
# How the accelerator's RTL (hw/, the ``AirfoilTop`` of sim/rtl_top.py) spends its cycles, read
# from its state machines; the constants marked "measured" come from Verilator runs (the
# instruction trace of sim/hdl/airfoil_trace.sv, ``python -m airfoil.sim.calibrate``).
RTL_TRANSFER_SETUP = 2  # TransferEngine: IDLE (take) and SETUP
RTL_DIVIDE = 49  # its SequentialDivider (48 quotient bits) when phase >= channels
RTL_ROW = 2  # ROW (check) and NEXT_ROW (the spill's free cycle) around each row's beats
RTL_LD_DRAIN = 66  # measured: the HBM model's latency (the config's 64) until the last answer lands
# The read bridge gathers a row's consecutive beats into bursts (hw/axi.py: up to MAX_BURST_BEATS,
# never across 4 KB) and sends each when it closes; the HBM model reads a burst's beats one a
# cycle.  So the last beat is read later than it was asked for, by the most any burst k still has
# to read after the requests end: max_k (n_k - idle request cycles after k), RTL_ROW a row.
RTL_ST_DRAIN = 3  # measured: the buffer's read latency
RTL_MV_SETUP = 3  # MvUnit: IDLE, SECTIONS, CHECK (and SUB_TILES where the tile is cut in slices: sub_tile_cycles)
RTL_MV_TOKEN = 3  # TOKEN, EXPONENT, SHIFT: each pass's exponent and shift
RTL_MV_SECOND_TOKEN = 2  # a two-token pass: EXPONENT1 (token t + 1's), the first word of its last output beat
# LinearEngine: a beat a cycle, plus the pipeline (feeder, chain, requantiser: measured 13) and
# the weight decoders' stalls (hw/weight_decoder.py, decoder_fetches): at the start and at each
# row group change a decoder's bit windows ask for the words they do not hold (each window holds
# the two words it reads and two fetched ahead), one word a cycle on its read port, and the beat
# waits for the last word's read (one cycle more). The two decoders advance together, so a
# change costs the most either fetches.  Exact on the 889 tiles of the grid of
# tests/hw/test_linear_engine_verilator.py (314 dense, 575 sparse) since the image's sections
# start at whole words; within 3 cycles on the sparse ones before.
RTL_ENGINE_PIPELINE = 13
RTL_FETCH_LATENCY = 1
# SfuUnit: START, CHECK (4 address slots), the FIFO and the last write (measured); no rows: 2.
# A function of two GLOBAL operands waits one cycle more for its first item's second word (the
# element feed's one read port; it fetches ahead after that, so rows on the same alignment,
# whose operands cross words together, cost nothing more: measured exact on SmolLM2).
# Per row, cycles per element (RMSNorm: in, squares, normalise; the block quantiser's row
# memory: in, out; RoPE: a pair per two cycles) and a constant (measured: RMSNorm's divider
# and square root, the sigmoid table's read); RMSNorm's last row adds its output pass, which
# the next row hides otherwise (measured).
RTL_SFU_SETUP = 10
RTL_SFU_PER_ELEMENT = {SfuFunc.RMSNORM: 3, SfuFunc.SILU_MUL: 2, SfuFunc.REQUANT: 2, SfuFunc.RELU: 2,
                       SfuFunc.ADD: 1, SfuFunc.ROPE: 1}
RTL_SFU_PER_ROW = {SfuFunc.RMSNORM: 170, SfuFunc.SILU_MUL: 4, SfuFunc.REQUANT: 3, SfuFunc.RELU: 3,
                   SfuFunc.ADD: 0, SfuFunc.ROPE: 0}
RTL_RMSNORM_LAST_ROW = 2  # plus the row's width
# AttentionUnit: per query row of L positions (nc = width / 16 chunks) Q.K (nc + 2) L, P.V nc L,
# the softmax's 2 L, then the width and a constant (measured 56; the unit's own estimate is 45)
RTL_ATTENTION_SETUP, RTL_ATTENTION_PER_ROW = 3, 56


@functools.lru_cache(maxsize=1024)
def decoder_fetches(rows: int, k: int, bits: int, n: int, group_size: int, chains: int, pair: bool, d: int,
                    word_bits: int) -> tuple[int, int]:
    """The weight decoders' fetches that stall a tile (``LinearEngine``: one ``LaneGroupDecoder``
    takes every row group of ``chains`` rows of the lane-interleaved tile, or, where rows
    ``pair``, two take the even and the odd groups; each one a decoder per slice where the
    tile is cut in decoder slices): (words fetched, summed over the group
    changes of the decoder that fetches most; steps that fetch).  At the start every window is
    empty (two words each).  At a group change a window at word w of the group's last unit holds
    words w .. w + WINDOW_SLOTS - 1, and the next group's first unit wants the two words its
    address spans: a decoder taking every group finds them there (its next group starts where
    the last ended), one taking every other group jumps.  Dense tiles have no position window."""
    from airfoil.compiler.weight_image import decoder_slice_lanes, position_unit_blocks
    from airfoil.hw.weight_decoder import WINDOW_SLOTS, engine_geometries, lane_unit_bits, split_lanes

    kept, nb, groups = k * n // SPARSE_M, k // SPARSE_M, k // group_size
    units = {"code": kept // d, "pos": nb // position_unit_blocks(n, d), "scale": groups, "zero": groups}
    sections = ["code", "zero", "scale"] + ([] if n == SPARSE_M else ["pos"])
    n_groups = -(-rows // chains)
    step = 2 if pair else 1
    per_change = np.zeros(max(-(-n_groups // step) - 1, 0), np.int64)  # the decoders change groups together
    # every decoder slice reads its own sub-tile (weight_image's decoder slices), all in step
    lanes = decoder_slice_lanes(chains, d, word_bits)
    # a unit of 8-bit codes read in two halves: the code window ends a group on the second
    code_end = split_lanes(lanes, d, word_bits) * d * 8 if bits == 8 else 0
    for geo in engine_geometries(0, rows, k, bits, n, group_size, chains, pair, d, word_bits):
        g = np.arange(max(geo["groups"] - 1, 0))  # its groups with a next one (all full)
        fetch = np.zeros(len(g), np.int64)
        for s in sections:
            base, stride = geo[f"{s}_base"], geo[f"{s}_stride"]
            held = (base + g * stride + (units[s] - 1) * lanes * lane_unit_bits(s, bits, n, d, lanes)
                    + (code_end if s == "code" else 0)) // word_bits
            want = (base + (g + 1) * stride) // word_bits
            for w in (want, want + 1):
                fetch += (w < held) | (w >= held + WINDOW_SLOTS)
        np.maximum.at(per_change, g, fetch)
    start = 2 * len(sections) if rows else 0
    return start + int(per_change.sum()), int(rows > 0) + int((per_change > 0).sum())


def _burst_backlog(first: np.ndarray, beats: np.ndarray) -> int:
    """Cycles the HBM model reads after an LD's last request (rows of ``beats`` beats from beat
    address ``first``): a row's bursts split at 4 KB boundaries and every MAX_BURST_BEATS; only
    the last rows can matter, the earlier ones being that many idle cycles ahead."""
    page = AXI_BOUNDARY_BYTES // BEAT_BYTES
    backlog = 0
    rows = len(beats)
    for r in range(max(0, rows - MAX_BURST_BEATS // RTL_ROW - 1), rows):
        a, end = int(first[r]), int(first[r] + beats[r])
        longest = 0
        while a < end:  # the row's page segments, each in bursts of up to MAX_BURST_BEATS
            seg = min(end, (a // page + 1) * page) - a
            longest = max(longest, min(seg, MAX_BURST_BEATS))
            a += seg
        backlog = max(backlog, longest - RTL_ROW * (rows - 1 - r))
    return backlog


@dataclass
class RtlTiming:
    """Cycle costs of single instructions on the RTL as built (``AirfoilTop``: one core of the
    config): each queue has its own unit (the LD and ST transfer engines, one beat a cycle each;
    the MV unit, two rows per chain a beat for dense weights whose results are aligned; the SFU
    with its attention unit), which holds one instruction from start to done.  What the RTL does
    not have yet and ``OpTiming`` assumes: one DMA per pseudo-channel and attention's products on
    the MPE.  (MM's two tokens a pass it runs where a row outlasts both tokens' GLOBAL words,
    ``token_pairs``; ``OpTiming`` takes them for every MM of two tokens or more.)"""

    cfg: AirfoilConfig

    def transfer(self, op: Opcode, f: dict) -> int:
        from airfoil.isa import BUFFER_ELEMENT_BYTES, transfer_buffer_element, transfer_hbm_address

        beat = self.cfg.axi_bytes_per_cycle
        cyc = RTL_TRANSFER_SETUP + (RTL_LD_DRAIN if op == Opcode.LD else RTL_ST_DRAIN)
        rows, n = f["rows"], f["row_bytes"]
        if rows <= 0:
            return cyc
        if f["phase"] >= f["channels"]:
            cyc += RTL_DIVIDE
        i = np.arange(rows)
        if op == Opcode.LD:  # the source beats: HBM bytes of each row, or the buffer's
            src = transfer_hbm_address(f, i)
        else:
            src = transfer_buffer_element(f, i) * BUFFER_ELEMENT_BYTES[f["buffer"]]
        beats = (src + n - 1) // beat - src // beat + 1
        if op == Opcode.LD:
            cyc += _burst_backlog(src // beat, beats)
        return cyc + int(beats.sum()) + RTL_ROW * rows

    def engine(self, rows: int, k: int, bits: int, n: int, group_size: int, lanes: int | None = None) -> int:
        """The LinearEngine's cycles for one token over a tile, from start to its last result
        written, with ``lanes`` rows a beat (default: the chains, one row each;
        ``hw.mv_unit.row_lanes``): an output beat of ``lanes`` results that spans several GLOBAL
        words (``hw.mv_unit.out_words``) writes the last beat's other words after it."""
        from airfoil.hw.mv_unit import out_words
        from airfoil.hw.weight_decoder import beat_cycles

        c = self.cfg
        D = c.dsp_per_chain  # AirfoilTop builds one core of the config
        lanes = lanes or c.chains_per_core
        steps = math.ceil(rows / lanes)
        beats = steps * math.ceil(k * n // SPARSE_M / D) * beat_cycles(bits, c.chains_per_core, D, c.axi_data_bits)
        words, stalls = decoder_fetches(rows, k, bits, n, group_size, c.chains_per_core, lanes > c.chains_per_core, D,
                                        c.axi_data_bits)
        drain = out_words(lanes) - 1 if rows else 0
        return beats + RTL_ENGINE_PIPELINE + words + RTL_FETCH_LATENCY * stalls + drain

    def gemm(self, f: dict) -> int:
        from airfoil.hw.mv_unit import out_words, row_lanes, sub_tile_cycles, token_pairs

        c, n, tokens = self.cfg, f["pattern"].n, max(f["tokens"], 0)
        lanes = row_lanes(c.chains_per_core, n, f["out"], f["tokens"], f["out_stride"])
        setup = RTL_MV_SETUP + sub_tile_cycles(c.chains_per_core, c.dsp_groups_per_chain)
        engine = self.engine(f["rows"], f["k"], f["width"].bits, n, f["group_size"], lanes)
        if token_pairs(c.chains_per_core, c.dsp_groups_per_chain, n, f["k"], f["rows"], f["out"], tokens,
                       f["out_stride"], c.mm_token_pairs):  # tokens two a pass, an odd last one alone
            pairs = tokens // 2
            second = RTL_MV_SECOND_TOKEN + out_words(c.chains_per_core) - 1  # token + 1's last beat's other words too
            return setup + pairs * (RTL_MV_TOKEN + second + engine) + (tokens % 2) * (RTL_MV_TOKEN + engine)
        return setup + round(tokens * (RTL_MV_TOKEN + engine))

    def sfu(self, f: dict) -> int:
        fn, rows, width = f["func"], f["rows"], f["width"]
        if rows <= 0:
            return 2  # START finds nothing to do
        if fn == SfuFunc.ATTENTION:
            nc = width // 16
            per_row = sum((2 * nc + 4) * (f["pos"] + t + 1) + width + RTL_ATTENTION_PER_ROW for t in range(rows))
            return RTL_ATTENTION_SETUP + per_row
        if fn not in RTL_SFU_PER_ELEMENT:
            raise PerfError(f"SFU {fn.name}: not in the RTL yet (hw/sfu_unit.py stops with UNSUPPORTED)")
        from airfoil.hw.sfu_unit import SFU_TWO_OPERANDS

        last = width + RTL_RMSNORM_LAST_ROW if fn == SfuFunc.RMSNORM else 0
        second = int(fn in SFU_TWO_OPERANDS)  # the first item's second operand: one read port
        return RTL_SFU_SETUP + second + rows * (RTL_SFU_PER_ELEMENT[fn] * width + RTL_SFU_PER_ROW[fn]) + last


@dataclass
class SectionTiming:
    cycles: int = 0
    busy: Counter = field(default_factory=Counter)  # unit -> busy cycles ("MPE", "SFU", "HBM<c>"; RtlTiming: the queues)
    op_cycles: Counter = field(default_factory=Counter)  # opcode / SFU function -> cycles
    op_counts: Counter = field(default_factory=Counter)
    hbm_bytes: int = 0
    weight_bytes: int = 0
    kv_bytes: int = 0
    macs: int = 0

    def seconds(self, cfg: AirfoilConfig) -> float:
        return self.cycles / (cfg.clock_mhz * 1e6)


class PerfModel:
    """``timing``: ``"target"`` (``OpTiming``: the machine the projections describe) or ``"rtl"``
    (``RtlTiming``: the RTL as built, what the calibration compares with Verilator)."""

    def __init__(self, program, timing: str = "target"):
        if timing not in ("target", "rtl"):
            raise PerfError(f"timing {timing!r}: expected 'target' or 'rtl'")
        self.prog, self.cfg = program, program.cfg
        self.t = OpTiming(program.cfg)
        self.rtl = RtlTiming(program.cfg) if timing == "rtl" else None
        self.half = program.cfg.weight_half_bytes
        self.log: list | None = None  # set to a list to record (pc, queue, op key, start, end) per instruction

    def run(self, section: str, tokens: int, position: int) -> SectionTiming:
        regs = [0] * 16
        regs[0], regs[1] = tokens, position
        st = SectionTiming()
        now = 0.0
        pending: dict[Queue, list] = {q: [] for q in Queue}
        for ins, f in dispatch(self.prog.sections[section], regs):
            if ins.opcode in (Opcode.BARRIER, Opcode.END):
                now = self._drain(pending, now, st)
                if ins.opcode == Opcode.END:
                    st.cycles = math.ceil(now)
                    return st
                continue
            if ins.opcode != Opcode.NOP:
                pending[OPCODE_QUEUE[ins.opcode]].append((ins, f))
        raise PerfError(f"section {section!r} ended without END")

    def _drain(self, pending, start: float, st: SectionTiming) -> float:
        tokens: dict = {}
        heads = dict.fromkeys(Queue, 0)
        queue_free = dict.fromkeys(Queue, start)
        unit_free: Counter = Counter()
        half_free = [start, start]
        half_full = [False, False]
        written: dict = {}  # (buffer, queue) -> when that queue's last write into it ends
        end = start
        while True:
            progressed = False
            for q in QUEUE_ORDER:
                lst = pending[q]
                while heads[q] < len(lst):
                    ins, f = lst[heads[q]]
                    if any(not tokens.get((w, q)) for w in ins.wait):
                        break
                    half = None
                    if ins.opcode == Opcode.LD and f["buffer"] == Buffer.WEIGHT:
                        half = f["buf"] // self.half
                        if half_full[half]:
                            break
                    t0 = max([queue_free[q]] + [tokens[(w, q)].popleft() for w in ins.wait])
                    if half is not None:
                        t0 = max(t0, half_free[half])
                    buf = written_buffer(ins.opcode, f)  # one write port a buffer: the controller's interlock
                    if buf is not None:
                        t0 = max([t0] + [t for (b, p), t in written.items() if b == buf and p != q])
                    issued, t1 = self._execute(ins, f, t0, unit_free, st)
                    if buf is not None:
                        written[(buf, q)] = t1
                    if half is not None and ins.release:  # fsim's rule: the LD handing the tile over
                        half_full[half] = True
                    if ins.opcode in (Opcode.MM, Opcode.MV):
                        h = f["weight"] // self.half
                        half_full[h], half_free[h] = False, t1
                    queue_free[q] = issued
                    end = max(end, t1)
                    for r in ins.release:
                        tokens.setdefault((q, r), deque()).append(t1)
                    heads[q] += 1
                    progressed = True
                if progressed:
                    break
            if all(heads[q] == len(pending[q]) for q in Queue):
                break
            if not progressed:
                raise PerfError("deadlock in the performance model (the functional simulator names the queue heads)")
        for q in Queue:
            pending[q].clear()
        return end

    def _account(self, op: Opcode, f: dict, st: SectionTiming) -> str:
        """Counts the instruction's bytes and MACs; its key in ``op_cycles``."""
        st.op_counts[op.name] += 1
        if op in (Opcode.LD, Opcode.ST):
            nbytes = max(f["rows"], 0) * f["row_bytes"]
            st.hbm_bytes += nbytes
            if f["buffer"] == Buffer.WEIGHT:
                st.weight_bytes += nbytes
            elif f["buffer"] == Buffer.KV:
                st.kv_bytes += nbytes
            return op.name
        if op in (Opcode.MM, Opcode.MV):
            st.macs += max(f["tokens"], 0) * f["rows"] * f["k"] * f["pattern"].n // SPARSE_M
            return op.name
        if op == Opcode.SFU:
            if f["func"] == SfuFunc.ATTENTION:
                st.macs += 2 * f["rows"] * (f["pos"] + f["rows"]) * f["width"]
            return f"SFU.{f['func'].name}"
        raise PerfError(f"no timing for {op.name}")

    def _execute(self, ins, f: dict, t0: float, unit_free: Counter, st: SectionTiming) -> tuple[float, float]:
        """Schedules one instruction from ``t0``: (when its queue may issue the next, when it is done).
        A transfer frees its queue once its bursts are issued; its data lands a latency later."""
        op = ins.opcode
        key = self._account(op, f, st)
        if self.rtl is not None:  # the RTL: the queue's own unit holds the instruction until done
            if op in (Opcode.LD, Opcode.ST):
                cyc = self.rtl.transfer(op, f)
            elif op in (Opcode.MM, Opcode.MV):
                cyc = self.rtl.gemm(f)
            else:
                cyc = self.rtl.sfu(f)
            queue = OPCODE_QUEUE[op].name
            st.busy[queue] += cyc
            st.op_cycles[key] += cyc
            if self.log is not None:
                self.log.append((OPCODE_QUEUE[op], key, t0, t0 + cyc))
            return t0 + cyc, t0 + cyc
        if op in (Opcode.LD, Opcode.ST):
            busy, latency = self.t.transfer(f)
            if not busy:  # no rows (a length-dependent count of zero)
                return t0, t0
            start = max([t0] + [unit_free[f"HBM{c}"] for c in busy])
            for c, b in busy.items():
                unit_free[f"HBM{c}"] = start + b
                st.busy[f"HBM{c}"] += b
            issued = start + max(busy.values())
            t1 = issued + latency
        elif op in (Opcode.MM, Opcode.MV):
            cyc = self.t.gemm(op, f)
            start = max(t0, unit_free["MPE"])
            t1 = unit_free["MPE"] = start + cyc
            st.busy["MPE"] += cyc
        else:
            cyc = self.t.sfu(f)
            if f["func"] == SfuFunc.ATTENTION:
                prod = self.t.attention_products(f)
                start = max(t0, unit_free["MPE"], unit_free["SFU"])
                t1 = start + prod + cyc
                unit_free["MPE"] = unit_free["SFU"] = t1
                st.busy["MPE"] += prod
            else:
                start = max(t0, unit_free["SFU"])
                t1 = unit_free["SFU"] = start + cyc
            st.busy["SFU"] += cyc
        st.op_cycles[key] += t1 - start
        if self.log is not None:
            self.log.append((OPCODE_QUEUE[op], key, start, t1))
        return (issued if op in (Opcode.LD, Opcode.ST) else t1), t1


# ------------------------------------------------------------------ projections
# Energy per token (ours, estimates until a board is measured): the board's static power for the
# token's time, plus HBM2 access energy per byte moved (3.9 pJ/bit, O'Connor et al., MICRO'17)
# and the fabric's energy per INT8 MAC (DSP48E2 with its operand routing: 2 pJ, an assumption).
STATIC_WATTS = {"u280": 25.0, "vhk158": 35.0, "sim": 25.0}
HBM_PJ_PER_BYTE = 3.9 * 8
PJ_PER_MAC = 2.0
PROJECTION_CONTEXTS = (128, 512, 1024, 2048, 4096)


def project(spec, plan, cfg: AirfoilConfig, context: int = 512, prompt: int = 128, max_len: int | None = None,
            curve: tuple[int, ...] = PROJECTION_CONTEXTS, as_built: bool = True) -> dict:
    """Decode and prefill projections of a shape-only model compiled with ``plan`` on ``cfg``;
    ``decode_by_context`` at the ``curve`` contexts below the program's max length;
    ``rtl_as_built`` (with ``as_built``) the same program on the RTL's timing as it is today."""
    from airfoil.compiler.lowering import compile_model

    max_len = max_len or min(spec.max_positions, 4096)
    for name, v in (("--context", context), ("--prompt", prompt)):
        if not 1 <= v <= max_len - 1:
            raise PerfError(f"{name} {v}: expected 1..{max_len - 1} (the program's max length {max_len})")
    prog = compile_model(spec, plan.resolve(spec), plan.group_size, cfg, max_len)
    pm = PerfModel(prog)
    hz = cfg.clock_mhz * 1e6
    params = sum(o * k for o, k in spec.linear_shapes().values())

    def decode(pos: int) -> dict:
        st = pm.run("decode", 1, pos)
        s = st.cycles / hz
        return {"context": pos, "cycles": st.cycles, "tok_s": 1 / s, "bytes": st.hbm_bytes, "kv_bytes": st.kv_bytes,
                "hbm_utilisation": st.hbm_bytes / s / (cfg.hbm_peak_gbps * 1e9),
                "dsp_utilisation": st.macs / (st.cycles * cfg.macs_per_cycle), "macs": st.macs,
                "joules": STATIC_WATTS.get(cfg.board, 25.0) * s + (st.hbm_bytes * HBM_PJ_PER_BYTE + st.macs * PJ_PER_MAC) * 1e-12,
                "busy": {k: round(v / st.cycles, 4) for k, v in sorted(st.busy.items()) if not k.startswith("HBM")}}

    main = decode(context)
    pre = pm.run("prefill", prompt, 0)
    built = None
    if as_built:
        rtl = PerfModel(prog, timing="rtl")  # the RTL as it is today, calibrated (docs/perf.md)
        try:
            built_decode, built_prefill = rtl.run("decode", 1, context).cycles, rtl.run("prefill", prompt, 0).cycles
            built = {"decode_cycles": built_decode, "decode_tok_s": round(hz / built_decode, 2),
                     "prefill_cycles": built_prefill, "prefill_ms": round(built_prefill / hz * 1e3, 3)}
        except PerfError as e:  # the program needs what the RTL does not run yet
            built = {"decode_tok_s": None, "why": str(e)}
    by_context = [decode(c) for c in curve if c < max_len]
    return {
        "model": spec.name, "board": cfg.board, "plan": plan.name, "clock_mhz": cfg.clock_mhz,
        "weight_bits_average": round(prog.weight_image_bytes() * 8 / params, 3),
        "kv_bits": cfg.kv_bits, "dsp_slices": cfg.dsp_slices, "hbm_peak_gbps": round(cfg.hbm_peak_gbps, 1),
        "context": context, "decode_cycles": main["cycles"], "decode_tok_s": round(main["tok_s"], 2),
        "bytes_per_token": main["bytes"], "kv_bytes_per_token": main["kv_bytes"],
        "hbm_utilisation": round(main["hbm_utilisation"], 4), "dsp_utilisation": round(main["dsp_utilisation"], 4),
        "joules_per_token": round(main["joules"], 4), "unit_busy": main["busy"],
        "prompt": prompt, "prefill_cycles": pre.cycles, "prefill_ms": round(pre.cycles / hz * 1e3, 3),
        "decode_by_context": [{"context": d["context"], "tok_s": round(d["tok_s"], 2),
                               "hbm_utilisation": round(d["hbm_utilisation"], 4)} for d in by_context],
        "calibrated": False,
        "calibration": "the target machine: one DMA per pseudo-channel, MV's two rows and MM's two tokens per "
                       "chain beat, attention's products on the MPE; the RTL has MV's two rows and MM's two "
                       "tokens at any chain count, the rest not yet; the RTL as built is calibrated "
                       "(rtl_as_built, reports/calibration.json)",
        "rtl_as_built": built,
    }
