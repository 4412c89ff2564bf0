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

from amaranth import ClockSignal, Instance, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["HbmModel", "read_request_layout", "write_request_layout", "read_response_layout", "BEAT_BYTES"]

BEAT_BYTES = 64


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
