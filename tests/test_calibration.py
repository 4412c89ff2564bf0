"""The cycle model against the RTL's measured cycles (``host/calibration.py``): the committed
``reports/calibration.json`` holds SmolLM2's prefill and decode token as Verilator ran them
(``airfoil calibrate``; the slow ``tests/hw/test_calibration_rtl.py`` measures them again), and
``PerfModel(timing="rtl")`` over the same program must give each section's cycles and each op
type's cycles within 5%.  Also the trace's parser and the per-queue matching."""
import json
from pathlib import Path

import pytest

from airfoil.host import calibration as cal
from airfoil.isa import Queue
from airfoil.sim.rtl_top import parse_trace

REPORT = Path(__file__).resolve().parents[1] / "reports" / "calibration.json"


def test_the_model_is_within_5_percent_of_the_measured_rtl(compressed_default):
    measured = json.loads(REPORT.read_text())["measured"]
    assert measured["model"] == compressed_default.spec.name and measured["plan"] == compressed_default.plan.name
    assert {s["section"] for s in measured["sections"]} == {"prefill", "decode"}
    prog = cal.calibration_program(compressed_default, measured["prompt_tokens"])
    report = cal.compare(prog, measured)
    ops = {k for s in report["sections"] for k in s["ops"]}
    assert {"LD", "ST", "MM", "MV", "SFU.ATTENTION", "SFU.RMSNORM", "SFU.REQUANT"} <= ops
    assert cal.within(report) == [], cal.within(report)


def test_trace_lines_become_instructions():
    got = parse_trace("0 S 0 4\n3 S 2 7\n9 D 0\n10 S 0 5\n12 D 2\n20 D 0\n")
    assert [(t.queue, t.pc, t.start, t.end) for t in got] == [(Queue.LOAD, 4, 0, 9), (Queue.SFU, 7, 3, 12),
                                                              (Queue.LOAD, 5, 10, 20)]
    with pytest.raises(ValueError, match="trace line 2"):
        parse_trace("0 S 0 4\n5 X 0\n")


def test_model_and_trace_pair_by_queue_order():
    log = [(Queue.LOAD, "LD", 0, 10), (Queue.COMPUTE, "MV", 10, 30), (Queue.LOAD, "LD", 10, 14)]
    ops = cal._by_op(log, {Queue.LOAD: [11, 5], Queue.COMPUTE: [18]})
    assert ops == {"LD": {"count": 2, "rtl_cycles": 16, "model_cycles": 14},
                   "MV": {"count": 1, "rtl_cycles": 18, "model_cycles": 20}}
    with pytest.raises(ValueError, match="queue LOAD"):
        cal._by_op(log, {Queue.LOAD: [11], Queue.COMPUTE: [18]})
