"""The MV unit's pairing rules in Python (``row_lanes`` and ``token_pairs``, which the cycle model
uses), the lanes it builds (``lane_count``), the GLOBAL words an output beat spans (``out_words``)
and its constant divisions (``reciprocal``); tests/hw/test_mv_unit_verilator.py holds the RTL to
the same rules."""
import numpy as np
import pytest

from airfoil.hw.hbm_model import BEAT_BYTES
from airfoil.hw.mv_unit import (act_readers, lane_count, mv_unit_problem, out_words, reciprocal, row_lanes,
                                sub_tile_cycles, token_pairs, weight_readers)


def test_every_chain_has_two_row_lanes():
    assert [lane_count(c) for c in (1, 3, 4, 6, 8, 9, 16, 100)] == [2, 6, 8, 12, 16, 18, 32, 200]


def test_an_output_beat_spans_the_words_its_results_can_reach():
    assert BEAT_BYTES == 64  # 16 INT32 results a GLOBAL word
    for n in range(1, 257):
        # a beat of n results starts at a multiple of n: in any of the places a word has
        words = max(-(-(4 * (o % 16) + 4 * n) // BEAT_BYTES) for o in range(0, 16 * n, n))
        assert out_words(n) == words, n
    assert [out_words(n) for n in (4, 6, 8, 12, 16, 28, 32, 100, 200)] == [1, 2, 1, 2, 1, 3, 2, 7, 13]


@pytest.mark.parametrize("divisor", [3, 6, 7, 100, 127])
def test_a_constant_division_is_a_multiplication_and_a_shift(divisor):
    bits = 20
    x = np.arange(1 << bits, dtype=np.int64)
    mul, shift = reciprocal(divisor, bits)
    assert np.array_equal((x * mul) >> shift, x // divisor)


def test_any_chain_count_builds_where_a_decoder_slice_holds_a_unit():
    assert mv_unit_problem(6, 2) is None and mv_unit_problem(3, 8) is None
    # the U280's: 100 lanes' 16 codes are not one 512-bit word, but 25 slices' 4 lanes' are
    assert mv_unit_problem(100, 8) is None and weight_readers(100, 8) == 50 and sub_tile_cycles(100, 8) == 1
    assert weight_readers(4, 2) == 2 and sub_tile_cycles(4, 2) == 0  # the sim kernel: one slice
    assert "512" in mv_unit_problem(4, 48)  # 96 codes of a beat: wider than the word even for one lane
    assert "odd chain count" in mv_unit_problem(65, 4)  # slices of one lane (the plain order): not built


def test_dense_aligned_rows_pair():
    assert row_lanes(4, 16, out=64, tokens=1, out_stride=0) == 8
    assert row_lanes(4, 16, out=64, tokens=3, out_stride=576) == 8


def test_sparse_unaligned_or_unpairable_rows_do_not():
    assert row_lanes(4, 8, out=64, tokens=1, out_stride=0) == 4  # N:16 sparse: each row its own indices
    assert row_lanes(4, 16, out=68, tokens=1, out_stride=0) == 4  # results not on a multiple of 2C
    assert row_lanes(4, 16, out=64, tokens=2, out_stride=580) == 4  # the second token's are not
    assert row_lanes(16, 16, out=48, tokens=1, out_stride=0) == 16  # not on a multiple of 2C = 32
    assert row_lanes(6, 16, out=36, tokens=1, out_stride=0) == 12  # any chain count pairs
    assert row_lanes(6, 16, out=30, tokens=1, out_stride=0) == 6


def test_tokens_share_a_pass_where_rows_cannot_pair():
    # sim preset: 4 chains of 2 groups (D = 4); a row of 8:16 sparse weights over k = 576 takes 72 beats
    assert token_pairs(4, 2, 8, 576, rows=12, out=64, tokens=2, out_stride=12)
    assert token_pairs(4, 2, 16, 576, rows=10, out=64, tokens=3, out_stride=12)  # dense, results not on 2C
    assert token_pairs(4, 2, 8, 576, rows=12, out=64, tokens=3, out_stride=0)  # every token on the same results


def test_tokens_keep_a_pass_each_otherwise():
    assert not token_pairs(4, 2, 16, 576, rows=10, out=64, tokens=3, out_stride=16)  # dense aligned: rows pair
    assert not token_pairs(4, 2, 8, 576, rows=12, out=64, tokens=1, out_stride=0)  # one token
    assert not token_pairs(4, 2, 2, 32, rows=12, out=64, tokens=2, out_stride=12)  # a row of one beat
    assert not token_pairs(4, 2, 8, 576, rows=12, out=64, tokens=2, out_stride=4)  # token 1's inside token 0's
    assert token_pairs(16, 2, 8, 576, rows=12, out=64, tokens=2, out_stride=16)  # 16 results: one word a token


def test_tokens_share_a_pass_where_a_row_outlasts_both_tokens_words():
    # 6 results may span two words: a beat's four words (two a token) take 4 beats of a row
    assert token_pairs(6, 2, 8, 576, rows=12, out=60, tokens=2, out_stride=18)
    assert token_pairs(6, 2, 4, 64, rows=12, out=60, tokens=2, out_stride=18)  # 16 kept weights: 4 beats of 4
    assert not token_pairs(6, 2, 4, 48, rows=12, out=60, tokens=2, out_stride=18)  # 12 kept: 3 beats
    # a U280 core: 100 results span up to 7 words, 14 a beat for both tokens, D = 16
    assert token_pairs(100, 8, 8, 4096, rows=300, out=0, tokens=2, out_stride=300)
    assert token_pairs(100, 8, 8, 448, rows=300, out=0, tokens=2, out_stride=300)  # 224 kept: 14 beats
    assert not token_pairs(100, 8, 8, 416, rows=300, out=0, tokens=2, out_stride=300)  # 208 kept: 13 beats


def test_chains_without_mm_mode_run_a_token_a_pass():
    """``config.mm_token_pairs`` false: no two-token passes, and no ACT reader set for token t + 1."""
    assert token_pairs(4, 2, 8, 576, rows=12, out=64, tokens=2, out_stride=12)
    assert not token_pairs(4, 2, 8, 576, rows=12, out=64, tokens=2, out_stride=12, mm=False)
    assert act_readers(4, 8) == 16 and act_readers(4, 8, mm=False) == 8
