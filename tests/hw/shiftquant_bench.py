"""cocotb bench for ShiftQuantDot: drives prepared beats (hex, AIRFOIL_BEATS), one per clock,
and records every y (AIRFOIL_RESULTS); pytest prepares the tiles and compares."""
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from airfoil.hw.shiftquant import SHIFTQUANT_LATENCY


@cocotb.test()
async def stream_beats(dut):
    beats = [int(line, 16) for line in open(os.environ["AIRFOIL_BEATS"]) if line.strip()]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.valid.value = 0
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    results = []
    for value in beats + [None] * (SHIFTQUANT_LATENCY + 2):
        await FallingEdge(dut.clk)
        if int(dut.y_valid.value):
            results.append(dut.y.value.to_signed())
        if value is None:
            dut.valid.value = 0
        else:
            dut.beat.value = value
            dut.valid.value = 1
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        f.writelines(f"{r}\n" for r in results)
