import json

import pytest

from airfoil.cli import main
from airfoil.config import BOARDS, PRESETS, ConfigError, load_config, preset


@pytest.mark.parametrize("name", PRESETS)
def test_presets_fit_their_board(name):
    cfg = preset(name)
    spec = BOARDS[cfg.board]
    assert cfg.dsp_slices <= spec.dsp
    assert cfg.bram36_estimate <= spec.bram36
    assert cfg.macs_per_cycle == 2 * cfg.dsp_slices
    assert cfg.hbm_peak_gbps == pytest.approx(cfg.hbm_channels * cfg.hbm_channel_gbps)


def test_u280_totals_match_the_board():
    cfg = preset("u280")
    assert cfg.hbm_peak_gbps == pytest.approx(460.0)
    assert cfg.hbm_bytes_per_cycle == pytest.approx(460e9 / 225e6)
    assert cfg.dsp_slices == 3 * 72 * 16
    assert cfg.mm_token_pairs is False  # chains without MM's mode, so that the kernel fits (the device fit)


def test_yaml_round_trip(tmp_path):
    cfg = preset("vhk158", clock_mhz=300.0)
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_yaml_preset_with_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("preset: sim\nchains_per_core: 8\n")
    assert load_config(tmp_path / "c.yaml") == preset("sim", chains_per_core=8)


def test_config_is_frozen():
    with pytest.raises(Exception):
        preset("sim").cores = 2


@pytest.mark.parametrize("overrides, field", [
    ({"chains_per_core": 10_000}, "DSP"),
    ({"cores": 4}, "cores"),
    ({"hbm_channels": 33}, "hbm_channels"),
    ({"sparse_n": [3, 16]}, "sparse_n"),
    ({"weight_bits": [5]}, "weight_bits"),
    ({"quant_group_size": 24}, "quant_group_size"),
    ({"axi_data_bits": 128}, "axi_data_bits"),
    ({"clock_mhz": -1}, "clock_mhz"),
    ({"act_buffer_kib": 100_000}, "BRAM36"),
    ({"mm_token_pairs": "yes"}, "mm_token_pairs"),
])
def test_validation_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        preset("u280", **overrides)


def test_unknown_field_in_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("preset: sim\nwarp_drive: 1\n")
    with pytest.raises(ConfigError, match="warp_drive"):
        load_config(tmp_path / "c.yaml")


def test_cli_config_json(capsys):
    assert main(["config", "--board", "u280", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("dsp_slices", "macs_per_cycle", "hbm_bytes_per_cycle", "hbm_peak_gbps", "clock_mhz"):
        assert key in out
    assert out["dsp_slices"] == preset("u280").dsp_slices
    assert out["hbm_peak_gbps"] == pytest.approx(460.0)


def test_cli_config_bad_override_exits_2(capsys):
    assert main(["config", "--board", "u280", "--set", "cores=9"]) == 2
    err = capsys.readouterr().err
    assert "cores" in err and len(err.strip().splitlines()) == 1


def test_lut_estimate_is_not_below_the_synthesis_baseline():
    import json
    from pathlib import Path

    from airfoil.config import LUT_PER_DSP

    base = json.loads((Path(__file__).parents[1] / "reports" / "synth_baseline.json").read_text())["blocks"]
    assert LUT_PER_DSP >= max(b["lut_per_dsp"] for k, b in base.items() if not k.startswith("dsp_slice"))


def test_core_lut_estimate_is_not_below_the_measured_units():
    """``LUT_PER_CORE`` against the sim kernel's units other than the MV unit, LUTRAM included."""
    import json
    from pathlib import Path

    from airfoil.config import LUT_PER_CORE

    units = json.loads((Path(__file__).parents[1] / "reports" / "synth_top.json").read_text())["units"]
    assert LUT_PER_CORE >= sum(u["lut"] + u["lutram"] for name, u in units.items() if name != "mv")
