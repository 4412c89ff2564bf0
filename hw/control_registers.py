"""The accelerator's AXI4-Lite control slave: the host starts a program and reads back status and
counters through 32-bit registers.  The register map is defined once here (``REGISTERS``);
``docs/registers.md`` is generated from it (``python -m airfoil.hw.control_registers``), and the
host runtime and the Vitis kernel description read the same table.

The control register follows Vitis' ``ap_ctrl_hs`` convention, so the kernel can be driven by
XRT as an RTL kernel: bit 0 ``ap_start`` (the host writes 1; it reads 1 until the machine has
taken the start), bit 1 ``ap_done`` (set when the program ends, by END or by an error; cleared
when the host reads CTRL), bit 2 ``ap_idle``.  Wider values are split into _LO and _HI words.

One transaction at a time: a write needs its address and data (any order), then answers OKAY;
a read answers the next cycle.  Addresses outside the map answer SLVERR (writes change nothing)."""
from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from airfoil.hw.controller import COUNTER_BITS
from airfoil.hw.dispatcher import PC_BITS
from airfoil.isa import REG_BITS, ErrorCode, Queue

__all__ = ["RESULT_FIELDS", "RESULTS_LAYOUT", "pack_results", "parse_results", "Register", "REGISTERS", "ControlRegisters", "registers_markdown", "ADDR_BITS", "AXI_LITE_PORTS", "OKAY",
           "SLVERR"]

ADDR_BITS = 10
MAX_HBM_CHANNELS = 64  # HBM_BASE registers in the map (a core has its config's channels of them)
HBM_BASE_OFFSET = 0x100
OKAY, SLVERR = 0, 2

# The AXI4-Lite slave's ports, as the slave sees them (the top passes them through)
AXI_LITE_PORTS = {
    "s_axi_awvalid": In(1), "s_axi_awready": Out(1), "s_axi_awaddr": In(ADDR_BITS),
    "s_axi_wvalid": In(1), "s_axi_wready": Out(1), "s_axi_wdata": In(32), "s_axi_wstrb": In(4),
    "s_axi_bvalid": Out(1), "s_axi_bready": In(1), "s_axi_bresp": Out(2),
    "s_axi_arvalid": In(1), "s_axi_arready": Out(1), "s_axi_araddr": In(ADDR_BITS),
    "s_axi_rvalid": Out(1), "s_axi_rready": In(1), "s_axi_rdata": Out(32), "s_axi_rresp": Out(2),
}


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str  # "RW", "R", "ctrl"
    meaning: str


def _split(name: str, offset: int, access: str, meaning: str) -> list[Register]:
    return [Register(f"{name}_LO", offset, access, f"{meaning}, bits 0..31"),
            Register(f"{name}_HI", offset + 4, access, f"{meaning}, bits 32..63")]


REGISTERS: list[Register] = [
    Register("CTRL", 0x00, "ctrl", "bit 0 ap_start (write 1 to start; reads 1 until taken), bit 1 ap_done (set at "
                                   "END or an error, cleared by reading CTRL), bit 2 ap_idle"),
    Register("STATUS", 0x10, "R", "bits 0..4: the ErrorCode the last program stopped with (0: finished at END); "
                                  "bit 8: an HBM AXI4 master got an error answer (SLVERR or DECERR) since reset"),
    Register("ERROR_PC", 0x14, "R", "the instruction the error names"),
    *_split("PROGRAM", 0x1C, "RW", "byte address of instruction 0 (a multiple of 64), where the instruction "
                                   "fetch's AXI4 master m_axi_fetch reads the program"),
    Register("PROGRAM_WORDS", 0x24, "RW", "instructions in the program (fetching past them: PC_RANGE)"),
    *_split("R0", 0x28, "RW", "R0 at start: tokens in this pass (signed, 36 bits used)"),
    *_split("R1", 0x30, "RW", "R1 at start: the position of the first of them (signed, 36 bits used)"),
    *_split("CYCLES", 0x40, "R", "cycles from start to the end of the program"),
    *[r for q in Queue for r in _split(f"BUSY_{q.name}", 0x48 + 8 * q.value, "R",
                                       f"cycles the {q.name.lower()} queue's unit held an instruction")],
    *[Register(f"EXECUTED_{q.name}", 0x68 + 4 * q.value, "R", f"instructions the {q.name.lower()} queue finished")
      for q in Queue],
    Register("EPS_Q", 0x78, "RW", "the model's RMSNorm epsilon in the SFU's fixed point (EPS_Q, docs/numerics.md)"),
    Register("C_QK", 0x7C, "RW", "bits 0..15: the attention's score constant C_QK = log2(e) / sqrt(head_dim) "
                                 "in Q.15 (docs/numerics.md)"),
    *_split("RESULTS", 0x80, "RW", "byte address (a multiple of 64; 0: none) where m_axi_fetch writes the results "
                                   "word at the end of each run (RESULTS_LAYOUT: STATUS, ERROR_PC and the counters), "
                                   "before ap_done: what a host without register reads (XRT's pyxrt) gets"),
    *[r for c in range(MAX_HBM_CHANNELS)
      for r in _split(f"HBM_BASE{c}", HBM_BASE_OFFSET + 8 * c, "RW",
                      f"byte address of pseudo-channel {c}'s buffer (the AXI4 master m_axi_hbm{c}); "
                      "the program's channel also locates the program")],
]
_BY_NAME = {r.name: r for r in REGISTERS}

# The results word (64 bytes, little-endian fields in this order), the registers' values at the end
# of a run
RESULT_FIELDS: list[tuple[str, int]] = [("STATUS", 32), ("ERROR_PC", 32), ("CYCLES", 64),
                                        *[(f"BUSY_{q.name}", 64) for q in Queue],
                                        *[(f"EXECUTED_{q.name}", 32) for q in Queue]]
RESULTS_LAYOUT = data.StructLayout({name.lower(): unsigned(bits) for name, bits in RESULT_FIELDS})
assert RESULTS_LAYOUT.size == 512


def pack_results(fields: dict[str, int]) -> bytes:
    """The results word of ``fields`` (by register name; missing ones are 0), as the kernel writes
    it: for emulated boards and tests."""
    value, at = 0, 0
    for name, bits in RESULT_FIELDS:
        value |= (fields.get(name, 0) & ((1 << bits) - 1)) << at
        at += bits
    return value.to_bytes(64, "little")


def parse_results(raw: bytes) -> dict[str, int]:
    """The results word's fields by register name."""
    value, out, at = int.from_bytes(raw[:64], "little"), {}, 0
    for name, bits in RESULT_FIELDS:
        out[name] = (value >> at) & ((1 << bits) - 1)
        at += bits
    return out
assert len({r.offset for r in REGISTERS}) == len(REGISTERS) and max(r.offset for r in REGISTERS) < 1 << ADDR_BITS


def registers_markdown() -> str:
    lines = ["# Control registers", "", "<!-- generated by `python -m airfoil.hw.control_registers`; do not edit -->", "",
             __doc__.strip().split("\n\n")[1].replace("\n", " "), "",
             "| offset | name | access | meaning |", "|---|---|---|---|"]
    lines += [f"| 0x{r.offset:02X} | {r.name} | {r.access} | {r.meaning} |" for r in REGISTERS
              if not r.name.startswith("HBM_BASE")]
    lines += [f"| 0x{HBM_BASE_OFFSET:03X} + 8c | HBM_BASE{{c}}_LO, _HI (+4) | RW | byte address of pseudo-channel c's "
              f"buffer, for the AXI4 master m_axi_hbm{{c}} (c below the core's hbm_channels; the others, up to "
              f"{MAX_HBM_CHANNELS}, answer SLVERR) |"]
    return "\n".join(lines) + "\n"


class ControlRegisters(wiring.Component):
    """The AXI4-Lite slave (``s_axi_*``, 32-bit data) and the controller-facing side: ``start``
    (one pulse), the program and length registers out; status and counters in."""

    def __init__(self, hbm_channels: int):
        assert 1 <= hbm_channels <= MAX_HBM_CHANNELS
        self.hbm_channels = hbm_channels
        self.registers = [r for r in REGISTERS if not r.name.startswith("HBM_BASE")
                          or int(r.name[8:].split("_")[0]) < hbm_channels]
        nq = len(Queue)
        super().__init__({
            "hbm_base": Out(data.ArrayLayout(unsigned(64), hbm_channels)),
            **AXI_LITE_PORTS,
            "start": Out(1), "program": Out(unsigned(64)), "results": Out(unsigned(64)),
            "program_words": Out(unsigned(PC_BITS)), "r0": Out(signed(REG_BITS)), "r1": Out(signed(REG_BITS)),
            "eps_q": Out(unsigned(32)), "c_qk": Out(unsigned(16)),
            "busy": In(1), "done": In(1), "error": In(ErrorCode), "bus_error": In(1), "error_pc": In(unsigned(PC_BITS)),
            "status": Out(32),  # STATUS as read over AXI4-Lite (the results word takes it from here)
            "cycles": In(unsigned(COUNTER_BITS)),
            "busy_cycles": In(data.ArrayLayout(unsigned(COUNTER_BITS), nq)),
            "executed": In(data.ArrayLayout(unsigned(32), nq)),
        })

    def elaborate(self, platform):
        m = Module()
        stored = {r.name: Signal(32, name=r.name.lower()) for r in self.registers if r.access == "RW"}
        m.d.comb += [self.hbm_base[c].eq((stored[f"HBM_BASE{c}_HI"] << 32) | stored[f"HBM_BASE{c}_LO"])
                     for c in range(self.hbm_channels)]
        m.d.comb += [self.program.eq((stored["PROGRAM_HI"] << 32) | stored["PROGRAM_LO"]),
                     self.results.eq((stored["RESULTS_HI"] << 32) | stored["RESULTS_LO"]),
                     self.program_words.eq(stored["PROGRAM_WORDS"]),
                     self.r0.eq(((stored["R0_HI"] << 32) | stored["R0_LO"])[:REG_BITS].as_signed()),
                     self.r1.eq(((stored["R1_HI"] << 32) | stored["R1_LO"])[:REG_BITS].as_signed()),
                     self.eps_q.eq(stored["EPS_Q"]), self.c_qk.eq(stored["C_QK"][:16])]

        m.d.comb += self.status.eq(self.error.as_value() | (self.bus_error << 8))

        # ap_start / ap_done: start pulses one cycle after the write; done latches the machine's end
        ap_start, ap_done, was_running = Signal(), Signal(), Signal()
        m.d.sync += self.start.eq(0)
        with m.If(ap_start & ~self.start):
            m.d.sync += [self.start.eq(1), ap_start.eq(0), was_running.eq(1)]

        # read values of every register
        def value(r: Register):
            if r.access == "RW":
                return stored[r.name]
            if r.name == "CTRL":
                return ap_start | (ap_done << 1) | ((~was_running & ~ap_start) << 2)
            if r.name == "STATUS":
                return self.status
            if r.name == "ERROR_PC":
                return self.error_pc
            counter = {"CYCLES": self.cycles}
            counter.update({f"BUSY_{q.name}": self.busy_cycles[q.value] for q in Queue})
            counter.update({f"EXECUTED_{q.name}": self.executed[q.value] for q in Queue})
            base = r.name.rsplit("_", 1)[0] if r.name.endswith(("_LO", "_HI")) else r.name
            v = counter[base]
            return v[32:] if r.name.endswith("_HI") else v[:32]

        # writes: address and data in any order, then the response
        aw, w = Signal(ADDR_BITS), Signal(32)
        have_aw, have_w = Signal(), Signal()
        strb = Signal(4)
        m.d.comb += [self.s_axi_awready.eq(~have_aw & ~self.s_axi_bvalid),
                     self.s_axi_wready.eq(~have_w & ~self.s_axi_bvalid)]
        with m.If(self.s_axi_awvalid & self.s_axi_awready):
            m.d.sync += [aw.eq(self.s_axi_awaddr), have_aw.eq(1)]
        with m.If(self.s_axi_wvalid & self.s_axi_wready):
            m.d.sync += [w.eq(self.s_axi_wdata), strb.eq(self.s_axi_wstrb), have_w.eq(1)]
        bytes_mask = Signal(32)
        m.d.comb += bytes_mask.eq(sum((strb[i].replicate(8) << (8 * i)) for i in range(4)))
        with m.If(have_aw & have_w):
            m.d.sync += [have_aw.eq(0), have_w.eq(0), self.s_axi_bvalid.eq(1), self.s_axi_bresp.eq(SLVERR)]
            with m.Switch(aw):
                for r in self.registers:
                    with m.Case(r.offset):
                        m.d.sync += self.s_axi_bresp.eq(OKAY)
                        if r.access == "RW":
                            reg = stored[r.name]
                            m.d.sync += reg.eq((reg & ~bytes_mask) | (w & bytes_mask))
                        elif r.access == "ctrl":
                            with m.If(strb[0] & w[0] & ~was_running):
                                m.d.sync += ap_start.eq(1)
        with m.If(self.s_axi_bvalid & self.s_axi_bready):
            m.d.sync += self.s_axi_bvalid.eq(0)

        # reads
        m.d.comb += self.s_axi_arready.eq(~self.s_axi_rvalid)
        with m.If(self.s_axi_arvalid & self.s_axi_arready):
            m.d.sync += [self.s_axi_rvalid.eq(1), self.s_axi_rresp.eq(SLVERR), self.s_axi_rdata.eq(0)]
            with m.Switch(self.s_axi_araddr):
                for r in self.registers:
                    with m.Case(r.offset):
                        m.d.sync += [self.s_axi_rdata.eq(value(r)), self.s_axi_rresp.eq(OKAY)]
                        if r.name == "CTRL":
                            m.d.sync += ap_done.eq(0)  # clear on read
        with m.If(self.s_axi_rvalid & self.s_axi_rready):
            m.d.sync += self.s_axi_rvalid.eq(0)

        # after the reads: a program that ends in the cycle CTRL is read still sets ap_done
        ended = was_running & ~self.start & ~self.busy & (self.done | (self.error != ErrorCode.NONE))
        with m.If(ended):
            m.d.sync += [ap_done.eq(1), was_running.eq(0)]
        return m


if __name__ == "__main__":  # python -m airfoil.hw.control_registers -> rewrite docs/registers.md
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "registers.md"
    path.write_text(registers_markdown())
    print(f"wrote {path}")
