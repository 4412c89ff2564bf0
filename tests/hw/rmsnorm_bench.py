"""cocotb bench for the RMSNorm unit: streams prepared rows (AIRFOIL_ROWS, JSON: eps_q and
[h, gain] lists) and writes each row's INT8 codes and exponent (AIRFOIL_RESULTS)."""
import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from tests.hw.l1norm_bench import start


@cocotb.test()
async def rmsnorm_rows(dut):
    with open(os.environ["AIRFOIL_ROWS"]) as f:
        case = json.load(f)
    await start(dut)
    dut.eps_q.value = case["eps_q"]
    out, current = [], []

    async def monitor():
        nonlocal current
        while True:
            await FallingEdge(dut.clk)
            if int(dut.out_valid.value):
                current.append(dut.q.value.to_signed())
                if int(dut.out_last.value):
                    out.append({"q": current, "exponent": dut.exponent.value.to_signed()})
                    current = []

    task = cocotb.start_soon(monitor())
    for h, gain in case["rows"]:
        for j in range(len(h)):
            dut.h.value, dut.gain.value, dut.in_last.value, dut.in_valid.value = h[j], gain[j], int(j == len(h) - 1), 1
            await FallingEdge(dut.clk)
            while not int(dut.in_ready.value):
                await FallingEdge(dut.clk)
        dut.in_valid.value = 0
    while len(out) < len(case["rows"]):
        await FallingEdge(dut.clk)
    task.cancel()
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump(out, f)
