"""cocotb bench for test_dsp_slice_verilator.py: drives one row of inputs per cycle (AIRFOIL_INPUTS,
JSON) after reset and records every slice's outputs each cycle (AIRFOIL_RESULTS)."""
import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from airfoil.sim.top_bench import start


@cocotb.test()
async def slice_cycles(dut):
    with open(os.environ["AIRFOIL_INPUTS"]) as f:
        rows = json.load(f)
    slices = int(os.environ["AIRFOIL_SLICES"])
    await start(dut)
    out = []
    for row in rows:
        for name, value in row.items():
            getattr(dut, name).value = value
        await FallingEdge(dut.clk)
        cycle = {}
        for i in range(slices):
            for kind in ("prim", "beh"):
                cycle[f"p_{kind}{i}"] = getattr(dut, f"p_{kind}{i}").value.to_signed()
                cycle[f"pcout_{kind}{i}"] = getattr(dut, f"pcout_{kind}{i}").value.to_signed()
                cycle[f"v_{kind}{i}"] = int(getattr(dut, f"v_{kind}{i}").value)
        out.append(cycle)
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump(out, f)
