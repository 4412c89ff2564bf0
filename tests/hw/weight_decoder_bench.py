"""cocotb bench for the weight decoder: loads the weight buffer (AIRFOIL_CASE: JSON with the
memory words and the geometries to decode), runs each geometry with random back-pressure on
the beat stream, and writes every beat taken (AIRFOIL_RESULTS)."""
import json
import os
import random

import cocotb
from cocotb.triggers import FallingEdge

from airfoil.sim.top_bench import start


@cocotb.test()
async def decode_tiles(dut):
    case = json.loads(open(os.environ["AIRFOIL_CASE"]).read())
    await start(dut)
    rng = random.Random(case["seed"])
    for addr, word in case["words"]:
        dut.wr_en.value, dut.wr_addr.value, dut.wr_data.value = 1, addr, int(word, 16)
        await FallingEdge(dut.clk)
    dut.wr_en.value = 0
    out = []
    for run in case["runs"]:
        dut.geometry.value = run["geometry"]
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        beats, cycles = [], 0
        while True:
            ready = int(rng.random() < run["ready_rate"])  # (a handle reads back its old value until the write lands)
            dut.beats__ready.value = ready
            if ready and int(dut.beats__valid.value):
                beats.append(int(dut.beats__payload.value))
            busy = int(dut.busy.value)
            await FallingEdge(dut.clk)
            cycles += 1
            if not busy:
                break
        out.append({"beats": beats, "cycles": cycles})
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump(out, f)
