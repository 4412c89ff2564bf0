"""Per-unit compression sensitivity of SmolLM2, used to choose the default plan.

A unit is one block's attention (q,k,v,o), its MLP input (gate, up), its MLP output (down), or
the LM head.  Every layer is compressed once per option; each unit's option is swapped into an
otherwise all-dense-4-bit model and the perplexity is measured on a *development* slice of the
corpus (tokens 4096..4096+N: disjoint from the evaluation prefix and the calibration tail).
Writes JSON lines to the output file.  Run: python scripts/plan_sensitivity.py OUT.jsonl
"""
import json
import sys
import time

import torch

from airfoil.compiler.compress import LayerRecipe, compress_linear
from airfoil.compiler.compressed_model import calibrate
from airfoil.compiler.model import load_model
from airfoil.compiler.tokenizer import load_tokenizer
from airfoil.host.evaluation import perplexity
from airfoil.host.float_reference import FloatReference
from airfoil.host.text import calibration_tokens, eval_tokens

torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
out = open(sys.argv[1], "w")
GS = 32
OPTIONS = {"d4": LayerRecipe(4, 16), "s4": LayerRecipe(4, 8), "d3": LayerRecipe(3, 16), "s3": LayerRecipe(3, 8),
           "d2": LayerRecipe(2, 16)}
m = load_model("smollm2")
tok = load_tokenizer(m.source)
dev = eval_tokens(tok, 4096 + 1024)[4096:]
H = calibrate(m, calibration_tokens(tok, 2048)).hessian
comp = {o: {} for o in OPTIONS}
for o, r in OPTIONS.items():
    t = time.time()
    for name in m.spec.linear_shapes():
        comp[o][name] = compress_linear(m.linear(name), r, GS, H[name])
    print("compressed", o, time.time() - t, flush=True)
base_w = {n: c.dequantise() for n, c in comp["d4"].items()}
base_w.update({k: v for k, v in m.weights.items() if k.endswith("norm") or k == "embed"})
ref = FloatReference(m.spec, base_w)
base = perplexity(ref.forward, dev)
out.write(json.dumps({"unit": "base", "option": "d4", "ppl": base}) + "\n")
units = {f"layers.{i}.{u}": [f"layers.{i}.{k}" for k in ks] for i in range(m.spec.n_layers)
         for u, ks in (("attn", ("attn_q", "attn_k", "attn_v", "attn_o")), ("mlp_in", ("ffn_gate", "ffn_up")),
                       ("mlp_out", ("ffn_down",)))}
units["lm_head"] = ["lm_head"]
for unit, names in units.items():
    for o in OPTIONS:
        if o == "d4":
            continue
        for n in names:
            ref.w[n] = comp[o][n].dequantise()
        p = perplexity(ref.forward, dev)
        for n in names:
            ref.w[n] = base_w[n]
        size = sum(comp[o][n].codes.size for n in names)
        bits = sum(comp[o][n].storage_bits() for n in names)
        out.write(json.dumps({"unit": unit, "option": o, "ppl": p, "weights": size, "bits": bits}) + "\n")
        out.flush()
