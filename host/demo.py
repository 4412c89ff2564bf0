"""``airfoil demo`` (what ``make demo`` runs): the golden path on the embedded SmolLM2.

Compress with the default plan (cached in the output folder).  Then, one core each: measure the
float reference against transformers and the compressed model against its integer reference (a
second process); answer a question in the functional simulator, checked layer by layer, and
project LLaMA2-7B on the two boards.  Last, decode the answer's next token on the RTL top in
Verilator (both cores), checked byte for byte against fsim."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from airfoil.errors import AirfoilError

if TYPE_CHECKING:
    from airfoil.compiler.compressed_model import CompressedModel
    from airfoil.compiler.lowering import Program
    from airfoil.host.runtime import FsimBackend, Generation, ReferenceBackend

__all__ = ["run_demo", "default_compressed"]


def default_compressed(out_dir: Path, progress: Callable[[str], None] = print) -> Path:
    """The embedded SmolLM2 compressed with the default plan, cached in ``out_dir`` under a key of
    the plan's text (a changed default plan is compressed again)."""
    import hashlib

    from airfoil.cli import main as cli
    from airfoil.compiler.plans import plan_path

    out_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(plan_path("default").read_bytes()).hexdigest()[:10]
    compressed = out_dir / f"smollm2-default-{key}.afc"
    if not compressed.exists():
        progress(f"compressing SmolLM2-135M with the default plan -> {compressed} (once; cached)")
        if cli(["compress", "--model", "smollm2", "--plan", "default", "-o", str(compressed)]):
            raise AirfoilError("compressing the embedded SmolLM2 failed")
    else:
        progress(f"using the cached compressed model {compressed}")
    return compressed


DEMO_PROMPT = "What is the capital of France?"


@dataclass
class DemoAnswer:
    """The answer in fsim, and what the RTL token goes on from: the program, the model, fsim's
    state and the checker's (both at the position after the prompt and the answer)."""
    prog: "Program"
    cm: "CompressedModel"
    fsim: "FsimBackend"
    checker: "ReferenceBackend"
    gen: "Generation"
    summary: dict


def _rtl_token(answer: DemoAnswer, progress: Callable[[str], None]) -> dict:
    """The answer's next decode token on the Verilator top, from the state that fsim left after
    the prompt and the answer, compared with fsim byte for byte (HBM and buffers) and with the
    integer reference layer by layer."""
    from airfoil.host.runtime import RtlBackend, generate, interactive_threads

    position = answer.fsim.position
    backend = RtlBackend(answer.prog, answer.cm, check=True, fsim=answer.fsim, threads=interactive_threads())
    t0 = time.time()
    progress(f"building the Verilator top for the sim preset in {backend.top.build_dir} (once; reused)")
    backend.top.build()
    build_s = time.time() - t0
    progress(f"the answer's next token (position {position}) as one decode token of SmolLM2 on the RTL top, "
             "checked byte for byte against fsim and layer by layer against the integer reference")
    gen = generate(backend, [answer.gen.tokens[-1]], 1, checker=answer.checker)
    run = backend.runs[0] if backend.runs else None
    out = {"check": gen.check, "mismatch": str(gen.mismatch) if gen.mismatch else None, "position": position,
           "tokens": gen.tokens, "build_seconds": round(build_s, 1)}
    if run is not None:
        out.update({"cycles_per_token": run.cycles, "sim_cycles_per_second": round(run.cycles_per_second),
                    "sim_seconds": round(run.wall_seconds, 1), "busy_cycles": run.busy})
        progress(f"RTL decode token: {run.cycles:,} cycles, {run.cycles_per_second:,.0f} simulated cycles/s, "
                 f"check {gen.check}")
    return out


# the compressed SmolLM2 ends its answer (end of turn) with its 24th token; 16 cut it mid-sentence.
# The prompt (37 tokens) and the answer stay within 64 positions, the RTL top's attention context.
ANSWER_TOKENS = 24


def _answer(compressed: Path, answer_tokens: int, progress: Callable[[str], None]) -> DemoAnswer:
    """Compile for the ``sim`` preset and answer the question in fsim, checked layer by layer
    against the integer reference."""
    from airfoil.compiler.compressed_model import CompressedModel
    from airfoil.compiler.lowering import compile_model
    from airfoil.compiler.tokenizer import load_tokenizer
    from airfoil.config import preset
    from airfoil.host.runtime import FsimBackend, ReferenceBackend, chat_prompt, end_of_turn_tokens, generate

    cm = CompressedModel.load(compressed)
    tok = load_tokenizer(cm.metadata["source"])
    prompt = chat_prompt(tok, DEMO_PROMPT)
    progress(f"compiling for the sim preset and answering {DEMO_PROMPT!r} in the functional simulator, "
             f"checked layer by layer against the integer reference")
    # room for the prompt, the answer and the RTL's decode of the answer's last token
    prog = compile_model(cm.spec, cm.plan.resolve(cm.spec), cm.plan.group_size, preset("sim"),
                         len(prompt) + answer_tokens, cm)
    fsim, checker = FsimBackend(prog, cm), ReferenceBackend(cm)
    gen = generate(fsim, prompt, answer_tokens, end_of_turn_tokens(tok), checker,
                   lambda done, total: progress(f"  token {done}/{total}"))
    text = tok.decode(gen.tokens, skip_special_tokens=True)
    progress(f"answer (fsim, check {gen.check}): {text!r}")
    summary = {"prompt": DEMO_PROMPT, "text": text, "check": gen.check,
               "mismatch": str(gen.mismatch) if gen.mismatch else None, "steps_checked": gen.steps_checked}
    return DemoAnswer(prog, cm, fsim, checker, gen, summary)


def _projections() -> dict:
    """LLaMA2-7B at FlightLLM's recipe on U280 and VHK158 (the cycle model), with the boards'
    resource estimates."""
    from airfoil.compiler.compress import CompressionPlan
    from airfoil.compiler.model import model_spec
    from airfoil.compiler.plans import plan_path
    from airfoil.config import preset
    from airfoil.sim.perf import project

    out = {}
    for board in ("u280", "vhk158"):
        cfg = preset(board)
        r = project(model_spec("llama2-7b"), CompressionPlan.load(plan_path("flightllm")), cfg, curve=(),
                    as_built=False)
        out[board] = {k: r[k] for k in ("decode_tok_s", "hbm_utilisation", "bytes_per_token", "prefill_ms",
                                        "weight_bits_average", "calibrated", "context")}
        out[board]["resources"] = {"dsp": cfg.dsp_slices, "bram36": cfg.bram36_estimate, "uram": cfg.uram_estimate,
                                   "lut": cfg.lut_estimate}
    return out


def _evaluate(compressed: str, tokens: int) -> dict:
    """``evaluate`` in the demo's second process, on one core, its progress labelled."""
    import sys

    import torch

    from airfoil.host.evaluation import evaluate

    def say(message: str) -> None:
        print(f"[airfoil] (evaluation) {message}", file=sys.stderr, flush=True)

    torch.set_num_threads(1)
    return evaluate("smollm2", compressed=compressed, n_tokens=tokens, progress=say)


def run_demo(out_dir: Path, tokens: int = 512, progress: Callable[[str], None] = print,
             answer_tokens: int = ANSWER_TOKENS) -> int:
    """1. compress (cached); 2. in a second process, the float reference vs transformers and the
    compressed model's perplexity, while this one does 3 and 4: 3. compile for the ``sim`` preset
    and answer a question in the functional simulator, every layer of every step checked against
    the integer reference; 4. the projected LLaMA2-7B decode on U280 and VHK158 (the cycle
    model, not yet calibrated); then, once the evaluation is in, 5. the answer's next token on
    the RTL top (both cores)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    t0 = time.time()
    compressed = default_compressed(out_dir, progress)
    # two cores: the evaluation on one, the answer and the projections on the other (one thread each)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pending = pool.submit(_evaluate, str(compressed), tokens)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        answer = _answer(compressed, answer_tokens, progress)
        progress("projecting LLaMA2-7B on U280 and VHK158 (the evaluation goes on beside)")
        projections = _projections()  # the answer takes a little less time than the evaluation
        progress("waiting for the evaluation")
        result = pending.result()
    finally:
        pool.shutdown(cancel_futures=True)
        torch.set_num_threads(threads)
    ok = (result["max_abs_logit_diff_vs_hf"] <= 1e-3 and result["effective_bits_per_weight"] <= 4.5)
    progress(f"float reference vs transformers: max |logit diff| {result['max_abs_logit_diff_vs_hf']:.2e}; "
             f"compressed: {result['effective_bits_per_weight']:.3f} bits/weight, {100 * result['sparsity']:.1f}% "
             f"pruned, perplexity {result['ppl_compressed']:.2f} (float {result['ppl_float']:.2f}), integer "
             f"reference {result['ppl_integer']:.2f} on {result['device']}")
    result["answer"] = answer.summary
    ok = ok and answer.gen.check == "passed"

    result["rtl"] = _rtl_token(answer, progress)
    ok = ok and result["rtl"]["check"] == "passed"

    result["projections"] = projections
    for board, r in projections.items():
        res = r["resources"]
        progress(f"LLaMA2-7B on {board} (plan flightllm, {r['weight_bits_average']:.2f} bits, context "
                 f"{r['context']}): {r['decode_tok_s']} tok/s projected, HBM {100 * r['hbm_utilisation']:.1f}% "
                 f"used; {res['dsp']} DSP, {res['bram36']} BRAM36, {res['uram']} URAM "
                 f"(cycle model, not yet calibrated against RTL)")
    print(json.dumps(result, indent=2))
    progress(f"done in {time.time() - t0:.0f} s")
    return 0 if ok else 1
