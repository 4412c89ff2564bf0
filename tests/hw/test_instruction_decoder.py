"""The controller's instruction checker in Amaranth's simulator: on legal words, words with
flipped bits and random words it reports exactly the ErrorCode that ``isa.decode`` raises
(the first illegal field, in the same order), and NONE where the Python decoder accepts."""
import numpy as np
from amaranth.sim import Simulator

from airfoil.hw.instruction_decoder import InstructionDecoder
from airfoil.isa import ErrorCode, IsaError, decode
from tests.hw.programs import random_words

HBM_CHANNELS = 4


def _python_code(word: int) -> ErrorCode:
    try:
        decode(word, HBM_CHANNELS)
    except IsaError as e:
        assert e.code is not None, str(e)
        return e.code
    return ErrorCode.NONE


def _rtl_codes(words: list[int]) -> list[tuple[ErrorCode, int]]:
    dut = InstructionDecoder(HBM_CHANNELS)
    got = []

    async def bench(ctx):
        for w in words:
            ctx.set(dut.word.as_value(), w)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
            got.append((ctx.get(dut.error), cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


def test_every_word_gets_the_python_decoders_error_code():
    words = random_words(np.random.default_rng(11), 1200, HBM_CHANNELS)
    expected = [_python_code(w) for w in words]
    seen = set(expected)
    # the corpus reaches every decode-time code
    assert {c for c in ErrorCode if c.value <= ErrorCode.DISPATCHER_TOKENS.value} <= seen, \
        sorted(c.name for c in ErrorCode if c.value <= ErrorCode.DISPATCHER_TOKENS.value and c not in seen)
    got = _rtl_codes(words)
    for i, (w, want, (code, cycles)) in enumerate(zip(words, expected, got)):
        assert code == want, f"word {i} ({w:#x}): RTL {code.name}, isa.decode {want.name}"
        assert cycles <= 22, f"word {i}: {cycles} cycles"
