"""cocotb bench for the controller: for each program of AIRFOIL_PROGRAMS (JSON: ``words`` as hex
strings, ``r0``, ``r1``) it fills the instruction memory, starts the machine and records every
unit start (with the issued entry) and finish by cycle, and the final status and counters
(AIRFOIL_RESULTS).  A program that neither finishes nor stops within ``max_cycles`` is a hang."""
import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from airfoil.sim.top_bench import start

NQ = 4


@cocotb.test()
async def controller_programs(dut):
    with open(os.environ["AIRFOIL_PROGRAMS"]) as f:
        case = json.load(f)
    await start(dut)
    results = []
    for prog in case["programs"]:
        dut.start.value = 0
        for i, w in enumerate(prog["words"]):
            dut.imem_we.value, dut.imem_addr.value, dut.imem_data.value = 1, i, int(w, 16)
            await FallingEdge(dut.clk)
        dut.imem_we.value = 0
        dut.program_words.value, dut.r0.value, dut.r1.value = len(prog["words"]), prog["r0"], prog["r1"]
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        events, cycle, hung, end_cycle = [], 0, True, None
        while cycle < case["max_cycles"]:
            ustart, udone = int(dut.ustart.value), int(dut.udone.value)
            for q in range(NQ):
                if ustart >> q & 1:
                    events.append([cycle, q, "start", hex(int(getattr(dut, f"upayload{q}").value))])
                if udone >> q & 1:
                    events.append([cycle, q, "done", ""])
            if not int(dut.busy.value) and (int(dut.done.value) or int(dut.error.value)):
                hung = False
                end_cycle = cycle
                break
            await FallingEdge(dut.clk)
            cycle += 1
        for _ in range(40):  # units already running finish; nothing new may start
            await FallingEdge(dut.clk)
            cycle += 1
            for q in range(NQ):
                if int(dut.ustart.value) >> q & 1:
                    events.append([cycle, q, "start", hex(int(getattr(dut, f"upayload{q}").value))])
                if int(dut.udone.value) >> q & 1:
                    events.append([cycle, q, "done", ""])
        results.append({"hung": hung, "done": int(dut.done.value), "error": int(dut.error.value),
                        "error_pc": int(dut.error_pc.value), "cycles": int(dut.cycles.value), "end_cycle": end_cycle,
                        "busy_cycles": [int(getattr(dut, f"busy_cycles{q}").value) for q in range(NQ)],
                        "executed": [int(getattr(dut, f"executed{q}").value) for q in range(NQ)],
                        "events": events})
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump(results, f)
