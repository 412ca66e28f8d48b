"""Argument and port checks of the block-design generators (``boards/vivado_bd/``), without a
tree: the core clock (``check_core_mhz`` and every generator that takes ``core_mhz``) and the
sorting of the core's ports into interfaces."""

from __future__ import annotations

import re

import pytest

from sparseforge.boards import flows, vivado_bd
from sparseforge.boards.vivado_bd.ports import _AXIL_SLAVE


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
