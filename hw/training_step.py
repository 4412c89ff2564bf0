"""The integer-training datapath: a ShiftQuant GEMM tile and an L1-norm unit side by side.

A training step of a linear layer followed by the L1 norm runs its five integer stages on it
(forward GEMM, norm forward, norm backward, backward-data and backward-weight GEMMs); the
quantisers between the stages (tensor scale, groups, rounding) are the host's, as in
``linear_l1_training_step`` (host/integer_training.py), which is its reference."""
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from airfoil.host.integer_training import MAX_GROUPS
from airfoil.hw.l1norm import L1NormUnit
from airfoil.hw.shiftquant import ShiftQuantDot

__all__ = ["IntegerTrainingDatapath", "TRAINING_B_GROUPS"]

# the forward GEMM's operands are both ShiftQuant (x and W): x's group picks the accumulator and
# W's shifts its code into the multiplier, 0 .. G - 1 bits (host/integer_training.py: tile_tags)
TRAINING_B_GROUPS = MAX_GROUPS


class IntegerTrainingDatapath(wiring.Component):
    def __init__(self, bits: int, lanes: int, max_n: int, acc_width: int = 40):
        self._dot = ShiftQuantDot(bits, lanes, b_groups=TRAINING_B_GROUPS, acc_width=acc_width)
        # the norm's input is the GEMM's integer output
        self._norm = L1NormUnit(max_n, x_width=self._dot.out_width, g_width=18)
        super().__init__({"gemm": Out(self._dot.signature), "norm": Out(self._norm.signature)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dot, m.submodules.norm = self._dot, self._norm
        wiring.connect(m, wiring.flipped(self.gemm), self._dot)
        wiring.connect(m, wiring.flipped(self.norm), self._norm)
        return m
