"""Random instructions and programs for the controller's tests: legal ones built from the
shared layouts (``airfoil.isa``), and words with bits flipped to make illegal ones."""
from __future__ import annotations

from airfoil.isa import BODY_LAYOUTS, BUFFER_ELEMENT_BYTES, HEADER_LAYOUT, INSTR_BITS, Affine, Buffer, Instruction, Opcode, Queue, encode
from amaranth.lib import data, enum


def _affine(rng, bits: int, regs: int = 16, small: int = 64) -> Affine:
    if rng.random() < 0.5:
        return Affine(int(rng.integers(-small, small)))
    return Affine(int(rng.integers(-small, small)), int(rng.integers(0, regs)), int(rng.integers(-4, 5)))


def random_fields(rng, op: Opcode, hbm_channels: int) -> dict:
    """Random legal fields of ``op`` (small values, so that evaluated fields stay in range)."""
    f = {}
    for name, shape in BODY_LAYOUTS[op].members.items():
        if isinstance(shape, data.StructLayout):
            f[name] = _affine(rng, shape.members["base"].width)
        elif isinstance(shape, type) and issubclass(shape, enum.Enum):
            f[name] = shape(int(rng.choice([m.value for m in shape])))
        else:
            w = shape.width
            lo, hi = (-(1 << (w - 1)), 1 << (w - 1)) if shape.signed else (0, 1 << w)
            f[name] = int(rng.integers(max(lo, -1000), min(hi, 1000)))
    if op in (Opcode.LD, Opcode.ST):
        f["channels"] = int(rng.integers(1, hbm_channels + 1))
        f["channel"] = int(rng.integers(0, hbm_channels - f["channels"] + 1))
        if op == Opcode.ST and f["buffer"] == Buffer.INSTR:
            f["buffer"] = Buffer.GLOBAL
        f["elem_bytes"] = BUFFER_ELEMENT_BYTES[f["buffer"]]
        f["row_bytes"] = f["elem_bytes"] * int(rng.integers(1, 250))
    if op in (Opcode.MM, Opcode.MV):
        f["group_size"] = 16 * int(rng.integers(1, 9))
        f["k"] = f["group_size"] * int(rng.integers(1, 9))
        f["rows"] = int(rng.integers(1, 1000))
        if op == Opcode.MV:
            f["tokens"] = Affine(1)
    if op == Opcode.LOOP:
        f["body"] = int(rng.integers(1, 20))
    if op == Opcode.SETR:
        f["lo"], f["hi"] = sorted((f["lo"], f["hi"]))
    return f


def random_instruction(rng, hbm_channels: int, op: Opcode | None = None) -> Instruction:
    op = op if op is not None else Opcode(int(rng.choice([o.value for o in Opcode])))
    ins = Instruction(op, random_fields(rng, op, hbm_channels))
    if ins.queue is not None:
        qs = list(Queue)
        ins = Instruction(op, ins.fields, {q for q in qs if rng.random() < 0.2}, {q for q in qs if rng.random() < 0.2})
    return ins


def flipped(rng, word: int, flips: int) -> int:
    """``word`` with ``flips`` random bits flipped, most of them in the header and the used body."""
    for _ in range(flips):
        bit = int(rng.integers(0, 16)) if rng.random() < 0.3 else int(rng.integers(0, 480 if rng.random() < 0.9 else INSTR_BITS))
        word ^= 1 << bit
    return word


def with_field(word: int, op: Opcode, name: str, value: int) -> int:
    """``word`` with one body field's bits replaced (any value, legal or not)."""
    f = BODY_LAYOUTS[op][name]
    off = HEADER_LAYOUT.size + f.offset
    mask = (1 << f.width) - 1
    return word & ~(mask << off) | (value & mask) << off


# one field set to a value each semantic check rejects
SEMANTIC_BREAKS = [
    (Opcode.LD, "row_bytes", 0), (Opcode.ST, "row_bytes", 0), (Opcode.ST, "buffer", Buffer.INSTR.value),
    (Opcode.LD, "channels", 0), (Opcode.ST, "elem_bytes", 2), (Opcode.LD, "elem_bytes", 0), (Opcode.LD, "row_bytes", 6),
    (Opcode.LD, "channel", 3), (Opcode.MM, "k", 0), (Opcode.MV, "k", 40), (Opcode.MM, "group_size", 0),
    (Opcode.MV, "group_size", 24), (Opcode.MM, "group_size", 48), (Opcode.MM, "rows", 0), (Opcode.MV, "rows", 0),
    (Opcode.LOOP, "body", 0), (Opcode.SETR, "lo", 1 << 30), (Opcode.MV, "tokens", 2), (Opcode.SFU, "func", 12),
    (Opcode.LD, "buffer", 6),
]


def random_words(rng, n: int, hbm_channels: int) -> list[int]:
    """Legal words, words with one field broken, words with 1 to 3 flipped bits, and a few wholly
    random ones."""
    out = [with_field(encode(random_instruction(rng, hbm_channels, op)), op, name, v)
           for op, name, v in SEMANTIC_BREAKS for _ in range(3)]
    for i in range(n):
        w = encode(random_instruction(rng, hbm_channels))
        r = i % 8
        if r == 7:
            w = int.from_bytes(rng.bytes(INSTR_BITS // 8), "little") if i % 16 == 7 else w & ~(0x1F) | int(rng.integers(10, 32))
        elif r >= 2:
            w = flipped(rng, w, int(rng.integers(1, 4)))
        out.append(w)
    return out


# ------------------------------------------------------------------ programs for the control plane
def _queue_op(rng, q: Queue, hbm_channels: int) -> Instruction:
    op = {Queue.LOAD: Opcode.LD, Queue.STORE: Opcode.ST, Queue.SFU: Opcode.SFU,
          Queue.COMPUTE: Opcode.MM if rng.random() < 0.5 else Opcode.MV}[q]
    f = random_fields(rng, op, hbm_channels)
    if op == Opcode.LD and f["buffer"] == Buffer.WEIGHT:
        f["buffer"] = Buffer.ACT  # weight loads come only in load/compute pairs (below)
    return Instruction(op, f)


class ProgramBuilder:
    """Random token-balanced programs: every ``wait`` takes a token that an instruction earlier in
    program order released, so executing in program order is one legal schedule and the program
    cannot deadlock; loops wrap balanced segments, so every iteration is balanced too.  Weight
    loads come in pairs with the MM/MV that reads their half (tokens LOAD -> COMPUTE used only by
    the pairs, so they match in order)."""

    def __init__(self, rng, hbm_channels: int, half_bytes: int):
        self.rng, self.hbm_channels, self.half = rng, hbm_channels, half_bytes

    def segment(self, n: int, depth: int, max_depth: int) -> list[Instruction]:
        rng = self.rng
        out: list[Instruction] = []
        open_tokens: dict[tuple[Queue, Queue], int] = {}
        while len(out) < n:
            r = rng.random()
            if r < 0.1 and depth < max_depth:
                body = self.segment(int(rng.integers(1, 6)), depth + 1, max_depth)
                count = Affine(int(rng.integers(-1, 4))) if rng.random() < 0.5 else Affine(int(rng.integers(-1, 2)), 2 + depth, 1)
                out += [Instruction(Opcode.LOOP, {"count": count, "body": len(body), "reg": 8 + depth}), *body]
                continue
            if r < 0.18:
                out.append(Instruction(Opcode.SETR, random_fields(rng, Opcode.SETR, self.hbm_channels)
                                       | {"rd": int(rng.integers(2, 8)), "lo": -64, "hi": 64}))
                continue
            if r < 0.22:
                out.append(Instruction(Opcode.NOP, {}))
                continue
            if r < 0.30:  # a weight load and the MM/MV that reads its half
                h = int(rng.integers(0, 2)) * self.half
                ld = random_fields(rng, Opcode.LD, self.hbm_channels) | {"buffer": Buffer.WEIGHT, "buf": Affine(h),
                                                                          "elem_bytes": 1}
                mm = random_fields(rng, Opcode.MV, self.hbm_channels) | {"weight": Affine(h + int(rng.integers(0, 64)))}
                out.append(Instruction(Opcode.LD, ld, release={Queue.COMPUTE}))
                out.append(Instruction(Opcode.MV, mm, wait={Queue.LOAD}))
                continue
            q = Queue(int(rng.integers(0, 4)))
            ins = _queue_op(rng, q, self.hbm_channels)
            wait = {a for (a, b), k in open_tokens.items() if b == q and k and rng.random() < 0.6}
            release = {b for b in Queue if b != q and rng.random() < 0.3
                       and (q, b) != (Queue.LOAD, Queue.COMPUTE)}
            for a in wait:
                open_tokens[(a, q)] -= 1
            # in Queue order: open_tokens' order decides later draws, and a set of enum members
            # iterates in an order that changes with PYTHONHASHSEED
            for b in sorted(release, key=lambda b: b.value):
                open_tokens[(q, b)] = open_tokens.get((q, b), 0) + 1
            out.append(Instruction(ins.opcode, ins.fields, wait, release))
        for (a, b), k in open_tokens.items():  # take every token left over
            for _ in range(k):
                ins = _queue_op(rng, b, self.hbm_channels)
                out.append(Instruction(ins.opcode, ins.fields, {a}))
        return out

    def program(self, n: int, max_depth: int = 3) -> list[Instruction]:
        """SETRs of R2..R4 from R0 (the loop counts' registers), one or two balanced segments
        (a BARRIER between them), END."""
        rng = self.rng
        head = [Instruction(Opcode.SETR, random_fields(rng, Opcode.SETR, self.hbm_channels)
                            | {"rd": r, "rs": 0, "use_rs": 1, "lo": -2, "hi": 3}) for r in (2, 3, 4)]
        body = self.segment(n, 0, max_depth)
        if rng.random() < 0.4:
            body += [Instruction(Opcode.BARRIER, {})] + self.segment(n // 2, 0, max_depth)
        return head + body + [Instruction(Opcode.END, {})]
