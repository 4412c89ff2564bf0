"""The ISA: encode/decode round trips over random fields, illegal encodings, text form, docs."""
import random
from pathlib import Path

import pytest
from amaranth import Const
from amaranth.lib import data, enum

from airfoil.isa import (BODY_LAYOUTS, HEADER_LAYOUT, INSTR_BITS, INSTR_BYTES, INSTRUCTION_LAYOUT, OPCODE_QUEUE,
                         Affine, Buffer, Instruction, IsaError, Opcode, Queue, assemble, decode, decode_program,
                         disassemble, encode, encode_program, encode_with_amaranth, isa_markdown)

ROOT = Path(__file__).resolve().parents[1]


def _rand_int(rng, shape):
    if shape.signed:
        return rng.randint(-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1)
    return rng.randint(0, (1 << shape.width) - 1)


def random_instruction(rng: random.Random, op: Opcode) -> Instruction:
    """Random legal fields for ``op`` (the semantic limits respected)."""
    fields = {}
    for name, shape in BODY_LAYOUTS[op].members.items():
        if isinstance(shape, data.StructLayout):  # affine
            base = _rand_int(rng, shape.members["base"])
            if rng.random() < 0.5:
                fields[name] = Affine(base)
            else:
                fields[name] = Affine(base, rng.randint(0, 15), _rand_int(rng, shape.members["scale"]))
        elif isinstance(shape, type) and issubclass(shape, enum.Enum):
            fields[name] = rng.choice(list(shape))
        else:
            fields[name] = _rand_int(rng, shape)
    if op in (Opcode.LD, Opcode.ST):
        fields["row_bytes"] = max(1, fields["row_bytes"])
        fields["channels"] = max(1, fields["channels"])
        if op == Opcode.ST and fields["buffer"] == Buffer.INSTR:
            fields["buffer"] = Buffer.GLOBAL
        fields["elem_bytes"] = 4 if fields["buffer"] == Buffer.GLOBAL else 1
        fields["row_bytes"] = max(fields["elem_bytes"], fields["row_bytes"] - fields["row_bytes"] % fields["elem_bytes"])
    if op in (Opcode.MM, Opcode.MV):
        fields["group_size"] = 16 * rng.randint(1, 8)
        fields["k"] = fields["group_size"] * rng.randint(1, 4095)
        fields["rows"] = max(1, fields["rows"])
        if op == Opcode.MV:
            fields["tokens"] = Affine(1)
    if op == Opcode.LOOP:
        fields["body"] = max(1, fields["body"])
    if op == Opcode.SETR and fields["lo"] > fields["hi"]:
        fields["lo"], fields["hi"] = fields["hi"], fields["lo"]
    queued = OPCODE_QUEUE[op] is not None
    wait = frozenset(q for q in Queue if queued and rng.random() < 0.3)
    release = frozenset(q for q in Queue if queued and rng.random() < 0.3)
    return Instruction(op, fields, wait, release)


@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name)
def test_round_trip_random_fields(op):
    rng = random.Random(op.value)
    for _ in range(200):
        ins = random_instruction(rng, op)
        word = encode(ins)
        assert 0 <= word < 1 << INSTR_BITS
        assert word == encode_with_amaranth(ins)  # the fast encoder places bits where the layouts say
        assert decode(word) == ins
        assert assemble(disassemble(ins)) == [ins]


def test_program_bytes_round_trip():
    rng = random.Random(7)
    prog = [random_instruction(rng, rng.choice(list(Opcode))) for _ in range(100)]
    blob = encode_program(prog)
    assert len(blob) == 100 * INSTR_BYTES
    assert decode_program(blob) == prog


def test_every_layout_fits_the_word():
    for op, layout in BODY_LAYOUTS.items():
        assert HEADER_LAYOUT.size + layout.size <= INSTR_BITS, op


def _word(opcode_value: int, body: int = 0, reserved: int = 0) -> int:
    return opcode_value | reserved << 13 | body << HEADER_LAYOUT.size


@pytest.mark.parametrize("word, field", [
    (_word(31), "opcode"),
    (_word(Opcode.END.value, reserved=1), "reserved"),
    (_word(Opcode.END.value, body=1), "unused by END"),
    (_word(Opcode.SETR.value, body=1 << 200), "unused by SETR"),
])
def test_illegal_words_name_the_field(word, field):
    with pytest.raises(IsaError, match=field):
        decode(word)


def _replace(ins: Instruction, **fields) -> Instruction:
    return Instruction(ins.opcode, {**ins.fields, **fields}, ins.wait, ins.release)


def _raw(ins: Instruction, **body_bits) -> int:
    """Encode ``ins`` with some body fields forced to raw values (bypassing the encoder's checks)."""
    layout = BODY_LAYOUTS[ins.opcode]
    word = encode(ins)
    body = word >> HEADER_LAYOUT.size
    for name, value in body_bits.items():
        f = layout[name]
        body &= ~(((1 << f.width) - 1) << f.offset)
        body |= value << f.offset
    return (word & ((1 << HEADER_LAYOUT.size) - 1)) | body << HEADER_LAYOUT.size


def test_illegal_field_values_are_rejected():
    rng = random.Random(1)
    mm = random_instruction(rng, Opcode.MM)
    ld = random_instruction(rng, Opcode.LD)
    sfu = random_instruction(rng, Opcode.SFU)
    loop = random_instruction(rng, Opcode.LOOP)
    cases = [
        (_raw(mm, k=24), "'k'"),
        (_raw(mm, rows=0), "'rows'"),
        (_raw(ld, row_bytes=0), "'row_bytes'"),
        (_raw(ld, buffer=7), "'buffer'"),
        (_raw(sfu, func=15), "'func'"),
        (_raw(loop, body=0), "'body'"),
        (_raw(_replace(mm, act=Affine(5)), act=5 | (3 << 25)), "'act'"),  # reg set, use_reg 0
    ]
    for word, field in cases:
        with pytest.raises(IsaError, match=field):
            decode(word)
    mv = random_instruction(rng, Opcode.MV)
    with pytest.raises(IsaError, match="'tokens'"):
        encode(_replace(mv, tokens=Affine(0, 0, 1)))
    with pytest.raises(IsaError, match="'channel'"):
        decode(encode(_replace(ld, channel=3, channels=2)), hbm_channels=4)
    with pytest.raises(IsaError, match="'elem_bytes'"):
        decode(_raw(ld, elem_bytes=2))
    with pytest.raises(IsaError, match="'group_size'"):
        decode(_raw(mm, group_size=24))
    with pytest.raises(IsaError, match="'wait'"):
        encode(Instruction(Opcode.END, {}, wait={Queue.LOAD}))


def test_encoder_checks_ranges_and_types():
    ins = random_instruction(random.Random(3), Opcode.SETR)
    with pytest.raises(IsaError, match="'shift'"):
        encode(_replace(ins, shift=32))
    with pytest.raises(IsaError, match="'add'"):
        encode(_replace(ins, add=1 << 35))
    with pytest.raises(IsaError, match="'lo'"):
        encode(_replace(ins, lo=5, hi=4))
    with pytest.raises(IsaError, match="missing field 'rd'"):
        encode(Instruction(Opcode.SETR, {k: v for k, v in ins.fields.items() if k != "rd"}))


def test_assembler_reads_affine_and_queue_syntax():
    prog = assemble("""
        # the length registers drive addresses and trip counts
        SETR rd=2 rs=0 use_rs=1 mul=1 rt=0 use_rt=0 mul_t=0 add=15 shift=4 lo=0 hi=4096  # R2 = ceil(R0 / 16)
        LOOP count=R2 body=1 reg=3
        LD channel=1 channels=1 phase=0 buffer=ACT hbm=4096+576*R3 buf=0 rows=16 row_bytes=576 hbm_stride=576 buf_stride=576 elem_bytes=1 buf_group_stride=0 release=COMPUTE
        END
    """)
    assert [i.opcode for i in prog] == [Opcode.SETR, Opcode.LOOP, Opcode.LD, Opcode.END]
    ld = prog[2]
    assert ld["hbm"] == Affine(4096, 3, 576) and ld["hbm"].evaluate([0, 0, 0, 2] + [0] * 12) == 4096 + 2 * 576
    assert ld.release == {Queue.COMPUTE} and ld.queue == Queue.LOAD
    assert prog[1]["count"] == Affine(0, 2, 1)


@pytest.mark.parametrize("line, message", [
    ("FOO x=1", "unknown opcode 'FOO'"),
    ("LOOP count=R16 body=1 reg=0", "field 'count'"),
    ("LOOP count=4 body=1 reg=0 bogus=1", "no field 'bogus'"),
    ("LOOP count=4 body=0 reg=0", "'body'"),
    ("SFU func=EXP", "field 'func'"),
    ("END wait=FETCH", "field 'wait'"),
])
def test_assembler_errors_name_line_and_field(line, message):
    with pytest.raises(IsaError, match=message) as e:
        assemble(line, "prog.asm")
    assert "prog.asm:1" in str(e.value)


def test_header_is_the_shared_struct():
    ins = Instruction(Opcode.BARRIER, {})
    v = INSTRUCTION_LAYOUT.from_bits(encode(ins))
    assert v.header.opcode == Opcode.BARRIER
    assert Const.cast(INSTRUCTION_LAYOUT.const({"header": {"opcode": Opcode.END}})).value == Opcode.END.value


def test_isa_doc_is_current():
    assert (ROOT / "docs" / "isa.md").read_text() == isa_markdown(), "docs/isa.md is stale: run python -m airfoil.isa"
