"""A compiled model just before a prefill or a decode token, for the RTL's section tests: a tiny
random LLaMA with SmolLM2's head size (``TINY64_SPEC``: 2 layers, mixed 2/3/4/8-bit weights,
8:16 layers) compressed and compiled for the datapath's buffers.  Prefill case: the host has
written the 5-token prompt's embedding rows.  Decode case: fsim has run that prefill and the host
has written the next token's embedding row.  ``want`` is the integer reference's logits for the
section's last token."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from airfoil.compiler.compress import CompressionPlan
from airfoil.compiler.compressed_model import compress_model
from airfoil.compiler.lowering import Program, compile_model
from airfoil.host.integer_reference import IntegerReference, IntKVCache
from airfoil.sim.fsim import FunctionalSimulator
from tests.hw.memory_case import DATAPATH_CFG, DATAPATH_POSITIONS
from tests.tiny_model import TINY64_SPEC, tiny_llama

PROMPT = [3, 17, 42, 5, 60]
MAX_LEN = 24
PLAN = {"group_size": 32, "smooth_alpha": 0, "default": {"bits": 4, "method": "magnitude"},
        "layers": {"layers.0.attn_*": {"bits": 3, "n": 8}, "layers.1.ffn_up": {"bits": 2},
                   "layers.1.ffn_down": {"bits": 8, "n": 8}, "lm_head": {"n": 8}}}


@dataclass
class DecodeCase:
    prog: Program
    ref: IntegerReference
    fsim: FunctionalSimulator
    position: int
    want: np.ndarray


def tiny64_prefill_case() -> DecodeCase:
    plan = CompressionPlan.from_dict(PLAN, "t64")
    cm = compress_model(tiny_llama(3, TINY64_SPEC), plan)
    assert MAX_LEN <= DATAPATH_POSITIONS
    prog = compile_model(TINY64_SPEC, plan.resolve(TINY64_SPEC), 32, DATAPATH_CFG, MAX_LEN, cm)
    ref = IntegerReference(cm, "cpu")
    fs = FunctionalSimulator(prog, ref)
    fs.write_inputs(ref.embedding(torch.tensor(PROMPT)).numpy())
    want = ref.forward(torch.tensor(PROMPT), IntKVCache())[-1].numpy()
    return DecodeCase(prog, ref, fs, 0, want)


def tiny64_decode_case() -> DecodeCase:
    case = tiny64_prefill_case()
    prog, ref, fs = case.prog, case.ref, case.fsim
    fs.run("prefill", len(PROMPT), 0)
    cache = IntKVCache()
    nxt = int(np.argmax(ref.forward(torch.tensor(PROMPT), cache)[-1].numpy()))
    want = ref.forward(torch.tensor([nxt]), cache)[-1].numpy()
    fs.write_inputs(ref.embedding(torch.tensor([nxt])).numpy())
    return DecodeCase(prog, ref, fs, len(PROMPT), want)


def hbm_logits(prog: Program, image: bytes) -> np.ndarray:
    """The logits region of the channel image that holds it."""
    lg = prog.hbm["logits"]
    return np.frombuffer(image[lg["offset"]:lg["offset"] + 4 * prog.spec.vocab], "<i4").astype(np.int64)
