"""BufferBank's ACT reader sets in Amaranth's simulator: a set's ports, read together at the
consecutive blocks of one beat (every N:16 pattern, any block alignment), or port 0 alone, return
the words the buffer holds, as copies would; the banks hold the buffer's writes; a set takes one
copy's bytes (``act_bank_count`` banks of words / B); the SFU's chunk-window pairs on ACT and KV
likewise, in two banks; a decoder slice's WEIGHT ports, each a memory of its slice's bank."""
import random

import pytest
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from airfoil.hw.buffers import BufferBank, act_bank_count
from airfoil.hw.hbm_model import BEAT_BYTES
from airfoil.hw.synth import buffer_memories
from airfoil.isa import Buffer

SIZES = {Buffer.ACT: 8192, Buffer.GLOBAL: 4096, Buffer.WEIGHT: 4096, Buffer.KV: 4096}
WORDS = SIZES[Buffer.ACT] // BEAT_BYTES


@pytest.mark.parametrize("groups, banks", [(1, 1), (2, 2), (4, 2), (8, 4), (16, 8)])
def test_bank_count_covers_the_words_of_consecutive_blocks(groups, banks):
    assert act_bank_count(groups) == banks
    blocks_per_word = BEAT_BYTES // 16
    for first in range(blocks_per_word):  # every alignment of the first block
        assert len({(first + g) // blocks_per_word for g in range(groups)}) <= banks


async def _host_write(ctx, dut, buffer: Buffer, image: list[int]) -> None:
    """The words of ``image`` into ``buffer`` from word 0, through the host port."""
    ctx.set(dut.host_buffer, buffer.value)
    for a, word in enumerate(image):
        ctx.set(dut.host_we, 1)
        ctx.set(dut.host_addr, a)
        ctx.set(dut.host_wdata, word)
        await ctx.tick()
    ctx.set(dut.host_we, 0)


def _beats(rng, groups, sets):
    """(set, [(en, word)] per port, lanes) of reads as the MV unit makes them: group g at block
    b0 + 2g // n of a row, n the pattern's kept weights per block; now and then port 0 alone."""
    out = []
    for _ in range(120):
        s = rng.randrange(sets)
        if rng.random() < 0.15:
            out.append((s, [(1, rng.randrange(WORDS))] + [(0, 0)] * (groups - 1)))
            continue
        n = rng.choice([2, 4, 8, 16])
        b0 = rng.randrange(WORDS * 4 - groups)
        out.append((s, [(1, (b0 + 2 * g // n) // 4) for g in range(groups)]))
    return out


@pytest.mark.parametrize("groups", [2, 8])
def test_reader_sets_read_what_copies_would(groups):
    sets = 2
    dut = BufferBank(SIZES, 4, act_readers=sets * groups, act_set=groups)
    rng = random.Random(groups)
    image = [rng.getrandbits(8 * BEAT_BYTES) for _ in range(WORDS)]
    beats = _beats(rng, groups, sets)
    mismatches, checked = [], 0

    async def bench(ctx):
        nonlocal checked
        await _host_write(ctx, dut, Buffer.ACT, image)
        for s, ports in beats:
            for i, (en, word) in enumerate(ports):
                ctx.set(dut.act_rd_en[s * groups + i], en)
                ctx.set(dut.act_rd_addr[s * groups + i], word)
            await ctx.tick()
            for i in range(groups):  # enables off, addresses elsewhere: the data must stay
                ctx.set(dut.act_rd_en[s * groups + i], 0)
                ctx.set(dut.act_rd_addr[s * groups + i], rng.randrange(WORDS))
            await ctx.tick()
            for i, (en, word) in enumerate(ports):
                if en:
                    checked += 1
                    if ctx.get(dut.act_rd_data[s * groups + i]) != image[word]:
                        mismatches.append((s, i, word))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert checked > 100 * groups // 2 and not mismatches, mismatches[:5]


def test_a_set_takes_one_copy_of_the_buffer():
    groups = 8
    bank = BufferBank(SIZES, 4, act_readers=2 * groups, act_set=groups)
    mems = buffer_memories(bank)
    Fragment.get(bank, None)  # only inspected
    banks = {k: v for k, v in mems.items() if k.startswith("act_set")}
    assert len(banks) == 2 * act_bank_count(groups)
    assert sum(v["words"] * v["bits"] // 8 * v["read_ports"] for v in banks.values()) == 2 * SIZES[Buffer.ACT]
    assert all(v["read_ports"] == 1 and v["write_ports"] == 1 for v in banks.values())
    assert mems["act"]["read_ports"] == 1  # the ST unit's and the host's port; no copy per MV reader


def test_sfu_chunk_window_pairs_read_what_copies_would():
    """The SFU's ACT and KV pairs, each one copy in two banks: words w and w + 1 together, as the
    attention's chunk windows read them, with the data held while the pair idles."""
    dut = BufferBank(SIZES, 4, sfu=True)
    rng = random.Random(7)
    images = {b: [rng.getrandbits(8 * BEAT_BYTES) for _ in range(SIZES[b] // BEAT_BYTES)] for b in (Buffer.ACT, Buffer.KV)}
    reads = [(rng.choice([Buffer.ACT, Buffer.KV]), rng.randrange(SIZES[Buffer.KV] // BEAT_BYTES - 1)) for _ in range(80)]
    mismatches = []

    async def bench(ctx):
        for b, image in images.items():
            await _host_write(ctx, dut, b, image)
        for b, w in reads:
            en, addr, data = ((dut.sfu_a_rd_en, dut.sfu_a_rd_addr, dut.sfu_a_rd_data) if b == Buffer.ACT else
                              (dut.sfu_kv_rd_en, dut.sfu_kv_rd_addr, dut.sfu_kv_rd_data))
            ctx.set(en, 0b11)
            ctx.set(addr[0], w)
            ctx.set(addr[1], w + 1)
            await ctx.tick()
            ctx.set(en, 0)
            ctx.set(addr[0], rng.randrange(64))
            ctx.set(addr[1], rng.randrange(64))
            await ctx.tick()
            if [ctx.get(data[0]), ctx.get(data[1])] != images[b][w:w + 2]:
                mismatches.append((b, w))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, mismatches[:5]
    bank = BufferBank(SIZES, 4, sfu=True)
    mems = buffer_memories(bank)
    Fragment.get(bank, None)
    # GLOBAL: one port, the ST unit's and the host's, which the SFU's element feed shares
    assert mems["act"]["read_ports"] == 1 and mems["kv"]["read_ports"] == 1 and mems["global"]["read_ports"] == 1
    assert {k for k in mems if k.startswith("sfu_")} == {"sfu_act_bank0", "sfu_act_bank1", "sfu_kv_bank0", "sfu_kv_bank1"}


def test_simulation_builds_guard_every_byte_masked_write():
    """``sim.verilator.guard_byte_writes`` (what every Verilator build verilates) wraps each
    memory's byte-lane writes in one ``if (|EN)``, and nothing else changes: the same byte writes,
    and a block with more than one enable is left alone.  (That the guarded designs behave the
    same is every Verilator test's business.)"""
    from airfoil.hw.synth import to_verilog
    from airfoil.sim.verilator import guard_byte_writes

    bank = BufferBank(SIZES, 4, act_readers=4, act_set=2, sfu=True)
    mems = buffer_memories(bank)
    Fragment.get(bank, None)
    text = to_verilog(BufferBank(SIZES, 4, act_readers=4, act_set=2, sfu=True), "bank")
    guarded, count = guard_byte_writes(text)
    assert count == len(mems) == 4 + 2 * 2 + 2 * 2  # the buffers, two MV sets and the SFU's ACT and KV pairs
    assert guarded.count(" begin\n") == text.count(" begin\n") + count
    strip = lambda t: [line.strip() for line in t.splitlines() if not line.strip().startswith("if (|") and line.strip() != "end"]
    assert [x for x in strip(guarded) if x != "begin"] == [x for x in strip(text) if x != "begin"]
    mixed = "  always @(posedge clk) begin\n    if (a [0])\n      m[0][7:0] <= d[7:0];\n    if (b [1])\n      m[0][15:8] <= d[15:8];\n  end\n"
    assert guard_byte_writes(mixed) == (mixed, 0)


@pytest.mark.parametrize("weight_bytes,bank", [(4096, 10), (3200, 8)])
def test_decoder_slice_ports_read_their_banks(weight_bytes, bank):
    """WEIGHT cut in 3 decoder slices' banks (a half of 32 words: banks of 10, the last slice's
    12, to the half's end; or a half of 25, no power of two, whose halves are told apart by
    comparison, ``half_offset``: banks of 8, the last 9), two ports a slice (the low and high
    lanes' decoders): each port returns the buffer's word at any address of its slice's bank in
    either half, as a copy would, from a memory of just that bank.  The buffer has no copy of its
    own: the host reads every word, and the ST unit's tagged read too, through the slices' low
    ports; the ST unit waits while a decoder reads."""
    slices, ports = 3, 6
    sizes = {**SIZES, Buffer.WEIGHT: weight_bytes}
    dut = BufferBank(sizes, 4, weight_readers=ports, weight_slices=slices)
    words = weight_bytes // BEAT_BYTES
    half = words // 2
    rng = random.Random(3)
    image = [rng.getrandbits(8 * BEAT_BYTES) for _ in range(words)]
    sizes_in_half = [bank, bank, half - 2 * bank]  # the last slice's bank runs to the half's end
    reads = [(i, h * half + (i % slices) * bank + rng.randrange(sizes_in_half[i % slices])) for _ in range(40)
             for i in range(ports) for h in (0, 1)]
    mismatches, blocked = [], []

    async def bench(ctx):
        await _host_write(ctx, dut, Buffer.WEIGHT, image)
        for i, word in reads:
            ctx.set(dut.weight_rd_en[i], 1)
            ctx.set(dut.weight_rd_addr[i], word)
            await ctx.tick()
            ctx.set(dut.weight_rd_en[i], 0)
            if ctx.get(dut.weight_rd_data[i]) != image[word]:
                mismatches.append((i, word))
        for word in range(words):  # the host, every word (the last slice's two past the banks too)
            ctx.set(dut.host_buffer, Buffer.WEIGHT.value)
            ctx.set(dut.host_addr, word)
            await ctx.tick()
            if ctx.get(dut.host_rdata) != image[word]:
                mismatches.append(("host", word))
        for word in rng.sample(range(words), 12):  # the ST unit's reads: held off while port 1 reads
            ctx.set(dut.rd.space, Buffer.WEIGHT.value)
            ctx.set(dut.rd.addr, word)
            ctx.set(dut.rd_valid, 1)
            ctx.set(dut.weight_rd_en[1], 1)
            blocked.append(ctx.get(dut.rd_ready))
            ctx.set(dut.weight_rd_en[1], 0)
            assert ctx.get(dut.rd_ready)
            await ctx.tick()
            ctx.set(dut.rd_valid, 0)
            if not ctx.get(dut.rd_resp_valid) or ctx.get(dut.rd_resp.data) != image[word]:
                mismatches.append(("st", word))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, mismatches[:5]
    assert blocked == [0] * 12
    inspected = BufferBank(sizes, 4, weight_readers=ports, weight_slices=slices)
    mems = buffer_memories(inspected)
    Fragment.get(inspected, None)  # only inspected
    banks = {k: v for k, v in mems.items() if k.startswith("weight_slice")}
    assert {k: v["words"] for k, v in banks.items()} == {f"weight_slice{i % 3}_port{i}": 2 * sizes_in_half[i % 3]
                                                         for i in range(ports)}
    assert all(v["read_ports"] == 1 and v["write_ports"] == 1 for v in banks.values()) and "weight" not in mems
