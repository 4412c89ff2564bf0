"""The host runtime: one interface over the backends, and the host-side generation loop.

A backend takes token ids and returns integer logits (FRAC_L); the same host code drives each:

* ``reference``: the integer reference (``IntegerReference``; CUDA when present, else CPU);
* ``fsim``: the compiled program in the functional simulator; the host writes each chunk's
  embedding rows into the input region and reads the logits region, as it would on a board;
* ``rtl``: the same program on the Verilator build of the accelerator's top (``sim.rtl_top``),
  driven through its AXI4-Lite registers and HBM images.  Decode steps run in RTL; the prompt's
  prefill runs in fsim, because the RTL has no MM (matrix-matrix) unit yet.  With ``check``,
  every RTL step is also run in fsim from the same state and must leave every byte of HBM (each
  layer's new K/V rows, the logits) and of the buffers the same;
* ``xrt``: the same program on a real board through XRT (``host.xrt_backend``), driven through the
  same registers; with ``check``, fsim runs alongside and every channel's image read back from
  the board must equal fsim's.

Prompt formatting (the chat template stored in the GGUF), greedy sampling, stopping at the
end-of-turn token and the position bookkeeping live here, not in the backends.  ``check`` runs
the reference alongside and compares every layer's residual stream (and the logits) of every
step, ``==`` on integers; the first difference is reported as step, layer, op, index,
expected, got.
"""
from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = ["BACKENDS", "ReferenceBackend", "FsimBackend", "RtlBackend", "compare_hbm", "Generation", "Mismatch", "generate",
           "chat_prompt", "end_of_turn_tokens", "interactive_threads", "locate_hbm"]

BACKENDS = ("reference", "fsim", "rtl", "xrt")


def interactive_threads() -> int:
    """Verilator model threads for a user's own run (the CLI, the demo): one.  On 2026-12-05 on
    this 2-core machine, SmolLM2's RTL decode token (5,022,963 cycles) ran at 123,835 to 125,463
    simulated cycles per second with one thread and 47,829 to 77,254 with two (the 2-thread
    model's threads spin while they wait); two had been 1.5x faster on 2026-11-27's top."""
    return 1


@dataclass
class Mismatch:
    step: int
    layer: int
    op: str
    index: tuple
    expected: int
    got: int

    def __str__(self) -> str:
        return (f"step {self.step}, layer {self.layer}, {self.op}, index {list(self.index)}: "
                f"expected {self.expected}, got {self.got}")


class _TraceLog:
    """(layer, op) -> integer rows, in token order (chunks appended)."""

    def __init__(self):
        self.rows: dict[tuple[int, str], list[np.ndarray]] = {}

    def __call__(self, layer: int, op: str, t) -> None:
        a = t.cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        self.rows.setdefault((layer, op), []).append(a.reshape(a.shape[0], -1).astype(np.int64))

    def merged(self) -> dict[tuple[int, str], np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.rows.items()}


class ReferenceBackend:
    name = "reference"

    def __init__(self, compressed, device=None):
        from airfoil.host.integer_reference import IntegerReference, IntKVCache

        self.ref = IntegerReference(compressed, device)
        self.cache = IntKVCache()
        self.device = str(self.ref.device)

    def step(self, tokens: list[int], trace=None) -> np.ndarray:
        """Logits of the last token after appending ``tokens``."""
        return self.ref.forward(torch.tensor(tokens), self.cache, trace)[-1].cpu().numpy()


class FsimBackend:
    name = "fsim"

    def __init__(self, program, compressed):
        from airfoil.host.integer_reference import IntegerReference
        from airfoil.sim.fsim import FunctionalSimulator

        # the host computes the embedding rows (a table lookup) and the simulator runs the rest
        self.host = IntegerReference(compressed, "cpu")
        self.sim = FunctionalSimulator(program, self.host)
        self.position = 0
        self.device = "fsim"

    def step(self, tokens: list[int], trace=None) -> np.ndarray:
        self.sim.write_inputs(self.host.embedding(torch.tensor(tokens)).numpy())
        self.sim.trace = trace
        self.sim.run("prefill" if self.position == 0 else "decode", len(tokens), self.position)
        self.sim.trace = None
        self.position += len(tokens)
        return self.sim.read_logits()


def locate_hbm(program, channel: int, offset: int) -> tuple[int, str]:
    """(layer, region) of HBM byte ``offset`` of ``channel`` in the compiler's placement: a
    layer's KV cache, a weight matrix, the gains, the inputs, the logits or the program (layer -1
    where the region belongs to no one layer)."""
    h, spec = program.hbm, program.spec
    if offset < spec.n_layers * spec.n_kv_heads * h["kv_region"]:  # one region per (layer, KV head)
        slot = offset // h["kv_region"]
        return slot // spec.n_kv_heads, f"kv_cache (KV head {slot % spec.n_kv_heads})"
    for name, w in h["weights"].items():
        if w["offset"] <= offset < w["offset"] + w["tiles"] * w["chunk"]:
            layer = int(name.split(".")[1]) if name.startswith("layers.") else -1
            return layer, name
    for region in ("gains", "inputs", "logits"):
        r = h[region]
        size = r.get("bytes", r.get("chunk", 0))
        if r.get("channel", channel) == channel and r["offset"] <= offset < r["offset"] + size:
            return -1, region
    return -1, "program" if offset >= h["program"]["sections"]["prefill"]["offset"] else "unplaced"


def compare_hbm(sim, got: list[np.ndarray], step: int, what: str) -> Mismatch | None:
    """The first byte where ``got`` (each channel's bytes, at least its image) differs from fsim's
    HBM, named by its region (``locate_hbm``); bytes past an image must be zero."""
    for c, want in enumerate(sim.hbm):
        g = got[c]
        diff = np.flatnonzero(g[:len(want)] != want)
        if diff.size:
            layer, region = locate_hbm(sim.prog, c, int(diff[0]))
            return Mismatch(step, layer, f"{what}: {region} (HBM channel {c})", (int(diff[0]),),
                            int(want[diff[0]]), int(g[diff[0]]))
        past = np.flatnonzero(g[len(want):])
        if past.size:
            return Mismatch(step, -1, f"{what}: past the image (HBM channel {c})",
                            (len(want) + int(past[0]),), 0, int(g[len(want) + past[0]]))
    return None


class RtlBackend:
    """Every step on the RTL top: the prefill section for the prompt, the decode section for each
    token after it (``prefill="fsim"`` runs the prompt in fsim instead: SmolLM2 takes about 4M
    cycles per prompt token in RTL).  ``runs``: each RTL step's ``RtlRun`` (cycles, counters,
    simulation speed) and ``run_sections`` its section; ``mismatch``: the first byte where an RTL
    step left HBM or a buffer other than fsim (with ``check``)."""
    name = "rtl"

    def __init__(self, program, compressed, check: bool = True, top=None, prefill: str = "rtl", trace: bool = False,
                 threads: int = 1, fsim: FsimBackend | None = None, waves: Path | None = None):
        """``fsim``: go on from that backend's state (its HBM, buffers and position), e.g. decode
        in RTL after a prompt and some tokens ran in fsim; it is this backend's fsim from here.
        ``waves``: a folder; each RTL step dumps every signal to ``step<N>-<section>.fst`` in it."""
        from airfoil.sim.rtl_top import RtlTop

        if prefill not in ("rtl", "fsim"):
            raise ValueError(f"prefill {prefill!r}: expected 'rtl' or 'fsim'")
        if fsim is not None and fsim.sim.prog is not program:
            raise ValueError("fsim: a backend of another program")
        self.fsim = fsim or FsimBackend(program, compressed)
        self.top = top or RtlTop(program, threads=threads)
        self.check, self.runs, self.run_sections, self.mismatch, self.steps = check, [], [], None, 0
        self.prefill, self.trace = prefill, trace  # trace: each run's per-instruction cycles (RtlRun.trace)
        self.waves = waves
        self.device = "verilator"

    @property
    def position(self) -> int:
        return self.fsim.position

    def step(self, tokens: list[int], trace=None) -> np.ndarray:
        from airfoil.hw.buffers import DMA_BUFFERS
        from airfoil.isa import ErrorCode
        from airfoil.sim.rtl_top import RtlState, buffer_image, buffer_values

        self.steps += 1
        section = "prefill" if self.position == 0 else "decode"
        if section == "prefill" and self.prefill == "fsim":
            return self.fsim.step(tokens, trace)
        sim, position = self.fsim.sim, self.position
        sim.write_inputs(self.fsim.host.embedding(torch.tensor(tokens)).numpy())
        start = RtlState([h.copy() for h in sim.hbm], {b: buffer_image(sim.buf[b], b) for b in DMA_BUFFERS})
        waves = None
        if self.waves is not None:
            self.waves.mkdir(parents=True, exist_ok=True)
            waves = self.waves / f"step{self.steps}-{section}.fst"
        run = self.top.run(section, len(tokens), position, start, max_cycles=(1 << 26) * len(tokens), trace=self.trace,
                           waves=waves)
        self.runs.append(run)
        self.run_sections.append(section)
        if run.hung or run.status != ErrorCode.NONE:
            raise RuntimeError(f"rtl: {section} at position {position} stopped with {run.status.name} at pc "
                               f"{run.error_pc}{' (hung)' if run.hung else ''}")
        if self.check:
            self.fsim.step(tokens, trace)
            if self.mismatch is None:
                self.mismatch = self._compare(run.state)
        else:
            self.fsim.position += len(tokens)
        # the RTL's memories are the state from here on
        for c, h in enumerate(sim.hbm):
            h[:] = run.state.hbm[c][:len(h)]
        for b in DMA_BUFFERS:
            sim.buf[b][:] = buffer_values(run.state.buffers[b], b, sim.buf[b].dtype)
        return sim.read_logits()

    def _compare(self, got) -> Mismatch | None:
        from airfoil.hw.buffers import DMA_BUFFERS
        from airfoil.sim.rtl_top import buffer_image

        sim = self.fsim.sim
        mismatch = compare_hbm(sim, got.hbm, self.steps - 1, "rtl vs fsim")
        if mismatch is not None:
            return mismatch
        for b in DMA_BUFFERS:
            want = np.frombuffer(buffer_image(sim.buf[b], b), np.uint8)
            g = np.frombuffer(got.buffers[b], np.uint8)
            diff = np.flatnonzero(g != want)
            if diff.size:
                return Mismatch(self.steps - 1, -1, f"rtl vs fsim: {b.name} buffer", (int(diff[0]),),
                                int(want[diff[0]]), int(g[diff[0]]))
        return None


def chat_prompt(tokenizer, text: str, chat: bool = True) -> list[int]:
    """Token ids of ``text``, wrapped in the model's chat template when it has one."""
    if chat and getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return tokenizer.encode(rendered, add_special_tokens=False)
    return tokenizer.encode(text)


def end_of_turn_tokens(tokenizer) -> set[int]:
    """The token ids that end a reply: end of sequence and the chat template's end of turn."""
    ids = (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return {t for t in ids if isinstance(t, int) and t >= 0}


@dataclass
class Generation:
    prompt_tokens: list[int]
    tokens: list[int] = field(default_factory=list)
    check: str = "off"  # passed / failed / off
    mismatch: Mismatch | None = None
    steps_checked: int = 0
    wall_seconds: float = 0.0


def _compare(step: int, want: dict, got: dict) -> Mismatch | None:
    order = {"embed": 0, "attention": 1, "attn_residual": 2, "ffn_residual": 3, "logits": 4}
    for key in sorted(want, key=lambda k: (k[0], order.get(k[1], 5))):
        if key not in got:
            continue
        w, g = want[key], got[key]
        if w.shape != g.shape or not np.array_equal(w, g):
            if w.shape != g.shape:
                return Mismatch(step, key[0], key[1], (), w.size, g.size)
            idx = tuple(int(i) for i in np.argwhere(w != g)[0])
            return Mismatch(step, key[0], key[1], idx, int(w[idx]), int(g[idx]))
    return None


def generate(backend, prompt: list[int], max_tokens: int, stop: set[int] = frozenset(),
             checker: ReferenceBackend | None = None, progress: Callable[[int, int], None] | None = None) -> Generation:
    """Greedy generation on ``backend``; with ``checker``, every step is compared with it."""
    t0 = time.time()
    gen = Generation(list(prompt), check="passed" if checker else "off")
    feed = list(prompt)
    for step in range(max_tokens):
        got_trace, want_trace = (_TraceLog(), _TraceLog()) if checker else (None, None)
        logits = backend.step(feed, got_trace)
        if checker:
            want = checker.step(feed, want_trace)
            got_rows, want_rows = got_trace.merged(), want_trace.merged()
            last = next(k for k in want_rows if k[1] == "logits")  # (n_layers, "logits"), compared last
            got_rows[last], want_rows[last] = logits[None], want[None]
            bad = getattr(backend, "mismatch", None) or _compare(step, want_rows, got_rows)
            gen.steps_checked += 1
            if bad:
                gen.check, gen.mismatch = "failed", bad
                break
        nxt = int(np.argmax(logits))
        gen.tokens.append(nxt)
        if progress:
            progress(step + 1, max_tokens)
        if nxt in stop:
            break
        feed = [nxt]
    gen.wall_seconds = time.time() - t0
    return gen
