"""The host runtime: the same generation loop on the reference and fsim backends gives the same
tokens; --check compares every layer of every step and names the first difference."""
import pytest

from airfoil.compiler.compress import CompressionPlan
from airfoil.compiler.compressed_model import compress_model
from airfoil.compiler.lowering import compile_model
from airfoil.config import preset
from airfoil.host.runtime import FsimBackend, ReferenceBackend, generate
from tests.tiny_model import TINY_SPEC, tiny_llama

CFG = preset("sim", global_buffer_kib=8, act_buffer_kib=4, weight_buffer_kib=1, kv_buffer_kib=8)
PROMPT = [5, 17, 3, 88, 41, 9, 60, 2, 33, 71, 12]  # more than one prefill chunk


@pytest.fixture(scope="module")
def tiny():
    plan = CompressionPlan.from_dict({"group_size": 32, "smooth_alpha": 0, "default": {"bits": 4, "method": "magnitude"},
                                      "layers": {"layers.1.ffn_up": {"bits": 3, "n": 8}}}, "tiny")
    cm = compress_model(tiny_llama(3), plan)
    return cm, lambda: compile_model(TINY_SPEC, plan.resolve(TINY_SPEC), 32, CFG, 64, cm)


def test_fsim_and_reference_generate_the_same_tokens_checked_layer_by_layer(tiny):
    cm, program = tiny
    ref = generate(ReferenceBackend(cm, "cpu"), PROMPT, 12)
    got = generate(FsimBackend(program(), cm), PROMPT, 12, checker=ReferenceBackend(cm, "cpu"))
    assert got.check == "passed" and got.steps_checked == 12 and got.mismatch is None
    assert got.tokens == ref.tokens and len(ref.tokens) == 12


def test_a_corrupted_weight_image_fails_the_check_at_the_first_layer_that_differs(tiny):
    cm, program = tiny
    prog = program()
    w = prog.hbm["weights"]["layers.1.ffn_up"]
    img = prog.images[0]  # the first tile starts with its codes, in channel 0: flip row 0's
    img[w["offset"]:w["offset"] + 8] = bytes(b ^ 0x5A for b in img[w["offset"]:w["offset"] + 8])
    got = generate(FsimBackend(prog, cm), PROMPT, 4, checker=ReferenceBackend(cm, "cpu"))
    assert got.check == "failed"
    m = got.mismatch
    assert (m.step, m.layer, m.op) == (0, 1, "ffn_residual")
    assert m.expected != m.got and str(m).startswith("step 0, layer 1, ffn_residual, index [")


class _ReplayTop:
    """Stands in for ``RtlTop``: runs the section in a fresh fsim from the given state and flips
    one byte of the result at ``corrupt`` (channel, offset), to check the rtl backend's own
    RTL-vs-fsim comparison without a Verilator build (tests/hw/test_smollm2_rtl.py runs the RTL)."""

    def __init__(self, prog, cm, corrupt=None):
        self.prog, self.cm, self.corrupt, self.build_dir, self.waves = prog, cm, corrupt, None, []

    def run(self, section, tokens, position, state, max_cycles=1 << 26, trace=False, waves=None):
        self.waves.append(waves)
        from airfoil.host.integer_reference import IntegerReference
        from airfoil.hw.buffers import DMA_BUFFERS
        from airfoil.isa import ErrorCode
        from airfoil.sim.fsim import FunctionalSimulator
        from airfoil.sim.rtl_top import RtlRun, RtlState, buffer_image, buffer_values

        sim = FunctionalSimulator(self.prog, IntegerReference(self.cm, "cpu"))
        for c, h in enumerate(state.hbm):
            sim.hbm[c][:] = h
        for b in DMA_BUFFERS:
            sim.buf[b][:] = buffer_values(state.buffers[b], b, sim.buf[b].dtype)
        sim.run(section, tokens, position)
        out = RtlState([h.copy() for h in sim.hbm], {b: buffer_image(sim.buf[b], b) for b in DMA_BUFFERS})
        if self.corrupt:
            c, off = self.corrupt
            out.hbm[c][off] ^= 0x10
        return RtlRun(ErrorCode.NONE, 0, False, True, True, 1000, {}, {}, 1.0, 1.0, out)


def test_the_rtl_backend_checks_each_rtl_step_against_fsim_and_names_the_region(tiny):
    from airfoil.host.runtime import RtlBackend, locate_hbm

    cm, program = tiny
    prog = program()
    backend = RtlBackend(prog, cm, top=_ReplayTop(prog, cm))
    got = generate(backend, PROMPT, 3, checker=ReferenceBackend(cm, "cpu"))
    want = generate(ReferenceBackend(cm, "cpu"), PROMPT, 3)
    assert got.check == "passed" and got.tokens == want.tokens and got.steps_checked == 3
    assert backend.run_sections == ["prefill", "decode", "decode"]

    spec, kv = prog.spec, prog.hbm["kv_region"]
    off = (1 * spec.n_kv_heads + 1) * kv + 5  # layer 1, KV head 1
    assert locate_hbm(prog, 0, off) == (1, "kv_cache (KV head 1)")
    # the prompt in RTL: its step (0) is the first to differ; in fsim (--prefill fsim): the first decode step
    for prefill, step in (("rtl", 0), ("fsim", 1)):
        backend = RtlBackend(prog, cm, top=_ReplayTop(prog, cm, corrupt=(0, off)), prefill=prefill)
        got = generate(backend, PROMPT, 3, checker=ReferenceBackend(cm, "cpu"))
        m = got.mismatch
        assert got.check == "failed" and (m.step, m.layer, m.index) == (step, 1, (off,)), prefill
        assert m.op == "rtl vs fsim: kv_cache (KV head 1) (HBM channel 0)" and m.expected ^ m.got == 0x10


def test_the_rtl_backend_names_each_steps_waves(tiny, tmp_path):
    from airfoil.host.runtime import RtlBackend

    cm, program = tiny
    prog = program()
    top = _ReplayTop(prog, cm)
    generate(RtlBackend(prog, cm, top=top, check=False), PROMPT, 2)
    assert top.waves == [None, None]  # none asked
    top = _ReplayTop(prog, cm)
    generate(RtlBackend(prog, cm, top=top, check=False, waves=tmp_path / "waves"), PROMPT, 3)
    assert top.waves == [tmp_path / "waves" / f"step{n}-{s}.fst" for n, s in ((1, "prefill"), (2, "decode"), (3, "decode"))]
    assert (tmp_path / "waves").is_dir()


def test_waves_are_the_rtl_backends_alone(tmp_path, capsys):
    from airfoil.cli import main

    assert main(["run", "--backend", "fsim", "--prompt", "hi", "--waves", str(tmp_path)]) == 2
    assert "--waves: only the rtl backend" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["run", "--backend", "rtl", "--prompt", "hi", "--waves", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_the_rtl_backend_goes_on_from_an_fsim_run(tiny):
    """The demo's RTL token: fsim answers, then the RTL decodes the answer's next token from
    fsim's state, checked by the same reference (its KV cache at the same position)."""
    from airfoil.host.runtime import RtlBackend

    cm, program = tiny
    prog = program()
    fsim, checker = FsimBackend(prog, cm), ReferenceBackend(cm, "cpu")
    first = generate(fsim, PROMPT, 3, checker=checker)
    backend = RtlBackend(prog, cm, top=_ReplayTop(prog, cm), fsim=fsim)
    assert backend.position == len(PROMPT) + 2
    more = generate(backend, [first.tokens[-1]], 2, checker=checker)
    want = generate(ReferenceBackend(cm, "cpu"), PROMPT, 5)
    assert more.check == "passed" and more.steps_checked == 2 and backend.run_sections == ["decode", "decode"]
    assert first.tokens + more.tokens == want.tokens
    with pytest.raises(ValueError, match="another program"):
        RtlBackend(program(), cm, top=_ReplayTop(prog, cm), fsim=fsim)
