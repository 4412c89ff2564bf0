"""Length-adaptive lowering and the functional simulator.

A tiny random LLaMA (fast) checks the passes, exact chunking and the token protocol; SmolLM2 with
the default plan checks the acceptance: prefill and 16 decode steps bit-identical with the
integer reference for three prompt lengths, from one compiled program."""
import json

import numpy as np
import pytest
import torch

from airfoil.cli import main
from airfoil.compiler.compress import CompressionPlan
from airfoil.compiler.compressed_model import compress_model
from airfoil.compiler.lowering import compile_model, exact_macs, program_stats
from airfoil.compiler.model import SHAPE_MODELS
from airfoil.compiler.plans import plan_path
from airfoil.compiler.weight_image import lane_interleave
from airfoil.config import preset
from airfoil.host.integer_reference import IntegerReference, IntKVCache
from airfoil.isa import INSTR_BYTES, Buffer, Instruction, Opcode, Queue, decode_program
from airfoil.sim.fsim import FsimError, FunctionalSimulator
from tests.tiny_model import TINY_SPEC, tiny_llama

TINY = TINY_SPEC
TINY_CFG = preset("sim", global_buffer_kib=8, act_buffer_kib=4, weight_buffer_kib=1, kv_buffer_kib=8)


@pytest.fixture(scope="module")
def tiny():
    plan = CompressionPlan.from_dict({"group_size": 32, "smooth_alpha": 0, "default": {"bits": 4, "method": "magnitude"},
                                      "layers": {"layers.0.attn_*": {"bits": 3, "n": 8}, "layers.1.ffn_up": {"bits": 2, "n": 4},
                                                 "layers.1.ffn_down": {"bits": 8, "n": 2}, "lm_head": {"n": 8}}}, "tiny")
    cm = compress_model(tiny_llama(1), plan)
    prog = compile_model(TINY, plan.resolve(TINY), 32, TINY_CFG, 64, cm)
    return cm, prog


def _generate(prog, ref, prompt, steps):
    """fsim and the integer reference side by side: (fsim logits, reference logits) per step."""
    fs = FunctionalSimulator(prog, ref)
    cache = IntKVCache()
    toks = torch.tensor(prompt)
    out = []
    want = ref.forward(toks, cache)[-1].numpy()
    fs.write_inputs(ref.embedding(toks).numpy())
    fs.run("prefill", len(prompt), 0)
    out.append((fs.read_logits(), want))
    pos = len(prompt)
    for _ in range(steps):
        nxt = torch.tensor([int(np.argmax(want))])
        want = ref.forward(nxt, cache)[-1].numpy()
        fs.write_inputs(ref.embedding(nxt).numpy())
        fs.run("decode", 1, pos)
        out.append((fs.read_logits(), want))
        pos += 1
    return out, fs


def test_passes_record_their_decisions(tiny):
    _, prog = tiny
    g = prog.graph
    assert prog.buffers["chunk"] == 4
    assert all(rows >= 1 for rows in g.tiles.values())
    assert {op.kind for op in g.ops} >= {"rmsnorm", "linear", "rope", "attention", "silu_mul", "add"}
    assert g.tensors["layers.0.x"] == {"shape": ("T", 64), "dtype": "int8", "layout": "rows+exponent",
                                       "placement": "on-chip"}
    assert g.tensors["layers.1.kv_cache"]["placement"] == "hbm"
    # the weight image holds every tile, striped over all channels at the same offsets
    assert len(prog.images) == TINY_CFG.hbm_channels
    assert prog.weight_image_bytes() == sum(w["tiles"] * w["chunk"] for w in prog.hbm["weights"].values()) * 4


@pytest.mark.parametrize("prompt_len", [1, 3, 4, 9])
def test_tiny_fsim_is_bit_identical_with_the_integer_reference(tiny, prompt_len):
    cm, prog = tiny
    ref = IntegerReference(cm, "cpu")
    prompt = [(7 * i + 3) % TINY.vocab for i in range(prompt_len)]
    steps, fs = _generate(prog, ref, prompt, 5)
    for got, want in steps:
        assert got.dtype == np.int64 and np.array_equal(got, want)
    assert fs.stats.macs["MM"] + fs.stats.macs["MV"] > 0 and sum(fs.stats.channel_bytes.values()) > 0


def test_tiny_fsim_on_decoder_slices(tiny):
    """A core whose row group's codes exceed a buffer word (6 chains of D = 16: 768 bits) gets its
    tiles cut in decoder slices (3 sub-tiles of 2 lanes, of two sizes), each sub-tile striped on
    its own over the (two) HBM channels and loaded into its slice's bank: fsim reads them back
    bit-identical with the integer reference."""
    cm, _ = tiny
    cfg = TINY_CFG.replace(chains_per_core=6, dsp_groups_per_chain=8, weight_buffer_kib=2, hbm_channels=2)
    assert lane_interleave(6, 16, 16, 32, cfg.axi_data_bits) == (6, 16, 2)
    prog = compile_model(TINY, cm.plan.resolve(TINY), 32, cfg, 64, cm)
    rows = {name: w["rows"] for name, w in prog.hbm["weights"].items()}
    assert any(r % 6 for r in rows.values())  # some tile has a short last row group
    # one LD a stripe of sub-tiles: those whose slices step a bank at each wrap to channel 0, and
    # tiles of two stripes (with a row of the short last group and without), the last handing over
    weight_lds = [ins for ins in prog.sections["decode"] if ins.opcode == Opcode.LD and ins["buffer"] == Buffer.WEIGHT]
    assert any(ins["buf_group_stride"] > 0 for ins in weight_lds)
    pairs = list(zip(prog.sections["decode"], prog.sections["decode"][1:]))
    assert any(a in weight_lds and b in weight_lds and not a.release and b.release for a, b in pairs)
    steps, _ = _generate(prog, IntegerReference(cm, "cpu"), [5, 17, 29], 3)
    for got, want in steps:
        assert np.array_equal(got, want)


def test_one_program_for_all_lengths(tiny):
    _, prog = tiny
    st = program_stats(prog)
    assert st["instr_bytes_total"] == (len(prog.sections["prefill"]) + len(prog.sections["decode"])) * INSTR_BYTES
    assert st["instr_bytes_naive_all_lengths"] > 10 * st["instr_bytes_total"]
    assert 0 <= st["max_padding_overhead"] < 0.02
    assert decode_program(b"".join(prog.encoded().values()), TINY_CFG.hbm_channels) == \
        prog.sections["prefill"] + prog.sections["decode"]
    # the sections sit in HBM, where the controller fetches them, after every other region
    program = prog.hbm["program"]
    image = prog.images[program["channel"]]
    for name, sec in program["sections"].items():
        assert sec["offset"] % 64 == 0 and sec["offset"] >= prog.hbm["logits"]["offset"] + prog.hbm["logits"]["bytes"]
        words = bytes(image[sec["offset"]:sec["offset"] + sec["words"] * INSTR_BYTES])
        assert decode_program(words, TINY_CFG.hbm_channels) == prog.sections[name]
    assert all(len(img) == prog.hbm["bytes_per_channel"] for img in prog.images)


def test_a_missing_release_deadlocks_and_names_the_queues(tiny):
    cm, prog = tiny
    sec = prog.sections["decode"]
    i = next(i for i, ins in enumerate(sec) if ins.opcode == Opcode.SFU and Queue.COMPUTE in ins.release)
    broken = list(sec)
    broken[i] = Instruction(sec[i].opcode, sec[i].fields, sec[i].wait, sec[i].release - {Queue.COMPUTE})
    prog2 = type(prog)(prog.spec, prog.cfg, {"prefill": prog.sections["prefill"], "decode": broken}, prog.hbm,
                       prog.buffers, prog.graph, prog.images)
    fs = FunctionalSimulator(prog2, IntegerReference(cm, "cpu"))
    fs.write_inputs(np.zeros((1, TINY.d_model), np.int64))
    with pytest.raises(FsimError, match="deadlock.*COMPUTE"):
        fs.run("decode", 1, 0)


def test_exact_macs_counts_causal_attention():
    spec = SHAPE_MODELS["llama2-7b"]
    plan = CompressionPlan.load(plan_path("w4-dense"))
    g = compile_model(spec, plan.resolve(spec), plan.group_size, preset("u280"), 128).graph
    lin = sum(o * k for o, k in spec.linear_shapes().values())
    head = spec.vocab * spec.d_model
    assert exact_macs(g, 1) == lin + spec.n_layers * spec.n_heads * spec.head_dim * 2
    assert exact_macs(g, 2) - exact_macs(g, 1) == lin - head + spec.n_layers * spec.n_heads * spec.head_dim * 4


@pytest.mark.parametrize("model, board, max_len", [("llama2-7b", "u280", 4096), ("opt-6.7b", "vhk158", 2048)])
def test_shape_models_compile_within_budget(model, board, max_len, capsys):
    assert main(["compile", "--model", model, "--board", board, "--max-len", str(max_len), "--stats", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["instr_bytes_total"] <= 16 * 2**20
    assert st["max_padding_overhead"] <= 0.02
    assert st["instr_bytes_naive_all_lengths"] > 1000 * st["instr_bytes_total"]
    assert st["weight_image_bytes"] > 3e9


@pytest.mark.parametrize("args, message", [
    (["--model", "llama2-7b", "--board", "u280", "--set", "weight_buffer_kib=1"], "exceeds half the weight buffer"),
    (["--model", "smollm2", "--board", "sim", "--max-len", "4096"], "exceed the KV buffer"),
    (["--model", "opt-6.7b", "--board", "vhk158", "--max-len", "4096"], "exceeds the model's 2048 positions"),
])
def test_lowering_errors_name_the_op(args, message, tmp_path, capsys):
    out = tmp_path / "prog"
    assert main(["compile", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_corrupt_compressed_file(tmp_path, capsys):
    bad = tmp_path / "bad.afc"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["compile", "--compressed", str(bad), "-o", str(tmp_path / "prog")]) == 2
    assert "bad.afc" in capsys.readouterr().err and not (tmp_path / "prog").exists()


def test_compile_writes_program_folder(tiny, tmp_path, capsys):
    out = tmp_path / "prog"
    assert main(["compile", "--model", "llama2-7b", "--board", "u280", "--max-len", "512", "-o", str(out), "--json"]) == 0
    manifest = json.loads((out / "program.json").read_text())
    blob = (out / "program.bin").read_bytes()
    n = sum(s["instructions"] for s in manifest["sections"].values())
    assert len(blob) == n * INSTR_BYTES and len(decode_program(blob, 32)) == n
    assert (out / "program.asm").read_text().count("\n") == n + 2


def test_smollm2_fsim_matches_integer_reference(compressed_default):
    """Acceptance: one program, prompts of 3 lengths (1, 2 and 3 chunks), each with prefill and 16
    greedy decode steps, logits bit-identical with the integer reference."""
    cm = compressed_default
    prog = compile_model(cm.spec, cm.plan.resolve(cm.spec), cm.plan.group_size, preset("sim"), 256, cm)
    ref = IntegerReference(cm, "cpu")
    tc = prog.buffers["chunk"]
    for n in (5, tc + 3, 2 * tc + 7):
        prompt = [1 + (i * 7919) % 40000 for i in range(n)]
        steps, _ = _generate(prog, ref, prompt, 16)
        assert len(steps) == 17
        for i, (got, want) in enumerate(steps):
            assert np.array_equal(got, want), f"prompt of {n}: step {i} differs"
