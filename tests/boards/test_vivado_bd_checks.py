"""Argument and port checks of the block-design generators (``boards/vivado_bd/``), without a
tree: the core clock (``check_core_mhz`` and every generator that takes ``core_mhz``) and the
sorting of the core's ports into interfaces."""

from __future__ import annotations

import re
from pathlib import Path

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


# -- the optional AXI4 master m_axi (the DMA engine) and card memory ---------------------------
_GOLDEN = Path(__file__).parent / "golden" / "vivado_bd_no_m_axi"
_AXIL_WIDTHS = {"AWADDR": 12, "ARADDR": 12, "WDATA": 32, "RDATA": 32, "WSTRB": 4, "BRESP": 2,
                "RRESP": 2, "AWPROT": 3, "ARPROT": 3}


def _core_ports(dma=None):
    """A port list shaped like the accelerator's (AXI4-Lite with PROT, 32-bit streams with
    TLAST), plus, with ``dma=(data_width, addr_width)``, the m_axi_* ports of a real
    :class:`~sparseforge.hdl.dma.DmaEngine` of those widths, taken from its signature."""
    P = vivado_bd.CorePort
    ports = [P("clk", "input", 1), P("rst", "input", 1),
             *[P(f"s_axil_{k.lower()}", d, _AXIL_WIDTHS.get(k, 1)) for k, d in _AXIL_SLAVE.items()],
             P("s_axis_tdata", "input", 32), P("s_axis_tvalid", "input", 1),
             P("s_axis_tready", "output", 1), P("s_axis_tlast", "input", 1),
             P("m_axis_tdata", "output", 32), P("m_axis_tvalid", "output", 1),
             P("m_axis_tready", "input", 1), P("m_axis_tlast", "output", 1),
             P("irq", "output", 1)]
    if dma is not None:
        import gc
        import warnings

        from amaranth.hdl import UnusedElaboratable
        from amaranth.lib.wiring import Flow

        from sparseforge.hdl.dma import DmaEngine
        with warnings.catch_warnings():             # only its signature is used, never elaborated
            warnings.simplefilter("ignore", UnusedElaboratable)
            engine = DmaEngine(data_width=dma[0], addr_width=dma[1])
            members = dict(engine.signature.members.items())
            del engine
            gc.collect()
        for name, member in members.items():
            if name.startswith("m_axi_"):
                width = member.shape if isinstance(member.shape, int) else member.shape.width
                ports.append(P(name, "output" if member.flow == Flow.Out else "input", width))
    return ports


def test_vivado_bd_without_m_axi_unchanged():
    """A core without m_axi_* ports gets the design of before card memory, byte for byte: the
    Tcl, the wrapper and pcie.xdc equal the files generated for the same port list before the
    change (tests/boards/golden/vivado_bd_no_m_axi, written by the code of commit fe669a4)."""
    ports = _core_ports()
    itf = vivado_bd.classify_ports(ports)
    assert itf.m_axi is None
    assert vivado_bd.block_design_tcl(itf) == (_GOLDEN / "create_bd.tcl").read_text()
    assert vivado_bd.wrapper_verilog(ports) == \
        (_GOLDEN / "accelerator_wrapper.v").read_text()
    assert vivado_bd.pcie_xdc() == (_GOLDEN / "pcie.xdc").read_text()
    assert vivado_bd.pcie_xdc(card_memory=False) == vivado_bd.pcie_xdc()
    with pytest.raises(ValueError, match="no AXI4 master m_axi"):
        itf.mem_data_width


@pytest.mark.parametrize("dw, aw", [(512, 34), (32, 32)])
def test_vivado_bd_m_axi_classified(dw, aw):
    """Every m_axi_* port of the DMA engine lands in CoreInterfaces.m_axi with its width."""
    ports = _core_ports((dw, aw))
    itf = vivado_bd.classify_ports(ports)
    names = {p.name for p in ports if p.name.startswith("m_axi_")}
    assert {p.name for p in itf.m_axi.values()} == names
    assert set(itf.m_axi) == {n[len("m_axi_"):].upper() for n in names}
    assert {"AWID", "BID", "ARID", "RID", "AWLEN", "WSTRB", "WLAST", "RLAST"} <= set(itf.m_axi)
    assert (itf.mem_data_width, itf.mem_addr_width, itf.mem_id_width) == (dw, aw, 1)
    assert itf.m_axi["WSTRB"].width == dw // 8 and itf.m_axi["AWADDR"].direction == "output"
    assert itf.m_axi["RDATA"].direction == "input" and itf.m_axi["BRESP"].width == 2


def test_vivado_bd_m_axi_port_checks():
    P = vivado_bd.CorePort
    good = _core_ports((512, 34))

    def swap(name, port):
        return [port if p.name == name else p for p in good]
    with pytest.raises(ValueError, match="'m_axi_awvalid' is an input, expected an output"):
        vivado_bd.classify_ports(swap("m_axi_awvalid", P("m_axi_awvalid", "input", 1)))
    with pytest.raises(ValueError, match="'m_axi_rdata' is an output, expected an input"):
        vivado_bd.classify_ports(swap("m_axi_rdata", P("m_axi_rdata", "output", 512)))
    for lost in ("m_axi_wlast", "m_axi_bresp", "m_axi_arlen", "m_axi_rready"):
        key = lost[len("m_axi_"):].upper()
        with pytest.raises(ValueError, match=rf"interface m_axi lacks \['{key}'\]"):
            vivado_bd.classify_ports([p for p in good if p.name != lost])
    with pytest.raises(ValueError, match="belongs to no known interface"):
        vivado_bd.classify_ports(good + [P("m_axi_awuser", "output", 4)])
    for name, width, what in (("m_axi_wstrb", 32, "must be 64 bits wide"),
                              ("m_axi_araddr", 32, "differ"),
                              ("m_axi_awlen", 4, "AXI4 says 8")):
        with pytest.raises(ValueError, match=what):
            vivado_bd.classify_ports(swap(name, P(name, "output", width)))
    with pytest.raises(ValueError, match=r"IDs must be all of"):
        vivado_bd.classify_ports([p for p in good if p.name != "m_axi_rid"])
    # IDs are optional as a set: without them the interface is ID-less (ID_WIDTH 0).
    no_ids = [p for p in good if p.name not in ("m_axi_awid", "m_axi_bid", "m_axi_arid",
                                                "m_axi_rid")]
    assert vivado_bd.classify_ports(no_ids).mem_id_width == 0
    assert "ID_WIDTH 0," in vivado_bd.wrapper_verilog(no_ids)


@pytest.mark.parametrize("dw, aw, core_range, conv", [
    (512, 34, "0x400000000", "no width conversion"),          # vcu1525 preset: all 16 GiB
    (32, 32, "0x100000000", "upsized in the SmartConnect"),   # tiny preset: the first 4 GiB
    (512, 40, "0x400000000", "no width conversion")])         # wider than the DDR4: 16 GiB
def test_vivado_bd_m_axi_tcl_widths(dw, aw, core_range, conv):
    """The core's m_axi widths reach the Tcl: its window onto card memory is 2^addr_width
    bytes, at most the 16 GiB of the DDR4 channel; the host's bypass BAR is always 16 GiB; the
    SmartConnect converts a narrow core's data to the DDR4's 512 bits; the clock converter
    crosses at the core's width."""
    itf = vivado_bd.classify_ports(_core_ports((dw, aw)))
    tcl = vivado_bd.block_design_tcl(itf, core_mhz=150).replace("\\\n", " ")
    assert re.search(r"accel_0/m_axi\]\s+-offset 0x0+ -range " + core_range + r" ", tcl)
    assert re.search(r"xdma_0/M_AXI_BYPASS\]\s+-offset 0x0+ -range 0x400000000 ", tcl)
    assert f"(S00 {dw} bits -> M00 512 bits: {conv};" in tcl
    assert f"accel_0/m_axi ({dw} b, core_clk) --> mem_cc ({dw} b)" in tcl
    assert f"the core's m_axi ({dw} bits," in tcl and f"{aw}-bit address" in tcl
    # the rest of the design is the same as without m_axi: every line of that Tcl is still here
    plain = vivado_bd.block_design_tcl(vivado_bd.classify_ports(_core_ports()), core_mhz=150)
    mem_lines = vivado_bd.block_design_tcl(itf, core_mhz=150).splitlines()
    changed = [ln for ln in plain.splitlines() if ln not in mem_lines]
    assert all(ln.startswith(("connect_bd_net", "    [get_bd_pins")) for ln in changed), changed
