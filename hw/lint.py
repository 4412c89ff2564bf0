"""``verilator --lint-only -Wall`` on generated Verilog, with the documented waivers.

Every waiver is a pattern of Amaranth's Verilog back end, not of Airfoil's logic:"""
import subprocess
from pathlib import Path

__all__ = ["LINT_WAIVERS", "lint_verilog"]

LINT_WAIVERS = {
    "WIDTHEXPAND": "Amaranth emits each operand at its own width and relies on Verilog's context-determined "
                   "(sign-)extension, e.g. `$signed(a) + $signed(b)` with a narrower b.",
    "WIDTHTRUNC": "Amaranth assigns wider intermediate expressions to narrower signals where the shape "
                  "rules of the source already truncate (e.g. lane extraction of the 48-bit accumulator).",
    "UNUSEDSIGNAL": "intermediate wires Amaranth names but does not read in full (high product bits, "
                    "unused struct fields of shared layouts).",
    "PROCASSINIT": "Amaranth gives registers an initial value at declaration and also assigns them in "
                   "processes (the reset value).",
    "DECLFILENAME": "Amaranth writes every submodule of a design into one file.",
}


def lint_verilog(path: Path, top: str, fatal: bool = True) -> tuple[int, str]:
    """(return code, output) of a lint run with the waivers, the vendor primitives' simulation models
    beside the design; ``fatal=False``: warnings do not fail the run (the caller reads them)."""
    from airfoil.sim.verilator import PRIMITIVE_MODELS, verilator_env

    env = verilator_env()
    import os

    args = ["verilator", "--lint-only", "-Wall", "--top-module", top, *(f"-Wno-{w}" for w in LINT_WAIVERS),
            *([] if fatal else ["-Wno-fatal"]), str(path), *map(str, PRIMITIVE_MODELS)]
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env}, cwd=path.parent)
    return proc.returncode, proc.stdout + proc.stderr
