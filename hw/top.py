"""The accelerator's simulation top: one core of the config, controlled through AXI4-Lite, with
its HBM as the simulation model.

    AXI4-Lite --> ControlRegisters (ap_ctrl_hs, program channel/base/words, R0/R1, EPS_Q, C_QK,
                  status, counters)
              --> Controller <-- InstructionFetch <-- HBM (the program, where the compiler put it)
                  |-- LOAD:    TransferEngine (HBM -> ACT/GLOBAL/WEIGHT/KV)
                  |-- COMPUTE: MvUnit (the linear engine on WEIGHT and ACT, results into GLOBAL)
                  |-- SFU:     SfuUnit (RMSNorm, SwiGLU, REQUANT, RELU, ADD, RoPE, attention)
                  `-- STORE:   TransferEngine (buffers -> HBM)
              BufferBank (ACT, GLOBAL, WEIGHT, KV), HbmModel (pseudo-channels, the config's latency)
              the instruction trace (sim/hdl/airfoil_trace.sv: +trace=FILE)

Host ports on HBM and the buffers fill and read them while the machine is idle (simulation only:
on a board the host reaches HBM through XRT).  ``stopped`` rises when a program ends (END or an
error, no unit busy), for benches that wait on an edge.  ``clk`` and ``rst`` are ports of their
own, the reset registered once (``hw.clocking``).  The model-specific parts are the SFU's:
``SfuSettings`` (the widest row, the RoPE table, the context the attention holds)."""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockSignal, Instance, Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from airfoil.config import AirfoilConfig
from airfoil.hw.buffers import BufferBank, buffer_bytes
from airfoil.hw.clocking import CLOCK_PORTS, registered_inputs, registered_reset_domain
from airfoil.hw.control_registers import AXI_LITE_PORTS, ControlRegisters
from airfoil.hw.controller import Controller
from airfoil.hw.dispatcher import PC_BITS
from airfoil.hw.hbm_model import BEAT_BYTES, HbmModel
from airfoil.hw.instruction_fetch import FETCH_TAG_BITS, InstructionFetch
from airfoil.hw.mv_unit import MvUnit
from airfoil.hw.sfu_unit import RopeTable, SfuUnit
from airfoil.hw.transfer_engine import TAG_LAYOUT, TransferEngine
from airfoil.isa import Buffer, ErrorCode, Queue

__all__ = ["AirfoilTop", "SfuSettings", "connect_host_ports"]


@dataclass(frozen=True)
class SfuSettings:
    """What the SFU is built for: rows up to ``max_width``, the model's RoPE, ``max_positions``
    of context for the attention."""
    max_width: int
    rope: RopeTable
    max_positions: int


class AirfoilTop(wiring.Component):
    def __init__(self, cfg: AirfoilConfig, channel_bytes: int, sfu: SfuSettings, watchdog_cycles: int = 1 << 20):
        self.cfg, self.channel_bytes, self.sfu, self.watchdog_cycles = cfg, channel_bytes, sfu, watchdog_cycles
        self.sizes = buffer_bytes(cfg)
        aw = max((n // BEAT_BYTES - 1).bit_length() for n in self.sizes.values())
        super().__init__({
            **CLOCK_PORTS,
            **AXI_LITE_PORTS,
            "stopped": Out(1),
            "hbm_we": In(1), "hbm_channel": In(range(cfg.hbm_channels)), "hbm_addr": In(32),
            "hbm_wdata": In(8 * BEAT_BYTES), "hbm_rdata": Out(8 * BEAT_BYTES),
            "buf_we": In(1), "buf_id": In(range(len(Buffer))), "buf_addr": In(unsigned(aw)),
            "buf_wdata": In(8 * BEAT_BYTES), "buf_rdata": Out(8 * BEAT_BYTES),
        })

    def core_units(self) -> dict[str, wiring.Component]:
        """The core's units, new, as ``elaborate`` wires them: everything but the HBM model (on a
        board, HBM is off chip), for synthesis one unit at a time (``hw/synth.py``)."""
        cfg, sizes = self.cfg, self.sizes
        chains, groups = cfg.chains_per_core, cfg.dsp_groups_per_chain
        mv = MvUnit(chains, groups, sizes[Buffer.WEIGHT], sizes[Buffer.ACT], sizes[Buffer.GLOBAL])
        return {
            "regs": ControlRegisters(),
            "ctrl": Controller(cfg.hbm_channels, cfg.weight_half_bytes, watchdog_cycles=self.watchdog_cycles),
            "fetch": InstructionFetch(),
            "buffers": BufferBank(sizes, TAG_LAYOUT.size, mv.lanes, groups, sfu=True),
            "ld": TransferEngine(False, self.channel_bytes, sizes),
            "st": TransferEngine(True, self.channel_bytes, sizes),
            "mv": mv,
            "sfu": SfuUnit(self.sfu.max_width, sizes[Buffer.ACT], sizes[Buffer.GLOBAL], sizes[Buffer.KV], self.sfu.rope,
                           max_positions=self.sfu.max_positions),
        }

    def elaborate(self, platform):
        m = Module()
        registered_reset_domain(m, self.clk, self.rst)
        cfg = self.cfg
        units = self.core_units()
        for name, unit in units.items():
            m.submodules[name] = unit
        regs, ctrl, fetch, bufs = units["regs"], units["ctrl"], units["fetch"], units["buffers"]
        ld, st, mv, sfu = units["ld"], units["st"], units["mv"], units["sfu"]
        m.submodules.hbm = hbm = HbmModel(cfg.hbm_channels, self.channel_bytes // BEAT_BYTES, cfg.hbm_latency_cycles,
                                          TAG_LAYOUT.size, FETCH_TAG_BITS)

        # ---- control: the AXI4-Lite slave's registers drive the controller and read its status
        for name, member in AXI_LITE_PORTS.items():
            inward = member.flow == wiring.In
            src, dst = (self, regs) if inward else (regs, self)
            m.d.comb += getattr(dst, name).eq(getattr(src, name))
        m.d.comb += [ctrl.start.eq(regs.start), ctrl.program_words.eq(regs.program_words),
                     ctrl.r0.eq(regs.r0), ctrl.r1.eq(regs.r1),
                     regs.busy.eq(ctrl.busy), regs.done.eq(ctrl.done), regs.error.eq(ctrl.error),
                     regs.error_pc.eq(ctrl.error_pc), regs.cycles.eq(ctrl.cycles),
                     regs.busy_cycles.eq(ctrl.busy_cycles), regs.executed.eq(ctrl.executed),
                     sfu.eps_q.eq(regs.eps_q), sfu.c_qk.eq(regs.c_qk),
                     self.stopped.eq(~ctrl.busy & (ctrl.done | (ctrl.error != ErrorCode.NONE)))]

        # ---- the program streams from HBM
        m.d.comb += [fetch.channel.eq(regs.program_channel), fetch.base.eq(regs.program_base),
                     hbm.f_rd_valid.eq(fetch.rd_valid), hbm.f_rd.eq(fetch.rd),
                     fetch.rd_resp_valid.eq(hbm.f_rd_resp_valid), fetch.rd_resp.eq(hbm.f_rd_resp)]
        wiring.connect(m, ctrl.fetch, fetch.fetch)
        wiring.connect(m, fetch.word, ctrl.word)

        # ---- LD: HBM -> buffers; ST: buffers -> HBM
        m.d.comb += [hbm.rd_valid.eq(ld.src_valid), hbm.rd.eq(ld.src),
                     ld.src_resp_valid.eq(hbm.rd_resp_valid), ld.src_resp.eq(hbm.rd_resp),
                     bufs.wr_valid.eq(ld.dst_valid), bufs.wr.eq(ld.dst),
                     bufs.rd_valid.eq(st.src_valid), bufs.rd.eq(st.src),
                     st.src_resp_valid.eq(bufs.rd_resp_valid), st.src_resp.eq(bufs.rd_resp),
                     hbm.wr_valid.eq(st.dst_valid), hbm.wr.eq(st.dst)]

        # ---- MV on WEIGHT and ACT, results into GLOBAL
        m.d.comb += [bufs.weight_rd_addr[j].eq(mv.w_rd_addr[j]) for j in range(mv.lanes)]
        m.d.comb += [bufs.weight_rd_en.eq(mv.w_rd_en), mv.w_rd_data.eq(bufs.weight_rd_data),
                     bufs.act_rd_en.eq(mv.a_rd_en), bufs.act_rd_addr.eq(mv.a_rd_addr), mv.a_rd_data.eq(bufs.act_rd_data),
                     bufs.global_wr_valid.eq(mv.g_wr_valid), bufs.global_wr.eq(mv.g_wr)]

        # ---- the SFU on GLOBAL, ACT and KV
        m.d.comb += [bufs.sfu_g_rd_en.eq(sfu.g_rd_en), bufs.sfu_a_rd_en.eq(sfu.act_rd_en),
                     bufs.sfu_kv_rd_en.eq(sfu.kv_rd_en),
                     bufs.sfu_g_wr_valid.eq(sfu.g_wr_valid), bufs.sfu_g_wr.eq(sfu.g_wr),
                     bufs.sfu_a_wr_valid.eq(sfu.a_wr_valid), bufs.sfu_a_wr.eq(sfu.a_wr)]
        for i in range(2):
            m.d.comb += [bufs.sfu_g_rd_addr[i].eq(sfu.g_rd_addr[i]), sfu.g_rd_data[i].eq(bufs.sfu_g_rd_data[i]),
                         bufs.sfu_a_rd_addr[i].eq(sfu.act_rd_addr[i]), sfu.act_rd_data[i].eq(bufs.sfu_a_rd_data[i]),
                         bufs.sfu_kv_rd_addr[i].eq(sfu.kv_rd_addr[i]), sfu.kv_rd_data[i].eq(bufs.sfu_kv_rd_data[i])]

        units = {Queue.LOAD: ld, Queue.COMPUTE: mv, Queue.SFU: sfu, Queue.STORE: st}
        for q, unit in units.items():
            wiring.connect(m, ctrl.unit[q.value], unit.issue)
            m.d.comb += [ctrl.unit_done[q.value].eq(unit.done), ctrl.unit_fault[q.value].eq(unit.fault)]

        # ---- the instruction trace (+trace=FILE): per queue, each instruction's start and end cycle
        m.submodules.trace = Instance("airfoil_trace", p_NQ=len(Queue), p_PC_BITS=PC_BITS,
                                      i_clk=ClockSignal(), i_start=ctrl.start, i_starts=ctrl.unit_start,
                                      i_dones=ctrl.unit_finish, i_pcs=ctrl.unit_start_pc.as_value())

        connect_host_ports(m, self, hbm, bufs)
        return m


def connect_host_ports(m: Module, top, hbm: HbmModel, bufs: BufferBank) -> None:
    """The simulation's host ports of ``top`` (``hbm_*``, ``buf_*``) onto the HBM model and the
    buffers, registered (``hw.clocking``: read data comes two cycles after the address)."""
    h = registered_inputs(m, top, ("hbm_we", "hbm_channel", "hbm_addr", "hbm_wdata",
                                   "buf_we", "buf_id", "buf_addr", "buf_wdata"))
    m.d.comb += [hbm.host_we.eq(h["hbm_we"]), hbm.host_channel.eq(h["hbm_channel"]), hbm.host_addr.eq(h["hbm_addr"]),
                 hbm.host_wdata.eq(h["hbm_wdata"]), top.hbm_rdata.eq(hbm.host_rdata),
                 bufs.host_we.eq(h["buf_we"]), bufs.host_buffer.eq(h["buf_id"]), bufs.host_addr.eq(h["buf_addr"]),
                 bufs.host_wdata.eq(h["buf_wdata"]), top.buf_rdata.eq(bufs.host_rdata)]
