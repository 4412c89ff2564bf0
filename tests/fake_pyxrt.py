"""A stand-in for XRT's ``pyxrt`` with the surface ``host.xrt_backend`` uses (as XRT's own
``pyxrt.pyi`` declares it), over a board that fsim emulates.

* Buffers live in banks at device addresses; ``group_id`` comes from the generated
  ``connectivity.cfg`` (argument ``hbm<c>`` in HBM[c]).
* The host's and the device's copies are kept apart, so a missing ``sync`` loses data, as on a
  board.
* ``kernel(*args)`` takes the arguments in ``kernel.xml``'s order and checks what the host passed:
  every ``hbm<c>`` a buffer in HBM[c], ``program`` a buffer holding a section's words with its
  ``program_words``, EPS_Q and C_QK the model's.
* The run happens at ``wait()``, so a host that does not wait reads stale memory.  It runs the
  section in fsim on the device's memory, keeping the buffers from run to run as the kernel
  does, and writes the results word (``RESULTS_LAYOUT``; CYCLES is the cycle model's RTL
  estimate) into ``results``.

It tests the host's side of the board flow, not a board."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np

from airfoil import numerics as nx
from airfoil.hw.control_registers import pack_results
from airfoil.hw.vitis import KERNEL_NAME, connectivity_cfg, kernel_args
from airfoil.isa import ErrorCode, Queue

BANK_BYTES = 1 << 28
BANK_BASE = 0x40_0000_0000  # a device address well away from 0, as a shell's HBM aperture is


def make_fake_pyxrt(program, compressed, corrupt: tuple[int, int] | None = None, status: ErrorCode | None = None):
    """``corrupt`` (channel, offset): flip that device byte after each run; ``status``: every run
    stops with this error instead of running."""
    from airfoil.host.integer_reference import IntegerReference
    from airfoil.sim.fsim import FsimError, FunctionalSimulator
    from airfoil.sim.perf import PerfModel

    cfg, spec = program.cfg, program.spec
    args = kernel_args(cfg)
    bank_of_arg = {a: int(b) for a, b in re.findall(r"^sp=\w+\.(\w+):HBM\[(\d+)\]$", connectivity_cfg(cfg), re.M)}
    state = SimpleNamespace(next_free={}, sim=None, runs=0)

    class Direction:
        XCL_BO_SYNC_BO_TO_DEVICE, XCL_BO_SYNC_BO_FROM_DEVICE = "to_device", "from_device"

    class CmdState:
        ERT_CMD_STATE_COMPLETED, ERT_CMD_STATE_ERROR = "completed", "error"

    class Bo:
        normal = "normal"

        def __init__(self, device, size, flags, group):
            assert flags == Bo.normal and group in bank_of_arg.values()
            start = state.next_free.get(group, BANK_BASE + group * BANK_BYTES + 4096)
            state.next_free[group] = start + (size + 4095) // 4096 * 4096
            self.group, self._address = group, start
            self.host, self.device = bytearray(size), bytearray(size)

        def address(self):
            return self._address

        def write(self, data, seek):
            self.host[seek:seek + len(data)] = data

        def read(self, size, skip):
            return np.frombuffer(bytes(self.host[skip:skip + size]), np.int8)  # pyxrt: int8

        def sync(self, direction, size, offset):
            src, dst = (self.host, self.device) if direction == Direction.XCL_BO_SYNC_BO_TO_DEVICE else \
                (self.device, self.host)
            dst[offset:offset + size] = src[offset:offset + size]

    def execute(values: dict):
        bos = [values[f"hbm{c}"] for c in range(cfg.hbm_channels)]
        for c, bo in enumerate(bos):
            assert isinstance(bo, Bo) and bo.group == bank_of_arg[f"hbm{c}"] == c, f"hbm{c} is not a buffer in HBM[{c}]"
        ch = program.hbm["program"]["channel"]
        words = bytes(values["program"].device)
        section = next(s for s, sec in program.hbm["program"]["sections"].items()
                       if words == bytes(program.images[ch][sec["offset"]:sec["offset"] + 64 * sec["words"]]))
        assert values["program_words"] == program.hbm["program"]["sections"][section]["words"]
        assert values["eps_q"] == nx.eps_q(spec.norm_eps) and values["c_qk"] == nx.c_qk(spec.head_dim)
        r0, r1 = values["r0"], values["r1"]
        if state.sim is None:
            state.sim = FunctionalSimulator(program, IntegerReference(compressed, "cpu"))
        sim = state.sim
        for c, bo in enumerate(bos):  # the kernel works on device memory
            sim.hbm[c] = np.frombuffer(bo.device, np.uint8)[:len(program.images[c])]
        code = status or ErrorCode.NONE
        if status is None:
            try:
                sim.run(section, r0, r1)
            except FsimError as e:
                code = e.code
        fields = {"STATUS": code.value, "ERROR_PC": 0, "CYCLES": PerfModel(program, timing="rtl").run(section, r0, r1).cycles,
                  **{f"EXECUTED_{q.name}": 1 for q in Queue}}
        values["results"].device[:64] = pack_results(fields)
        if corrupt is not None:
            bos[corrupt[0]].device[corrupt[1]] ^= 0xFF
        state.runs += 1

    class Run:
        def __init__(self, values):
            self.values, self.done = values, False

        def wait(self, timeout_ms=0):
            if not self.done:
                execute(self.values)
                self.done = True
            return CmdState.ERT_CMD_STATE_COMPLETED

    class Kernel:
        exclusive, shared = "exclusive", "shared"

        def __init__(self, device, uuid, name, mode=shared):
            assert name == KERNEL_NAME and uuid == "uuid"

        def group_id(self, index):
            return bank_of_arg[args[index]["name"]]

        def __call__(self, *values):
            assert len(values) == len(args)
            for a, v in zip(args, values):
                assert isinstance(v, Bo) == a["buffer"], a["name"]
                if a["buffer"]:
                    assert v.group == bank_of_arg[a["name"]], f"{a['name']} allocated outside its bank"
            return Run({a["name"]: v for a, v in zip(args, values)})

    class Device:
        def __init__(self, index):
            assert index == 0

        def load_xclbin(self, xclbin):
            assert xclbin.path.endswith(".xclbin")
            return "uuid"

    return SimpleNamespace(device=Device, xclbin=lambda path: SimpleNamespace(path=path), kernel=Kernel, bo=Bo,
                           xclBOSyncDirection=Direction, ert_cmd_state=CmdState, state=state)
