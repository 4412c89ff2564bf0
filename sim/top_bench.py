"""cocotb test module for ``AirfoilTop``: the host's side of a run, as a driver on a board does it,
but with the simulation's host ports for memory.  From AIRFOIL_CASE (JSON): HBM words (``hbm``;
a model's images come instead as binary files named by plusargs, see ``hw.hbm_model``) and buffer words
(``buffers``) are written; then for each run the AXI4-Lite registers (``registers``: name ->
value) are written, CTRL.ap_start set, the end awaited on the ``stopped`` edge (no Python per
cycle), CTRL polled until ap_done, and STATUS, ERROR_PC, the counters, the ``hbm_dump`` ranges
[channel, first word, words] (default: none) and the buffers' first ``buffer_words`` read back
(AIRFOIL_RESULTS), with ``run_seconds``, the wall time from ap_start to the end."""
import json
import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, ReadOnly, RisingEdge, Timer

from airfoil.hw.control_registers import REGISTERS
from airfoil.sim.verilator import CLOCK_NS, CLOCKED_SUFFIX

__all__ = ["CLOCK_NS", "start", "stopped_or_timeout", "fill_words", "dump_words", "axi_write", "axi_read", "write_registers"]

OFFSET = {r.name: r.offset for r in REGISTERS}

HOST_READ_LATENCY = 2  # edges from a host-port address to its data (registered host ports)


async def start(dut) -> None:
    """The clock running, two cycles of reset (tops register their reset: ``hw.clocking``).  A
    design built with its clock in HDL (``sim.verilator.clocked_toplevel``) clocks itself."""
    if not dut._name.endswith(CLOCKED_SUFFIX):
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rst.value = 1
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


async def stopped_or_timeout(dut, max_cycles: int) -> None:
    """Wait for ``dut.stopped`` to rise, at most ``max_cycles`` cycles.  A Timer, not ClockCycles:
    counting cycles would wake Python at every clock edge."""
    if not int(dut.stopped.value):
        await First(RisingEdge(dut.stopped), Timer(CLOCK_NS * max_cycles, unit="ns"))


async def fill_words(dut, case: dict) -> None:
    """Write ``case["hbm"]`` and ``case["buffers"]`` (space -> words as hex, from word 0) through
    the host write ports, one word per cycle."""
    for prefix, key, sel in (("hbm", "hbm", "channel"), ("buf", "buffers", "id")):
        for space, words in case.get(key, {}).items():
            getattr(dut, f"{prefix}_{sel}").value = int(space)
            for a, w in enumerate(words):
                getattr(dut, f"{prefix}_addr").value, getattr(dut, f"{prefix}_wdata").value = a, int(w, 16)
                getattr(dut, f"{prefix}_we").value = 1
                await FallingEdge(dut.clk)
            getattr(dut, f"{prefix}_we").value = 0


async def dump_words(dut, prefix: str, spaces: list[int], words: int, first: int = 0) -> list[list[str]]:
    """Words ``first`` .. ``first + words - 1`` of each space (HBM channel or buffer id) through the
    host read port ``<prefix>_addr``/``<prefix>_rdata``, as hex.  The tops register their host
    ports (``hw.clocking``): the data comes two edges after the address, so the reads overlap."""
    out = []
    for s in spaces:
        getattr(dut, f"{prefix}_{'channel' if prefix == 'hbm' else 'id'}").value = s
        got = []
        for i in range(words + HOST_READ_LATENCY - 1):
            if i < words:
                getattr(dut, f"{prefix}_addr").value = first + i
            await FallingEdge(dut.clk)
            if i >= HOST_READ_LATENCY - 1:
                got.append(hex(int(getattr(dut, f"{prefix}_rdata").value)))
        out.append(got)
    return out


async def _response(dut, channel: str, field: str) -> int:
    """Wait for ``s_axi_<channel>valid``, take ``s_axi_<field>``, complete the handshake with
    ``<channel>ready`` (already high) and drop it."""
    while not int(getattr(dut, f"s_axi_{channel}valid").value):
        await FallingEdge(dut.clk)
    value = int(getattr(dut, f"s_axi_{field}").value)
    await FallingEdge(dut.clk)
    getattr(dut, f"s_axi_{channel}ready").value = 0
    return value


async def axi_write(dut, name: str, value: int) -> int:
    dut.s_axi_awaddr.value, dut.s_axi_awvalid.value = OFFSET[name], 1
    dut.s_axi_wdata.value, dut.s_axi_wstrb.value, dut.s_axi_wvalid.value = value & 0xFFFFFFFF, 0xF, 1
    dut.s_axi_bready.value = 1
    aw = w = False
    while not (aw and w):
        # the settled values before the rising edge: a ready seen here completes its handshake at
        # that edge (sampled after it, a one-cycle ready would be missed when the clock is in HDL)
        await ReadOnly()
        aw = aw or bool(int(dut.s_axi_awready.value))
        w = w or bool(int(dut.s_axi_wready.value))
        await FallingEdge(dut.clk)
        if aw:
            dut.s_axi_awvalid.value = 0
        if w:
            dut.s_axi_wvalid.value = 0
    return await _response(dut, "b", "bresp")


async def axi_read(dut, name: str) -> int:
    dut.s_axi_araddr.value, dut.s_axi_arvalid.value, dut.s_axi_rready.value = OFFSET[name], 1, 1
    while True:
        await ReadOnly()  # as in axi_write
        ready = int(dut.s_axi_arready.value)
        await FallingEdge(dut.clk)
        if ready:
            break
    dut.s_axi_arvalid.value = 0
    return await _response(dut, "r", "rdata")


async def write_registers(dut, registers: dict[str, int]) -> None:
    for name, value in registers.items():
        r = next((r for r in REGISTERS if r.name in (name, f"{name}_LO")), None)
        assert r is not None, name
        if r.name.endswith("_LO"):
            assert await axi_write(dut, f"{name}_LO", value) == 0
            assert await axi_write(dut, f"{name}_HI", (value >> 32) & 0xFFFFFFFF) == 0
        else:
            assert await axi_write(dut, name, value) == 0


@cocotb.test()
async def top_runs(dut):
    with open(os.environ["AIRFOIL_CASE"]) as f:
        case = json.load(f)
    for name in ("awvalid", "wvalid", "bready", "arvalid", "rready"):
        getattr(dut, f"s_axi_{name}").value = 0
    dut.hbm_we.value = dut.buf_we.value = 0
    await start(dut)
    await fill_words(dut, case)
    results = []
    for run in case["runs"]:
        await write_registers(dut, run["registers"])
        t0 = time.perf_counter()
        assert await axi_write(dut, "CTRL", 1) == 0
        await ClockCycles(dut.clk, 2)
        await stopped_or_timeout(dut, case["max_cycles"])
        await FallingEdge(dut.clk)
        hung = not int(dut.stopped.value)
        run_seconds = time.perf_counter() - t0
        polls, ctrl = 0, 0
        while not ctrl & 2 and polls < 8:  # the host polls CTRL for ap_done (ap_ctrl_hs)
            ctrl, polls = await axi_read(dut, "CTRL"), polls + 1
        result = {"hung": hung, "ap_done": bool(ctrl & 2), "ctrl_after_read": await axi_read(dut, "CTRL"),
                  "status": await axi_read(dut, "STATUS"), "error_pc": await axi_read(dut, "ERROR_PC"),
                  "run_seconds": run_seconds}
        for name in ("CYCLES", "BUSY_LOAD", "BUSY_COMPUTE", "BUSY_SFU", "BUSY_STORE"):
            result[name.lower()] = await axi_read(dut, f"{name}_LO") | await axi_read(dut, f"{name}_HI") << 32
        for q in ("LOAD", "COMPUTE", "SFU", "STORE"):
            result[f"executed_{q.lower()}"] = await axi_read(dut, f"EXECUTED_{q}")
        result["hbm"] = [(await dump_words(dut, "hbm", [c], n, first))[0] for c, first, n in run.get("hbm_dump", [])]
        result["buffers"] = {space: (await dump_words(dut, "buf", [int(space)], n))[0]
                             for space, n in run.get("buffer_words", {}).items()}
        results.append(result)
    with open(os.environ["AIRFOIL_RESULTS"], "w") as f:
        json.dump(results, f)
