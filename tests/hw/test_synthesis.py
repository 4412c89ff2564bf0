"""Yosys synth_xilinx -family xcup: one DSP48E2 per slice, and LUT/FF against the committed
baseline in reports/synth_baseline.json (2% tolerance; regenerate with `python -m airfoil.hw.synth`)."""
import json
from pathlib import Path

import pytest

from airfoil.hw.synth import measure_baseline

BASELINE = Path(__file__).resolve().parents[2] / "reports" / "synth_baseline.json"


@pytest.fixture(scope="module")
def measured():
    return measure_baseline()


def test_one_dsp48e2_per_slice(measured):
    for block, r in measured.items():
        assert r["dsp48e2"] == r["dsp_slices"], block


def test_resources_match_committed_baseline(measured):
    baseline = json.loads(BASELINE.read_text())["blocks"]
    assert set(baseline) == set(measured)
    for block, r in measured.items():
        for key in ("lut", "ff"):
            assert r[key] == pytest.approx(baseline[block][key], rel=0.02), (block, key, r[key])


TRAINING = Path(__file__).resolve().parents[2] / "reports" / "synth_training.json"


def test_shiftquant_needs_half_the_lut_equivalents_of_fp16():
    """ShiftQuant tiles vs FP16 multiply-add at 8 MACs per cycle.  Here one FP16 lane is
    synthesised and counted 8 times (the lanes are independent; the committed report
    synthesises all 8); the ShiftQuant tiles are synthesised whole."""
    from airfoil.hw.synth import lut_equivalents, measure_training_datapaths

    measured = measure_training_datapaths(fp16_lanes=1)
    committed = json.loads(TRAINING.read_text())["datapaths"]
    fp16 = measured["fp16"]
    assert fp16["dsp48e2"] == 8
    assert fp16["lut"] == pytest.approx(committed["fp16"]["lut"], rel=0.05)
    for bits in (4, 6, 8):
        sq = measured[f"shiftquant_{bits}bit"]
        assert lut_equivalents(sq) <= 0.5 * lut_equivalents(fp16), (bits, sq, fp16)
        for key in ("lut", "ff", "dsp48e2"):
            assert sq[key] == pytest.approx(committed[f"shiftquant_{bits}bit"][key], rel=0.02), (bits, key)


TOP = Path(__file__).resolve().parents[2] / "reports" / "synth_top.json"


def test_top_buffer_memories_match_the_committed_report():
    """The buffer bank's memories as elaborated are the ones the committed report lists (words,
    width, ports), each with one write port, so that block RAM can hold it."""
    from airfoil.hw.synth import sim_top_for_synthesis, buffer_memories

    got = buffer_memories(sim_top_for_synthesis().core_units()["buffers"])
    assert got == json.loads(TOP.read_text())["buffers"]
    assert all(m["write_ports"] == 1 and m["block_ram"] for m in got.values())


def test_top_report_totals_are_the_sum_of_its_units():
    report = json.loads(TOP.read_text())
    for key, total in report["total_without_buffers"].items():
        assert total == pytest.approx(sum(u[key] for u in report["units"].values())), key
        assert report["total"][key] == pytest.approx(total + report["buffer_bank"][key]), key
    assert set(report["units"]) == {"regs", "ctrl", "fetch", "ld", "st", "mv", "sfu", "hbm_rd", "hbm_wr", "fetch_rd",
                                    "results"}


@pytest.mark.slow
def test_top_units_match_the_committed_report():
    """Every unit of the sim top synthesised again (about 20 minutes here): DSP48E2 and block RAM
    exact, LUT (logic and distributed RAM) and FF within 2% of reports/synth_top.json."""
    from airfoil.hw.synth import measure_top_units

    committed = json.loads(TOP.read_text())["units"]
    for name, r in measure_top_units(progress=lambda _: None)["units"].items():
        assert r["dsp48e2"] == committed[name]["dsp48e2"] and r["bram36"] == committed[name]["bram36"], name
        for key in ("lut", "lutram", "ff"):
            assert r[key] == pytest.approx(committed[name][key], rel=0.02, abs=8), (name, key, r[key])


@pytest.mark.slow
def test_top_buffer_bank_maps_to_block_ram():
    """The buffer bank synthesised again (about 20 minutes here): every memory in block RAM (one
    RAMB36E2 column of 512 x 72 bits per 64 bits of a word, per 512 words, per read port), only
    the read multiplexers in LUTs, and the counts of reports/synth_top.json."""
    from airfoil.hw.synth import sim_top_for_synthesis, synthesize

    bank = sim_top_for_synthesis().core_units()["buffers"]
    report = json.loads(TOP.read_text())
    r = synthesize(bank, "airfoil_buffers", mapper="abc")
    expected_bram = sum(-(-m["words"] // 512) * (m["bits"] // 64) * m["read_ports"] for m in report["buffers"].values())
    assert r.bram36 == expected_bram == report["buffer_bank"]["bram36"]
    assert r.ff < 1000  # no memory mapped to flip-flops
    for key, got in (("lut", r.lut), ("ff", r.ff)):
        assert got == pytest.approx(report["buffer_bank"][key], rel=0.02, abs=8), (key, got)
