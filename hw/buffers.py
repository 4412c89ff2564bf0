"""The on-chip buffers the LD/ST units reach (ACT, GLOBAL, WEIGHT, KV), each a memory of 64-byte
words with byte enables, sized by the config.  A buffer element is ``BUFFER_ELEMENT_BYTES``
little-endian bytes (GLOBAL: INT32; the others: INT8 or raw bytes), so element address e of a
buffer is byte 4e or e.

Every buffer has one write port, shared by its writers (the host, the LD unit, the MV unit's
results, the SFU) in that order of priority: the controller's write-port interlock runs one
writing unit per buffer at a time, so the priority only matters to a harness that breaks it.
Reads: one tagged read answered the next cycle (the ST unit), which the host also uses to read
the buffers while the machine is idle; for the MV unit, ``weight_readers`` read ports on WEIGHT
(one per weight decoder), ``act_readers`` on ACT (one per DSP group, twice that for MM's
two-token passes) and its results' writes into GLOBAL; for the SFU unit (``sfu``), two read ports on GLOBAL, ACT and KV each (the
attention's chunk windows) and its writes into GLOBAL and ACT.  Each read port is a copy of
the memory in block RAM."""
from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from airfoil.config import AirfoilConfig
from airfoil.hw.hbm_model import BEAT_BYTES, read_request_layout, read_response_layout, write_request_layout
from airfoil.isa import Buffer

__all__ = ["BufferBank", "buffer_bytes", "DMA_BUFFERS"]

DMA_BUFFERS = (Buffer.ACT, Buffer.GLOBAL, Buffer.WEIGHT, Buffer.KV)


def buffer_bytes(cfg: AirfoilConfig) -> dict[Buffer, int]:
    """Bytes of each buffer (fsim's sizes: the weight buffer holds both halves)."""
    return {Buffer.ACT: cfg.act_buffer_kib * 1024, Buffer.GLOBAL: cfg.global_buffer_kib * 1024,
            Buffer.WEIGHT: 2 * cfg.weight_half_bytes, Buffer.KV: cfg.kv_buffer_kib * 1024}


class BufferBank(wiring.Component):
    def __init__(self, sizes: dict[Buffer, int], tag_bits: int, weight_readers: int = 0, act_readers: int = 0,
                 sfu: bool = False):
        self.sizes, self.tag_bits, self.sfu = sizes, tag_bits, sfu
        self.readers = {Buffer.WEIGHT: weight_readers, Buffer.ACT: act_readers}
        aw = max(ceil_log2(n // BEAT_BYTES) for n in sizes.values())
        extra = {}
        for b, n in self.readers.items():
            if n:
                name = b.name.lower()
                extra[f"{name}_rd_en"] = In(n)
                extra[f"{name}_rd_addr"] = In(data.ArrayLayout(unsigned(32), n))
                extra[f"{name}_rd_data"] = Out(data.ArrayLayout(unsigned(8 * BEAT_BYTES), n))
        if act_readers:
            extra["global_wr_valid"] = In(1)
            extra["global_wr"] = In(write_request_layout())
        if sfu:
            extra.update({"sfu_g_rd_en": In(2), "sfu_g_rd_addr": In(unsigned(32)).array(2),
                          "sfu_g_rd_data": Out(unsigned(8 * BEAT_BYTES)).array(2),
                          "sfu_g_wr_valid": In(1), "sfu_g_wr": In(write_request_layout()),
                          "sfu_a_wr_valid": In(1), "sfu_a_wr": In(write_request_layout()),
                          "sfu_a_rd_en": In(2), "sfu_a_rd_addr": In(unsigned(32)).array(2),
                          "sfu_a_rd_data": Out(unsigned(8 * BEAT_BYTES)).array(2),
                          "sfu_kv_rd_en": In(2), "sfu_kv_rd_addr": In(unsigned(32)).array(2),
                          "sfu_kv_rd_data": Out(unsigned(8 * BEAT_BYTES)).array(2)})
        super().__init__({
            **extra,
            "wr_valid": In(1), "wr": In(write_request_layout()),
            "rd_valid": In(1), "rd": In(read_request_layout(tag_bits)),
            "rd_resp_valid": Out(1), "rd_resp": Out(read_response_layout(tag_bits)),
            "host_we": In(1), "host_buffer": In(range(len(Buffer))), "host_addr": In(unsigned(aw)),
            "host_wdata": In(8 * BEAT_BYTES), "host_rdata": Out(8 * BEAT_BYTES),
        })

    def elaborate(self, platform):
        m = Module()
        out_buf = Signal(range(len(Buffer)))
        m.d.sync += [self.rd_resp_valid.eq(self.rd_valid), self.rd_resp.tag.eq(self.rd.tag), out_buf.eq(self.rd.space)]
        sfu_readers = {Buffer.GLOBAL: "g", Buffer.ACT: "a", Buffer.KV: "kv"}
        for b in DMA_BUFFERS:
            words = self.sizes[b] // BEAT_BYTES
            aw = ceil_log2(words)
            mem = Memory(shape=unsigned(8 * BEAT_BYTES), depth=words, init=[])
            m.submodules[b.name.lower()] = mem
            # one write port, so that the memory maps to block RAM or UltraRAM: the controller's
            # interlock lets one writing unit run per buffer, and the host writes while it idles
            wp = mem.write_port(granularity=8)
            writers = [(self.host_we & (self.host_buffer == b.value), self.host_addr, self.host_wdata, -1),
                       (self.wr_valid & (self.wr.space == b.value), self.wr.addr, self.wr.data, self.wr.mask)]
            if b == Buffer.GLOBAL and self.readers[Buffer.ACT]:
                writers.append((self.global_wr_valid, self.global_wr.addr, self.global_wr.data, self.global_wr.mask))
            if self.sfu and b in (Buffer.GLOBAL, Buffer.ACT):
                req, valid = (self.sfu_g_wr, self.sfu_g_wr_valid) if b == Buffer.GLOBAL else (self.sfu_a_wr,
                                                                                              self.sfu_a_wr_valid)
                writers.append((valid, req.addr, req.data, req.mask))
            with m.If(writers[0][0]):
                m.d.comb += [wp.addr.eq(writers[0][1][:aw]), wp.data.eq(writers[0][2]), wp.en.eq(writers[0][3])]
            for valid, addr, wdata, mask in writers[1:]:
                with m.Elif(valid):
                    m.d.comb += [wp.addr.eq(addr[:aw]), wp.data.eq(wdata), wp.en.eq(mask)]
            # the ST unit's reads and the host's (while the machine idles) share one read port
            rp = mem.read_port()
            st_read = self.rd_valid & (self.rd.space == b.value)
            m.d.comb += rp.addr.eq(Mux(st_read, self.rd.addr[:aw], self.host_addr))
            with m.If(out_buf == b.value):
                m.d.comb += self.rd_resp.data.eq(rp.data)
            with m.If(self.host_buffer == b.value):
                m.d.comb += self.host_rdata.eq(rp.data)
            for i in range(self.readers.get(b, 0)):
                name = b.name.lower()
                port = mem.read_port()
                m.d.comb += [port.en.eq(getattr(self, f"{name}_rd_en")[i]),
                             port.addr.eq(getattr(self, f"{name}_rd_addr")[i][:aw]),
                             getattr(self, f"{name}_rd_data")[i].eq(port.data)]
            if self.sfu and b in sfu_readers:
                en, addr, rdata = (getattr(self, f"sfu_{sfu_readers[b]}_rd_{x}") for x in ("en", "addr", "data"))
                for i in range(2):
                    port = mem.read_port()
                    m.d.comb += [port.en.eq(en[i]), port.addr.eq(addr[i][:aw]), rdata[i].eq(port.data)]
        return m
