"""AXI4 master ports onto HBM: the bridges between the units' request ports (``hw.hbm_model``'s
read/write request layouts) and one AXI4 master per HBM pseudo-channel, as a Vitis RTL kernel
has them (``m_axi_<name>_*``).

Transfers are INCR bursts of 64-byte beats (``AxSIZE`` 6) with ID 0, so each port answers in
order; a request's ``space`` picks the port and its byte address is the port's ``base`` (the
buffer XRT allocated in that pseudo-channel, from the control registers) plus ``64 * addr``.
The HBM masters' read bridge gathers the LD unit's consecutive beats on one port into bursts of
up to ``MAX_BURST_BEATS`` (4 KB, never across a 4 KB boundary): an HBM pseudo-channel loses
bandwidth on single-beat reads.  Writes (the ST unit's, a small share of the traffic) and the
instruction fetch's reads stay single beats (``AxLEN`` 0).

    units --rd (space, addr, tag)--> AxiReadBridge --AR--> port[space]
          <--rd_resp (data, tag)---   order FIFO   <--R--- port[head]
    ST    --wr (space, addr, data, mask)--> FIFO --> AxiWriteBridge --AW+W--> port[space], B counted

Answers from different ports may come in any order on a board; the read bridge keeps the ports
of the requests in flight in issue order and takes R only from the oldest one's port (RREADY low
on the others), so the units see their answers in order without a reorder buffer.  A full FIFO
holds the units (``rd_ready`` low); a request (or burst) whose port is not ready waits in a
one-entry register (AXI: a valid request stays until taken), and the units wait behind it.  The write
bridge queues the ST unit's writes (whose data cannot wait: ``room`` tells the unit to stop
asking for more while it can still absorb the answers in flight), sends AW and W of the oldest,
and counts the B answers still owed; ``idle`` says every write has been answered, which is when
the ST unit may report done and a later LD may read what it wrote.  An error answer (SLVERR or
DECERR) sets the sticky ``resp_error``.

``ResultsWriter`` writes the results word (``hw.control_registers.RESULTS_LAYOUT``: status and
counters) at the end of each run on the fetch master's write channels, before the host sees
ap_done: XRT's Python binding cannot read registers, so the host reads this word instead."""
from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from airfoil.hw.hbm_model import AXI_BOUNDARY_BYTES, BEAT_BYTES, MAX_BURST_BEATS, read_request_layout, read_response_layout, write_request_layout

__all__ = ["ResultsWriter", "connect_bridges", "AXI_ADDR_BITS", "AXI_SIZE", "AXI_BURST_INCR", "axi4_master_ports", "AxiReadBridge", "AxiWriteBridge",
           "read_bridge_depth",
           "WRITE_ROOM_MARGIN"]

AXI_ADDR_BITS = 64
AXI_SIZE = exact_log2(BEAT_BYTES)  # AxSIZE: 2^6 = 64 bytes a beat
AXI_BURST_INCR = 1
WRITE_ROOM_MARGIN = 4  # writes a unit may still send after ``room`` falls (its answers in flight)

_READ = {  # name: (width, from the master)
    "arvalid": (1, True), "arready": (1, False), "araddr": (AXI_ADDR_BITS, True), "arlen": (8, True),
    "arsize": (3, True), "arburst": (2, True),
    "rvalid": (1, False), "rready": (1, True), "rdata": (8 * BEAT_BYTES, False), "rresp": (2, False),
    "rlast": (1, False),
}
_WRITE = {
    "awvalid": (1, True), "awready": (1, False), "awaddr": (AXI_ADDR_BITS, True), "awlen": (8, True),
    "awsize": (3, True), "awburst": (2, True),
    "wvalid": (1, True), "wready": (1, False), "wdata": (8 * BEAT_BYTES, True), "wstrb": (BEAT_BYTES, True),
    "wlast": (1, True),
    "bvalid": (1, False), "bready": (1, True), "bresp": (2, False),
}


def axi4_master_ports(prefix: str, write: bool = True, master: bool = True) -> dict[str, wiring.Member]:
    """The flat ports of one AXI4 master, ``<prefix>_arvalid`` ... (Vitis' RTL-kernel naming), as
    the master sees them (``master=False``: as the slave does)."""
    ports = {}
    for name, (width, out) in ({**_READ, **_WRITE} if write else _READ).items():
        ports[f"{prefix}_{name}"] = (Out if out == master else In)(width)
    return ports


def read_bridge_depth(latency: int) -> int:
    """Beats in flight the HBM masters' read bridge remembers, for one beat a cycle: a beat waits
    up to a burst while its burst gathers, up to another while the slave reads the burst before
    it, then the latency (and 2 for the registers on the way)."""
    return latency + 2 + 2 * MAX_BURST_BEATS


def _channel_array(width: int, n: int) -> data.ArrayLayout:
    return data.ArrayLayout(unsigned(width), n)


class AxiReadBridge(wiring.Component):
    """``rd_valid``/``rd_ready``/``rd`` in, ``rd_resp_valid``/``rd_resp_ready``/``rd_resp`` out,
    ``channels`` AXI4 read ports (``ar_*``, ``r_*``, one element per port), ``base`` per port.
    ``depth``: beats in flight at most (the HBM latency plus a burst or more, for one beat a
    cycle).  Consecutive beats of one port go out as one INCR burst of up to ``max_burst`` beats
    (``ar_len`` = beats - 1) that never crosses a 4 KB boundary (AXI's rule; the ports' bases
    are 4 KB aligned, as XRT allocates them)."""

    def __init__(self, channels: int, tag_bits: int, depth: int, max_burst: int = 1):
        assert 1 <= max_burst <= MAX_BURST_BEATS
        self.channels, self.tag_bits, self.depth, self.max_burst = channels, tag_bits, depth, max_burst
        c = channels
        super().__init__({
            "rd_valid": In(1), "rd_ready": Out(1), "rd": In(read_request_layout(tag_bits)),
            "rd_resp_valid": Out(1), "rd_resp_ready": In(1, init=1), "rd_resp": Out(read_response_layout(tag_bits)),
            "base": In(_channel_array(AXI_ADDR_BITS, c)),
            "ar_valid": Out(c), "ar_ready": In(c), "ar_addr": Out(_channel_array(AXI_ADDR_BITS, c)),
            "ar_len": Out(_channel_array(8, c)),
            "r_valid": In(c), "r_ready": Out(c), "r_data": In(_channel_array(8 * BEAT_BYTES, c)),
            "r_resp": In(_channel_array(2, c)),
            "resp_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cb = max(1, ceil_log2(self.channels))
        entry = data.StructLayout({"port": unsigned(cb), "tag": unsigned(self.tag_bits)})
        m.submodules.order = order = SyncFIFO(width=entry.size, depth=self.depth)

        # requests: taken while the FIFO can remember them (one entry per beat)
        port = self.rd.space[:cb]
        bases = Array(self.base[i] for i in range(self.channels))
        addr = Signal(AXI_ADDR_BITS)
        m.d.comb += addr.eq(bases[port] + (self.rd.addr << AXI_SIZE))
        taken = (self._single_beats if self.max_burst == 1 else self._bursts)(m, order, port, addr)
        pushed = Signal(entry)
        m.d.comb += [pushed.port.eq(port), pushed.tag.eq(self.rd.tag),
                     order.w_data.eq(pushed), order.w_en.eq(taken)]

        # answers: only from the oldest request's port
        head = entry(order.r_data)
        r_valid = Array(self.r_valid[i] for i in range(self.channels))
        r_data = Array(self.r_data[i] for i in range(self.channels))
        r_resp = Array(self.r_resp[i] for i in range(self.channels))
        for i in range(self.channels):
            m.d.comb += self.r_ready[i].eq(order.r_rdy & (head.port == i) & self.rd_resp_ready)
        m.d.comb += [self.rd_resp_valid.eq(order.r_rdy & r_valid[head.port]),
                     self.rd_resp.data.eq(r_data[head.port]), self.rd_resp.tag.eq(head.tag),
                     order.r_en.eq(self.rd_resp_valid & self.rd_resp_ready)]
        with m.If(order.r_en & (r_resp[head.port] != 0)):
            m.d.sync += self.resp_error.eq(1)
        return m

    def _single_beats(self, m: Module, order, port, addr):
        """Each request straight to its port as a one-beat AR or, if that port is not ready, held
        (AXI: a valid request stays, unchanged, until it is taken)."""
        ar_ready = Array(self.ar_ready[i] for i in range(self.channels))
        held, held_port, held_addr = Signal(), Signal(port.shape()), Signal(AXI_ADDR_BITS)
        m.d.comb += self.rd_ready.eq(order.w_rdy & ~held)
        taken = self.rd_valid & self.rd_ready
        for i in range(self.channels):
            m.d.comb += [self.ar_valid[i].eq(Mux(held, held_port == i, taken & (port == i))),
                         self.ar_addr[i].eq(Mux(held, held_addr, addr)), self.ar_len[i].eq(0)]
        with m.If(held):
            with m.If(ar_ready[held_port]):
                m.d.sync += held.eq(0)
        with m.Elif(taken & ~ar_ready[port]):
            m.d.sync += [held.eq(1), held_port.eq(port), held_addr.eq(addr)]
        return taken

    def _bursts(self, m: Module, order, port, addr):
        """Each request into the open burst when it is the burst's next beat (same port, next
        address, room, no 4 KB boundary), else after the open burst's AR has gone out (AXI: a
        valid AR stays, unchanged, until it is taken).  The open burst goes out when a request
        cannot join it, when no request comes (an LD row's end: the unit leaves a free cycle)
        or when it is full."""
        ar_ready = Array(self.ar_ready[i] for i in range(self.channels))
        open_, sending = Signal(), Signal()  # a burst being gathered; its AR offered, not yet taken
        open_port, open_addr = Signal(port.shape()), Signal(AXI_ADDR_BITS)
        open_len = Signal(range(self.max_burst))  # beats - 1
        next_addr = open_addr + ((open_len + 1) << AXI_SIZE)
        extends = (open_ & ~sending & (port == open_port) & (addr == next_addr) & (open_len < self.max_burst - 1)
                   & (addr[AXI_SIZE:exact_log2(AXI_BOUNDARY_BYTES)] != 0))
        send = open_ & (sending | ~self.rd_valid | ~extends)
        sent = send & ar_ready[open_port]
        m.d.comb += self.rd_ready.eq(order.w_rdy & (extends | ~open_ | sent))
        taken = self.rd_valid & self.rd_ready
        for i in range(self.channels):
            m.d.comb += [self.ar_valid[i].eq(send & (open_port == i)), self.ar_addr[i].eq(open_addr),
                         self.ar_len[i].eq(open_len)]
        with m.If(taken & extends):
            m.d.sync += open_len.eq(open_len + 1)
        with m.Elif(taken):
            m.d.sync += [open_.eq(1), sending.eq(0), open_port.eq(port), open_addr.eq(addr), open_len.eq(0)]
        with m.Elif(sent):
            m.d.sync += [open_.eq(0), sending.eq(0)]
        with m.Elif(send):
            m.d.sync += sending.eq(1)
        return taken


class AxiWriteBridge(wiring.Component):
    """``wr_valid``/``wr`` in (never refused: keep asking only while ``room``), ``channels`` AXI4
    write ports (``aw_*``, ``w_*``, ``b_*``), ``base`` per port; ``idle`` when nothing is queued
    or owed an answer."""

    def __init__(self, channels: int, depth: int = 16, owed_bits: int = 8):
        assert depth > WRITE_ROOM_MARGIN
        self.channels, self.depth, self.owed_bits = channels, depth, owed_bits
        c = channels
        super().__init__({
            "wr_valid": In(1), "wr": In(write_request_layout()), "room": Out(1), "idle": Out(1),
            "base": In(_channel_array(AXI_ADDR_BITS, c)),
            "aw_valid": Out(c), "aw_ready": In(c), "aw_addr": Out(_channel_array(AXI_ADDR_BITS, c)),
            "w_valid": Out(c), "w_ready": In(c), "w_data": Out(_channel_array(8 * BEAT_BYTES, c)),
            "w_strb": Out(_channel_array(BEAT_BYTES, c)),
            "b_valid": In(c), "b_ready": Out(c), "b_resp": In(_channel_array(2, c)),
            "resp_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        layout = write_request_layout()
        m.submodules.queue = queue = SyncFIFO(width=layout.size, depth=self.depth)
        m.d.comb += [queue.w_data.eq(self.wr), queue.w_en.eq(self.wr_valid),
                     self.room.eq(queue.level < self.depth - WRITE_ROOM_MARGIN)]

        # the oldest write: AW and W each until taken (in either order), then the next
        head = layout(queue.r_data)
        cb = max(1, ceil_log2(self.channels))
        port = head.space[:cb]
        aw_done, w_done = Signal(), Signal()
        aw_ready = Array(self.aw_ready[i] for i in range(self.channels))
        w_ready = Array(self.w_ready[i] for i in range(self.channels))
        owed = Signal(self.owed_bits)  # B answers still to come
        can_owe = owed != (1 << self.owed_bits) - 1
        for i in range(self.channels):
            here = queue.r_rdy & can_owe & (port == i)
            m.d.comb += [self.aw_valid[i].eq(here & ~aw_done), self.w_valid[i].eq(here & ~w_done),
                         self.aw_addr[i].eq(self.base[i] + (head.addr << AXI_SIZE)),
                         self.w_data[i].eq(head.data), self.w_strb[i].eq(head.mask)]
        aw_now = aw_done | aw_ready[port]
        w_now = w_done | w_ready[port]
        sent = Signal()
        m.d.comb += [sent.eq(queue.r_rdy & can_owe & aw_now & w_now), queue.r_en.eq(sent)]
        with m.If(sent):
            m.d.sync += [aw_done.eq(0), w_done.eq(0)]
        with m.Elif(queue.r_rdy & can_owe):
            m.d.sync += [aw_done.eq(aw_now), w_done.eq(w_now)]

        # B answers: always taken, counted against the writes sent
        m.d.comb += self.b_ready.eq(-1)
        for i in range(self.channels):
            with m.If(self.b_valid[i] & (self.b_resp[i] != 0)):
                m.d.sync += self.resp_error.eq(1)
        # several ports may answer in one cycle: count them all
        n_answers = sum(self.b_valid[i] for i in range(self.channels))
        m.d.sync += owed.eq(owed + sent - n_answers)
        m.d.comb += self.idle.eq(~queue.r_rdy & (owed == 0) & ~self.wr_valid)
        return m


def connect_bridges(m: Module, rd: AxiReadBridge, wr: AxiWriteBridge, slave) -> None:
    """The bridges' ports straight onto a slave with the same per-port arrays (``HbmAxiModel``),
    for harnesses without the kernel's flat ports."""
    m.d.comb += [slave.ar_valid.eq(rd.ar_valid), rd.ar_ready.eq(slave.ar_ready), slave.ar_addr.eq(rd.ar_addr),
                 slave.ar_len.eq(rd.ar_len),
                 rd.r_valid.eq(slave.r_valid), slave.r_ready.eq(rd.r_ready), rd.r_data.eq(slave.r_data),
                 rd.r_resp.eq(0),
                 slave.aw_valid.eq(wr.aw_valid), wr.aw_ready.eq(slave.aw_ready), slave.aw_addr.eq(wr.aw_addr),
                 slave.w_valid.eq(wr.w_valid), wr.w_ready.eq(slave.w_ready), slave.w_data.eq(wr.w_data),
                 slave.w_strb.eq(wr.w_strb), wr.b_valid.eq(slave.b_valid), slave.b_ready.eq(wr.b_ready),
                 wr.b_resp.eq(0)]


class ResultsWriter(wiring.Component):
    """At the end of each run (``finished`` after ``start``), one 64-byte write of ``word`` to byte
    ``address`` (0: none) on its own AXI4 write channels (the kernel's ``m_axi_fetch``), B
    awaited; ``busy`` from ``start`` until then, so the host's ap_done comes after the word has
    landed.  The word is taken when the run finishes."""

    def __init__(self):
        super().__init__({
            "start": In(1), "finished": In(1), "address": In(AXI_ADDR_BITS), "word": In(8 * BEAT_BYTES),
            "busy": Out(1),
            "aw_valid": Out(1), "aw_ready": In(1), "aw_addr": Out(AXI_ADDR_BITS),
            "w_valid": Out(1), "w_ready": In(1), "w_data": Out(8 * BEAT_BYTES),
            "b_valid": In(1), "b_ready": Out(1), "b_resp": In(2),
            "resp_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        word, address = Signal(8 * BEAT_BYTES), Signal(AXI_ADDR_BITS)
        aw_done, w_done = Signal(), Signal()
        m.d.comb += [self.aw_addr.eq(address), self.w_data.eq(word)]
        with m.FSM(name="results"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.next = "ARMED"
            with m.State("ARMED"):
                m.d.comb += self.busy.eq(1)
                with m.If(self.finished):
                    m.d.sync += [word.eq(self.word), address.eq(self.address), aw_done.eq(0), w_done.eq(0)]
                    with m.If(self.address == 0):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.busy.eq(1), self.aw_valid.eq(~aw_done), self.w_valid.eq(~w_done)]
                aw_now, w_now = aw_done | self.aw_ready, w_done | self.w_ready
                m.d.sync += [aw_done.eq(aw_now), w_done.eq(w_now)]
                with m.If(aw_now & w_now):
                    m.next = "ANSWER"
            with m.State("ANSWER"):
                m.d.comb += [self.busy.eq(1), self.b_ready.eq(1)]
                with m.If(self.b_valid):
                    with m.If(self.b_resp != 0):
                        m.d.sync += self.resp_error.eq(1)
                    m.next = "IDLE"
        return m
