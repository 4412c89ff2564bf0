"""The on-chip buffers the LD/ST units reach (ACT, GLOBAL, WEIGHT, KV), each a memory of 64-byte
words with byte enables, sized by the config.  A buffer element is ``BUFFER_ELEMENT_BYTES``
little-endian bytes (GLOBAL: INT32; the others: INT8 or raw bytes), so element address e of a
buffer is byte 4e or e.

Every buffer has one write port, shared by its writers (the host, the LD unit, the MV unit's
results, the SFU) in that order of priority: the controller's write-port interlock runs one
writing unit per buffer at a time, so the priority only matters to a harness that breaks it.
Reads: one tagged read answered the next cycle (the ST unit), which the host also uses to read
the buffers while the machine is idle, and on GLOBAL the SFU's element feed too: the feed's read
(at most two words per 16 elements in a row) goes first, and the ST unit's waits (``rd_ready``);
for the MV unit, ``weight_readers`` read ports on WEIGHT
(one per weight decoder; with ``weight_slices`` S > 1, port i is decoder slice i mod S's and
reads only that slice's bank, ``weight_image``'s weight banks), ``act_readers`` on ACT (one per DSP group, twice that for MM's
two-token passes) and its results' writes into GLOBAL; for the SFU unit (``sfu``), its element
feed's read on GLOBAL (the ST port's, above), two on ACT and KV each (the attention's chunk
windows) and its writes into GLOBAL and ACT.  Each read port is a copy of
the memory in block RAM, except where a set of ports reads words close together: the MV unit's
on ACT come in sets of ``act_set`` ports (one per DSP group), each set one copy split into
``act_bank_count`` word-interleaved banks, and the SFU's pairs on ACT and KV (the attention's
chunk windows, words w and w + 1) one copy in two banks; and a decoder slice's WEIGHT port a
memory of just its slice's bank in each half (``bank`` words from ``s bank`` into the half; the
last slice's to the half's end), written with the buffer's writes that fall in it: S times
smaller than a copy of the buffer.  WEIGHT then has no copy of its own: the ST unit's and the
host's reads take the low side's port of the address's slice, waiting (``rd_ready``) while the
MV unit reads.

Why banks serve a set: in one beat the DSP groups read consecutive 16-byte blocks of one
activation row (group g's kept weights are the beat's (2g, 2g + 1)th, in block order), so G groups
touch at most ``ceil((G - 1) / 4) + 1`` consecutive 64-byte words, which lie in distinct banks
when there are at least that many (word w in bank w mod B); ports that name the same word share
its bank's read.  The contract: a set's ports read together (one enable), or one port alone
while the others' data are not used, and their words lie within B consecutive words."""
from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from airfoil.compiler.weight_image import weight_bank_bytes
from airfoil.config import AirfoilConfig
from airfoil.hw.hbm_model import BEAT_BYTES, read_request_layout, read_response_layout, write_request_layout
from airfoil.isa import Buffer

__all__ = ["BufferBank", "buffer_bytes", "act_bank_count", "half_offset", "DMA_BUFFERS"]

DMA_BUFFERS = (Buffer.ACT, Buffer.GLOBAL, Buffer.WEIGHT, Buffer.KV)
# the SFU's read pairs that are chunk windows (consecutive words), served by two banks
SFU_WINDOW_BUFFERS = (Buffer.ACT, Buffer.KV)


def buffer_bytes(cfg: AirfoilConfig) -> dict[Buffer, int]:
    """Bytes of each buffer (fsim's sizes: the weight buffer holds both halves)."""
    return {Buffer.ACT: cfg.act_buffer_kib * 1024, Buffer.GLOBAL: cfg.global_buffer_kib * 1024,
            Buffer.WEIGHT: 2 * cfg.weight_half_bytes, Buffer.KV: cfg.kv_buffer_kib * 1024}


def half_offset(addr, half: int):
    """(the half, the offset in it) of a weight-buffer address below ``2 half``: its top bit and
    the bits below where ``half`` is a power of two, else a comparison and a subtraction (the
    U280's three cores hold halves of 3 MiB)."""
    if half & (half - 1) == 0:
        hb = exact_log2(half)
        return addr[hb], addr[:hb]
    high = addr >= half
    return high, addr - Mux(high, half, 0)


def act_bank_count(groups: int) -> int:
    """Banks of one ACT reader set of ``groups`` ports: the power of two at least the number of
    64-byte words that ``groups`` consecutive 16-byte blocks can touch."""
    words = -(-(groups - 1) // (BEAT_BYTES // 16)) + 1
    return 1 << ceil_log2(words)


class BufferBank(wiring.Component):
    def __init__(self, sizes: dict[Buffer, int], tag_bits: int, weight_readers: int = 0, act_readers: int = 0,
                 sfu: bool = False, act_set: int = 1, weight_slices: int = 1):
        if act_readers % act_set:
            raise ValueError(f"BufferBank: {act_readers} ACT readers are no whole sets of {act_set}")
        if weight_readers % weight_slices:
            raise ValueError(f"BufferBank: {weight_readers} WEIGHT readers are no whole sets of {weight_slices} slices")
        self.sizes, self.tag_bits, self.sfu, self.act_set = sizes, tag_bits, sfu, act_set
        self.weight_slices = weight_slices
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
            extra.update({"sfu_g_rd_en": In(1), "sfu_g_rd_addr": In(unsigned(32)),
                          "sfu_g_rd_data": Out(unsigned(8 * BEAT_BYTES)),
                          "sfu_g_wr_valid": In(1), "sfu_g_wr": In(write_request_layout()),
                          "sfu_a_wr_valid": In(1), "sfu_a_wr": In(write_request_layout()),
                          "sfu_a_rd_en": In(2), "sfu_a_rd_addr": In(unsigned(32)).array(2),
                          "sfu_a_rd_data": Out(unsigned(8 * BEAT_BYTES)).array(2),
                          "sfu_kv_rd_en": In(2), "sfu_kv_rd_addr": In(unsigned(32)).array(2),
                          "sfu_kv_rd_data": Out(unsigned(8 * BEAT_BYTES)).array(2)})
        super().__init__({
            **extra,
            "wr_valid": In(1), "wr": In(write_request_layout()),
            "rd_valid": In(1), "rd": In(read_request_layout(tag_bits)), "rd_ready": Out(1),
            "rd_resp_valid": Out(1), "rd_resp": Out(read_response_layout(tag_bits)),
            "host_we": In(1), "host_buffer": In(range(len(Buffer))), "host_addr": In(unsigned(aw)),
            "host_wdata": In(8 * BEAT_BYTES), "host_rdata": Out(8 * BEAT_BYTES),
        })

    def elaborate(self, platform):
        m = Module()
        out_buf = Signal(range(len(Buffer)))
        # the ST unit's read is taken unless the SFU's element feed reads GLOBAL, whose port it shares
        busy = []
        if self.sfu:
            busy.append(self.sfu_g_rd_en & (self.rd.space == Buffer.GLOBAL))
        if self.weight_slices > 1:  # WEIGHT's reads share the slices' ports, the MV unit's first
            busy.append(self.weight_rd_en.any() & (self.rd.space == Buffer.WEIGHT))
        m.d.comb += self.rd_ready.eq(~Cat(*busy).any() if busy else 1)
        taken = self.rd_valid & self.rd_ready
        m.d.sync += [self.rd_resp_valid.eq(taken), self.rd_resp.tag.eq(self.rd.tag), out_buf.eq(self.rd.space)]
        sfu_readers = {Buffer.ACT: "a", Buffer.KV: "kv"}  # the attention's windows (GLOBAL: the ST port's)
        for b in DMA_BUFFERS:
            words = self.sizes[b] // BEAT_BYTES
            aw = ceil_log2(words)
            sliced = b == Buffer.WEIGHT and self.weight_slices > 1  # no copy of the whole: the slices' banks
            writers = [(self.host_we & (self.host_buffer == b.value), self.host_addr, self.host_wdata, -1),
                       (self.wr_valid & (self.wr.space == b.value), self.wr.addr, self.wr.data, self.wr.mask)]
            if b == Buffer.GLOBAL and self.readers[Buffer.ACT]:
                writers.append((self.global_wr_valid, self.global_wr.addr, self.global_wr.data, self.global_wr.mask))
            if self.sfu and b in (Buffer.GLOBAL, Buffer.ACT):
                req, valid = (self.sfu_g_wr, self.sfu_g_wr_valid) if b == Buffer.GLOBAL else (self.sfu_a_wr,
                                                                                              self.sfu_a_wr_valid)
                writers.append((valid, req.addr, req.data, req.mask))
            w_addr, w_data = Signal(aw, name=f"{b.name.lower()}_w_addr"), Signal(8 * BEAT_BYTES, name=f"{b.name.lower()}_w_data")
            w_en = Signal(BEAT_BYTES, name=f"{b.name.lower()}_w_en")
            with m.If(writers[0][0]):
                m.d.comb += [w_addr.eq(writers[0][1][:aw]), w_data.eq(writers[0][2]), w_en.eq(writers[0][3])]
            for valid, addr, wdata, mask in writers[1:]:
                with m.Elif(valid):
                    m.d.comb += [w_addr.eq(addr[:aw]), w_data.eq(wdata), w_en.eq(mask)]
            # the ST unit's reads and the host's (while the machine idles) share one read port
            st_read = taken & (self.rd.space == b.value)
            shared_addr = Mux(st_read, self.rd.addr[:aw], self.host_addr)
            name = b.name.lower()
            readers = self.readers.get(b, 0)
            ports = [(getattr(self, f"{name}_rd_en")[i], getattr(self, f"{name}_rd_addr")[i][:aw],
                      getattr(self, f"{name}_rd_data")[i]) for i in range(readers)]
            if sliced:
                read_data = self._slice_banks(m, words, (w_addr, w_data, w_en), ports, shared_addr)
            else:
                mem = Memory(shape=unsigned(8 * BEAT_BYTES), depth=words, init=[])
                m.submodules[name] = mem
                # one write port, so that the memory maps to block RAM or UltraRAM: the controller's
                # interlock lets one writing unit run per buffer, and the host writes while it idles
                wp = mem.write_port(granularity=8)
                m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(w_data), wp.en.eq(w_en)]
                rp = mem.read_port()
                m.d.comb += rp.addr.eq(shared_addr)
                if self.sfu and b == Buffer.GLOBAL:  # the SFU's element feed (both operands) first
                    with m.If(self.sfu_g_rd_en):
                        m.d.comb += rp.addr.eq(self.sfu_g_rd_addr[:aw])
                    m.d.comb += self.sfu_g_rd_data.eq(rp.data)
                read_data = rp.data
            with m.If(out_buf == b.value):
                m.d.comb += self.rd_resp.data.eq(read_data)
            with m.If(self.host_buffer == b.value):
                m.d.comb += self.host_rdata.eq(read_data)
            if sliced:
                pass
            elif b == Buffer.ACT and self.act_set > 1:
                for s in range(readers // self.act_set):
                    self._banked_set(m, f"act_set{s}", words, (w_addr, w_data, w_en),
                                     ports[s * self.act_set:(s + 1) * self.act_set], act_bank_count(self.act_set))
            else:
                for en, addr, rdata in ports:
                    port = mem.read_port()
                    m.d.comb += [port.en.eq(en), port.addr.eq(addr), rdata.eq(port.data)]
            if self.sfu and b in SFU_WINDOW_BUFFERS:  # the attention's chunk windows: words w and w + 1
                en, addr, rdata = (getattr(self, f"sfu_{sfu_readers[b]}_rd_{x}") for x in ("en", "addr", "data"))
                pair = [(en[i], addr[i][:aw], rdata[i]) for i in range(2)]
                self._banked_set(m, f"sfu_{name}", words, (w_addr, w_data, w_en), pair, 2)
        return m

    def _slice_banks(self, m: Module, words: int, write, ports, shared_addr):
        """WEIGHT cut in decoder slices: port i (slice s = i mod S) a memory of slice s's bank in
        each half (word ``h size_s + j`` holds the buffer's word ``h half + s bank + j``; the last
        slice's bank runs to the half's end, so every word is in one bank), written with the
        buffer's writes that fall in it, read at the port's buffer address (which the MV unit keeps
        inside the bank: weight_image's weight banks).  The ST unit's and the host's reads take
        the low side's port of the address's slice while the MV unit reads none (``rd_ready``);
        their data: that port's, the slice latched with the read."""
        S = self.weight_slices
        half = words // 2
        bank = weight_bank_bytes(half * BEAT_BYTES, S) // BEAT_BYTES
        sizes = [bank] * (S - 1) + [half - (S - 1) * bank]
        w_addr, w_data, w_en = write

        def local(addr, s):  # the bank's word of a buffer word (h half + s bank + j -> h size_s + j)
            high, offset = half_offset(addr, half)
            return (Mux(high, sizes[s], 0) + offset - s * bank)[:ceil_log2(2 * sizes[s])]

        shared_slice, slice_latched = Signal(range(S)), Signal(range(S))
        shared_offset = half_offset(shared_addr, half)[1]
        m.d.comb += shared_slice.eq(sum(shared_offset >= j * bank for j in range(1, S)))
        w_offset = half_offset(w_addr, half)[1]
        m.d.sync += slice_latched.eq(shared_slice)
        shared_data = []
        for i, (en, addr, rdata) in enumerate(ports):
            s = i % S
            mem = Memory(shape=unsigned(8 * BEAT_BYTES), depth=2 * sizes[s], init=[])
            m.submodules[f"weight_slice{s}_port{i}"] = mem
            wp = mem.write_port(granularity=8)
            inside = (w_offset >= s * bank) & (w_offset < s * bank + sizes[s])
            m.d.comb += [wp.addr.eq(local(w_addr, s)), wp.data.eq(w_data), wp.en.eq(Mux(inside, w_en, 0))]
            rp = mem.read_port()
            if i < S:  # the low side's: also the ST unit's and the host's while the decoder does not read
                m.d.comb += [rp.en.eq(1), rp.addr.eq(Mux(en, local(addr, s), local(shared_addr, s)))]
                shared_data.append(rp.data)
            else:
                m.d.comb += [rp.en.eq(en), rp.addr.eq(local(addr, s))]
            m.d.comb += rdata.eq(rp.data)
        return Array(shared_data)[slice_latched]

    def _banked_set(self, m: Module, name: str, words: int, write, ports, banks: int) -> None:
        """One reader set: ``banks`` banks, word w in bank w mod B at w // B, each bank written
        with the buffer's write and read at the address of the set's first enabled port that names
        it; a port's data come from its word's bank (the bank latched with the read, as the memory
        latches the data)."""
        if words % banks:
            raise ValueError(f"BufferBank: {name}: {words} words do not split into {banks} banks")
        sel_bits = ceil_log2(banks)
        w_addr, w_data, w_en = write
        outs = []
        for k in range(banks):
            bank = Memory(shape=unsigned(8 * BEAT_BYTES), depth=words // banks, init=[])
            m.submodules[f"{name}_bank{k}"] = bank
            wp = bank.write_port(granularity=8)
            m.d.comb += [wp.addr.eq(w_addr >> sel_bits), wp.data.eq(w_data),
                         wp.en.eq(Mux(w_addr[:sel_bits] == k, w_en, 0))]
            rp = bank.read_port()
            hits = [(en & (addr[:sel_bits] == k), addr) for en, addr, _ in ports]
            with m.If(hits[0][0]):
                m.d.comb += [rp.en.eq(1), rp.addr.eq(hits[0][1] >> sel_bits)]
            for hit, addr in hits[1:]:
                with m.Elif(hit):
                    m.d.comb += [rp.en.eq(1), rp.addr.eq(addr >> sel_bits)]
            with m.Else():
                m.d.comb += rp.en.eq(0)
            outs.append(rp.data)
        for i, (en, addr, rdata) in enumerate(ports):
            sel = Signal(sel_bits, name=f"{name}_port{i}_bank")
            with m.If(en):
                m.d.sync += sel.eq(addr[:sel_bits])
            m.d.comb += rdata.eq(Array(outs)[sel])
