"""The MV unit's pairing rule in Python (``row_lanes``, which the cycle model uses) and the lanes
it builds (``lane_count``); tests/hw/test_mv_unit_verilator.py holds the RTL to the same rule."""
from airfoil.hw.hbm_model import BEAT_BYTES
from airfoil.hw.mv_unit import lane_count, row_lanes


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
