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
