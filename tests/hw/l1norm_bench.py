"""cocotb drivers for the L1-norm unit and the ShiftQuant dot tile, and the bench that streams
prepared rows (JSON, AIRFOIL_ROWS) through the unit and writes what came out (AIRFOIL_RESULTS).

Ports are found by name with a prefix, so the same drivers run the bare unit and the units
inside the integer-training datapath."""
import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from airfoil.sim.top_bench import start


async def l1_rows(dut, prefix: str, rows: list[dict]) -> list[dict]:
    """Each row: ``mode`` (0 forward: ``x``; 1 backward: ``g``, ``y``, ``sgn``, ``s``).
    Returns per row ``value`` and ``sgn`` lists and the row's ``s``."""
    port = lambda name: getattr(dut, prefix + name)  # noqa: E731
    out, current = [], {"value": [], "sgn": []}

    async def monitor():
        nonlocal current
        while True:
            await FallingEdge(dut.clk)
            if int(port("out_valid").value):
                current["value"].append(port("value").value.to_signed())
                current["sgn"].append(port("out_sgn").value.to_signed())
                if int(port("out_last").value):
                    current["s"] = int(port("s_out").value)
                    out.append(current)
                    current = {"value": [], "sgn": []}

    task = cocotb.start_soon(monitor())
    for row in rows:
        backward = row["mode"] == 1
        n = len(row["g"] if backward else row["x"])
        port("mode").value = row["mode"]
        port("s_in").value = row.get("s", 0)
        for j in range(n):
            if backward:
                port("g").value, port("y").value, port("sgn").value = row["g"][j], row["y"][j], row["sgn"][j]
            else:
                port("x").value = row["x"][j]
            port("in_valid").value = 1
            port("in_last").value = int(j == n - 1)
            while not int(port("in_ready").value):
                await FallingEdge(dut.clk)
            await FallingEdge(dut.clk)
        port("in_valid").value = 0
    while len(out) < len(rows):
        await FallingEdge(dut.clk)
    task.cancel()
    return out


async def dot_rows(dut, prefix: str, beats: list[int], rows: int, latency: int) -> list[int]:
    """Stream packed ShiftQuantDot beats, one per clock; returns every y."""
    port = lambda name: getattr(dut, prefix + name)  # noqa: E731
    results = []
    for value in beats + [None] * (latency + 2):
        await FallingEdge(dut.clk)
        if int(port("y_valid").value):
            results.append(port("y").value.to_signed())
        if value is None:
            port("valid").value = 0
        else:
            port("beat").value = value
            port("valid").value = 1
    assert len(results) == rows, (len(results), rows)
    return results


@cocotb.test()
async def stream_rows(dut):
    rows = json.load(open(os.environ["AIRFOIL_ROWS"]))
    await start(dut)
    out = await l1_rows(dut, "", rows)
    json.dump(out, open(os.environ["AIRFOIL_RESULTS"], "w"))
