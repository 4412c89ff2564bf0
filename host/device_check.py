"""CUDA == CPU check of the ``reference`` backend on the whole compressed SmolLM2, carried to a
GPU machine that cannot read the GGUF (no network; the lent machine takes 64 MiB per call).

``prepare`` (here) writes the compressed model deflated and cut into parts that each fit one
call, the chat prompt's token ids, and the greedy tokens and logits of every step as this
machine's CPU computes them.  ``check`` (there, after the parts were carried over in as many
calls) joins the parts, runs the host's generation loop with the ``reference`` backend on CUDA
and a CPU ``reference`` as its checker (every layer's residual stream and the logits of every
step compared, ``==`` on integers), and compares both with the stored run.

    python -m airfoil.host.device_check prepare --compressed M.afc -o DIR   (DIR/part0, DIR/part1, ...)
    python -m airfoil.host.device_check check DIR/part0 DIR/part1 ...       (prints JSON)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["split_file", "join_parts", "prepare", "prepare_chat", "check"]

PART_BYTES = 56 << 20  # one call carries 64 MiB with the working tree
MODEL = "model.afc"


def split_file(path: Path, out: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """Cut ``path`` into ``out/part{i}/NAME.{i:03d}``, one folder per call."""
    folders = []
    with open(path, "rb") as f:
        for i, chunk in enumerate(iter(lambda: f.read(part_bytes), b"")):
            folder = out / f"part{i}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{path.name}.{i:03d}").write_bytes(chunk)
            folders.append(folder)
    return folders


def join_parts(folders: list[Path], name: str, dest: Path) -> Path:
    """Concatenate the parts of ``name`` found in ``folders`` in their index order."""
    parts = sorted((p for f in folders for p in f.glob(f"{name}.[0-9][0-9][0-9]")), key=lambda p: p.suffix)
    if [p.suffix for p in parts] != [f".{i:03d}" for i in range(len(parts))] or not parts:
        raise ValueError(f"{name}: parts {[p.name for p in parts]} are not .000 .. .{len(parts) - 1:03d}")
    with open(dest, "wb") as f:
        for p in parts:
            f.write(p.read_bytes())
    return dest


class _Recording:
    """A backend that keeps the logits of every step it returns."""

    def __init__(self, backend):
        self.backend, self.logits = backend, []
        self.device = backend.device

    def step(self, tokens, trace=None):
        out = self.backend.step(tokens, trace)
        self.logits.append(out.copy())
        return out


def prepare(cm, prompt: list[int], stop: set[int], out: Path, tokens: int, part_bytes: int = PART_BYTES) -> dict:
    """Run ``cm`` greedily on this machine's CPU and write the parts and the expected run to ``out``."""
    import torch

    from airfoil.host.runtime import ReferenceBackend, generate

    cpu = _Recording(ReferenceBackend(cm, "cpu"))
    gen = generate(cpu, prompt, tokens, stop)
    out.mkdir(parents=True, exist_ok=True)
    deflated = out / MODEL
    cm.save(deflated, deflate=True)
    folders = split_file(deflated, out, part_bytes)
    deflated.unlink()
    np.savez_compressed(folders[-1] / "expected.npz", prompt=np.array(prompt), tokens=np.array(gen.tokens),
                        stop=np.array(sorted(stop), dtype=np.int64), logits=np.stack(cpu.logits))
    return {"prompt_tokens": len(prompt), "tokens": gen.tokens, "torch": torch.__version__,
            "parts": [str(f) for f in folders]}


def prepare_chat(compressed: Path, out: Path, text: str, tokens: int) -> dict:
    """``prepare`` for a compressed GGUF model and a question in its chat template."""
    from airfoil.compiler.compressed_model import CompressedModel
    from airfoil.compiler.tokenizer import load_tokenizer
    from airfoil.host.runtime import chat_prompt, end_of_turn_tokens

    cm = CompressedModel.load(compressed)
    tok = load_tokenizer(cm.metadata["source"])
    result = prepare(cm, chat_prompt(tok, text), end_of_turn_tokens(tok), out, tokens)
    return result | {"text": tok.decode(result["tokens"], skip_special_tokens=True)}


def check(folders: list[Path], work: Path) -> dict:
    import torch

    from airfoil.compiler.compressed_model import CompressedModel
    from airfoil.host.runtime import ReferenceBackend, generate

    work.mkdir(parents=True, exist_ok=True)
    cm = CompressedModel.load(join_parts(folders, MODEL, work / MODEL))
    exp = np.load(next(p for f in folders if (p := f / "expected.npz").exists()))
    prompt, stop = exp["prompt"].tolist(), set(exp["stop"].tolist())
    want_tokens, want_logits = exp["tokens"].tolist(), exp["logits"]
    result: dict = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                    "layers": cm.spec.n_layers, "vocab": cm.spec.vocab, "prompt_tokens": len(prompt),
                    "stored_tokens": want_tokens}
    dev = "cuda:0" if torch.cuda.is_available() else "cpu"
    backend, checker = _Recording(ReferenceBackend(cm, dev)), _Recording(ReferenceBackend(cm, "cpu"))
    t = time.time()
    gen = generate(backend, prompt, len(want_tokens), stop, checker)
    result.update({
        "device": backend.device, "seconds": round(time.time() - t, 1), "tokens": gen.tokens,
        # every layer's residual stream and the logits of every step, device vs CPU, == on integers
        "check": gen.check, "mismatch": str(gen.mismatch) if gen.mismatch else None,
        "steps_checked": gen.steps_checked,
        "logits_equal_cpu": len(backend.logits) == len(checker.logits)
        and all(np.array_equal(a, b) for a, b in zip(backend.logits, checker.logits)),
        # the CPU here (the GPU machine's torch) against the CPU that prepared the check
        "tokens_equal_stored": gen.tokens == want_tokens,
        "logits_equal_stored": len(backend.logits) == len(want_logits)
        and all(np.array_equal(a, b) for a, b in zip(backend.logits, want_logits)),
    })
    if dev.startswith("cuda"):
        result["device_name"] = torch.cuda.get_device_name(0)
    result["passed"] = (result["check"] == "passed" and result["logits_equal_cpu"]
                        and result["tokens_equal_stored"] and result["logits_equal_stored"])
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--compressed", required=True)
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--prompt", default="What is the capital of France?")
    p.add_argument("--tokens", type=int, default=12)
    c = sub.add_parser("check")
    c.add_argument("folders", nargs="+")
    c.add_argument("--work", default="/tmp/airfoil-device-check")
    args = ap.parse_args(argv)
    if args.cmd == "prepare":
        print(json.dumps(prepare_chat(Path(args.compressed), Path(args.out), args.prompt, args.tokens), indent=2))
        return 0
    try:
        r = check([Path(f) for f in args.folders], Path(args.work))
    except ValueError as e:  # a missing or misnumbered part
        print(f"device_check: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r, indent=2))
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
