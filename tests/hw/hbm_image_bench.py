"""cocotb bench for ``HbmModel`` images: reads every word of every channel through the host port
(AIRFOIL_RESULTS: per channel, the words as hex), then writes AIRFOIL_WRITES (word address ->
64 bytes as hex) into channel 1 through the host port, for the end-of-run dump."""
import json
import os

import cocotb
from cocotb.triggers import FallingEdge

from airfoil.sim.top_bench import start


@cocotb.test()
async def hbm_images(dut):
    dut.host_we.value = dut.rd_valid.value = dut.wr_valid.value = 0
    await start(dut)
    await FallingEdge(dut.clk)
    channels, words = int(os.environ["AIRFOIL_CHANNELS"]), int(os.environ["AIRFOIL_WORDS"])
    out = []
    for c in range(channels):
        dut.host_channel.value = c
        got = []
        for a in range(words):  # the read port answers at the edge that takes the address
            dut.host_addr.value = a
            await FallingEdge(dut.clk)
            got.append(hex(int(dut.host_rdata.value)))
        out.append(got)
    dut.host_channel.value = 1
    for a, w in json.loads(os.environ["AIRFOIL_WRITES"]).items():
        dut.host_addr.value, dut.host_wdata.value, dut.host_we.value = int(a), int.from_bytes(bytes.fromhex(w), "little"), 1
        await FallingEdge(dut.clk)
    dut.host_we.value = 0
    await FallingEdge(dut.clk)
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump(out, f)
