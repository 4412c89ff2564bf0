"""What the controller's Verilator bench drives: the Controller fetching its program from an
HBM model (``InstructionFetch``, ``fetch_latency`` cycles per read) that the bench fills, and
four stand-in execution units with pseudo-random latencies (1 to 32 cycles,
from an LFSR), so that the queues finish in orders the program does not fix.  The units do no
work; the bench checks the control plane: what is issued, when it may start, how it ends."""
from __future__ import annotations

from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from airfoil.hw.controller import COUNTER_BITS, Controller
from airfoil.hw.dispatcher import PC_BITS
from airfoil.hw.hbm_model import HbmModel
from airfoil.hw.instruction_fetch import FETCH_TAG_BITS, InstructionFetch
from airfoil.isa import INSTR_BITS, ISSUE_LAYOUT, REG_BITS, ErrorCode, Queue

NQ = len(Queue)


class LatencyUnit(wiring.Component):
    """Takes an instruction when idle and pulses ``done`` 1 to 32 cycles later."""

    def __init__(self, seed: int):
        self.seed = seed
        super().__init__({"issue": In(stream.Signature(ISSUE_LAYOUT)), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        lfsr = Signal(16, init=self.seed)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
        left = Signal(6)
        m.d.comb += self.issue.ready.eq(left == 0)
        m.d.sync += self.done.eq(0)
        with m.If(self.issue.valid & self.issue.ready):
            m.d.sync += left.eq(1 + lfsr[:5])
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
            with m.If(left == 1):
                m.d.sync += self.done.eq(1)
        return m


class ControllerHarness(wiring.Component):
    def __init__(self, hbm_channels: int, weight_half_bytes: int, imem_depth: int, watchdog_cycles: int,
                 fetch_latency: int = 16):
        self.args = (hbm_channels, weight_half_bytes)
        self.fetch_latency = fetch_latency
        self.imem_depth, self.watchdog_cycles = imem_depth, watchdog_cycles
        ports = {
            "imem_we": In(1), "imem_addr": In(unsigned(ceil_log2(imem_depth))), "imem_data": In(INSTR_BITS),
            "start": In(1), "program_words": In(unsigned(PC_BITS)),
            "r0": In(signed(REG_BITS)), "r1": In(signed(REG_BITS)),
            "busy": Out(1), "done": Out(1), "error": Out(ErrorCode), "error_pc": Out(unsigned(PC_BITS)),
            "cycles": Out(unsigned(COUNTER_BITS)),
            "ustart": Out(NQ), "udone": Out(NQ),
        }
        for q in range(NQ):
            ports[f"upayload{q}"] = Out(ISSUE_LAYOUT.size)
            ports[f"busy_cycles{q}"] = Out(COUNTER_BITS)
            ports[f"executed{q}"] = Out(32)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl = ctrl = Controller(*self.args, watchdog_cycles=self.watchdog_cycles)
        # the program sits in one HBM channel at byte 0; the bench writes it through the host port
        m.submodules.hbm = hbm = HbmModel(1, self.imem_depth, self.fetch_latency, 1, FETCH_TAG_BITS)
        m.submodules.fetch = fetch = InstructionFetch()
        m.d.comb += [hbm.host_we.eq(self.imem_we), hbm.host_channel.eq(0), hbm.host_addr.eq(self.imem_addr),
                     hbm.host_wdata.eq(self.imem_data),
                     fetch.channel.eq(0), fetch.base.eq(0),
                     hbm.f_rd_valid.eq(fetch.rd_valid), hbm.f_rd.eq(fetch.rd),
                     fetch.rd_resp_valid.eq(hbm.f_rd_resp_valid), fetch.rd_resp.eq(hbm.f_rd_resp)]
        wiring.connect(m, ctrl.fetch, fetch.fetch)
        wiring.connect(m, fetch.word, ctrl.word)
        m.d.comb += [ctrl.start.eq(self.start), ctrl.program_words.eq(self.program_words),
                     ctrl.r0.eq(self.r0), ctrl.r1.eq(self.r1),
                     self.busy.eq(ctrl.busy), self.done.eq(ctrl.done), self.error.eq(ctrl.error),
                     self.error_pc.eq(ctrl.error_pc), self.cycles.eq(ctrl.cycles)]
        for q in range(NQ):
            m.submodules[f"unit{q}"] = unit = LatencyUnit(seed=0xACE1 + 977 * q)
            wiring.connect(m, ctrl.unit[q], unit.issue)
            m.d.comb += [ctrl.unit_done[q].eq(unit.done),
                         self.ustart[q].eq(unit.issue.valid & unit.issue.ready), self.udone[q].eq(unit.done),
                         getattr(self, f"upayload{q}").eq(ctrl.unit[q].payload),
                         getattr(self, f"busy_cycles{q}").eq(ctrl.busy_cycles[q]),
                         getattr(self, f"executed{q}").eq(ctrl.executed[q])]
        return m
