"""The ``xrt`` backend: the compiled program on a real Alveo board, through XRT's Python binding
(``pyxrt``), with the same kernel, registers and memory images as the simulated top.

At start: load the xclbin (built from ``airfoil generate --block kernel``'s Vitis package), and
allocate, each in its argument's bank (``group_id``; ``hw.vitis.kernel_args``): one buffer per
pseudo-channel holding the compiler's channel image, one per program section holding its
instructions, and one for the results word.  Each step: write the chunk's embedding rows into
the input region, run ``kernel(program_words, r0, r1, eps_q, c_qk, program, results, hbm0, ...)``
(XRT writes the arguments into their registers, sets ap_start and waits for ap_done), read the
results word (STATUS, ERROR_PC and the counters: the kernel writes it before ap_done, since pyxrt
has no register reads; ``docs/registers.md``) and the logits.  An error status stops the
generation, naming the code and the pc.  The KV cache stays in the board's HBM and the
activations in the kernel's buffers between steps, as on any backend.

With ``check``, fsim runs each step from the same state and every byte of every channel's image
read back from the board must equal fsim's (the board's on-chip buffers cannot be read back).

``pyxrt`` comes with XRT (``source /opt/xilinx/xrt/setup.sh``), not from the package registry;
without it (or without a board) the backend cannot start, and its tests skip."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from airfoil.errors import AirfoilError

__all__ = ["XrtBackend", "pyxrt_available", "import_pyxrt"]


def import_pyxrt():
    try:
        import pyxrt  # noqa: PLC0415 - XRT's own module, present only where XRT is installed
    except ImportError:
        raise AirfoilError("--backend xrt: pyxrt is not importable; install XRT and source "
                           "/opt/xilinx/xrt/setup.sh (it is not on the package registry)") from None
    return pyxrt


def pyxrt_available() -> bool:
    try:
        import_pyxrt()
    except AirfoilError:
        return False
    return True


class XrtBackend:
    name = "xrt"

    def __init__(self, program, compressed, xclbin: str | Path, device_index: int = 0, check: bool = True,
                 timeout_s: float = 600.0, pyxrt=None):
        from airfoil.host.runtime import FsimBackend
        from airfoil.hw.hbm_model import BEAT_BYTES
        from airfoil.hw.vitis import KERNEL_NAME, kernel_args

        xclbin = Path(xclbin)
        if not xclbin.is_file():
            raise AirfoilError(f"--xclbin {xclbin}: no such file (build it from `airfoil generate --block kernel`)")
        self.xrt = pyxrt or import_pyxrt()
        self.prog, self.check, self.timeout_s = program, check, timeout_s
        self.fsim = FsimBackend(program, compressed)  # the host's embedding; with check, the golden model
        self.device_handle = self.xrt.device(device_index)
        self.uuid = self.device_handle.load_xclbin(self.xrt.xclbin(str(xclbin)))
        self.kernel = self.xrt.kernel(self.device_handle, self.uuid, KERNEL_NAME)
        self.args = kernel_args(program.cfg)
        index = {a["name"]: i for i, a in enumerate(self.args)}

        def buffer(size: int, arg: str):
            return self.xrt.bo(self.device_handle, size, self.xrt.bo.normal, self.kernel.group_id(index[arg]))

        self.bos = []
        for c, image in enumerate(program.images):
            bo = buffer(len(image), f"hbm{c}")
            self._write(bo, bytes(image), 0)
            self.bos.append(bo)
        ch = program.hbm["program"]["channel"]
        self.programs = {}
        for name, sec in program.hbm["program"]["sections"].items():
            words = bytes(program.images[ch][sec["offset"]:sec["offset"] + BEAT_BYTES * sec["words"]])
            self.programs[name] = bo = buffer(len(words), "program")
            self._write(bo, words, 0)
        self.results = buffer(4096, "results")
        self.runs: list[dict] = []
        self.mismatch = None
        self.steps = 0
        self.device = f"xrt:{device_index}"

    @property
    def position(self) -> int:
        return self.fsim.position

    def _write(self, bo, raw: bytes, offset: int) -> None:
        bo.write(raw, offset)
        bo.sync(self.xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, len(raw), offset)

    def _read(self, bo, n: int, offset: int) -> bytes:
        bo.sync(self.xrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, n, offset)
        return np.asarray(bo.read(n, offset)).astype(np.uint8).tobytes()

    def step(self, tokens: list[int], trace=None) -> np.ndarray:
        from airfoil.hw.control_registers import parse_results
        from airfoil.isa import ErrorCode, Queue
        from airfoil.sim.fsim import input_region, logits_from_bytes, logits_region
        from airfoil.sim.rtl_top import kernel_registers

        self.steps += 1
        position = self.position
        section = "prefill" if position == 0 else "decode"
        rows = self.fsim.host.embedding(torch.tensor(tokens)).numpy()
        channel, offset, raw = input_region(self.prog, rows)
        self._write(self.bos[channel], raw, offset)
        self._write(self.results, bytes(64), 0)  # a stale word must not pass for this run's
        regs = kernel_registers(self.prog, section, len(tokens), position, [0] * len(self.bos))
        values = {"program_words": regs["PROGRAM_WORDS"], "r0": regs["R0"], "r1": regs["R1"], "eps_q": regs["EPS_Q"],
                  "c_qk": regs["C_QK"], "program": self.programs[section], "results": self.results,
                  **{f"hbm{c}": bo for c, bo in enumerate(self.bos)}}
        t0 = time.time()
        run = self.kernel(*[values[a["name"]] for a in self.args])
        state = run.wait(int(self.timeout_s * 1000))
        wall = time.time() - t0
        if state != self.xrt.ert_cmd_state.ERT_CMD_STATE_COMPLETED:
            raise RuntimeError(f"xrt: {section} at position {position} ended in {state} (timeout {self.timeout_s:g} s)")
        res = parse_results(self._read(self.results, 64, 0))
        code = ErrorCode(res["STATUS"] & 0x1F)
        if code != ErrorCode.NONE or res["STATUS"] & 0x100 or not res["CYCLES"]:
            why = "no results word" if not res["CYCLES"] else f"{code.name} at pc {res['ERROR_PC']}"
            raise RuntimeError(f"xrt: {section} at position {position} stopped with {why}"
                               f"{' (an HBM AXI error answer)' if res['STATUS'] & 0x100 else ''}")
        self.runs.append({"section": section, "cycles": res["CYCLES"], "wall_seconds": wall,
                          "busy": {q.name: res[f"BUSY_{q.name}"] for q in Queue},
                          "executed": {q.name: res[f"EXECUTED_{q.name}"] for q in Queue}})
        if self.check:
            self.fsim.step(tokens, trace)
            if self.mismatch is None:
                self.mismatch = self._compare()
        else:
            self.fsim.position += len(tokens)
        channel, offset, n = logits_region(self.prog)
        return logits_from_bytes(self._read(self.bos[channel], n, offset))

    def _compare(self):
        from airfoil.host.runtime import compare_hbm

        got = [np.frombuffer(self._read(bo, len(want), 0), np.uint8) for bo, want in zip(self.bos, self.fsim.sim.hbm)]
        return compare_hbm(self.fsim.sim, got, self.steps - 1, "xrt vs fsim")
