"""The clock and reset of a top level: ``clk`` and ``rst`` ports drive the ``sync`` domain, with
the reset registered once on the way in.

Why registered: Amaranth writes each flop's reset into that flop's next-state logic, so when
``rst`` is a top-level input nearly the whole design is combinational logic of an input.
Verilator evaluates input-combinational logic whenever the testbench writes an input, which
cocotb's clock does twice a cycle: a top with a bare ``rst`` input simulated several times more
slowly.  Behind one flop, the reset is internal state and the logic runs once per clock edge.
On a board the same flop is what timing wants anyway (the reset fans out from a register).  The
reset therefore takes effect one cycle late and lasts one cycle longer than the input.

For the same reason a simulation top registers its host ports (``registered_inputs``): Verilator
evaluates, at every input write, the whole combinational cone that meets an input (the host's
write port muxed with a unit's write request pulls in that unit's logic).  Registered, a host
write lands one cycle later and host read data comes one cycle later: two cycles after the
address instead of one."""
from __future__ import annotations

from amaranth import ClockDomain, ClockSignal, Module, ResetSignal, Signal
from amaranth.lib.wiring import In

__all__ = ["CLOCK_PORTS", "registered_reset_domain", "registered_inputs"]

CLOCK_PORTS = {"clk": In(1), "rst": In(1)}


def registered_reset_domain(m: Module, clk, rst) -> None:
    """Define ``sync`` in ``m``, clocked by ``clk``, reset by ``rst`` delayed one cycle."""
    m.domains.sync = ClockDomain("sync")
    m.domains.reset_in = ClockDomain("reset_in", reset_less=True)
    rst_q = Signal(init=1, name="rst_q")
    m.d.comb += [ClockSignal("sync").eq(clk), ClockSignal("reset_in").eq(clk), ResetSignal("sync").eq(rst_q)]
    m.d.reset_in += rst_q.eq(rst)


def registered_inputs(m: Module, component, names) -> dict[str, Signal]:
    """Each input port in ``names`` of ``component`` through one ``sync`` register."""
    regs = {}
    for name in names:
        port = getattr(component, name)
        regs[name] = Signal.like(port, name=f"{name}_q")
        m.d.sync += regs[name].eq(port)
    return regs
