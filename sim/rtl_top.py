"""A compiled program's sections on the Verilator build of ``AirfoilTop``, driven as a host drives
a board: the HBM images load at time 0 (binary files, ``$fread``), the buffers are written through the host
port, the AXI4-Lite registers set (program channel/base/words from the compiler's placement, R0 =
tokens, R1 = position, EPS_Q and C_QK from the model), ap_start raised and the end awaited;
HBM comes back as binary dumps and the buffers through the host port.

One build per configuration (the board's config, the model's SFU settings and the HBM size),
under ``build/verilator/top-<key>``; later runs reuse it.  Each ``run`` is one simulator
process, so the state between runs (HBM and buffers) lives on the host, as ``RtlState``."""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from airfoil import numerics as nx
from airfoil.hw.buffers import DMA_BUFFERS, buffer_bytes
from airfoil.hw.control_registers import parse_results
from airfoil.hw.hbm_model import BEAT_BYTES
from airfoil.isa import Buffer, ErrorCode, Opcode, Queue
from airfoil.sim.verilator import (BUILD_ROOT, build_component, clocked_toplevel, log_tail, read_memory_dump, write_memory_image,
                                   run_bench)

__all__ = ["kernel_registers", "RtlTop", "RtlState", "RtlRun", "TracedInstruction", "parse_trace", "buffer_image", "buffer_values", "positions_for", "hex_words",
           "from_hex_words"]

TOP = "airfoil_top"


def buffer_image(values: np.ndarray, b: Buffer) -> bytes:
    """A buffer's elements (fsim's ``buf[b]``) as the RTL holds them: GLOBAL INT32 little-endian,
    the others one byte each."""
    if b == Buffer.GLOBAL:
        return np.asarray(values).astype("<i4").tobytes()
    return (np.asarray(values) & 0xFF).astype(np.uint8).tobytes()


def buffer_values(raw: bytes, b: Buffer, dtype) -> np.ndarray:
    """The inverse of ``buffer_image``, in fsim's element type ``dtype``."""
    if b == Buffer.GLOBAL:
        return np.frombuffer(raw, "<i4").astype(dtype)
    return np.frombuffer(raw, np.uint8 if b == Buffer.WEIGHT else np.int8).astype(dtype)


def kernel_registers(program, section: str, tokens: int, position: int, hbm_bases: list[int],
                     results: int = 0) -> dict[str, int]:
    """What the host writes before it starts ``section`` (R0 = ``tokens``, R1 = ``position``) of
    ``program``, on a board (``host.xrt_backend``) or in simulation: each pseudo-channel's
    buffer address (HBM_BASE), the program's address (its channel's buffer plus the section's
    offset) and length, the model's EPS_Q and C_QK, where the results word goes (RESULTS; 0:
    nowhere) (``docs/registers.md``)."""
    sec = program.hbm["program"]["sections"][section]
    spec = program.spec
    return {"PROGRAM": hbm_bases[program.hbm["program"]["channel"]] + sec["offset"], "PROGRAM_WORDS": sec["words"],
            "R0": tokens, "R1": position, "EPS_Q": nx.eps_q(spec.norm_eps), "C_QK": nx.c_qk(spec.head_dim),
            "RESULTS": results,
            **{f"HBM_BASE{c}": b for c, b in enumerate(hbm_bases)}}


def positions_for(max_len: int) -> int:
    """The attention's context in the RTL: the program's maximum length to a power of two (at
    least 16), so that programs of similar lengths share one build."""
    return max(16, 1 << (max_len - 1).bit_length())


@dataclass
class RtlState:
    """What the host keeps between runs: every HBM channel's bytes and every buffer's bytes.  A
    run's result holds each channel whole (the model's size, a power of two), longer than the
    compiler's images: bytes past an image must stay zero."""
    hbm: list[np.ndarray]
    buffers: dict[Buffer, bytes]


@dataclass(frozen=True)
class TracedInstruction:
    """One instruction of the trace: its queue, its pc, the cycles its unit took and finished it."""
    queue: Queue
    pc: int
    start: int
    end: int

    @property
    def cycles(self) -> int:
        return self.end - self.start


def parse_trace(text: str) -> list[TracedInstruction]:
    """The lines of ``sim/hdl/airfoil_trace.sv`` as instructions, in order of their start.  Each
    queue's unit holds one instruction at a time, so a D closes the queue's last S."""
    open_: dict[int, tuple[int, int]] = {}
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        f = line.split()
        if len(f) == 4 and f[1] == "S":
            open_[int(f[2])] = (int(f[3]), int(f[0]))
        elif len(f) == 3 and f[1] == "D" and int(f[2]) in open_:
            pc, start = open_.pop(int(f[2]))
            out.append(TracedInstruction(Queue(int(f[2])), pc, start, int(f[0])))
        else:
            raise ValueError(f"trace line {n}: {line!r} (expected 'CYCLE S QUEUE PC' or 'CYCLE D QUEUE')")
    return sorted(out, key=lambda t: (t.start, t.queue.value))


@dataclass
class RtlRun:
    status: ErrorCode
    error_pc: int
    hung: bool
    ap_done: bool  # CTRL.ap_done seen by the host's poll
    ap_done_cleared: bool  # and cleared by that read (ap_ctrl_hs)
    cycles: int
    busy: dict[str, int]
    executed: dict[str, int]
    run_seconds: float  # wall time from ap_start to the end (the simulation proper)
    wall_seconds: float  # the whole simulator process: images in and out, buffers, the run
    state: RtlState = field(repr=False)
    trace: list[TracedInstruction] | None = field(default=None, repr=False)  # with run(..., trace=True)
    results: dict[str, int] | None = None  # the results word the kernel wrote (RESULTS_LAYOUT's fields)

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.run_seconds if self.run_seconds > 0 else 0.0


# gcc's -O2 for the top's model instead of Verilator's default -Os: SmolLM2's decode token ran
# 1.20x faster (33,482 vs 28,004 cycles/s, one thread, the two builds side by side) for a build
# about 15% longer.  The small benches keep -Os: their builds outweigh their runs.
TOP_CFLAGS = ("-CFLAGS", "-O2")


class RtlTop:
    """``AirfoilTop`` for ``program``'s config and model, built on first use."""

    def __init__(self, program, watchdog_cycles: int = 1 << 20, build_root: Path = BUILD_ROOT, threads: int = 1):
        """``threads``: Verilator's model threads (a separate build).  Two made SmolLM2's decode
        token 1.5x faster on two idle cores on 2026-11-27's top, but 1.6 to 2.6x slower than one
        on 2026-12-05's (``host.runtime.interactive_threads``); its threads spin while they wait."""
        from airfoil.hw.sfu_unit import RopeTable
        from airfoil.hw.top import AirfoilTop, SfuSettings

        self.prog, spec, cfg = program, program.spec, program.cfg
        # a power of two with room past the images for the results word (RESULTS) at the end of channel 0
        self.channel_bytes = 1 << max(6, math.ceil(math.log2(program.hbm["bytes_per_channel"] + BEAT_BYTES)))
        widths = [ins.fields["width"] for sec in program.sections.values() for ins in sec if ins.opcode == Opcode.SFU]
        positions = positions_for(program.hbm["max_len"])
        sfu = SfuSettings(max(widths), RopeTable(spec.head_dim, spec.rope_theta, positions), positions)
        self.top = AirfoilTop(cfg, self.channel_bytes, sfu, watchdog_cycles)
        key = json.dumps([cfg.to_dict(), self.channel_bytes, sfu.max_width, spec.head_dim, spec.rope_theta, positions,
                          watchdog_cycles, TOP_CFLAGS, "hdl_clock"], sort_keys=True, default=str)
        self.threads = threads
        self.build_dir = build_root / (f"top-{cfg.board}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
                                       + (f"-t{threads}" if threads > 1 else ""))
        self.source_key = hashlib.sha256(key.encode() + _design_sources_digest() + str(threads).encode()).hexdigest()
        self._runners = {}

    def folder(self, waves: bool = False) -> Path:
        """The build's folder; the build that can dump FST has its own (``<build_dir>-fst``):
        tracing code slows every cycle, so the plain build has none."""
        return self.build_dir.with_name(self.build_dir.name + "-fst") if waves else self.build_dir

    def build(self, waves: bool = False):
        """Verilate the top (once per configuration; an up-to-date build is reused) in
        ``folder(waves)``."""
        if waves not in self._runners:
            threads = ["--threads", str(self.threads)] if self.threads > 1 else []
            self._runners[waves] = build_component(self.top, TOP, self.folder(waves), [*threads, *TOP_CFLAGS],
                                                   source_key=self.source_key, hdl_clock=True, waves=waves)
        return self._runners[waves]

    def run(self, section: str, tokens: int, position: int, state: RtlState, max_cycles: int = 1 << 26,
            work_dir: Path | None = None, trace: bool = False, waves: Path | None = None) -> RtlRun:
        """Run ``section`` with R0 = ``tokens``, R1 = ``position`` from ``state``; ``trace``: also
        each instruction's start and end cycle (``RtlRun.trace``); ``waves``: every signal of the
        run to that FST file (GTKWave, Surfer; about as large as the run is long)."""
        t0 = time.time()
        runner = self.build(waves=waves is not None)
        prog, cfg = self.prog, self.prog.cfg
        sizes = buffer_bytes(cfg)
        bases = self.top.hbm_bases()
        results_at = self.channel_bytes - BEAT_BYTES  # in channel 0, past every image
        registers = kernel_registers(prog, section, tokens, position, [bases[f"HBM_BASE{c}"] for c in range(len(bases))],
                                     results=bases["HBM_BASE0"] + results_at)
        with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
            tmp = Path(tmp)
            plusargs = [f"+trace={tmp / 'trace.txt'}"] if trace else []
            for c, image in enumerate(state.hbm):
                write_memory_image(tmp / f"channel{c}.bin", np.asarray(image, np.uint8).tobytes())
                plusargs += [f"+channel{c}={tmp / f'channel{c}.bin'}", f"+channel{c}_dump={tmp / f'channel{c}.out'}"]
            case = {"max_cycles": max_cycles,
                    "buffers": {str(b.value): hex_words(state.buffers[b]) for b in DMA_BUFFERS},
                    "runs": [{"registers": registers,
                              "buffer_words": {str(b.value): sizes[b] // BEAT_BYTES for b in DMA_BUFFERS}}]}
            (tmp / "case.json").write_text(json.dumps(case))
            try:
                run_bench(runner, clocked_toplevel(TOP), self.folder(waves is not None), "airfoil.sim.top_bench", tmp,
                          {"AIRFOIL_CASE": str(tmp / "case.json"), "AIRFOIL_RESULTS": str(tmp / "out.json")},
                          plusargs=plusargs, log_file=tmp / "sim.log",
                          waves=Path(waves).resolve() if waves is not None else None)
            except (Exception, SystemExit) as e:  # the runner exits through SystemExit when the simulator fails
                raise RuntimeError(f"the RTL simulation of {section!r} failed:\n{log_tail(tmp / 'sim.log')}") from e
            if not (tmp / "out.json").exists():
                raise RuntimeError(f"the RTL simulation of {section!r} wrote no results:\n{log_tail(tmp / 'sim.log')}")
            r = json.loads((tmp / "out.json").read_text())[0]
            hbm = [np.frombuffer(read_memory_dump(tmp / f"channel{c}.out"), np.uint8).copy()
                   for c in range(len(state.hbm))]
            results = parse_results(hbm[0][results_at:results_at + BEAT_BYTES].tobytes())
            hbm[0][results_at:results_at + BEAT_BYTES] = 0  # the host's, not the model's
            traced = parse_trace((tmp / "trace.txt").read_text()) if trace else None
        buffers = {Buffer(int(b)): from_hex_words(words) for b, words in r["buffers"].items()}
        return RtlRun(ErrorCode(r["status"]), r["error_pc"], r["hung"], r["ap_done"], not r["ctrl_after_read"] & 2,
                      r["cycles"],
                      {q.name: r[f"busy_{q.name.lower()}"] for q in Queue},
                      {q.name: r[f"executed_{q.name.lower()}"] for q in Queue},
                      r["run_seconds"], time.time() - t0, RtlState(hbm, buffers), traced, results)


def _design_sources_digest() -> bytes:
    """A digest of the files the top's build comes from (the RTL generators, the ISA, config and
    numerics, the simulation models, the build flags, the Amaranth version)."""
    import amaranth

    root = Path(__file__).resolve().parents[1]
    files = sorted([*(root / "hw").glob("*.py"), *(root / "sim" / "hdl").glob("*.sv"), *(root / "sim" / "include").glob("*.h"),
                    root / "sim" / "verilator.py",
                    *(root / "airfoil" / f for f in ("isa.py", "config.py", "numerics.py"))])
    h = hashlib.sha256(amaranth.__version__.encode())
    for f in files:
        h.update(f.name.encode() + f.read_bytes())
    return h.digest()


def hex_words(raw: bytes) -> list[str]:
    """64-byte little-endian words as hex (the benches' JSON)."""
    return [hex(int.from_bytes(raw[i:i + BEAT_BYTES], "little")) for i in range(0, len(raw), BEAT_BYTES)]


def from_hex_words(words: list[str]) -> bytes:
    """The inverse of ``hex_words``."""
    return b"".join(int(w, 16).to_bytes(BEAT_BYTES, "little") for w in words)
