"""VCU1525 platform (``boards/vcu1525.py``): the standalone Vivado tree of ``bitstream
--board vcu1525`` (Vivado absent, or a stand-in on PATH) and every pin of the platform.

The XDMA block design of the accelerator (and the PCIe pins) is ``test_vivado_bd.py``.
"""

from __future__ import annotations

import json
import os

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from sparseforge.boards import flows
from sparseforge.boards.vcu1525 import CPU_RESET_PIN, LED_PINS, SYSCLK_PINS, VCU1525Platform


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


# -- command line ---------------------------------------------------------------------------
def test_cli_bitstream_vcu1525(tmp_path, no_vivado, capsys):
    assert flows.main(["bitstream", "--board", "vcu1525", "--block", "compressor",
                       "--set", "max_row_len=128", "-o", str(tmp_path)]) == 0
    assert "vivado is not on PATH" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["preset"] == "vcu1525" and report["params"]["max_row_len"] == 128
