"""cocotb bench for the linear engine: loads the weight and activation buffers (AIRFOIL_CASE,
JSON), runs each layer and writes every result beat with its chain mask (AIRFOIL_RESULTS)."""
import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from airfoil.sim.top_bench import start


async def _write(dut, prefix: str, items):
    for addr, value in items:
        getattr(dut, prefix + "_en").value, getattr(dut, prefix + "_addr").value = 1, addr
        getattr(dut, prefix + "_data").value = int(value, 16)
        await FallingEdge(dut.clk)
    getattr(dut, prefix + "_en").value = 0


@cocotb.test()
async def linear_layers(dut):
    with open(os.environ["AIRFOIL_CASE"]) as f:
        case = json.load(f)
    await start(dut)
    out = []
    for layer in case["layers"]:
        await _write(dut, "w", layer["words"])
        await _write(dut, "a", layer["blocks"])
        dut.geometry.value, dut.beats_per_group.value = int(layer["geometry"], 16), layer["beats_per_group"]
        dut.pair_rows.value = layer["pair_rows"]
        dut.shift.value, dut.start.value = layer["shift"], 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        results, cycles = [], 0
        while True:
            if int(dut.out__valid.value):
                results.append([f"{int(dut.out__payload.value):x}", int(dut.out_mask.value)])
            busy = int(dut.busy.value)
            await FallingEdge(dut.clk)
            cycles += 1
            if not busy:
                break
        out.append({"results": results, "cycles": cycles})
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump(out, f)
