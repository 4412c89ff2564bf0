"""cocotb bench for the SFU's row units (RMSNorm, SiLU-mul, ...): streams prepared rows
(AIRFOIL_ROWS, JSON: ``const`` port values, and ``rows``, each a dict of port -> per-element
values) through the ``in_valid``/``in_ready``/``in_last`` handshake and writes each output
row's INT8 codes and exponent, and for units with per-row statistics (``stats_valid``: the
attention softmax's ``inv`` and ``ev_max``) those (AIRFOIL_RESULTS)."""
import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from airfoil.sim.top_bench import start


@cocotb.test()
async def sfu_rows(dut):
    with open(os.environ["AIRFOIL_ROWS"]) as f:
        case = json.load(f)
    await start(dut)
    for port, value in case["const"].items():
        getattr(dut, port).value = value
    out, current, stats = [], [], []
    has_stats = hasattr(dut, "stats_valid")

    async def monitor():
        nonlocal current
        while True:
            await FallingEdge(dut.clk)
            if has_stats and int(dut.stats_valid.value):
                stats.append({"inv": int(dut.inv.value), "ev_max": dut.ev_max.value.to_signed()})
            if int(dut.out_valid.value):
                current.append(dut.q.value.to_signed())
                if int(dut.out_last.value):
                    out.append({"q": current, "exponent": dut.exponent.value.to_signed()})
                    current = []

    task = cocotb.start_soon(monitor())
    for row in case["rows"]:
        n = len(next(iter(row.values())))
        for j in range(n):
            for port, values in row.items():
                getattr(dut, port).value = values[j]
            dut.in_last.value, dut.in_valid.value = int(j == n - 1), 1
            await FallingEdge(dut.clk)
            while not int(dut.in_ready.value):
                await FallingEdge(dut.clk)
        dut.in_valid.value = 0
    while len(out) < len(case["rows"]) or (has_stats and len(stats) < len(case["rows"])):
        await FallingEdge(dut.clk)
    task.cancel()
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump({"rows": out, "stats": stats}, f)
