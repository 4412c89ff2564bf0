"""The cycle model against the RTL: ``airfoil calibrate`` runs SmolLM2 (default plan, ``sim``
preset) on the Verilator top with the instruction trace (``sim/hdl/airfoil_trace.sv``), a
prefill of a short prompt and one decode token, and compares every instruction's cycles (start
to done) and each section's total with ``PerfModel(..., timing="rtl")`` (``sim.perf.RtlTiming``)
over the same program.  The k-th instruction a queue's unit runs in the trace is the k-th the
model schedules on that queue (both follow the dispatcher's order), so each traced instruction
gets its op key (LD, ST, MV, MM, SFU.<func>).  The result goes to ``reports/calibration.json``;
``tests/test_calibration.py`` holds the model to it (within ``TOLERANCE``), and the slow
``tests/hw/test_calibration_rtl.py`` measures it again."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Callable

__all__ = ["CALIBRATION_PROMPT", "TOLERANCE", "measure_rtl", "model_figures", "compare", "within", "write",
           "calibration_program"]

CALIBRATION_PROMPT = "The quick brown fox jumps over the lazy"  # 8 tokens, no chat template
TOLERANCE = 0.05


def calibration_program(compressed, prompt_tokens: int, cfg=None):
    """SmolLM2's program for the calibration: room for the prompt and one decode token."""
    from airfoil.compiler.lowering import compile_model
    from airfoil.config import preset

    cm = compressed
    return compile_model(cm.spec, cm.plan.resolve(cm.spec), cm.plan.group_size, cfg or preset("sim"),
                         prompt_tokens + 2, cm)


def _by_op(log: list, traced: dict) -> dict[str, dict]:
    """Per op key: instruction count and cycles, the RTL's (``traced``: queue -> its instructions'
    cycles in order) against the model's (``log``: (queue, key, start, end) in each queue's order)."""
    from airfoil.isa import Queue

    out: dict[str, dict] = {}
    per_queue = defaultdict(list)
    for q, key, start, end in log:
        per_queue[q].append((key, end - start))
    for q in Queue:
        model, rtl = per_queue[q], traced.get(q, [])
        if len(model) != len(rtl):
            raise ValueError(f"queue {q.name}: the model schedules {len(model)} instructions, the trace has {len(rtl)}")
        for (key, m), r in zip(model, rtl):
            e = out.setdefault(key, {"count": 0, "rtl_cycles": 0, "model_cycles": 0})
            e["count"] += 1
            e["rtl_cycles"] += r
            e["model_cycles"] += m
    for e in out.values():
        e["model_cycles"] = round(e["model_cycles"])
    return out


def model_figures(program, section: str, tokens: int, position: int) -> tuple[int, list]:
    """(section cycles, per-instruction log) of the RTL timing model."""
    from airfoil.sim.perf import PerfModel

    pm = PerfModel(program, timing="rtl")
    pm.log = []
    st = pm.run(section, tokens, position)
    return st.cycles, pm.log


def measure_rtl(compressed, progress: Callable[[str], None] = print) -> dict:
    """Runs the calibration prompt's prefill and one decode token on the RTL (checked against
    fsim byte for byte) with the trace; returns what ``reports/calibration.json`` holds."""
    from airfoil.compiler.tokenizer import load_tokenizer
    from airfoil.host.runtime import RtlBackend, chat_prompt, generate, interactive_threads
    from airfoil.isa import Queue

    prompt = chat_prompt(load_tokenizer(compressed.metadata["source"]), CALIBRATION_PROMPT, chat=False)
    prog = calibration_program(compressed, len(prompt))
    backend = RtlBackend(prog, compressed, check=True, trace=True, threads=interactive_threads())
    progress(f"building the Verilator top in {backend.top.build_dir} (once per configuration)")
    backend.top.build()
    progress(f"SmolLM2 on the RTL with the trace: the prefill of {len(prompt)} tokens, then one decode token "
             f"(about ten minutes)")
    gen = generate(backend, prompt, 2)
    if backend.mismatch is not None:
        raise RuntimeError(f"the RTL differs from fsim: {backend.mismatch}")
    sections = []
    position = 0
    for section, run in zip(backend.run_sections, backend.runs):
        tokens = len(prompt) if section == "prefill" else 1
        sections.append({"section": section, "tokens": tokens, "position": position, "rtl_cycles": run.cycles,
                         "rtl_busy": run.busy, "sim_cycles_per_second": round(run.cycles_per_second),
                         # per queue, its instructions' cycles in order (one string: the file stays short)
                         "instructions": {q.name: " ".join(str(t.cycles) for t in run.trace if t.queue == q)
                                          for q in Queue}})
        position += tokens
    return {"model": compressed.spec.name, "plan": compressed.plan.name, "board": "sim", "prompt": CALIBRATION_PROMPT,
            "prompt_tokens": len(prompt), "tokens": gen.tokens, "sections": sections}


def compare(program, measured: dict) -> dict:
    """The model over ``program`` against ``measured`` (``measure_rtl``'s result): per section the
    whole-section cycles and per op key the cycles of its instructions, with the ratio model/RTL."""
    from airfoil.isa import Queue

    out = []
    for sec in measured["sections"]:
        cycles, log = model_figures(program, sec["section"], sec["tokens"], sec["position"])
        traced = {Queue[q]: [int(c) for c in v.split()] for q, v in sec["instructions"].items()}
        ops = _by_op(log, traced)
        for e in ops.values():
            e["ratio"] = round(e["model_cycles"] / e["rtl_cycles"], 4) if e["rtl_cycles"] else None
        out.append({"section": sec["section"], "tokens": sec["tokens"], "position": sec["position"],
                    "rtl_cycles": sec["rtl_cycles"], "model_cycles": cycles,
                    "ratio": round(cycles / sec["rtl_cycles"], 4), "ops": dict(sorted(ops.items()))})
    return {"tolerance": TOLERANCE, "sections": out}


def within(report: dict, tolerance: float = TOLERANCE) -> list[str]:
    """What is outside the tolerance (empty: calibrated)."""
    bad = []
    for sec in report["sections"]:
        if abs(sec["ratio"] - 1) > tolerance:
            bad.append(f"{sec['section']}: model {sec['model_cycles']:,} vs RTL {sec['rtl_cycles']:,} cycles")
        for key, e in sec["ops"].items():
            if e["ratio"] is None or abs(e["ratio"] - 1) > tolerance:
                bad.append(f"{sec['section']} {key}: model {e['model_cycles']:,} vs RTL {e['rtl_cycles']:,} cycles")
    return bad


def write(path: Path, measured: dict, report: dict) -> None:
    path.write_text(json.dumps({"measured": measured, "comparison": report}, indent=1) + "\n")
