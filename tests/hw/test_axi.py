"""The AXI4 bridges (``hw.axi``) against a slave that stalls at random: each port takes requests
when it likes and answers in its own order and time (ports independent, as HBM's pseudo-channels
are); the read bridge's bursts gather runs of consecutive beats, at most 64 beats and never
across 4 KB; the AXI rules for a master are checked every cycle (a valid request stays, unchanged, until
taken), and the unit side sees its reads answered in issue order with the right data and tag and
its writes land with their byte enables, ``idle`` rising only once every B has come back.  The
results writer writes its word once per run and stays busy until the answer."""
import random

import pytest

from amaranth import Module
from amaranth.sim import Simulator

from airfoil.hw.axi import WRITE_ROOM_MARGIN, AxiReadBridge, AxiWriteBridge
from airfoil.hw.hbm_model import AXI_BOUNDARY_BYTES, MAX_BURST_BEATS

PORTS, TAG_BITS = 3, 8
BASES = [0x1000_0000 * (p + 1) for p in range(PORTS)]


class _Slave:
    """Per port: requests taken at random, answered in order after a random delay, held (valid)
    until the master takes them."""

    def __init__(self, rng, mem):
        self.rng, self.mem = rng, mem
        self.pending = [[] for _ in range(PORTS)]  # [ready_cycle, payload]

    def ready(self):
        return [self.rng.random() < 0.6 for _ in range(PORTS)]

    def take(self, p, cycle, payload):
        self.pending[p].append([cycle + self.rng.randint(1, 12), payload])

    def offer(self, p, cycle):
        q = self.pending[p]
        return q[0][1] if q and q[0][0] <= cycle else None


def _read_requests(rng, n: int, runs: bool):
    """``n`` (space, beat address, tag) requests and where runs start: random single ones, or runs
    of consecutive beats on one port (an LD row's), some of them across a 4 KB boundary."""
    requests, starts = [], set()
    while len(requests) < n:
        space = rng.randrange(PORTS)
        starts.add(len(requests))
        if runs:
            start = rng.choice([rng.randrange(1 << 14), 64 * rng.randrange(1, 256) - rng.randrange(1, 20),
                                64 * rng.randrange(1, 256)])  # anywhere, before a 4 KB boundary, on one
            requests += [(space, start + j, rng.getrandbits(TAG_BITS)) for j in range(rng.randint(1, 100))]
        else:
            requests.append((space, rng.randrange(1 << 20), rng.getrandbits(TAG_BITS)))
    return requests[:n], starts


@pytest.mark.parametrize("max_burst", [1, MAX_BURST_BEATS])
def test_read_bridge_answers_in_issue_order_under_random_stalls(max_burst):
    rng = random.Random(5)
    dut = AxiReadBridge(PORTS, TAG_BITS, depth=6 + max_burst, max_burst=max_burst)
    mem = {}

    def word(addr):
        return mem.setdefault(addr, rng.getrandbits(512))

    slave = _Slave(rng, mem)
    requests, starts = _read_requests(rng, 800 if max_burst > 1 else 400, runs=max_burst > 1)
    got, bursts = [], []

    async def bench(ctx):
        for p in range(PORTS):
            ctx.set(dut.base[p], BASES[p])
        i, cycle, last_ar = 0, 0, [None] * PORTS
        while len(got) < len(requests):
            cycle += 1
            # the unit asks for a run's beats back to back (now and then a gap inside), with gaps
            # between runs
            gap = 0.5 if i in starts else 0.02 if max_burst > 1 else 0.2
            asking = i < len(requests) and rng.random() >= gap
            if asking:
                space, addr, tag = requests[i]
                ctx.set(dut.rd.space, space)
                ctx.set(dut.rd.addr, addr)
                ctx.set(dut.rd.tag, tag)
            ctx.set(dut.rd_valid, asking)
            ready = slave.ready()
            for p in range(PORTS):
                ctx.set(dut.ar_ready[p], ready[p])
                answer = slave.offer(p, cycle)
                ctx.set(dut.r_valid[p], answer is not None)
                ctx.set(dut.r_data[p], answer if answer is not None else 0)
                ctx.set(dut.r_resp[p], 0)
            resp_ready = rng.random() < 0.8  # the unit holds answers back at times
            ctx.set(dut.rd_resp_ready, resp_ready)
            taken = asking and ctx.get(dut.rd_ready)
            for p in range(PORTS):  # AXI: a request offered and not taken is offered again, unchanged
                valid, addr, length = ctx.get(dut.ar_valid[p]), ctx.get(dut.ar_addr[p]), ctx.get(dut.ar_len[p])
                if last_ar[p] is not None:
                    assert valid and (addr, length) == last_ar[p], f"port {p} withdrew or changed its request"
                last_ar[p] = (addr, length) if valid and not ready[p] else None
                if valid and ready[p]:
                    assert length < max_burst and addr // AXI_BOUNDARY_BYTES == (addr + 64 * length) // AXI_BOUNDARY_BYTES, (addr, length)
                    bursts.append(length + 1)
                    for b in range(length + 1):  # a burst's beats, in order, at consecutive addresses
                        slave.take(p, cycle, word(addr + 64 * b))
                if ctx.get(dut.r_ready[p]) and slave.offer(p, cycle) is not None:
                    slave.pending[p].pop(0)
            if ctx.get(dut.rd_resp_valid) and resp_ready:
                got.append((ctx.get(dut.rd_resp.data), ctx.get(dut.rd_resp.tag)))
            i += taken
            await ctx.tick()
            assert cycle < 20_000, "hung"
        assert not ctx.get(dut.resp_error)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    want = [(mem[BASES[s] + 64 * a], t) for s, a, t in requests]
    assert got == want
    assert sum(bursts) == len(requests)
    if max_burst > 1:  # runs went out as bursts, the longest as long as allowed
        assert max(bursts) == max_burst and len(bursts) < len(requests) / 3, (len(bursts), max(bursts))
    else:
        assert bursts == [1] * len(requests)


def test_write_bridge_lands_every_write_and_waits_for_every_answer():
    rng = random.Random(7)
    m = Module()
    m.submodules.dut = dut = AxiWriteBridge(PORTS, depth=8)
    mem = {}
    writes = [(rng.randrange(PORTS), rng.randrange(1 << 16), rng.getrandbits(512), rng.getrandbits(64))
              for _ in range(300)]
    expect = {}
    for space, addr, data, mask in writes:  # later writes over earlier ones, byte by byte
        a = BASES[space] + 64 * addr
        old = expect.get(a, 0)
        for b in range(64):
            if mask >> b & 1:
                old = (old & ~(0xFF << 8 * b)) | (data & (0xFF << 8 * b))
        expect[a] = old
    idle_early = []

    async def bench(ctx):
        for p in range(PORTS):
            ctx.set(dut.base[p], BASES[p])
        i, cycle, owed, since_room = 0, 0, [[] for _ in range(PORTS)], 0
        aw_q, w_q, landed = [[] for _ in range(PORTS)], [[] for _ in range(PORTS)], 0
        last = [None] * PORTS
        while True:
            cycle += 1
            # a unit that keeps sending until ``room`` has been low for the answers in flight
            room = ctx.get(dut.room)
            since_room = 0 if room else since_room + 1
            sending = i < len(writes) and since_room < WRITE_ROOM_MARGIN - 1 and rng.random() < 0.9
            if sending:
                space, addr, data, mask = writes[i]
                ctx.set(dut.wr.space, space)
                ctx.set(dut.wr.addr, addr)
                ctx.set(dut.wr.data, data)
                ctx.set(dut.wr.mask, mask)
            ctx.set(dut.wr_valid, sending)
            aw_ready, w_ready = [rng.random() < 0.5 for _ in range(PORTS)], [rng.random() < 0.5 for _ in range(PORTS)]
            for p in range(PORTS):
                ctx.set(dut.aw_ready[p], aw_ready[p])
                ctx.set(dut.w_ready[p], w_ready[p])
                b = bool(owed[p]) and owed[p][0] <= cycle
                ctx.set(dut.b_valid[p], b)
                ctx.set(dut.b_resp[p], 0)
            for p in range(PORTS):
                aw, w = ctx.get(dut.aw_valid[p]), ctx.get(dut.w_valid[p])
                now = (aw, ctx.get(dut.aw_addr[p]), w, ctx.get(dut.w_data[p]), ctx.get(dut.w_strb[p]))
                if last[p] is not None:
                    was_aw, was_w = last[p]
                    assert not was_aw or (aw and now[1] == was_aw), f"port {p}: AW withdrawn or changed"
                    assert not was_w or (w and now[3:] == was_w), f"port {p}: W withdrawn or changed"
                last[p] = (now[1] if aw and not aw_ready[p] else None, now[3:] if w and not w_ready[p] else None)
                if aw and aw_ready[p]:
                    aw_q[p].append(now[1])
                if w and w_ready[p]:
                    w_q[p].append(now[3:])
                while aw_q[p] and w_q[p]:  # a write lands once its address and its data are in
                    addr, (data, strb) = aw_q[p].pop(0), w_q[p].pop(0)
                    old = mem.get(addr, 0)
                    for b in range(64):
                        if strb >> b & 1:
                            old = (old & ~(0xFF << 8 * b)) | (data & (0xFF << 8 * b))
                    mem[addr] = old
                    owed[p].append(cycle + rng.randint(1, 10))
                    landed += 1
                if owed[p] and owed[p][0] <= cycle and ctx.get(dut.b_ready[p]):
                    owed[p].pop(0)
            done = i + sending == len(writes)
            if ctx.get(dut.idle) and (any(owed) or landed < i):
                idle_early.append(cycle)
            if ctx.get(dut.idle) and done and not any(owed):
                break
            i += sending
            await ctx.tick()
            assert cycle < 20_000, "hung"

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert mem == expect
    assert not idle_early, f"idle while writes were queued or owed an answer (cycles {idle_early[:5]})"


def test_results_writer_writes_once_per_run_and_stays_busy_until_answered():
    """One write of the word taken when the run finished, AW and W taken in any order, ``busy``
    from start until its B; no write with address 0."""
    from airfoil.hw.axi import ResultsWriter

    rng = random.Random(3)
    dut = ResultsWriter()

    async def bench(ctx):
        for address in (0x40_0000_1000, 0, 0x40_0000_2000):
            ctx.set(dut.address, address)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for _ in range(5):
                assert ctx.get(dut.busy) and not ctx.get(dut.aw_valid) and not ctx.get(dut.w_valid)
                await ctx.tick()
            word = rng.getrandbits(512)
            ctx.set(dut.word, word)
            ctx.set(dut.finished, 1)
            await ctx.tick()
            ctx.set(dut.finished, 0)
            ctx.set(dut.word, 0)  # taken when the run finished
            got_aw, got_w, cycles = None, None, 0
            while ctx.get(dut.busy):
                aw_ready, w_ready = rng.random() < 0.4, rng.random() < 0.4
                ctx.set(dut.aw_ready, aw_ready)
                ctx.set(dut.w_ready, w_ready)
                if ctx.get(dut.aw_valid) and aw_ready:
                    assert got_aw is None
                    got_aw = ctx.get(dut.aw_addr)
                if ctx.get(dut.w_valid) and w_ready:
                    assert got_w is None
                    got_w = ctx.get(dut.w_data)
                b = got_aw is not None and got_w is not None and rng.random() < 0.5
                ctx.set(dut.b_valid, b)
                await ctx.tick()
                cycles += 1
                assert cycles < 200, "hung"
            ctx.set(dut.b_valid, 0)
            if address == 0:
                assert got_aw is None and got_w is None
            else:
                assert got_aw == address and got_w == word

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
