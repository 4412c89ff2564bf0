"""The performance model: its MPE costs are the MPE's beat schedule (the one the Verilator bench
measures), and whole-program figures respect the bandwidth and compute bounds."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from airfoil.compiler.compress import CompressionPlan
from airfoil.compiler.lowering import compile_model
from airfoil.compiler.model import model_spec
from airfoil.compiler.plans import plan_path
from airfoil.config import preset
from airfoil.hw.mpe_schedule import schedule
from airfoil.hw.sparse_chain import CHAIN_LATENCY, ChainMode
from airfoil.isa import Buffer, Opcode, SparsePattern, WeightWidth
from airfoil.sim.perf import REQUANT_LATENCY, OpTiming, PerfModel, RtlTiming
from tests.hw.tiles import random_tile

CFG = preset("sim")


@pytest.mark.parametrize("mode, n", [(ChainMode.MM, 16), (ChainMode.MM, 4), (ChainMode.MV, 16), (ChainMode.MV_SPARSE, 8),
                                     (ChainMode.MV_SPARSE, 2)])
def test_gemm_cycles_are_the_mpe_beat_schedule(mode, n):
    rng = np.random.default_rng(n)
    groups = CFG.dsp_groups_per_chain
    unit = math.lcm(16, 16 * 2 * groups // n)
    t = OpTiming(CFG)
    for _ in range(20):
        tokens = 1 if mode != ChainMode.MM else int(rng.integers(2, 9))
        x, w, mask = random_tile(rng, tokens, unit * int(rng.integers(1, 5)), int(rng.integers(1, 40)), n, extreme=False)
        beats, _ = schedule(x, w, mask, n, mode, CFG.chains_per_core, groups)
        f = {"tokens": tokens, "rows": w.shape[0], "k": w.shape[1], "pattern": SparsePattern.of(n),
             "width": WeightWidth.B4}
        op = Opcode.MM if mode == ChainMode.MM else Opcode.MV
        assert t.gemm(op, f) == len(beats) + CHAIN_LATENCY + REQUANT_LATENCY


def test_8_bit_beats_take_two_cycles_where_the_decoder_slices_split_them():
    """The boards' decoder slices (4 lanes of d = 16) take a beat of 8-bit codes in two cycles
    (``hw.weight_decoder.split_lanes``); the sim preset's (4 lanes of d = 4) in one, like every
    narrower code."""
    latency = CHAIN_LATENCY + REQUANT_LATENCY
    for board, eight in (("u280", 2), ("vhk158", 2), ("sim", 1)):
        t = OpTiming(preset(board))
        for op, tokens in ((Opcode.MV, 1), (Opcode.MM, 4)):
            f = {"tokens": tokens, "rows": 1000, "k": 4096, "pattern": SparsePattern.of(16)}
            cycles = {b: t.gemm(op, f | {"width": WeightWidth.of(b)}) - latency for b in (2, 3, 4, 8)}
            assert cycles[2] == cycles[3] == cycles[4] and cycles[8] == eight * cycles[4], (board, op, cycles)


def test_mm_without_the_chains_mm_mode_runs_a_token_a_pass():
    """``mm_token_pairs`` false (chains without MM's mode): an MM costs its tokens' MVs, dense
    rows two a chain, N:16 sparse ones one; with the mode, a sparse MM takes half the passes."""
    without = OpTiming(CFG.replace(mm_token_pairs=False))
    latency = CHAIN_LATENCY + REQUANT_LATENCY
    for n in (16, 4):
        f = {"tokens": 5, "rows": 37, "k": 256, "pattern": SparsePattern.of(n), "width": WeightWidth.B4}
        assert without.gemm(Opcode.MM, f) - latency == 5 * (without.gemm(Opcode.MV, f | {"tokens": 1}) - latency)
    sparse = {"tokens": 6, "rows": 37, "k": 256, "pattern": SparsePattern.of(4), "width": WeightWidth.B4}
    assert OpTiming(CFG).gemm(Opcode.MM, sparse) - latency == (without.gemm(Opcode.MM, sparse) - latency) // 2


@pytest.fixture(scope="module")
def smollm2_sim():
    spec = model_spec("smollm2")
    plan = CompressionPlan.load(plan_path("default"))
    return compile_model(spec, plan.resolve(spec), plan.group_size, CFG, 512)


def test_st_cycles_follow_the_buffer_group_stride():
    """An ST's source beats are its buffer rows: with ``buf_group_stride`` the rows step once more
    at each wrap to the first channel, so on one channel (a wrap every row) it costs what a plain
    stride of both does, and on two channels the rows' byte offsets in their words change."""
    t = RtlTiming(CFG)
    f = {"buffer": Buffer.ACT, "channel": 0, "channels": 1, "phase": 0, "hbm": 0, "buf": 3, "rows": 9,
         "row_bytes": 70, "hbm_stride": 128, "buf_stride": 80, "buf_group_stride": 13, "elem_bytes": 1}
    assert t.transfer(Opcode.ST, f) == t.transfer(Opcode.ST, f | {"buf_stride": 93, "buf_group_stride": 0})
    two = f | {"channels": 2, "buf_stride": 64}
    assert t.transfer(Opcode.ST, two | {"buf_group_stride": 0}) < t.transfer(Opcode.ST, two | {"buf_group_stride": 30})


def test_decode_respects_bandwidth_and_compute_bounds(smollm2_sim):
    pm = PerfModel(smollm2_sim)
    prev = 0
    for pos in (16, 128, 400):
        st = pm.run("decode", 1, pos)
        assert st.weight_bytes == smollm2_sim.weight_image_bytes()  # every weight tile, once per token
        assert st.cycles >= st.hbm_bytes / CFG.hbm_bytes_per_cycle  # never faster than the HBM peak
        assert st.cycles >= st.busy["MPE"] and st.cycles >= st.macs / CFG.macs_per_cycle
        assert st.cycles > prev  # a longer context costs more (KV reads, attention)
        prev = st.cycles


def test_perf_cli_projection_shows_its_arithmetic(capsys):
    from airfoil.cli import main

    assert main(["perf", "--model", "llama2-7b", "--board", "u280", "--plan", "flightllm", "--context", "512",
                 "--json"]) == 0
    r = __import__("json").loads(capsys.readouterr().out)
    hz = r["clock_mhz"] * 1e6
    seconds = r["decode_cycles"] / hz
    assert r["decode_tok_s"] == pytest.approx(1 / seconds, rel=1e-3)
    assert r["hbm_utilisation"] == pytest.approx(r["bytes_per_token"] / seconds / (r["hbm_peak_gbps"] * 1e9), rel=1e-3)
    assert 0 < r["hbm_utilisation"] < 1 and 0 < r["dsp_utilisation"] < 1
    assert r["bytes_per_token"] > 6.7e9 * 3 / 8  # at least the weights at 3 bits
    assert 3.2 < r["weight_bits_average"] < 3.8  # the plan's stand-in for FlightLLM's 3.5 bits
    assert r["prefill_ms"] > 0 and r["joules_per_token"] > 0 and r["calibrated"] is False
    tok = [c["tok_s"] for c in r["decode_by_context"]]
    assert tok == sorted(tok, reverse=True)  # longer contexts read more KV cache


def test_perf_cli_bad_context(capsys):
    from airfoil.cli import main

    assert main(["perf", "--model", "smollm2", "--board", "sim", "--context", "99999"]) == 2
    assert "--context 99999" in capsys.readouterr().err


def test_report_writes_tables_and_plots(tmp_path):
    from airfoil.host.perf_report import measure, write_report

    rows = measure(progress=lambda msg: None, runs=(("smollm2", "u280", "default"),))
    files = write_report(tmp_path, rows)
    md = (tmp_path / "performance.md").read_text()
    assert f"| {rows[0]['model']} | u280 | default |" in md and "FlightLLM, U280 (measured) | 55.0" in md
    assert f"{rows[0]['decode_cycles']:,} cycles" in md
    # the U280 kernel as built: the committed device fit's LUTs, beside the config's estimate
    fit = json.loads((Path(__file__).resolve().parents[1] / "reports" / "device_fit_u280.json").read_text())
    assert "| u280 as built (device_fit_u280.json" in md
    assert f"{fit['device']['as_built']['need']['lut']:,} / 1,303,680" in md
    for f in files:
        assert f.stat().st_size > 500, f
    assert not list(tmp_path.glob("*.partial"))
