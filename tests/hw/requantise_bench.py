"""cocotb bench for the requantisation path: streams prepared group sums (AIRFOIL_SUMS, JSON:
[payload, last] per cycle, back to back, the payload as the port's integer) and writes every output
(AIRFOIL_RESULTS)."""
import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from airfoil.sim.top_bench import start


@cocotb.test()
async def requantise_stream(dut):
    with open(os.environ["AIRFOIL_SUMS"]) as f:
        sums = json.load(f)
    await start(dut)
    out = []
    expected = sum(last for _, last in sums)
    for payload, _ in sums:
        dut.sums__payload.value, dut.sums__valid.value = payload, 1
        await FallingEdge(dut.clk)
        if int(dut.out__valid.value):
            out.append(dut.out__payload.value.to_signed())
    dut.sums__valid.value = 0
    for _ in range(10):
        await FallingEdge(dut.clk)
        if int(dut.out__valid.value):
            out.append(dut.out__payload.value.to_signed())
    assert len(out) == expected
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump(out, f)
