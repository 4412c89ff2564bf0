"""The on-chip buffers the LD/ST units reach (ACT, GLOBAL, WEIGHT, KV), each a memory of 64-byte
words with byte enables, sized by the config.  A buffer element is ``BUFFER_ELEMENT_BYTES``
little-endian bytes (GLOBAL: INT32; the others: INT8 or raw bytes), so element address e of a
buffer is byte 4e or e.

Ports: one write (the LD unit), one tagged read answered the next cycle (the ST unit), and a
host port to fill and read them while the machine is idle.  The MPE and SFU ports come with
their units."""
from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import wiring
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
    def __init__(self, sizes: dict[Buffer, int], tag_bits: int):
        self.sizes, self.tag_bits = sizes, tag_bits
        aw = max(ceil_log2(n // BEAT_BYTES) for n in sizes.values())
        super().__init__({
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
        for b in DMA_BUFFERS:
            words = self.sizes[b] // BEAT_BYTES
            aw = ceil_log2(words)
            mem = Memory(shape=unsigned(8 * BEAT_BYTES), depth=words, init=[])
            m.submodules[b.name.lower()] = mem
            wp, rp, hp = mem.write_port(granularity=8), mem.read_port(), mem.read_port()
            with m.If(self.host_we & (self.host_buffer == b.value)):
                m.d.comb += [wp.addr.eq(self.host_addr), wp.data.eq(self.host_wdata), wp.en.eq(-1)]
            with m.Elif(self.wr_valid & (self.wr.space == b.value)):
                m.d.comb += [wp.addr.eq(self.wr.addr[:aw]), wp.data.eq(self.wr.data), wp.en.eq(self.wr.mask)]
            m.d.comb += [rp.addr.eq(self.rd.addr[:aw]), rp.en.eq(self.rd_valid & (self.rd.space == b.value)),
                         hp.addr.eq(self.host_addr)]
            with m.If(out_buf == b.value):
                m.d.comb += self.rd_resp.data.eq(rp.data)
            with m.If(self.host_buffer == b.value):
                m.d.comb += self.host_rdata.eq(hp.data)
        return m
