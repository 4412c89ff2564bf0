"""cocotb bench for a design built with its clock in HDL (``sim.verilator.clocked_toplevel``): after
``start`` (which must leave the clock to the design), the design's cycle counter advances by
exactly one per ``CLOCK_NS`` of simulated time, and the edges cocotb awaits are the design's.
Writes the counts and the end time (AIRFOIL_RESULTS)."""
import json
import os

import cocotb
from cocotb.triggers import FallingEdge, Timer
from cocotb.utils import get_sim_time

from airfoil.sim.top_bench import start
from airfoil.sim.verilator import CLOCK_NS


@cocotb.test()
async def clock_in_hdl(dut):
    dut.step.value = 1
    await start(dut)
    first = int(dut.count.value)
    await Timer(1000 * CLOCK_NS, unit="ns")  # no Python in between
    after_timer = int(dut.count.value)
    await Timer(CLOCK_NS // 2, unit="ns")  # between edges, then ten falling edges
    before_edges = int(dut.count.value)
    for _ in range(10):
        await FallingEdge(dut.clk)
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump({"first": first, "after_timer": after_timer, "before_edges": before_edges,
                   "after_edges": int(dut.count.value), "end_ps": get_sim_time("ps")}, f)
