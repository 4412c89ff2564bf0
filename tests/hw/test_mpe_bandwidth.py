"""Decode (MV) must consume packed weights at least as fast as the core's HBM share delivers them."""
import pytest

from airfoil.config import preset
from airfoil.hw.mpe_schedule import hbm_bytes_per_cycle_per_core, mv_weight_bytes_per_cycle

@pytest.mark.parametrize("board", ["u280", "vhk158"])
def test_mv_consumes_at_least_what_hbm_delivers(board):
    cfg = preset(board)
    delivered = hbm_bytes_per_cycle_per_core(cfg)
    short = {(b, n): round(mv_weight_bytes_per_cycle(cfg, b, n) / delivered, 3)
             for b in cfg.weight_bits for n in cfg.sparse_n if mv_weight_bytes_per_cycle(cfg, b, n) < delivered}
    assert short == {}, f"{board}: MV consumes less than HBM delivers for (bits, N): consumed/delivered {short}"


def test_mv_consumption_counts_positions_and_scales():
    cfg = preset("sim")
    slices = cfg.chains_per_core * cfg.dsp_per_chain
    assert mv_weight_bytes_per_cycle(cfg, 4, 16) == pytest.approx(2 * slices * (4 + 20 / 32) / 8)
    assert mv_weight_bytes_per_cycle(cfg, 4, 8) == pytest.approx(slices * (4 + 16 / 8 + 20 / 16) / 8)  # a 16-bit mask
    assert mv_weight_bytes_per_cycle(cfg, 4, 2) == pytest.approx(slices * (4 + 4 + 20 / 4) / 8)  # two indices
