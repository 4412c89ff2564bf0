"""The MV unit's pairing rules in Python (``row_lanes`` and ``token_pairs``, which the cycle model
uses) and the lanes it builds (``lane_count``); tests/hw/test_mv_unit_verilator.py holds the RTL to
the same rules."""
from airfoil.hw.hbm_model import BEAT_BYTES
from airfoil.hw.mv_unit import lane_count, row_lanes, token_pairs


def test_lanes_pair_only_where_an_output_beat_holds_them():
    assert BEAT_BYTES == 64  # 16 INT32 results a GLOBAL word
    assert [lane_count(c) for c in (1, 4, 8, 9, 16)] == [2, 8, 16, 9, 16]


def test_dense_aligned_rows_pair():
    assert row_lanes(4, 16, out=64, tokens=1, out_stride=0) == 8
    assert row_lanes(4, 16, out=64, tokens=3, out_stride=576) == 8


def test_sparse_unaligned_or_unpairable_rows_do_not():
    assert row_lanes(4, 8, out=64, tokens=1, out_stride=0) == 4  # N:16 sparse: each row its own indices
    assert row_lanes(4, 16, out=68, tokens=1, out_stride=0) == 4  # results not on a multiple of 2C
    assert row_lanes(4, 16, out=64, tokens=2, out_stride=580) == 4  # the second token's are not
    assert row_lanes(16, 16, out=64, tokens=1, out_stride=0) == 16  # 2C results would not fit a word


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
    assert not token_pairs(16, 2, 8, 576, rows=12, out=64, tokens=2, out_stride=16)  # no high lanes to carry it
