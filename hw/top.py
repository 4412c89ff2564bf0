"""The accelerator's top: one core of the config as an RTL kernel (``AirfoilKernel``), controlled
through AXI4-Lite, reaching HBM through AXI4 masters; and the simulation top (``AirfoilTop``): the
kernel with its masters on the HBM model.

    AXI4-Lite --> ControlRegisters (ap_ctrl_hs, the program's address and words, R0/R1, EPS_Q, C_QK,
                  HBM_BASE per pseudo-channel, status, counters)
              --> Controller <-- InstructionFetch <-- AxiReadBridge <-- m_axi_fetch
                  |-- LOAD:    TransferEngine (HBM -> ACT/GLOBAL/WEIGHT/KV) <-- AxiReadBridge <-- m_axi_hbm<c>
                  |-- COMPUTE: MvUnit (the linear engine on WEIGHT and ACT, results into GLOBAL)
                  |-- SFU:     SfuUnit (RMSNorm, SwiGLU, REQUANT, RELU, ADD, RoPE, attention)
                  `-- STORE:   TransferEngine (buffers -> HBM) --> AxiWriteBridge --> m_axi_hbm<c>
              BufferBank (ACT, GLOBAL, WEIGHT, KV)
              the instruction trace (sim/hdl/airfoil_trace.sv: +trace=FILE; ``sim`` kernels only)

In ``AirfoilTop`` the masters reach ``HbmAxiModel`` (the config's latency; pseudo-channel c at
byte c * channel_bytes, which the host writes into HBM_BASE c).  Host ports on HBM and the
buffers fill and read them while the machine is idle (simulation only: on a board the host
reaches HBM through XRT).  ``stopped`` rises when a program ends (END or an error, no unit busy),
for benches that wait on an edge.  ``clk`` and ``rst`` are ports of their own, the reset
registered once (``hw.clocking``).  The model-specific parts are the SFU's: ``SfuSettings`` (the
widest row, the RoPE table, the context the attention holds)."""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import ClockSignal, Instance, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from airfoil.config import AirfoilConfig
from airfoil.hw.buffers import BufferBank, buffer_bytes
from airfoil.hw.clocking import CLOCK_PORTS, registered_inputs, registered_reset_domain
from airfoil.hw.control_registers import AXI_LITE_PORTS, RESULTS_LAYOUT, ControlRegisters
from airfoil.hw.controller import Controller
from airfoil.hw.dispatcher import PC_BITS
from airfoil.hw.axi import (AXI_BURST_INCR, AXI_SIZE, AxiReadBridge, AxiWriteBridge, ResultsWriter, axi4_master_ports,
                            read_bridge_depth)
from airfoil.hw.hbm_model import BEAT_BYTES, MAX_BURST_BEATS, HbmAxiModel, HbmModel
from airfoil.hw.instruction_fetch import DEPTH as FETCH_DEPTH
from airfoil.hw.instruction_fetch import FETCH_TAG_BITS, InstructionFetch
from airfoil.hw.mv_unit import MvUnit
from airfoil.hw.sfu_unit import RopeTable, SfuUnit
from airfoil.hw.transfer_engine import TAG_LAYOUT, TransferEngine
from airfoil.isa import Buffer, ErrorCode, Queue

__all__ = ["AirfoilKernel", "AirfoilTop", "SfuSettings", "connect_host_ports", "connect_transfers", "connect_axi_master", "connect_axi_slave"]


@dataclass(frozen=True)
class SfuSettings:
    """What the SFU is built for: rows up to ``max_width``, the model's RoPE, ``max_positions``
    of context for the attention."""
    max_width: int
    rope: RopeTable
    max_positions: int


class AirfoilKernel(wiring.Component):
    """One core of the config as an RTL kernel: ``clk``/``rst``, the AXI4-Lite control slave
    (``s_axi_*``), one AXI4 master per HBM pseudo-channel (``m_axi_hbm<c>_*``, 512-bit) and one
    read-only master for the instruction fetch (``m_axi_fetch_*``).  ``sim`` adds what only a
    simulation has: the host ports of the buffers (``buf_*``), ``stopped`` and the instruction
    trace."""

    def __init__(self, cfg: AirfoilConfig, channel_bytes: int, sfu: SfuSettings, watchdog_cycles: int = 1 << 20,
                 sim: bool = True, own_clock_domain: bool = True):
        self.cfg, self.channel_bytes, self.sfu, self.watchdog_cycles, self.sim = \
            cfg, channel_bytes, sfu, watchdog_cycles, sim
        self.own_clock_domain = own_clock_domain  # False: the top around it defines ``sync``
        self.sizes = buffer_bytes(cfg)
        aw = max((n // BEAT_BYTES - 1).bit_length() for n in self.sizes.values())
        ports = {**CLOCK_PORTS, **AXI_LITE_PORTS}
        for c in range(cfg.hbm_channels):
            ports.update(axi4_master_ports(f"m_axi_hbm{c}"))
        ports.update(axi4_master_ports("m_axi_fetch"))  # reads the program, writes the results word
        if sim:
            ports.update({"stopped": Out(1),
                          "buf_we": In(1), "buf_id": In(range(len(Buffer))), "buf_addr": In(unsigned(aw)),
                          "buf_wdata": In(8 * BEAT_BYTES), "buf_rdata": Out(8 * BEAT_BYTES)})
        super().__init__(ports)

    def core_units(self) -> dict[str, wiring.Component]:
        """The core's units, new, as ``elaborate`` wires them, for synthesis one unit at a time
        (``hw/synth.py``)."""
        cfg, sizes = self.cfg, self.sizes
        chains, groups = cfg.chains_per_core, cfg.dsp_groups_per_chain
        mv = MvUnit(chains, groups, sizes[Buffer.WEIGHT], sizes[Buffer.ACT], sizes[Buffer.GLOBAL],
                    mm=cfg.mm_token_pairs)
        return {
            "regs": ControlRegisters(cfg.hbm_channels),
            "ctrl": Controller(cfg.hbm_channels, cfg.weight_half_bytes, watchdog_cycles=self.watchdog_cycles),
            "fetch": InstructionFetch(),
            "buffers": BufferBank(sizes, TAG_LAYOUT.size, mv.weight_readers, mv.act_readers, sfu=True, act_set=mv.groups,
                                  weight_slices=mv.slices),
            "ld": TransferEngine(False, self.channel_bytes, sizes),
            "st": TransferEngine(True, self.channel_bytes, sizes),
            "mv": mv,
            "sfu": SfuUnit(self.sfu.max_width, sizes[Buffer.ACT], sizes[Buffer.GLOBAL], sizes[Buffer.KV], self.sfu.rope,
                           max_positions=self.sfu.max_positions),
            # reads in flight: one a cycle for the HBM latency, and the fetch's window twice over
            # (a restart leaves the old run's reads in flight)
            "hbm_rd": AxiReadBridge(cfg.hbm_channels, TAG_LAYOUT.size, read_bridge_depth(cfg.hbm_latency_cycles),
                                    max_burst=MAX_BURST_BEATS),
            "hbm_wr": AxiWriteBridge(cfg.hbm_channels),
            "fetch_rd": AxiReadBridge(1, FETCH_TAG_BITS, 2 * FETCH_DEPTH),
            "results": ResultsWriter(),
        }

    def elaborate(self, platform):
        m = Module()
        if self.own_clock_domain:
            registered_reset_domain(m, self.clk, self.rst)
        cfg = self.cfg
        units = self.core_units()
        for name, unit in units.items():
            m.submodules[name] = unit
        regs, ctrl, fetch, bufs = units["regs"], units["ctrl"], units["fetch"], units["buffers"]
        ld, st, mv, sfu = units["ld"], units["st"], units["mv"], units["sfu"]
        hbm_rd, hbm_wr, fetch_rd, results = units["hbm_rd"], units["hbm_wr"], units["fetch_rd"], units["results"]

        # ---- control: the AXI4-Lite slave's registers drive the controller and read its status
        for name, member in AXI_LITE_PORTS.items():
            inward = member.flow == wiring.In
            src, dst = (self, regs) if inward else (regs, self)
            m.d.comb += getattr(dst, name).eq(getattr(src, name))
        m.d.comb += [ctrl.start.eq(regs.start), ctrl.program_words.eq(regs.program_words),
                     ctrl.r0.eq(regs.r0), ctrl.r1.eq(regs.r1),
                     regs.busy.eq(ctrl.busy | results.busy), regs.done.eq(ctrl.done), regs.error.eq(ctrl.error),
                     regs.error_pc.eq(ctrl.error_pc), regs.cycles.eq(ctrl.cycles),
                     regs.busy_cycles.eq(ctrl.busy_cycles), regs.executed.eq(ctrl.executed),
                     regs.bus_error.eq(hbm_rd.resp_error | hbm_wr.resp_error | fetch_rd.resp_error | results.resp_error),
                     sfu.eps_q.eq(regs.eps_q), sfu.c_qk.eq(regs.c_qk)]
        finished = ~ctrl.busy & (ctrl.done | (ctrl.error != ErrorCode.NONE))
        if self.sim:
            m.d.comb += self.stopped.eq(finished & ~results.busy)

        # ---- the results word at the end of each run (RESULTS), the counters as the registers hold them
        word = Signal(RESULTS_LAYOUT)
        m.d.comb += [word.status.eq(regs.status), word.error_pc.eq(ctrl.error_pc),
                     word.cycles.eq(ctrl.cycles)]
        for q in Queue:
            m.d.comb += [getattr(word, f"busy_{q.name.lower()}").eq(ctrl.busy_cycles[q.value]),
                         getattr(word, f"executed_{q.name.lower()}").eq(ctrl.executed[q.value])]
        p = "m_axi_fetch"
        m.d.comb += [results.start.eq(regs.start), results.finished.eq(finished), results.address.eq(regs.results),
                     results.word.eq(word),
                     getattr(self, f"{p}_awvalid").eq(results.aw_valid), results.aw_ready.eq(getattr(self, f"{p}_awready")),
                     getattr(self, f"{p}_awaddr").eq(results.aw_addr), getattr(self, f"{p}_awlen").eq(0),
                     getattr(self, f"{p}_awsize").eq(AXI_SIZE), getattr(self, f"{p}_awburst").eq(AXI_BURST_INCR),
                     getattr(self, f"{p}_wvalid").eq(results.w_valid), results.w_ready.eq(getattr(self, f"{p}_wready")),
                     getattr(self, f"{p}_wdata").eq(results.w_data), getattr(self, f"{p}_wstrb").eq(-1),
                     getattr(self, f"{p}_wlast").eq(1), results.b_valid.eq(getattr(self, f"{p}_bvalid")),
                     getattr(self, f"{p}_bready").eq(results.b_ready), results.b_resp.eq(getattr(self, f"{p}_bresp"))]

        # ---- HBM: the AXI4 masters, each at its channel's base
        m.d.comb += [hbm_rd.base[c].eq(regs.hbm_base[c]) for c in range(cfg.hbm_channels)]
        m.d.comb += [hbm_wr.base[c].eq(regs.hbm_base[c]) for c in range(cfg.hbm_channels)]
        m.d.comb += fetch_rd.base[0].eq(regs.program)
        for c in range(cfg.hbm_channels):
            connect_axi_master(m, self, f"m_axi_hbm{c}", hbm_rd, hbm_wr, c)
        connect_axi_master(m, self, "m_axi_fetch", fetch_rd, None, 0)

        # ---- the program streams from HBM
        m.d.comb += [fetch.channel.eq(0), fetch.base.eq(0),
                     fetch_rd.rd_valid.eq(fetch.rd_valid), fetch_rd.rd.eq(fetch.rd), fetch.rd_ready.eq(fetch_rd.rd_ready),
                     fetch.rd_resp_valid.eq(fetch_rd.rd_resp_valid), fetch.rd_resp.eq(fetch_rd.rd_resp)]
        wiring.connect(m, ctrl.fetch, fetch.fetch)
        wiring.connect(m, fetch.word, ctrl.word)

        connect_transfers(m, ld, st, bufs, hbm_rd, hbm_wr)

        connect_mv_unit(m, mv, bufs)

        connect_sfu_unit(m, sfu, bufs)

        units = {Queue.LOAD: ld, Queue.COMPUTE: mv, Queue.SFU: sfu, Queue.STORE: st}
        for q, unit in units.items():
            wiring.connect(m, ctrl.unit[q.value], unit.issue)
            m.d.comb += [ctrl.unit_done[q.value].eq(unit.done), ctrl.unit_fault[q.value].eq(unit.fault)]

        if not self.sim:
            return m
        # ---- the instruction trace (+trace=FILE): per queue, each instruction's start and end cycle
        m.submodules.trace = Instance("airfoil_trace", p_NQ=len(Queue), p_PC_BITS=PC_BITS,
                                      i_clk=ClockSignal(), i_start=ctrl.start, i_starts=ctrl.unit_start,
                                      i_dones=ctrl.unit_finish, i_pcs=ctrl.unit_start_pc.as_value())

        connect_host_ports(m, self, None, bufs)
        return m


class AirfoilTop(wiring.Component):
    """The simulation top: ``AirfoilKernel`` (``sim``) with its AXI4 masters on ``HbmAxiModel``
    (pseudo-channel c at byte ``c * channel_bytes``: ``hbm_bases``), and the HBM model's host
    ports (``hbm_*``)."""

    def __init__(self, cfg: AirfoilConfig, channel_bytes: int, sfu: SfuSettings, watchdog_cycles: int = 1 << 20):
        self.cfg, self.channel_bytes = cfg, channel_bytes
        self.kernel = AirfoilKernel(cfg, channel_bytes, sfu, watchdog_cycles, sim=True, own_clock_domain=False)
        kernel_ports = {name: member for name, member in self.kernel.signature.members.items()
                        if not name.startswith("m_axi_")}
        super().__init__({
            **kernel_ports,
            "hbm_we": In(1), "hbm_channel": In(range(cfg.hbm_channels)), "hbm_addr": In(32),
            "hbm_wdata": In(8 * BEAT_BYTES), "hbm_rdata": Out(8 * BEAT_BYTES),
        })

    def hbm_bases(self) -> dict[str, int]:
        """The HBM_BASE registers for the model's address map."""
        return {f"HBM_BASE{c}": c * self.channel_bytes for c in range(self.cfg.hbm_channels)}

    def elaborate(self, platform):
        m = Module()
        registered_reset_domain(m, self.clk, self.rst)  # the kernel's, the HBM model's and the host ports' clock
        cfg, kernel = self.cfg, self.kernel
        m.submodules.kernel = kernel
        m.submodules.hbm = hbm = HbmAxiModel(cfg.hbm_channels, self.channel_bytes // BEAT_BYTES,
                                             cfg.hbm_latency_cycles, cfg.hbm_channels)
        for name, member in kernel.signature.members.items():
            if name.startswith("m_axi_"):
                continue
            src, dst = (self, kernel) if member.flow == wiring.In else (kernel, self)
            m.d.comb += getattr(dst, name).eq(getattr(src, name))
        for c in range(cfg.hbm_channels):
            connect_axi_slave(m, kernel, f"m_axi_hbm{c}", hbm, c)
        p = "m_axi_fetch"
        m.d.comb += [hbm.f_ar_valid.eq(getattr(kernel, f"{p}_arvalid")), getattr(kernel, f"{p}_arready").eq(hbm.f_ar_ready),
                     hbm.f_ar_addr.eq(getattr(kernel, f"{p}_araddr")), getattr(kernel, f"{p}_rvalid").eq(hbm.f_r_valid),
                     hbm.f_r_ready.eq(getattr(kernel, f"{p}_rready")), getattr(kernel, f"{p}_rdata").eq(hbm.f_r_data),
                     getattr(kernel, f"{p}_rlast").eq(1),
                     hbm.f_aw_valid.eq(getattr(kernel, f"{p}_awvalid")), getattr(kernel, f"{p}_awready").eq(hbm.f_aw_ready),
                     hbm.f_aw_addr.eq(getattr(kernel, f"{p}_awaddr")), hbm.f_w_valid.eq(getattr(kernel, f"{p}_wvalid")),
                     getattr(kernel, f"{p}_wready").eq(hbm.f_w_ready), hbm.f_w_data.eq(getattr(kernel, f"{p}_wdata")),
                     hbm.f_w_strb.eq(getattr(kernel, f"{p}_wstrb")), getattr(kernel, f"{p}_bvalid").eq(hbm.f_b_valid),
                     hbm.f_b_ready.eq(getattr(kernel, f"{p}_bready"))]
        connect_host_ports(m, self, hbm, None)
        return m


def connect_transfers(m: Module, ld: TransferEngine, st: TransferEngine, bufs: BufferBank, rd: AxiReadBridge,
                      wr: AxiWriteBridge) -> None:
    """LD: HBM (the read bridge) -> buffers; ST: buffers -> HBM (the write bridge)."""
    m.d.comb += [rd.rd_valid.eq(ld.src_valid), rd.rd.eq(ld.src), ld.src_ready.eq(rd.rd_ready),
                 ld.src_resp_valid.eq(rd.rd_resp_valid), ld.src_resp.eq(rd.rd_resp), rd.rd_resp_ready.eq(ld.src_resp_ready),
                 bufs.wr_valid.eq(ld.dst_valid), bufs.wr.eq(ld.dst),
                 bufs.rd_valid.eq(st.src_valid), bufs.rd.eq(st.src), st.src_ready.eq(wr.room & bufs.rd_ready),
                 st.src_resp_valid.eq(bufs.rd_resp_valid), st.src_resp.eq(bufs.rd_resp),
                 wr.wr_valid.eq(st.dst_valid), wr.wr.eq(st.dst), st.dst_idle.eq(wr.idle)]


def connect_mv_unit(m: Module, mv: MvUnit, bufs: BufferBank) -> None:
    """The MV unit on WEIGHT (a port a lane group decoder) and ACT (its reader sets), its results
    into GLOBAL."""
    m.d.comb += [bufs.weight_rd_addr[j].eq(mv.w_rd_addr[j]) for j in range(mv.weight_readers)]
    m.d.comb += [bufs.weight_rd_en.eq(mv.w_rd_en), mv.w_rd_data.eq(bufs.weight_rd_data),
                 bufs.act_rd_en.eq(mv.a_rd_en), bufs.act_rd_addr.eq(mv.a_rd_addr), mv.a_rd_data.eq(bufs.act_rd_data),
                 bufs.global_wr_valid.eq(mv.g_wr_valid), bufs.global_wr.eq(mv.g_wr)]


def connect_sfu_unit(m: Module, sfu: SfuUnit, bufs: BufferBank) -> None:
    """The SFU on GLOBAL (its element feed's one read, and its writes), ACT and KV (the
    attention's chunk windows; RMSNorm's and the quantisers' codes into ACT)."""
    m.d.comb += [bufs.sfu_g_rd_en.eq(sfu.g_rd_en), bufs.sfu_a_rd_en.eq(sfu.act_rd_en),
                 bufs.sfu_kv_rd_en.eq(sfu.kv_rd_en),
                 bufs.sfu_g_wr_valid.eq(sfu.g_wr_valid), bufs.sfu_g_wr.eq(sfu.g_wr),
                 bufs.sfu_a_wr_valid.eq(sfu.a_wr_valid), bufs.sfu_a_wr.eq(sfu.a_wr),
                 bufs.sfu_g_rd_addr.eq(sfu.g_rd_addr), sfu.g_rd_data.eq(bufs.sfu_g_rd_data)]
    for i in range(2):
        m.d.comb += [bufs.sfu_a_rd_addr[i].eq(sfu.act_rd_addr[i]), sfu.act_rd_data[i].eq(bufs.sfu_a_rd_data[i]),
                     bufs.sfu_kv_rd_addr[i].eq(sfu.kv_rd_addr[i]), sfu.kv_rd_data[i].eq(bufs.sfu_kv_rd_data[i])]


def connect_axi_master(m: Module, top, prefix: str, rd: AxiReadBridge, wr: AxiWriteBridge | None, i: int) -> None:
    """Port ``i`` of the bridges onto the flat AXI4 master ``<prefix>_*`` of ``top``: INCR bursts
    of 64-byte beats (reads: the bridge's ``ar_len``; writes: single beats)."""
    def port(name):
        return getattr(top, f"{prefix}_{name}")

    m.d.comb += [port("arvalid").eq(rd.ar_valid[i]), rd.ar_ready[i].eq(port("arready")),
                 port("araddr").eq(rd.ar_addr[i]), port("arlen").eq(rd.ar_len[i]), port("arsize").eq(AXI_SIZE),
                 port("arburst").eq(AXI_BURST_INCR),
                 rd.r_valid[i].eq(port("rvalid")), port("rready").eq(rd.r_ready[i]),
                 rd.r_data[i].eq(port("rdata")), rd.r_resp[i].eq(port("rresp"))]
    if wr is not None:
        m.d.comb += [port("awvalid").eq(wr.aw_valid[i]), wr.aw_ready[i].eq(port("awready")),
                     port("awaddr").eq(wr.aw_addr[i]), port("awlen").eq(0), port("awsize").eq(AXI_SIZE),
                     port("awburst").eq(AXI_BURST_INCR),
                     port("wvalid").eq(wr.w_valid[i]), wr.w_ready[i].eq(port("wready")),
                     port("wdata").eq(wr.w_data[i]), port("wstrb").eq(wr.w_strb[i]), port("wlast").eq(1),
                     wr.b_valid[i].eq(port("bvalid")), port("bready").eq(wr.b_ready[i]), wr.b_resp[i].eq(port("bresp"))]


def connect_axi_slave(m: Module, top, prefix: str, hbm: HbmAxiModel, i: int) -> None:
    """The flat AXI4 master ``<prefix>_*`` of ``top`` onto port ``i`` of the HBM model."""
    def port(name):
        return getattr(top, f"{prefix}_{name}")

    m.d.comb += [hbm.ar_valid[i].eq(port("arvalid")), port("arready").eq(hbm.ar_ready[i]),
                 hbm.ar_addr[i].eq(port("araddr")), hbm.ar_len[i].eq(port("arlen")), port("rvalid").eq(hbm.r_valid[i]),
                 hbm.r_ready[i].eq(port("rready")), port("rdata").eq(hbm.r_data[i]), port("rlast").eq(hbm.r_last[i]),
                 hbm.aw_valid[i].eq(port("awvalid")), port("awready").eq(hbm.aw_ready[i]),
                 hbm.aw_addr[i].eq(port("awaddr")), hbm.w_valid[i].eq(port("wvalid")),
                 port("wready").eq(hbm.w_ready[i]), hbm.w_data[i].eq(port("wdata")), hbm.w_strb[i].eq(port("wstrb")),
                 port("bvalid").eq(hbm.b_valid[i]), hbm.b_ready[i].eq(port("bready"))]


def connect_host_ports(m: Module, top, hbm: HbmModel | HbmAxiModel | None, bufs: BufferBank | None) -> None:
    """The simulation's host ports of ``top`` (``hbm_*``, ``buf_*``) onto the HBM model and the
    buffers (either may be None: not in this top), registered (``hw.clocking``: read data comes
    two cycles after the address)."""
    if hbm is not None:
        h = registered_inputs(m, top, ("hbm_we", "hbm_channel", "hbm_addr", "hbm_wdata"))
        m.d.comb += [hbm.host_we.eq(h["hbm_we"]), hbm.host_channel.eq(h["hbm_channel"]),
                     hbm.host_addr.eq(h["hbm_addr"]), hbm.host_wdata.eq(h["hbm_wdata"]), top.hbm_rdata.eq(hbm.host_rdata)]
    if bufs is not None:
        h = registered_inputs(m, top, ("buf_we", "buf_id", "buf_addr", "buf_wdata"))
        m.d.comb += [bufs.host_we.eq(h["buf_we"]), bufs.host_buffer.eq(h["buf_id"]), bufs.host_addr.eq(h["buf_addr"]),
                     bufs.host_wdata.eq(h["buf_wdata"]), top.buf_rdata.eq(bufs.host_rdata)]
