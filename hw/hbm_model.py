"""A simulation model of the HBM behind the LD/ST units: ``channels`` pseudo-channels of 512-bit
words, reads answered ``latency`` cycles after the request, in order, with the request's tag;
writes (with byte enables) land at once.  One read and one write per cycle in all: each
transfer unit moves at most one 64-byte beat per cycle, about one pseudo-channel's bandwidth at
225 MHz (14.375 GB/s is 63.9 bytes per cycle).

The delay line holds the small requests, not the data: a word is read when its request leaves
the line, so the model costs a few registers per cycle of latency.  Sim only: it is not meant
for synthesis.  The host fills and reads the channels through ``host_*`` while the machine is
idle, or, for a model's tens of megabytes, loads them at time 0 from binary images and gets them
back at the end as binary dumps (plusargs ``+channelN=FILE`` and ``+channelN_dump=FILE``; see
``sim.verilator.write_memory_image`` and ``read_memory_dump``).  Each channel is the handwritten Verilog module ``airfoil_hbm_channel``
(``sim/hdl/``, added to every Verilator build by ``sim.verilator``): an Amaranth ``Memory`` would
write its initial contents into the design word by word."""
from __future__ import annotations

from amaranth import Array, Cat, ClockSignal, Instance, Module, Mux, Signal, unsigned
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["HbmModel", "HbmAxiModel", "read_request_layout", "write_request_layout", "read_response_layout", "BEAT_BYTES",
           "MAX_BURST_BEATS", "AR_QUEUE", "AXI_BOUNDARY_BYTES"]

BEAT_BYTES = 64
AXI_BOUNDARY_BYTES = 4096  # AXI: no burst crosses a 4 KB boundary
MAX_BURST_BEATS = AXI_BOUNDARY_BYTES // BEAT_BYTES  # 64: the longest read burst the kernel's masters send
AR_QUEUE = 4  # read bursts the HBM AXI model holds while it reads an earlier one


def read_request_layout(tag_bits: int) -> data.StructLayout:
    return data.StructLayout({"space": unsigned(7), "addr": unsigned(32), "tag": unsigned(tag_bits)})


def read_response_layout(tag_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(8 * BEAT_BYTES), "tag": unsigned(tag_bits)})


def write_request_layout() -> data.StructLayout:
    return data.StructLayout({"space": unsigned(7), "addr": unsigned(32), "data": unsigned(8 * BEAT_BYTES),
                              "mask": unsigned(BEAT_BYTES)})


class HbmModel(wiring.Component):
    """``rd_valid``/``rd`` requests, ``rd_resp_valid``/``rd_resp`` answers; ``wr_valid``/``wr``
    writes.  ``space`` is the pseudo-channel, ``addr`` the word (byte address / 64).  With
    ``fetch_tag_bits``, a second read port ``f_rd*`` (the instruction fetch's own master)."""

    def __init__(self, channels: int, words_per_channel: int, latency: int, tag_bits: int, fetch_tag_bits: int = 0):
        assert latency >= 1
        self.channels, self.words, self.latency, self.tag_bits = channels, words_per_channel, latency, tag_bits
        self.fetch_tag_bits = fetch_tag_bits
        aw = max(1, ceil_log2(words_per_channel))
        fetch = {}
        if fetch_tag_bits:
            fetch = {"f_rd_valid": In(1), "f_rd": In(read_request_layout(fetch_tag_bits)),
                     "f_rd_resp_valid": Out(1), "f_rd_resp": Out(read_response_layout(fetch_tag_bits))}
        super().__init__({
            **fetch,
            "rd_valid": In(1), "rd": In(read_request_layout(tag_bits)),
            "rd_resp_valid": Out(1), "rd_resp": Out(read_response_layout(tag_bits)),
            "wr_valid": In(1), "wr": In(write_request_layout()),
            "host_we": In(1), "host_channel": In(range(channels)), "host_addr": In(unsigned(aw)),
            "host_wdata": In(8 * BEAT_BYTES), "host_rdata": Out(8 * BEAT_BYTES),
        })

    def _reader(self, m: Module, name: str, valid, req, resp_valid, resp, tag_bits: int):
        """A delay line of ``latency - 1`` request stages, then the memory read (one cycle)."""
        v_in, r_in = valid, req
        for i in range(self.latency - 1):
            v, r = Signal(name=f"{name}_v{i}"), Signal(read_request_layout(tag_bits), name=f"{name}_req{i}")
            m.d.sync += [v.eq(v_in), r.eq(r_in)]
            v_in, r_in = v, r
        out_tag, out_ch = Signal(tag_bits, name=f"{name}_tag"), Signal(range(self.channels), name=f"{name}_ch")
        m.d.sync += [resp_valid.eq(v_in), out_tag.eq(r_in.tag), out_ch.eq(r_in.space)]
        m.d.comb += resp.tag.eq(out_tag)
        return v_in, r_in, out_ch

    def elaborate(self, platform):
        m = Module()
        aw = max(1, ceil_log2(self.words))
        readers = [(*self._reader(m, "rd", self.rd_valid, self.rd, self.rd_resp_valid, self.rd_resp, self.tag_bits),
                    self.rd_resp)]
        if self.fetch_tag_bits:
            readers.append((*self._reader(m, "f_rd", self.f_rd_valid, self.f_rd, self.f_rd_resp_valid, self.f_rd_resp,
                                          self.fetch_tag_bits), self.f_rd_resp))
        rd_data = [[Signal(8 * BEAT_BYTES, name=f"channel{c}_rd{i}") for i in range(2)] for c in range(self.channels)]
        for c in range(self.channels):
            ports = {"i_clk": ClockSignal(), "p_WORDS": self.words, "p_AW": aw, "p_NAME": f"channel{c}"}
            for i in range(2):
                ports[f"o_rd{i}_data"] = rd_data[c][i]
                if i < len(readers):
                    v_in, r_in, out_ch, resp = readers[i]
                    ports[f"i_rd{i}_en"], ports[f"i_rd{i}_addr"] = v_in & (r_in.space == c), r_in.addr[:aw]
                    with m.If(out_ch == c):
                        m.d.comb += resp.data.eq(rd_data[c][i])
                else:
                    ports[f"i_rd{i}_en"], ports[f"i_rd{i}_addr"] = 0, 0
            wr_mask, wr_addr, wr_data = Signal(BEAT_BYTES, name=f"channel{c}_wr_mask"), \
                Signal(aw, name=f"channel{c}_wr_addr"), Signal(8 * BEAT_BYTES, name=f"channel{c}_wr_data")
            with m.If(self.host_we & (self.host_channel == c)):
                m.d.comb += [wr_addr.eq(self.host_addr), wr_data.eq(self.host_wdata), wr_mask.eq(-1)]
            with m.Elif(self.wr_valid & (self.wr.space == c)):
                m.d.comb += [wr_addr.eq(self.wr.addr[:aw]), wr_data.eq(self.wr.data), wr_mask.eq(self.wr.mask)]
            host_data = Signal(8 * BEAT_BYTES, name=f"channel{c}_host_data")
            ports.update({"i_wr_mask": wr_mask, "i_wr_addr": wr_addr, "i_wr_data": wr_data,
                          "i_host_addr": self.host_addr, "o_host_data": host_data})
            m.submodules[f"channel{c}"] = Instance("airfoil_hbm_channel", **ports)
            with m.If(self.host_channel == c):
                m.d.comb += self.host_rdata.eq(host_data)
        return m


class HbmAxiModel(wiring.Component):
    """The HBM model behind AXI4 slave ports, for the kernel's masters (``hw.axi``): ``ports``
    read/write ports (``ar_*``, ``r_*``, ``aw_*``, ``w_*``, ``b_*``, one element per port) and the
    port ``f_*`` (the instruction fetch's reads, the results word's write).  The address map is a board's: pseudo-channel c
    holds the bytes [c * channel_bytes, (c + 1) * channel_bytes), so any port reaches any channel.

    One read beat and one write a cycle in all: an AR of the lowest-numbered port asking (the
    others wait, which the masters must allow), its beats (``ar_len`` + 1, INCR) read one a
    cycle, the ARs taken meanwhile (up to ``AR_QUEUE``) read after it in order; AW and W are taken together
    (single beats); B comes the cycle after.  Each beat's R comes ``latency`` cycles after it is
    read, RLAST on a burst's last; a data port's answers wait in a queue while its master holds
    RREADY low (a port takes no more reads than its queue can hold).  The fetch port's answers
    cannot wait: its master keeps RREADY up (``r_lost`` rises if one was not taken).

    ``stall``: refuse AR and AW/W in about one cycle in four, pseudo-randomly (an LFSR), as a busy
    HBM controller does, to exercise the masters' waiting."""

    def __init__(self, channels: int, words_per_channel: int, latency: int, ports: int, stall: bool = False):
        self.channels, self.words, self.latency, self.ports = channels, words_per_channel, latency, ports
        self.stall = stall
        assert words_per_channel & (words_per_channel - 1) == 0, "channels of a power-of-two size"
        aw = max(1, ceil_log2(words_per_channel))
        p = ports
        wide = data.ArrayLayout(unsigned(8 * BEAT_BYTES), p)
        addr = data.ArrayLayout(unsigned(64), p)
        super().__init__({
            "ar_valid": In(p), "ar_ready": Out(p), "ar_addr": In(addr), "ar_len": In(data.ArrayLayout(unsigned(8), p)),
            "r_valid": Out(p), "r_ready": In(p), "r_data": Out(wide), "r_last": Out(p),
            "aw_valid": In(p), "aw_ready": Out(p), "aw_addr": In(addr),
            "w_valid": In(p), "w_ready": Out(p), "w_data": In(wide), "w_strb": In(data.ArrayLayout(unsigned(BEAT_BYTES), p)),
            "b_valid": Out(p), "b_ready": In(p),
            "f_ar_valid": In(1), "f_ar_ready": Out(1), "f_ar_addr": In(64),
            "f_r_valid": Out(1), "f_r_ready": In(1), "f_r_data": Out(8 * BEAT_BYTES),
            "f_aw_valid": In(1), "f_aw_ready": Out(1), "f_aw_addr": In(64),
            "f_w_valid": In(1), "f_w_ready": Out(1), "f_w_data": In(8 * BEAT_BYTES), "f_w_strb": In(BEAT_BYTES),
            "f_b_valid": Out(1), "f_b_ready": In(1),
            "r_lost": Out(1),
            "host_we": In(1), "host_channel": In(range(channels)), "host_addr": In(unsigned(aw)),
            "host_wdata": In(8 * BEAT_BYTES), "host_rdata": Out(8 * BEAT_BYTES),
        })

    def elaborate(self, platform):
        m = Module()
        pb = max(1, ceil_log2(self.ports))
        m.submodules.hbm = hbm = HbmModel(self.channels, self.words, self.latency, pb + 1, 1)
        word_bits = ceil_log2(self.words)

        def decode(req, address):
            m.d.comb += [req.space.eq(address[6 + word_bits:]), req.addr.eq(address[6:6 + word_bits])]

        read_go, write_go = Signal(init=1), Signal(init=1)
        if self.stall:  # x^16 + x^14 + x^13 + x^11 + 1
            lfsr = Signal(16, init=0xACE1)
            m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
            m.d.comb += [read_go.eq(lfsr[0] | lfsr[7]), write_go.eq(lfsr[4] | lfsr[11])]

        # reads: the AR of the lowest port asking (with room for all its beats' answers); its beats
        # go to the HBM one a cycle, the ARs taken meanwhile waiting in order in a small queue (as
        # a controller keeps several outstanding); each answer comes back tagged with its port
        # (and whether it ends its burst: RLAST) and waits in the port's queue while the master
        # holds RREADY low
        depth = self.latency + 1 + 2 * MAX_BURST_BEATS  # a burst being read, the next ones' first beats queued
        room = Signal(self.ports)
        chosen = Signal(pb)
        for i in reversed(range(self.ports)):
            with m.If(self.ar_valid[i] & room[i]):
                m.d.comb += chosen.eq(i)
        burst = data.StructLayout({"port": unsigned(pb), "addr": unsigned(64), "len": unsigned(8)})
        m.submodules.ar_queue = ar_queue = SyncFIFO(width=burst.size, depth=AR_QUEUE)
        asking = (self.ar_valid & room).any() & read_go & ar_queue.w_rdy
        ar_addr = Array(self.ar_addr[i] for i in range(self.ports))
        ar_len = Array(self.ar_len[i] for i in range(self.ports))
        offered = Signal(burst)
        m.d.comb += [offered.port.eq(chosen), offered.addr.eq(ar_addr[chosen]), offered.len.eq(ar_len[chosen])]
        burst_left, burst_port, burst_addr = Signal(8), Signal(pb), Signal(64)  # the burst's beats still to read
        idle = burst_left == 0
        queued = burst(ar_queue.r_data)
        first = Signal(burst)  # a burst's first beat this cycle: the queue's head, or the AR taken now
        starting = Signal()
        with m.If(idle & ar_queue.r_rdy):
            m.d.comb += [first.eq(queued), starting.eq(1), ar_queue.r_en.eq(1)]
        with m.Elif(idle & asking):
            m.d.comb += [first.eq(offered), starting.eq(1)]
        m.d.comb += [ar_queue.w_data.eq(offered), ar_queue.w_en.eq(asking & ~(idle & ~ar_queue.r_rdy))]
        rd_addr = Signal(64)
        rd_tag = Signal(data.StructLayout({"port": unsigned(pb), "last": 1}))
        with m.If(starting):
            m.d.comb += [hbm.rd_valid.eq(1), rd_addr.eq(first.addr), rd_tag.port.eq(first.port),
                         rd_tag.last.eq(first.len == 0)]
            m.d.sync += [burst_left.eq(first.len), burst_port.eq(first.port), burst_addr.eq(first.addr + BEAT_BYTES)]
        with m.Elif(~idle):
            m.d.comb += [hbm.rd_valid.eq(1), rd_addr.eq(burst_addr), rd_tag.port.eq(burst_port),
                         rd_tag.last.eq(burst_left == 1)]
            m.d.sync += [burst_left.eq(burst_left - 1), burst_addr.eq(burst_addr + BEAT_BYTES)]
        m.d.comb += hbm.rd.tag.eq(rd_tag)
        decode(hbm.rd, rd_addr)
        answer = data.StructLayout({"data": unsigned(8 * BEAT_BYTES), "last": 1})
        back = rd_tag.shape()(hbm.rd_resp.tag)
        for i in range(self.ports):
            queue = SyncFIFO(width=answer.size, depth=depth)
            m.submodules[f"answers{i}"] = queue
            arriving = hbm.rd_resp_valid & (back.port == i)
            in_flight = Signal(range(depth + MAX_BURST_BEATS + 1), name=f"in_flight{i}")  # beats of ARs taken, R not yet
            taken, answered = asking & (chosen == i), self.r_valid[i] & self.r_ready[i]
            m.d.sync += in_flight.eq(in_flight + Mux(taken, ar_len[i] + 1, 0) - answered)
            head = answer(queue.r_data)
            m.d.comb += [room[i].eq(in_flight + ar_len[i] + 1 <= depth),
                         self.ar_ready[i].eq(asking & (chosen == i)),
                         # the queue's head first; an answer arriving to an empty queue goes straight out
                         self.r_valid[i].eq(queue.r_rdy | arriving),
                         self.r_data[i].eq(Mux(queue.r_rdy, head.data, hbm.rd_resp.data)),
                         self.r_last[i].eq(Mux(queue.r_rdy, head.last, back.last)),
                         queue.r_en.eq(self.r_ready[i]),
                         queue.w_en.eq(arriving & (queue.r_rdy | ~self.r_ready[i])),
                         queue.w_data.eq(Cat(hbm.rd_resp.data, back.last))]
        m.d.comb += [hbm.f_rd_valid.eq(self.f_ar_valid), self.f_ar_ready.eq(1),
                     self.f_r_valid.eq(hbm.f_rd_resp_valid), self.f_r_data.eq(hbm.f_rd_resp.data)]
        decode(hbm.f_rd, self.f_ar_addr)
        with m.If(self.f_r_valid & ~self.f_r_ready):
            m.d.sync += self.r_lost.eq(1)

        # writes: AW and W of the lowest port offering both (the fetch port last); B the next cycle
        # (a few owed at most)
        aw_valid = [*(self.aw_valid[i] for i in range(self.ports)), self.f_aw_valid]
        w_valid = [*(self.w_valid[i] for i in range(self.ports)), self.f_w_valid]
        aw_addr = Array([*(self.aw_addr[i] for i in range(self.ports)), self.f_aw_addr])
        w_data = Array([*(self.w_data[i] for i in range(self.ports)), self.f_w_data])
        w_strb = Array([*(self.w_strb[i] for i in range(self.ports)), self.f_w_strb])
        aw_ready = [*(self.aw_ready[i] for i in range(self.ports)), self.f_aw_ready]
        w_ready = [*(self.w_ready[i] for i in range(self.ports)), self.f_w_ready]
        b_valid = [*(self.b_valid[i] for i in range(self.ports)), self.f_b_valid]
        b_ready = [*(self.b_ready[i] for i in range(self.ports)), self.f_b_ready]
        n = self.ports + 1
        owed = [Signal(3, name=f"b_owed{i}") for i in range(n)]
        both = Signal(n)
        m.d.comb += both.eq(Cat(aw_valid[i] & w_valid[i] & (owed[i] != 7) & write_go for i in range(n)))
        w_chosen = Signal(range(n))
        for i in reversed(range(n)):
            with m.If(both[i]):
                m.d.comb += w_chosen.eq(i)
        m.d.comb += [hbm.wr_valid.eq(both.any()), hbm.wr.data.eq(w_data[w_chosen]), hbm.wr.mask.eq(w_strb[w_chosen])]
        decode(hbm.wr, aw_addr[w_chosen])
        for i in range(n):
            taken = both.any() & (w_chosen == i)
            m.d.comb += [aw_ready[i].eq(taken), w_ready[i].eq(taken), b_valid[i].eq(owed[i] != 0)]
            m.d.sync += owed[i].eq(owed[i] + taken - (b_valid[i] & b_ready[i]))

        m.d.comb += [hbm.host_we.eq(self.host_we), hbm.host_channel.eq(self.host_channel),
                     hbm.host_addr.eq(self.host_addr), hbm.host_wdata.eq(self.host_wdata),
                     self.host_rdata.eq(hbm.host_rdata)]
        return m
