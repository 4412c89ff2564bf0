"""What the LD/ST Verilator bench drives: the Controller with its instruction memory, the LD and
ST units (``TransferEngine``), the HBM model and the on-chip buffers; on the compute queue the
MV unit (``mv`` = (chains, DSP groups[, MM mode[, cores]])) or a stand-in, on the SFU queue the SFU unit (``sfu``:
its keyword arguments; ``eps_q`` and ``c_qk`` from the bench) or a stand-in (random latency, no
work); HBM is the model behind the kernel's AXI4 bridges, with ``stall`` refusing requests at
random.  The bench fills HBM and the buffers through
the host ports, runs programs, and reads every word back."""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from airfoil.hw.axi import AxiReadBridge, AxiWriteBridge, connect_bridges, read_bridge_depth
from airfoil.hw.buffers import BufferBank
from airfoil.hw.clocking import CLOCK_PORTS, registered_reset_domain
from airfoil.hw.controller import COUNTER_BITS, Controller
from airfoil.hw.dispatcher import PC_BITS
from airfoil.hw.hbm_model import BEAT_BYTES, MAX_BURST_BEATS, HbmAxiModel
from airfoil.hw.mv_unit import MvUnit, act_readers, weight_readers
from airfoil.hw.sfu_unit import SfuUnit
from airfoil.hw.top import connect_host_ports, connect_mv_unit, connect_sfu_unit, connect_transfers
from airfoil.hw.transfer_engine import TAG_LAYOUT, TransferEngine
from airfoil.isa import INSTR_BITS, REG_BITS, Buffer, ErrorCode, Queue
from tests.hw.controller_harness import LatencyUnit

NQ = len(Queue)


class TransferHarness(wiring.Component):
    def __init__(self, hbm_channels: int, channel_bytes: int, latency: int, buffer_sizes: dict[Buffer, int],
                 weight_half_bytes: int, imem_depth: int = 64, watchdog_cycles: int = 1024,
                 mv: tuple[int, int] | None = None, sfu: dict | None = None, stall: bool = False):
        self.mv, self.sfu, self.stall = mv, sfu, stall
        self.hbm_channels, self.channel_bytes, self.latency = hbm_channels, channel_bytes, latency
        self.buffer_sizes, self.half = buffer_sizes, weight_half_bytes
        self.imem_depth, self.watchdog_cycles = imem_depth, watchdog_cycles
        super().__init__({
            **CLOCK_PORTS,
            "imem_we": In(1), "imem_addr": In(unsigned(ceil_log2(imem_depth))), "imem_data": In(INSTR_BITS),
            "start": In(1), "program_words": In(unsigned(PC_BITS)),
            "r0": In(signed(REG_BITS)), "r1": In(signed(REG_BITS)),
            "busy": Out(1), "done": Out(1), "error": Out(ErrorCode), "error_pc": Out(unsigned(PC_BITS)),
            "stopped": Out(1),
            "cycles": Out(unsigned(COUNTER_BITS)), "executed": Out(unsigned(32 * len(Queue))),
            "hbm_we": In(1), "hbm_channel": In(range(hbm_channels)), "hbm_addr": In(32),
            "hbm_wdata": In(8 * BEAT_BYTES), "hbm_rdata": Out(8 * BEAT_BYTES),
            "buf_we": In(1), "buf_id": In(range(len(Buffer))), "buf_addr": In(32),
            "buf_wdata": In(8 * BEAT_BYTES), "buf_rdata": Out(8 * BEAT_BYTES),
            "moved_bytes": Out(COUNTER_BITS), "eps_q": In(32), "c_qk": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        registered_reset_domain(m, self.clk, self.rst)  # as AirfoilTop: the simulation runs several times faster
        m.submodules.ctrl = ctrl = Controller(self.hbm_channels, self.half, watchdog_cycles=self.watchdog_cycles)
        m.submodules.imem = imem = Memory(shape=unsigned(INSTR_BITS), depth=self.imem_depth, init=[])
        wp, rp = imem.write_port(), imem.read_port()
        m.d.comb += [wp.en.eq(self.imem_we), wp.addr.eq(self.imem_addr), wp.data.eq(self.imem_data)]
        pending = Signal()
        m.d.comb += [ctrl.fetch.ready.eq(~pending), rp.addr.eq(ctrl.fetch.payload),
                     rp.en.eq(ctrl.fetch.valid & ~pending), ctrl.word.valid.eq(pending), ctrl.word.payload.eq(rp.data)]
        with m.If(ctrl.fetch.valid & ctrl.fetch.ready):
            m.d.sync += pending.eq(1)
        with m.Elif(ctrl.word.valid & ctrl.word.ready):
            m.d.sync += pending.eq(0)
        m.d.comb += [ctrl.start.eq(self.start), ctrl.program_words.eq(self.program_words),
                     ctrl.r0.eq(self.r0), ctrl.r1.eq(self.r1),
                     self.busy.eq(ctrl.busy), self.done.eq(ctrl.done), self.error.eq(ctrl.error),
                     self.error_pc.eq(ctrl.error_pc), self.cycles.eq(ctrl.cycles),
                     self.executed.eq(ctrl.executed.as_value()),
                     self.stopped.eq(~ctrl.busy & (ctrl.done | (ctrl.error != ErrorCode.NONE)))]

        # HBM behind the AXI4 bridges, as in the kernel (``stall``: the model refuses requests at random)
        words = self.channel_bytes // BEAT_BYTES
        m.submodules.hbm = hbm = HbmAxiModel(self.hbm_channels, words, self.latency, self.hbm_channels, self.stall)
        m.submodules.hbm_rd = hbm_rd = AxiReadBridge(self.hbm_channels, TAG_LAYOUT.size, read_bridge_depth(self.latency),
                                                     max_burst=MAX_BURST_BEATS)
        m.submodules.hbm_wr = hbm_wr = AxiWriteBridge(self.hbm_channels)
        m.d.comb += [hbm_rd.base[c].eq(c * self.channel_bytes) for c in range(self.hbm_channels)]
        m.d.comb += [hbm_wr.base[c].eq(c * self.channel_bytes) for c in range(self.hbm_channels)]
        connect_bridges(m, hbm_rd, hbm_wr, hbm)
        # MvUnit's decoders read WEIGHT, one port each; mm: its chains' MM mode (config.mm_token_pairs)
        # cores: the chains in that many MPEs in lock step (LinearEngine's cores)
        chains, groups, mm, cores = (*self.mv, *(True, 1)[len(self.mv) - 2:]) if self.mv else (0, 0, True, 1)
        w_ports, act_ports = (weight_readers(chains, groups), act_readers(chains, groups, mm)) if chains else (0, 0)
        m.submodules.buffers = bufs = BufferBank(self.buffer_sizes, TAG_LAYOUT.size, w_ports, act_ports,
                                                 sfu=bool(self.sfu), act_set=max(groups, 1))
        m.submodules.ld = ld = TransferEngine(False, self.channel_bytes, self.buffer_sizes)
        m.submodules.st = st = TransferEngine(True, self.channel_bytes, self.buffer_sizes)
        connect_transfers(m, ld, st, bufs, hbm_rd, hbm_wr)
        connect_host_ports(m, self, hbm, bufs)  # registered, as AirfoilTop's
        units = {Queue.LOAD: ld, Queue.STORE: st}
        if self.mv:
            sizes = self.buffer_sizes
            m.submodules.mv = mv = MvUnit(chains, groups, sizes[Buffer.WEIGHT], sizes[Buffer.ACT], sizes[Buffer.GLOBAL],
                                          mm=mm, cores=cores)
            connect_mv_unit(m, mv, bufs)
            units[Queue.COMPUTE] = mv
        if self.sfu:
            sizes = self.buffer_sizes
            m.submodules.sfu = sfu = SfuUnit(act_bytes=sizes[Buffer.ACT], global_bytes=sizes[Buffer.GLOBAL],
                                             kv_bytes=sizes[Buffer.KV], **self.sfu)
            m.d.comb += [sfu.eps_q.eq(self.eps_q), sfu.c_qk.eq(self.c_qk)]
            connect_sfu_unit(m, sfu, bufs)
            units[Queue.SFU] = sfu
        for q in Queue:
            if q in units:
                unit = units[q]
                m.d.comb += [ctrl.unit_fault[q.value].eq(unit.fault)]
            else:
                m.submodules[f"stand_in_{q.name.lower()}"] = unit = LatencyUnit(seed=0xBEEF + q.value)
            wiring.connect(m, ctrl.unit[q.value], unit.issue)
            m.d.comb += ctrl.unit_done[q.value].eq(unit.done)
        with m.If(self.start):
            m.d.sync += self.moved_bytes.eq(0)
        with m.Elif(ld.moved_valid | st.moved_valid):
            m.d.sync += self.moved_bytes.eq(self.moved_bytes + Mux(ld.moved_valid, ld.moved_bytes, 0)
                                            + Mux(st.moved_valid, st.moved_bytes, 0))
        return m
