"""cocotb bench for the MPE: drives a prepared stream of beats, one per clock, and records
every result beat.  Inputs and outputs are files named by AIRFOIL_BEATS / AIRFOIL_RESULTS
(hex integers, one per line), so the bench itself holds no test logic: pytest prepares the
tiles and compares with numpy."""
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from airfoil.hw.sparse_chain import CHAIN_LATENCY


@cocotb.test()
async def stream_beats(dut):
    beats = [int(line, 16) for line in open(os.environ["AIRFOIL_BEATS"]) if line.strip()]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.operands__valid.value = 0
    dut.results__ready.value = 1
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    results = []
    cycles = 0
    busy = 0
    last_result = 0
    for value in beats + [None] * (CHAIN_LATENCY + 2):
        await FallingEdge(dut.clk)
        cycles += 1
        if int(dut.results__valid.value):
            results.append(int(dut.results__payload.value))
            last_result = cycles
        if value is None:
            dut.operands__valid.value = 0
        else:
            dut.operands__payload.value = value
            dut.operands__valid.value = 1
            busy += 1
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        # cycles from the first beat to the last result, and beats issued
        f.write(f"{last_result - 1} {busy}\n")
        f.writelines(f"{r:x}\n" for r in results)
