"""The UltraScale+ DSP48E2 primitive (AMD UG579) as Airfoil instantiates it.

Yosys 0.70's ``synth_xilinx -family xcup`` maps an inferred multiplier to a DSP48E2 and packs
nothing else into it (no A/B/D/M/P register, no pre-adder, no post-adder), so the datapaths
whose registers and adders belong in the DSP instantiate it: the sparse chain's slices
(``dsp_slice``) and the requantisers' multiply-accumulate (``requantise``).  Verilator simulates
the instance with ``sim/hdl/DSP48E2.sv``, a model of the subset used here; each user checks its
instances against its behavioural form.

The subset: A, B, D input registers, the pre-adder AD = D + A (``pre_add``), the 27 x 18 signed
multiplier, M and P registers, and the ALU as Z + X + Y with X = Y = M (OPMODE xx_zzz_0101;
Z = 0, PCIN, P or C); INMODE, OPMODE and ALUMODE unregistered, no carry in.  PCIN may only come
from another DSP's PCOUT (the dedicated cascade route): a sum from the fabric goes in on C."""
from amaranth import Cat, ClockSignal, Const, Instance, Module, ResetSignal, Signal, Value, signed

__all__ = ["Dsp48e2", "opmode", "Z_ZERO", "Z_PCIN", "Z_P", "Z_C"]

# Z + X + Y with X = Y = M (the multiplier's two partial products); W = 0
Z_ZERO, Z_PCIN, Z_P, Z_C = 0b000, 0b001, 0b010, 0b011


def opmode(z: int | Value) -> int | Value:
    """The OPMODE word for P = Z + M, Z one of ``Z_ZERO``, ``Z_PCIN``, ``Z_P``, ``Z_C`` (or a 3-bit value
    choosing among them at run time)."""
    if isinstance(z, int):
        return (z << 4) | 0b0101
    return Cat(Const(0b0101, 4), z, Const(0, 2))


# outputs a user does not read (UG579), connected to named wires so that no pin is left open
_UNUSED_OUTPUTS = (("ACOUT", 30), ("BCOUT", 18), ("CARRYOUT", 4), ("CARRYCASCOUT", 1), ("MULTSIGNOUT", 1),
                   ("OVERFLOW", 1), ("UNDERFLOW", 1), ("PATTERNDETECT", 1), ("PATTERNBDETECT", 1), ("XOROUT", 8))


class Dsp48e2:
    """One DSP48E2 instance.  ``areg``/``breg`` 0..2, ``dreg``/``adreg`` 0..1 (``pre_add`` only),
    MREG = PREG = 1.  ``a``, ``b``, ``d`` are sign-extended to the ports' 30, 18 and 27 bits here
    (give unsigned operands a zero top bit); ``opmode`` a 9-bit value (constant or not);
    ``ce_p`` enables P; ``c`` the C input (unregistered).  ``p`` and ``pcout`` are the 48-bit outputs."""

    def __init__(self, m: Module, name: str, *, a: Value, b: Value, opmode: Value | int, ce_p: Value | int = 1,
                 pcin: Value | None = None, c: Value | None = None, d: Value | None = None, areg: int = 0,
                 breg: int = 0, dreg: int = 0,
                 adreg: int = 0):
        pre_add = d is not None
        if not (0 <= areg <= 2 and 0 <= breg <= 2 and 0 <= dreg <= 1 and 0 <= adreg <= 1):
            raise ValueError(f"{name}: register depths AREG {areg}, BREG {breg}, DREG {dreg}, ADREG {adreg} "
                             f"out of the DSP48E2's range")
        self.p, self.pcout = Signal(signed(48), name=f"{name}_p"), Signal(signed(48), name=f"{name}_pcout")
        a_port, b_port = Signal(signed(30), name=f"{name}_a"), Signal(signed(18), name=f"{name}_b")
        d_port, c_port = Signal(signed(27), name=f"{name}_d"), Signal(signed(48), name=f"{name}_c")
        if c is not None:
            m.d.comb += c_port.eq(c)
        m.d.comb += [a_port.eq(a), b_port.eq(b)]
        if pre_add:
            m.d.comb += d_port.eq(d)
        rst = ResetSignal()
        m.submodules[name] = Instance(
            "DSP48E2",
            p_AREG=areg, p_ACASCREG=areg, p_BREG=breg, p_BCASCREG=breg,
            p_DREG=dreg, p_ADREG=adreg, p_CREG=0, p_MREG=1, p_PREG=1, p_INMODEREG=0, p_OPMODEREG=0,
            p_ALUMODEREG=0, p_CARRYINREG=0, p_CARRYINSELREG=0, p_A_INPUT="DIRECT", p_B_INPUT="DIRECT",
            p_AMULTSEL="AD" if pre_add else "A", p_BMULTSEL="B", p_PREADDINSEL="A", p_USE_MULT="MULTIPLY",
            p_USE_SIMD="ONE48", p_USE_PATTERN_DETECT="NO_PATDET", p_USE_WIDEXOR="FALSE",
            i_CLK=ClockSignal(),
            i_A=a_port, i_B=b_port, i_D=d_port, i_C=c_port, i_PCIN=Const(0, 48) if pcin is None else pcin,
            i_ACIN=Const(0, 30), i_BCIN=Const(0, 18),
            # INMODE: AD = D + A2 (D gated on only with the pre-adder), B2
            i_INMODE=Const(0b00100 if pre_add else 0b00000, 5),
            i_OPMODE=Const(opmode, 9) if isinstance(opmode, int) else opmode, i_ALUMODE=Const(0, 4),
            i_CARRYINSEL=Const(0, 3), i_CARRYIN=0, i_CARRYCASCIN=0, i_MULTSIGNIN=0,
            # with a one-deep register the primitive clocks A2/B2 (CEA2/CEB2); A1/B1 only when two deep
            i_CEA1=int(areg == 2), i_CEA2=int(areg > 0), i_CEB1=int(breg == 2), i_CEB2=int(breg > 0),
            i_CED=int(pre_add and dreg > 0), i_CEAD=int(pre_add and adreg > 0), i_CEC=0, i_CEM=1, i_CEP=ce_p,
            i_CEINMODE=0, i_CECTRL=0, i_CEALUMODE=0, i_CECARRYIN=0,
            i_RSTA=rst, i_RSTB=rst, i_RSTC=rst, i_RSTD=rst, i_RSTM=rst, i_RSTP=rst, i_RSTINMODE=rst,
            i_RSTCTRL=rst, i_RSTALUMODE=rst, i_RSTALLCARRYIN=rst,
            o_P=self.p, o_PCOUT=self.pcout,
            **{f"o_{pin}": Signal(width, name=f"{name}_unused_{pin.lower()}") for pin, width in _UNUSED_OUTPUTS})
