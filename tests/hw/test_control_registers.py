"""The AXI4-Lite control slave in Amaranth's simulator: every register of the map reads back or
reports what it should, byte strobes mask writes, ap_start/ap_done follow Vitis' ap_ctrl_hs
handshake, addresses outside the map answer SLVERR; docs/registers.md is current."""
from pathlib import Path

from amaranth.sim import Simulator

from airfoil.hw.control_registers import (OKAY, REGISTERS, RESULT_FIELDS, SLVERR, ControlRegisters, pack_results,
                                          parse_results, registers_markdown)
from airfoil.isa import ErrorCode, Queue

OFF = {r.name: r.offset for r in REGISTERS}


def _run(body, hbm_channels: int = 4):
    dut = ControlRegisters(hbm_channels)

    async def bench(ctx):
        async def write(addr, value, strb=0xF, data_first=False):
            ctx.set(dut.s_axi_wdata, value)
            ctx.set(dut.s_axi_wstrb, strb)
            ctx.set(dut.s_axi_awaddr, addr)
            first, second = (dut.s_axi_wvalid, dut.s_axi_awvalid) if data_first else (dut.s_axi_awvalid, dut.s_axi_wvalid)
            ctx.set(first, 1)
            await ctx.tick()
            ctx.set(second, 1)
            await ctx.tick()
            ctx.set(dut.s_axi_awvalid, 0)
            ctx.set(dut.s_axi_wvalid, 0)
            while not ctx.get(dut.s_axi_bvalid):
                await ctx.tick()
            resp = ctx.get(dut.s_axi_bresp)
            ctx.set(dut.s_axi_bready, 1)
            await ctx.tick()
            ctx.set(dut.s_axi_bready, 0)
            return resp

        async def read(addr):
            ctx.set(dut.s_axi_araddr, addr)
            ctx.set(dut.s_axi_arvalid, 1)
            await ctx.tick()
            ctx.set(dut.s_axi_arvalid, 0)
            while not ctx.get(dut.s_axi_rvalid):
                await ctx.tick()
            got = ctx.get(dut.s_axi_rdata), ctx.get(dut.s_axi_rresp)
            ctx.set(dut.s_axi_rready, 1)
            await ctx.tick()
            ctx.set(dut.s_axi_rready, 0)
            return got

        await body(ctx, dut, write, read)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_program_and_length_registers():
    async def body(ctx, dut, write, read):
        assert await write(OFF["PROGRAM_WORDS"], 2276) == OKAY
        assert await write(OFF["PROGRAM_LO"], 0x12345640, data_first=True) == OKAY
        assert await write(OFF["PROGRAM_HI"], 0x7) == OKAY
        r0 = -5 & ((1 << 36) - 1)
        await write(OFF["R0_LO"], r0 & 0xFFFFFFFF)
        await write(OFF["R0_HI"], r0 >> 32)
        await write(OFF["R1_LO"], 0xAABBCCDD)
        await write(OFF["R1_LO"], 0x00110000, strb=0b0100)  # one byte: 0xAA11CCDD
        assert ctx.get(dut.program_words) == 2276
        assert ctx.get(dut.program) == 0x712345640
        assert ctx.get(dut.r0) == -5 and ctx.get(dut.r1) == 0xAA11CCDD
        assert await read(OFF["R1_LO"]) == (0xAA11CCDD, OKAY)
        assert await read(OFF["PROGRAM_WORDS"]) == (2276, OKAY)
        assert await read(0xFC) == (0, SLVERR)
        assert await write(0xFC, 1) == SLVERR
    _run(body)


def test_hbm_base_registers():
    """One 64-bit base per pseudo-channel of the core, out to the AXI4 masters; the map's others
    answer SLVERR."""
    async def body(ctx, dut, write, read):
        for c in range(3):
            base = (c + 1) * 0x1_2000_0000 + 0x40 * c
            assert await write(OFF[f"HBM_BASE{c}_LO"], base & 0xFFFFFFFF) == OKAY
            assert await write(OFF[f"HBM_BASE{c}_HI"], base >> 32) == OKAY
        for c in range(3):
            assert ctx.get(dut.hbm_base[c]) == (c + 1) * 0x1_2000_0000 + 0x40 * c
            assert await read(OFF[f"HBM_BASE{c}_HI"]) == ((c + 1) * 0x1_2000_0000 >> 32, OKAY)
        assert await write(OFF["HBM_BASE3_LO"], 5) == SLVERR
        assert await read(OFF["HBM_BASE3_LO"]) == (0, SLVERR)
        assert await read(OFF["HBM_BASE63_HI"]) == (0, SLVERR)
    _run(body, hbm_channels=3)


def test_start_done_status_and_counters():
    async def body(ctx, dut, write, read):
        assert (await read(OFF["CTRL"]))[0] == 0b100  # idle
        starts = 0
        await write(OFF["CTRL"], 1)
        for _ in range(4):  # start pulses once
            starts += ctx.get(dut.start)
            await ctx.tick()
        assert starts == 1
        ctx.set(dut.busy, 1)
        assert (await read(OFF["CTRL"]))[0] == 0  # running: not idle, not done
        await write(OFF["CTRL"], 1)  # ignored while running
        assert not ctx.get(dut.start)
        ctx.set(dut.error, ErrorCode.ADDRESS)
        ctx.set(dut.error_pc, 77)
        ctx.set(dut.cycles, (5 << 32) | 9)
        for q in Queue:
            ctx.set(dut.busy_cycles[q.value], 100 + q.value)
            ctx.set(dut.executed[q.value], 10 + q.value)
        ctx.set(dut.busy, 0)
        await ctx.tick()
        assert (await read(OFF["CTRL"]))[0] == 0b110  # done and idle
        assert (await read(OFF["CTRL"]))[0] == 0b100  # done clears on read
        assert await read(OFF["STATUS"]) == (ErrorCode.ADDRESS.value, OKAY)
        assert await read(OFF["ERROR_PC"]) == (77, OKAY)
        assert (await read(OFF["CYCLES_LO"]))[0] == 9 and (await read(OFF["CYCLES_HI"]))[0] == 5
        for q in Queue:
            assert (await read(OFF[f"BUSY_{q.name}_LO"]))[0] == 100 + q.value
            assert (await read(OFF[f"EXECUTED_{q.name}"]))[0] == 10 + q.value
    _run(body)


def test_register_doc_is_current():
    path = Path(__file__).resolve().parents[2] / "docs" / "registers.md"
    assert path.read_text() == registers_markdown(), "run python -m airfoil.hw.control_registers"


def test_results_word_round_trips_every_field_at_its_width():
    fields = {name: (1 << bits) - 1 - i for i, (name, bits) in enumerate(RESULT_FIELDS)}
    raw = pack_results(fields)
    assert len(raw) == 64 and parse_results(raw) == fields
    assert parse_results(pack_results({"CYCLES": 5})) == {name: 5 if name == "CYCLES" else 0 for name, _ in RESULT_FIELDS}
