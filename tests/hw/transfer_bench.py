"""cocotb bench for the units behind the controller (``TransferHarness``): fills HBM (unless the
images come as ``$readmemh`` plusargs) and the buffers from AIRFOIL_CASE (JSON: ``hbm`` and
``buffers``, lists of words as hex, and ``programs``), runs each program to its end (waiting on
the ``stopped`` edge: no Python per cycle), and after each one reads HBM (every word, or the
``hbm_dump`` ranges [channel, first word, words]) and every buffer word back (AIRFOIL_RESULTS:
status, cycles, bytes moved, the memories)."""
import json
import os

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge

from airfoil.isa import Queue
from airfoil.sim.top_bench import dump_words, fill_words, start, stopped_or_timeout


@cocotb.test()
async def transfer_programs(dut):
    with open(os.environ["AIRFOIL_CASE"]) as f:
        case = json.load(f)
    await start(dut)
    dut.eps_q.value, dut.c_qk.value = case.get("eps_q", 0), case.get("c_qk", 0)
    await fill_words(dut, case)
    results = []
    for prog in case["programs"]:
        for i, w in enumerate(prog["words"]):
            dut.imem_we.value, dut.imem_addr.value, dut.imem_data.value = 1, i, int(w, 16)
            await FallingEdge(dut.clk)
        dut.imem_we.value = 0
        dut.program_words.value, dut.r0.value, dut.r1.value = len(prog["words"]), prog["r0"], prog.get("r1", 0)
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        await stopped_or_timeout(dut, case["max_cycles"])
        await FallingEdge(dut.clk)
        hung = not int(dut.stopped.value)
        await ClockCycles(dut.clk, case["settle"])  # units still running after an error finish
        await FallingEdge(dut.clk)
        result = {"hung": hung, "done": int(dut.done.value), "error": int(dut.error.value),
                  "error_pc": int(dut.error_pc.value), "cycles": int(dut.cycles.value),
                  "moved_bytes": int(dut.moved_bytes.value),
                  "executed": [int(dut.executed.value) >> (32 * q) & 0xFFFFFFFF for q in range(len(Queue))]}
        if "hbm_dump" in case:
            hbm = [(await dump_words(dut, "hbm", [c], n, first))[0] for c, first, n in case["hbm_dump"]]
        else:
            hbm = await dump_words(dut, "hbm", [int(c) for c in case["hbm"]], len(next(iter(case["hbm"].values()))))
        bufs = {}
        for space, words in case["buffers"].items():
            bufs[space] = (await dump_words(dut, "buf", [int(space)], len(words)))[0]
        result["hbm"], result["buffers"] = hbm, bufs
        results.append(result)
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump(results, f)
