"""CUDA == CPU check of the integer reference, small enough to carry to a GPU machine.

``prepare`` (here) cuts a slice of a compressed model (the first L blocks and the first V
vocabulary rows of the embedding and the LM head: the same weights and arithmetic, a smaller
file), runs it on the CPU and stores the tokens and the integer logits.  ``check`` (there)
runs the slice on the CPU and on CUDA and compares both with the stored logits, bit for bit,
for a prefill and for single-token decode steps.

    python -m airfoil.host.device_check prepare --compressed M.afc -o DIR
    python -m airfoil.host.device_check check DIR          (prints JSON)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["slice_model", "prepare", "check"]


def slice_model(cm, layers: int, vocab: int):
    from airfoil.compiler.compress import CompressedLinear
    from airfoil.compiler.compressed_model import CompressedModel

    def rows(c: CompressedLinear, n: int) -> CompressedLinear:
        return dataclasses.replace(c, codes=c.codes[:n], mask=c.mask[:n], zero=c.zero[:n], scale=c.scale[:n])

    spec = dataclasses.replace(cm.spec, n_layers=layers, vocab=vocab, name=cm.spec.name + f"-slice{layers}")
    keep = set(spec.linear_shapes())
    linears = {n: c for n, c in cm.linears.items() if n in keep and n != "lm_head"}
    linears["lm_head"] = rows(cm.linears["lm_head"], vocab)
    floats = {n: t for n, t in cm.floats.items() if not n.startswith("layers.") or int(n.split(".")[1]) < layers}
    return CompressedModel(spec=spec, plan=cm.plan, linears=linears, floats=floats,
                           embedding=rows(cm.embedding, vocab), metadata=cm.metadata)


def _run(ir, tokens: torch.Tensor, prefill: int) -> list[torch.Tensor]:
    from airfoil.host.integer_reference import IntKVCache

    cache = IntKVCache()
    out = [ir.forward(tokens[:prefill], cache).cpu()]
    for i in range(prefill, len(tokens)):
        out.append(ir.forward(tokens[i:i + 1], cache).cpu())
    return out


def prepare(compressed: Path, out: Path, layers: int = 6, vocab: int = 16384, n_tokens: int = 40,
            prefill: int = 32) -> None:
    from airfoil.compiler.compressed_model import CompressedModel
    from airfoil.compiler.model import load_model
    from airfoil.compiler.tokenizer import load_tokenizer
    from airfoil.host.integer_reference import IntegerReference
    from airfoil.host.text import eval_tokens

    cm = slice_model(CompressedModel.load(compressed), layers, vocab)
    tok = load_tokenizer(load_model("smollm2").source)
    ids = eval_tokens(tok, 4 * n_tokens)
    ids = ids[ids < vocab][:n_tokens]
    out.mkdir(parents=True, exist_ok=True)
    cm.save(out / "slice.afc")
    logits = _run(IntegerReference(cm, "cpu"), ids, prefill)
    np.savez_compressed(out / "expected.npz", tokens=ids.numpy(), prefill=prefill,
                        **{f"logits{i}": t.numpy() for i, t in enumerate(logits)})


def check(folder: Path) -> dict:
    from airfoil.compiler.compressed_model import CompressedModel
    from airfoil.host.integer_reference import IntegerReference

    cm = CompressedModel.load(folder / "slice.afc")
    exp = np.load(folder / "expected.npz")
    tokens = torch.from_numpy(exp["tokens"])
    prefill = int(exp["prefill"])
    expected = [torch.from_numpy(exp[f"logits{i}"]) for i in range(len(tokens) - prefill + 1)]
    result: dict = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                    "layers": cm.spec.n_layers, "vocab": cm.spec.vocab, "tokens": int(len(tokens)), "prefill": prefill}
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    runs = {}
    for dev in devices:
        t = time.time()
        runs[dev] = _run(IntegerReference(cm, dev), tokens, prefill)
        result[f"{dev}_seconds"] = round(time.time() - t, 2)
        result[f"{dev}_equals_stored_cpu"] = all(torch.equal(a, b) for a, b in zip(runs[dev], expected))
    if "cuda:0" in runs:
        result["device_name"] = torch.cuda.get_device_name(0)
        result["cuda_equals_cpu"] = all(torch.equal(a, b) for a, b in zip(runs["cuda:0"], runs["cpu"]))
        result["greedy_cuda"] = [int(t[-1].argmax()) for t in runs["cuda:0"]]
        result["greedy_cpu"] = [int(t[-1].argmax()) for t in runs["cpu"]]
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--compressed", required=True)
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--vocab", type=int, default=16384)
    c = sub.add_parser("check")
    c.add_argument("folder")
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        prepare(Path(args.compressed), Path(args.out), args.layers, args.vocab)
        return 0
    r = check(Path(args.folder))
    print(json.dumps(r, indent=2))
    ok = r["cpu_equals_stored_cpu"] and (not r["cuda_available"] or (r["cuda_equals_cpu"] and r["cuda:0_equals_stored_cpu"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
