"""Vivado IP Integrator block design for the accelerator on the VCU1525 (XDMA, PCIe Gen3 x16).

:func:`write_block_design` writes, next to the standalone Vivado tree of ``make bitstream
BOARD=vcu1525 BLOCK=accelerator``, a folder ``bd/`` with

* ``accelerator.v`` -- the core as plain Verilog (``sparseforge.gen.verilog`` header, flat
  ports: ``clk``, ``rst``, ``s_axil_*``, ``s_axis_*``, ``m_axis_*``, ``irq``);
* ``accelerator_wrapper.v`` -- a thin Verilog wrapper (:func:`wrapper_verilog`) generated from
  the core's port list, with ``X_INTERFACE_INFO`` / ``X_INTERFACE_PARAMETER`` attributes so that
  IP Integrator infers the AXI4-Lite slave ``s_axil``, the AXI4-Stream slave ``s_axis`` and
  master ``m_axis``, the core clock ``clk`` (``ASSOCIATED_BUSIF s_axil:s_axis:m_axis``,
  ``FREQ_HZ`` = ``core_mhz``), the active-low reset ``aresetn``, the level-high interrupt
  ``irq`` and its clock ``irq_clk`` (the XDMA's ``axi_aclk``). The core's reset is Amaranth's
  active-high synchronous ``rst``: the wrapper registers ``~aresetn`` into it; the core's
  ``irq`` crosses into ``irq_clk`` through a register and a two-flop synchronizer;
* ``create_bd.tcl`` (:func:`block_design_tcl`) -- project for xcvu9p-fsgd2104-2L-e, the two
  Verilog files, a block design with the XDMA (PCIe Gen3 x16, AXI4-Stream, one H2C and one C2H
  channel, AXI4-Lite master BAR), a ``util_ds_buf`` IBUFDSGTE on the PCIe reference clock,
  the core clock domain (``clk_wiz`` ``core_clk`` at ``core_mhz`` from ``axi_aclk``,
  ``proc_sys_reset``), AXI4-Stream width converters (512 <-> 32 bits) and clock converters
  (32 bits, ``axi_aclk`` <-> ``core_clk``), an ``axi_clock_converter`` and a SmartConnect for
  the AXI4-Lite BAR, the wrapper as a module reference, then ``validate_bd_design``,
  ``make_wrapper`` and synthesis, implementation and ``write_bitstream`` (``-tclargs bd_only``
  stops after the block design);
* ``pcie.xdc`` (:func:`pcie_xdc`) -- the PCIe reference clock (``create_clock``, 100 MHz),
  PERST# and the 16 lanes from :mod:`sparseforge.boards.vcu1525`, plus the configuration
  settings every VCU1525 design carries;
* ``cdc.xdc`` (:func:`cdc_xdc`) -- the one hand-written clock-domain crossing (the wrapper's
  interrupt synchronizer): ``set_max_delay -datapath_only``, implementation only. The clock
  converters carry their own constraints and ``core_clk`` is derived by the ``clk_wiz``;
* ``build_bd.sh`` (``vivado -mode batch -source create_bd.tcl``) and ``README``.

Public examples this follows (cited again next to the lines they shaped):

* firesim/firesim, ``platforms/xilinx_alveo_u200/cl_firesim/scripts/create_bd_2022.1.tcl`` --
  XDMA block design on the Alveo U200 (same xcvu9p die and fsgd2104 package as the VCU1525):
  ``util_ds_buf`` ``IBUF_DS_ODIV2 -> xdma_0/sys_clk``, ``IBUF_OUT -> xdma_0/sys_clk_gt``,
  ``pcie_perstn -> xdma_0/sys_rst_n``, ``xdma_0/pcie_mgt`` to an external
  ``pcie_7x_mgt_rtl`` port, a module reference created with ``create_bd_cell -type module
  -reference``; its ``design/firesim_wrapper.v`` is a module-reference wrapper with
  ``X_INTERFACE_INFO`` / ``X_INTERFACE_PARAMETER`` on every AXI port.
* Xilinx/XilinxBoardStore, ``boards/Xilinx/vcu1525/1.4/preset.xml`` (``pciex16_preset``):
  XDMA ``pl_link_cap_max_link_width X16``, ``pl_link_cap_max_link_speed 8.0_GT/s``,
  ``mode_selection Advanced``, ``en_gt_selection true``, ``select_quad GTY_Quad_227``;
  ``pcie_refclk_preset``: ``util_ds_buf`` ``C_BUF_TYPE IBUFDSGTE``.
* AMD PG195 (DMA/Bridge Subsystem for PCI Express): with the AXI4-Lite master enabled it is BAR0
  and the DMA registers are BAR1; ``usr_irq_req`` must stay asserted until the interrupt is
  serviced (the core's ``irq`` is such a level).
* Public XDMA AXI4-Stream block designs connecting ``xdma_0/M_AXIS_H2C_0``,
  ``xdma_0/S_AXIS_C2H_0`` and ``xdma_0/M_AXI_LITE`` (SmartConnect ``S00_AXI``), and the
  ``axis_dwidth_converter`` parameters ``S_TDATA_NUM_BYTES`` / ``M_TDATA_NUM_BYTES`` /
  ``HAS_TLAST`` / ``HAS_TKEEP`` as used with a 512-bit XDMA stream.
* firesim's U200 design again for the second clock domain: ``xdma_0/M_AXI_LITE`` ->
  ``axi_clock_converter`` (``s_axi_aclk`` = ``axi_aclk``, ``m_axi_aclk`` = the ``clk_wiz``
  output) and a ``proc_sys_reset`` on the ``clk_wiz`` clock; public block designs for the
  ``clk_wiz`` parameters (``PRIM_SOURCE No_buffer``, ``RESET_TYPE ACTIVE_LOW``, ``RESET_PORT
  resetn``, ``CLK_OUT1_PORT``) and the ``axis_clock_converter`` ports and parameters
  (``s_axis_aclk`` / ``m_axis_aclk``, ``TDATA_NUM_BYTES``, ``HAS_TLAST``, ``HAS_TKEEP``).

Nothing here has been run through Vivado: the tests check the Tcl textually and by sourcing it in
a plain Tcl interpreter with every Vivado command stubbed, and compile the wrapper plus the core
with Icarus Verilog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sparseforge.boards.vcu1525 import (CONFIG_CONSTRAINTS, PCIE_GT_QUAD, PCIE_PERST_IOSTANDARD,
                                        PCIE_PERST_PIN, PCIE_REFCLK_HZ, PCIE_REFCLK_PINS,
                                        PCIE_RX_PINS, PCIE_TX_PINS, VCU1525Platform)

__all__ = ["CorePort", "CoreInterfaces", "PART", "CORE_MODULE", "WRAPPER_MODULE", "BD_NAME",
           "PROJECT_NAME", "CORE_CELL", "BITSTREAM_NAME", "AXI_CLK_HZ", "CORE_MHZ_DEFAULT",
           "CORE_MHZ_MIN", "CORE_MHZ_MAX", "CORE_CLK", "XDMA_STREAM_BYTES", "XDMA_CONFIG",
           "AXIL_BAR_BYTES", "BD_FILES", "check_core_mhz", "parse_verilog_ports",
           "classify_ports", "wrapper_verilog", "block_design_tcl", "pcie_xdc", "cdc_xdc",
           "build_script", "write_block_design"]

#: The VCU1525's part (the same string the standalone tree uses).
PART = (f"{VCU1525Platform.device}-{VCU1525Platform.package}-{VCU1525Platform.speed}")
#: Module name of the generated core and of its wrapper (the module reference).
CORE_MODULE = "accelerator"
WRAPPER_MODULE = "accelerator_wrapper"
#: Vivado project / block design / module-reference cell names used by ``create_bd.tcl``.
PROJECT_NAME = "sparseforge_vcu1525"
BD_NAME = "sparseforge_bd"
CORE_CELL = "accel_0"
#: The bitstream ``create_bd.tcl`` copies next to itself.
BITSTREAM_NAME = "sparseforge_vcu1525.bit"
#: Files :func:`write_block_design` writes.
BD_FILES = ("accelerator.v", "accelerator_wrapper.v", "create_bd.tcl", "pcie.xdc", "cdc.xdc",
            "build_bd.sh", "README")

#: XDMA ``axi_aclk`` for PCIe Gen3 x16 with the 512-bit user interface (``axisten_freq 250``):
#: the clock of the XDMA's AXI ports, the width converters, the ``usr_irq_req`` synchronizer and
#: the ``clk_wiz`` input. The core does not run on it (it closes timing nearer 100 MHz: 104 MHz
#: on the ECP5; unmeasured on the xcvu9p) but on ``core_clk``.
AXI_CLK_HZ = 250_000_000
#: The core's own clock (``clk_wiz`` output port name) and its frequency in MHz: default, limits.
#: Whole MHz only, so that the ``clk_wiz`` output and the wrapper's ``FREQ_HZ`` can agree exactly
#: (IP Integrator rejects a ``FREQ_HZ`` mismatch): every whole MHz from 10 to 250 has an exact
#: MMCME4 setting from 250 MHz (VCO 800..1600 MHz, CLKFBOUT_MULT_F and CLKOUT0_DIVIDE_F in 1/8
#: steps; 100, 125, 150, 160, 175, 200 ... with an integer multiplier, some odd values above
#: 128 MHz only with a fractional one). Whether ``clk_wiz`` picks an exact one is checked by
#: ``create_bd.tcl`` before ``validate_bd_design``.
CORE_CLK = "core_clk"
CORE_MHZ_DEFAULT = 125
CORE_MHZ_MIN = 10
CORE_MHZ_MAX = AXI_CLK_HZ // 1_000_000
#: Bytes per beat of the XDMA's AXI4-Stream channels at Gen3 x16 (``axi_data_width 512_bit``).
XDMA_STREAM_BYTES = 64
#: Size of the AXI4-Lite master BAR (BAR0 when the AXI-Lite master is enabled): 1 MiB; the
#: core's register window (4 KiB) sits at AXI address 0, the rest answers DECERR.
AXIL_BAR_BYTES = 1 << 20

#: XDMA configuration, in the order ``create_bd.tcl`` sets it. Sources: the Xilinx VCU1525
#: board preset (link, mode, GT quad) and public XDMA AXI4-Stream designs (the rest).
XDMA_CONFIG = (
    ("mode_selection", "Advanced"),
    ("pl_link_cap_max_link_width", "X16"),
    ("pl_link_cap_max_link_speed", "8.0_GT/s"),
    ("ref_clk_freq", "100_MHz"),
    ("en_gt_selection", "true"),
    ("select_quad", PCIE_GT_QUAD),
    ("axi_data_width", f"{8 * XDMA_STREAM_BYTES}_bit"),
    ("axisten_freq", str(AXI_CLK_HZ // 1_000_000)),
    ("xdma_axi_intf_mm", "AXI_Stream"),
    ("xdma_rnum_chnl", "1"),
    ("xdma_wnum_chnl", "1"),
    ("axilite_master_en", "true"),
    ("axilite_master_size", str(AXIL_BAR_BYTES >> 20)),
    ("axilite_master_scale", "Megabytes"),
    ("pciebar2axibar_axil_master", "0x00000000"),
    ("xdma_num_usr_irq", "1"),
)

# AXI4-Lite slave channel signals (logical names of xilinx.com:interface:aximm:1.0) with the
# direction seen from the slave; PROT is optional.
_AXIL_SLAVE = {
    "AWADDR": "input", "AWPROT": "input", "AWVALID": "input", "AWREADY": "output",
    "WDATA": "input", "WSTRB": "input", "WVALID": "input", "WREADY": "output",
    "BRESP": "output", "BVALID": "output", "BREADY": "input",
    "ARADDR": "input", "ARPROT": "input", "ARVALID": "input", "ARREADY": "output",
    "RDATA": "output", "RRESP": "output", "RVALID": "output", "RREADY": "input",
}
_AXIL_OPTIONAL = {"AWPROT", "ARPROT"}
# AXI4-Stream signals (xilinx.com:interface:axis:1.0), direction seen from a slave.
_AXIS_SLAVE = {"TDATA": "input", "TVALID": "input", "TREADY": "output", "TLAST": "input",
               "TKEEP": "input"}
_AXIS_REQUIRED = {"TDATA", "TVALID", "TREADY"}


@dataclass(frozen=True)
class CorePort:
    """One port of the generated core: ``direction`` is ``"input"`` or ``"output"``."""
    name: str
    direction: str
    width: int

    @property
    def decl(self) -> str:
        """``[w-1:0] `` (with the trailing blank) or ``""`` for one bit."""
        return f"[{self.width - 1}:0] " if self.width > 1 else ""


@dataclass
class CoreInterfaces:
    """The core's ports sorted into the interfaces the wrapper declares."""
    clk: CorePort
    rst: CorePort
    irq: CorePort
    s_axil: dict      # logical name (AWADDR, ...) -> CorePort
    s_axis: dict      # logical name (TDATA, ...) -> CorePort
    m_axis: dict

    @property
    def axil_addr_width(self) -> int:
        return self.s_axil["AWADDR"].width

    @property
    def axil_data_width(self) -> int:
        return self.s_axil["WDATA"].width


def check_core_mhz(value) -> int:
    """``value`` as the core clock in whole MHz, or ``ValueError`` (outside 10..250, not whole).

    Accepts an int, an integral float or a numeric string (the command line's ``--core-mhz``).
    """
    if isinstance(value, bool):
        raise ValueError(f"core_mhz must be a number of MHz, not {value!r}")
    try:
        mhz = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"core_mhz must be a number of MHz, not {value!r}") from None
    if not (CORE_MHZ_MIN <= mhz <= CORE_MHZ_MAX):
        raise ValueError(f"core_mhz must be between {CORE_MHZ_MIN} and {CORE_MHZ_MAX} MHz (the "
                         f"core clock comes from the {CORE_MHZ_MAX} MHz axi_aclk), not {value!r}")
    if mhz != int(mhz):
        raise ValueError(f"core_mhz must be a whole number of MHz (so that the clk_wiz output "
                         f"and the wrapper's FREQ_HZ agree exactly), not {value!r}")
    return int(mhz)


# -- port list ---------------------------------------------------------------------------------
_DECL = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                   r"(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?(\\\S+|[A-Za-z_][\w$]*)\s*;", re.M)


def parse_verilog_ports(text: str, module: str = CORE_MODULE) -> list[CorePort]:
    """Ports of ``module`` in Verilog ``text`` (non-ANSI header, as Yosys writes it), in the order
    of the module header."""
    head = re.search(r"^module\s+" + re.escape(module) + r"\s*\(([^;]*)\)\s*;", text, re.M)
    if head is None:
        raise ValueError(f"module {module!r} not found")
    order = [n.strip() for n in head.group(1).replace("\n", " ").split(",") if n.strip()]
    end = text.find("\nendmodule", head.end())
    body = text[head.end():end if end >= 0 else len(text)]
    decls = {}
    for m in _DECL.finditer(body):
        direction, msb, lsb, name = m.groups()
        if direction == "inout":
            raise ValueError(f"inout port {name!r} is not supported")
        width = abs(int(msb) - int(lsb)) + 1 if msb is not None else 1
        decls.setdefault(name.strip(), CorePort(name.strip(), direction, width))
    missing = [n for n in order if n not in decls]
    if missing:
        raise ValueError(f"no direction found for port(s) {missing} of {module!r}")
    return [decls[n] for n in order]


def classify_ports(ports: list[CorePort]) -> CoreInterfaces:
    """Sort the core's ports into clock, reset, interrupt, AXI4-Lite and AXI4-Stream interfaces.

    ``ValueError`` for a port that fits none of them, a wrong direction or a missing required
    signal, so that a change of the core's ports shows up here instead of in Vivado.
    """
    by_name = {p.name: p for p in ports}
    single = {}
    for name, direction in (("clk", "input"), ("rst", "input"), ("irq", "output")):
        p = by_name.get(name)
        if p is None or p.direction != direction or p.width != 1:
            raise ValueError(f"the core needs a one-bit {direction} {name!r}, got {p}")
        single[name] = p
    groups = {"s_axil": {}, "s_axis": {}, "m_axis": {}}
    for p in ports:
        if p.name in single:
            continue
        prefix, _, sig = p.name.rpartition("_")
        if prefix == "s_axil" and sig.upper() in _AXIL_SLAVE:
            want = _AXIL_SLAVE[sig.upper()]
        elif prefix in ("s_axis", "m_axis") and sig.upper() in _AXIS_SLAVE:
            want = _AXIS_SLAVE[sig.upper()]
            if prefix == "m_axis":
                want = "output" if want == "input" else "input"
        else:
            raise ValueError(f"port {p.name!r} belongs to no known interface (clk, rst, irq, "
                             f"s_axil_*, s_axis_t*, m_axis_t*)")
        if p.direction != want:
            raise ValueError(f"port {p.name!r} is an {p.direction}, expected an {want}")
        groups[prefix][sig.upper()] = p
    for need, names in (("s_axil", set(_AXIL_SLAVE) - _AXIL_OPTIONAL),
                        ("s_axis", _AXIS_REQUIRED), ("m_axis", _AXIS_REQUIRED)):
        lost = sorted(names - set(groups[need]))
        if lost:
            raise ValueError(f"interface {need} lacks {lost}")
    return CoreInterfaces(clk=single["clk"], rst=single["rst"], irq=single["irq"], **groups)


# -- wrapper -----------------------------------------------------------------------------------
def _attr(kind: str, value: str) -> str:
    return f'(* {kind} = "{value}" *)'


def wrapper_verilog(ports: list[CorePort], *, core: str = CORE_MODULE,
                    wrapper: str = WRAPPER_MODULE, clk_hz: int = CORE_MHZ_DEFAULT * 1_000_000,
                    irq_clk_hz: int = AXI_CLK_HZ) -> str:
    """Verilog of the module-reference wrapper around ``core``.

    ``ports``: the core's ports, from :func:`parse_verilog_ports`. ``clk_hz``: ``FREQ_HZ`` of the
    core clock ``clk`` and of its three bus interfaces (``core_clk``, ``core_mhz`` * 1e6);
    ``irq_clk_hz``: ``FREQ_HZ`` of ``irq_clk`` (the XDMA's ``axi_aclk``).

    Interrupt: the core's ``irq`` (a level in ``clk``) is registered once in ``clk`` (``irq_src``,
    so no combinational glitch reaches the crossing), then passes two ``ASYNC_REG`` flip-flops
    clocked by ``irq_clk`` (``irq_meta``, ``irq_sync``); the wrapper's ``irq`` output is
    ``irq_sync``. It stays a level, as ``usr_irq_req`` must (held until the host clears
    IRQ_STATUS), two to three ``irq_clk`` cycles behind the core. :func:`cdc_xdc` constrains the
    ``irq_src`` -> ``irq_meta`` path.

    Interface inference follows Vivado's ``X_INTERFACE_INFO`` language templates (the same form
    as firesim's ``firesim_wrapper.v`` for the Alveo U200): one ``X_INTERFACE_INFO`` per physical
    port, one ``X_INTERFACE_PARAMETER`` on the first port of each interface. Every core port is
    connected; the wrapper adds ``aresetn`` (registered and inverted into ``rst``) and, when the
    core has no TKEEP of its own, ``m_axis_tkeep`` (all ones: every beat the core sends is a full
    word) and ``s_axis_tkeep``: a word whose TKEEP is all zero (a null word the 512 -> 32-bit H2C
    converter may emit for a partial last beat) is accepted and dropped, so the core only sees
    words the host sent; host transfers must be a whole number of 32-bit words. The core's
    packets are word-counted, so a TLAST on such a dropped word only matters to its error
    recovery (discard up to the next TLAST).
    """
    itf = classify_ports(ports)
    decls: list[list[str]] = []     # each: attribute lines + the declaration (without comma)

    def port(direction, width, name, info, param=None):
        lines = [_attr("X_INTERFACE_INFO", info)] if info else []
        if param:
            lines.append(_attr("X_INTERFACE_PARAMETER", param))
        rng = f"[{width - 1}:0] " if width > 1 else ""
        lines.append(f"{direction} wire {rng}{name}")
        decls.append(lines)

    port("input", 1, "clk", "xilinx.com:signal:clock:1.0 clk CLK",
         f"XIL_INTERFACENAME clk, ASSOCIATED_BUSIF s_axil:s_axis:m_axis, "
         f"ASSOCIATED_RESET aresetn, FREQ_HZ {clk_hz}")
    port("input", 1, "aresetn", "xilinx.com:signal:reset:1.0 aresetn RST",
         "XIL_INTERFACENAME aresetn, POLARITY ACTIVE_LOW")

    axil_param = (f"XIL_INTERFACENAME s_axil, PROTOCOL AXI4LITE, DATA_WIDTH {itf.axil_data_width}, "
                  f"ADDR_WIDTH {itf.axil_addr_width}, HAS_PROT "
                  f"{int('AWPROT' in itf.s_axil and 'ARPROT' in itf.s_axil)}, HAS_WSTRB 1, "
                  f"HAS_BRESP 1, HAS_RRESP 1, READ_WRITE_MODE READ_WRITE, "
                  f"NUM_READ_OUTSTANDING 1, NUM_WRITE_OUTSTANDING 1, MAX_BURST_LENGTH 1, "
                  f"SUPPORTS_NARROW_BURST 0, FREQ_HZ {clk_hz}")
    first = True
    for logical in _AXIL_SLAVE:
        p = itf.s_axil.get(logical)
        if p is None:
            continue
        port(p.direction, p.width, p.name, f"xilinx.com:interface:aximm:1.0 s_axil {logical}",
             axil_param if first else None)
        first = False

    extra_assigns = []
    rename = {}                     # core port -> expression the instance connects it to
    for name, sigs in (("s_axis", itf.s_axis), ("m_axis", itf.m_axis)):
        nbytes = (sigs["TDATA"].width + 7) // 8
        param = (f"XIL_INTERFACENAME {name}, TDATA_NUM_BYTES {nbytes}, HAS_TLAST "
                 f"{int('TLAST' in sigs)}, HAS_TKEEP 1, HAS_TSTRB 0, HAS_TREADY 1, TUSER_WIDTH 0, "
                 f"TID_WIDTH 0, TDEST_WIDTH 0, FREQ_HZ {clk_hz}")
        first = True
        for logical in ("TDATA", "TVALID", "TREADY", "TLAST", "TKEEP"):
            p = sigs.get(logical)
            if p is None and logical == "TKEEP":       # the wrapper adds it
                direction = "input" if name == "s_axis" else "output"
                p = CorePort(f"{name}_tkeep", direction, nbytes)
                if name == "m_axis":
                    extra_assigns.append(f"  assign {p.name} = {{{nbytes}{{1'b1}}}};"
                                         f"   // every beat is a full word")
                else:           # drop null words (all TKEEP bits low) before the core
                    valid, ready = sigs["TVALID"].name, sigs["TREADY"].name
                    extra_assigns += [
                        "  // A word with no byte kept (a null word of a partial last beat) is",
                        "  // accepted here and never reaches the core.",
                        f"  wire {name}_kept = |{p.name};",
                        f"  wire core_{ready};",
                        f"  assign {ready} = core_{ready} | ~{name}_kept;", ""]
                    rename[valid] = f"{valid} & {name}_kept"
                    rename[ready] = f"core_{ready}"
            if p is None:
                continue
            port(p.direction, p.width, p.name, f"xilinx.com:interface:axis:1.0 {name} {logical}",
                 param if first else None)
            first = False

    port("output", 1, itf.irq.name, "xilinx.com:signal:interrupt:1.0 irq INTERRUPT",
         "XIL_INTERFACENAME irq, SENSITIVITY LEVEL_HIGH, PortWidth 1")
    port("input", 1, "irq_clk", "xilinx.com:signal:clock:1.0 irq_clk CLK",
         f"XIL_INTERFACENAME irq_clk, FREQ_HZ {irq_clk_hz}")

    lines = [f"// {wrapper}: generated by sparseforge.boards.vivado_bd -- do not edit",
             f"// Module-reference wrapper of `{core}` for the VCU1525 XDMA block design "
             f"(create_bd.tcl).",
             "// X_INTERFACE_INFO / X_INTERFACE_PARAMETER let IP Integrator infer: s_axil "
             "(AXI4-Lite slave),",
             "// s_axis / m_axis (AXI4-Stream), clk (ASSOCIATED_BUSIF s_axil:s_axis:m_axis, "
             f"FREQ_HZ {clk_hz}), aresetn,",
             f"// irq (level, synchronous to irq_clk = the XDMA's axi_aclk, FREQ_HZ {irq_clk_hz}).",
             "`timescale 1ns / 1ps",
             "`default_nettype none",
             f"module {wrapper} ("]
    for k, group in enumerate(decls):
        comma = "," if k < len(decls) - 1 else ""
        lines += [f"  {line}" for line in group[:-1]]
        lines.append(f"  {group[-1]}{comma}")
    lines += [");",
              "",
              "  // The core's reset is Amaranth's active-high synchronous `rst`; aresetn",
              "  // (core_rst/peripheral_aresetn) is active low, synchronous to clk. One register.",
              "  reg rst_q = 1'b1;",
              "  always @(posedge clk) rst_q <= ~aresetn;",
              ""]
    lines += extra_assigns
    if extra_assigns and extra_assigns[-1]:
        lines.append("")
    irq = itf.irq.name
    lines += [
        "  // Interrupt crossing clk (core) -> irq_clk (axi_aclk, usr_irq_req): one register in",
        "  // clk (no combinational logic ahead of the crossing), two ASYNC_REG flops in irq_clk.",
        "  // Still a level (held until the host clears IRQ_STATUS), 2..3 irq_clk cycles later.",
        "  // cdc.xdc bounds irq_src -> irq_meta with set_max_delay -datapath_only.",
        f"  wire core_{irq};",
        "  reg irq_src = 1'b0;",
        f"  always @(posedge clk) irq_src <= core_{irq};",
        "  (* ASYNC_REG = \"TRUE\" *) reg irq_meta = 1'b0;",
        "  (* ASYNC_REG = \"TRUE\" *) reg irq_sync = 1'b0;",
        "  always @(posedge irq_clk) begin",
        "    irq_meta <= irq_src;",
        "    irq_sync <= irq_meta;",
        "  end",
        f"  assign {irq} = irq_sync;",
        ""]
    conns = []
    rename[itf.rst.name] = "rst_q"
    rename[irq] = f"core_{irq}"
    for p in ports:
        conns.append(f"    .{p.name}({rename.get(p.name, p.name)})")
    lines.append(f"  {core} core (")
    lines.append(",\n".join(conns))
    lines += ["  );", "", "endmodule", "`default_nettype wire", ""]
    return "\n".join(lines)


# -- constraints ---------------------------------------------------------------------------------
def pcie_xdc(*, lanes: int = 16) -> str:
    """XDC for the block design's top: PCIe reference clock, PERST#, lanes, configuration.

    Port names are those ``make_wrapper`` gives the block design's external ports:
    ``pcie_refclk`` (``diff_clock_rtl``) -> ``pcie_refclk_clk_p/n``, ``pcie_mgt``
    (``pcie_7x_mgt_rtl``) -> ``pcie_mgt_rxp/rxn/txp/txn[lanes-1:0]``, ``pcie_perstn``.
    """
    p, n = PCIE_REFCLK_PINS
    period = 1e9 / PCIE_REFCLK_HZ
    out = [
        "# VCU1525 (xcvu9p-fsgd2104-2L-e) PCIe constraints for the sparseforge XDMA block design.",
        "# Generated by sparseforge.boards.vivado_bd -- do not edit.",
        "# Pins (all four sources agree):",
        "#   corundum/corundum fpga/mqnic/VCU1525/fpga_100g/fpga.xdc: pcie_refclk_p AM11 "
        "(MGTREFCLK0P_226),",
        "#     pcie_refclk_n AM10, pcie_reset_n BD21 (LVCMOS12, PULLUP true),",
        "#     pcie_rx_p/tx_p[0..15];",
        "#   Xilinx/XilinxBoardStore boards/Xilinx/vcu1525/1.4/part0_pins.xml: pcie_mgt_clkp AM11,",
        "#     pcie_mgt_clkn AM10, pcie_perstn_rst BD21 (LVCMOS12), pcie_rx{i}_p / pcie_tx{i}_p;",
        "#   litex-hub/litex-boards litex_boards/platforms/sqrl_xcu1525.py and",
        "#     xilinx_alveo_u200.py:",
        "#     pcie_x16 rst_n BD21, clk_p AM11 / clk_n AM10, the same rx/tx pairs.",
        "",
        "# Configuration (as every VCU1525 build of this project)",
        *CONFIG_CONSTRAINTS,
        "",
        "# 100 MHz PCIe reference clock from the edge connector (IBUFDS_GTE4 in util_ds_buf)",
        f"set_property PACKAGE_PIN {p} [get_ports pcie_refclk_clk_p]",
        f"set_property PACKAGE_PIN {n} [get_ports pcie_refclk_clk_n]",
        f"create_clock -name pcie_refclk -period {period:.3f} [get_ports pcie_refclk_clk_p]",
        "",
        "# PERST# (active low, asynchronous to everything in the design)",
        f"set_property PACKAGE_PIN {PCIE_PERST_PIN} [get_ports pcie_perstn]",
        f"set_property IOSTANDARD {PCIE_PERST_IOSTANDARD} [get_ports pcie_perstn]",
        "set_property PULLUP true [get_ports pcie_perstn]",
        "set_false_path -from [get_ports pcie_perstn]",
        "",
        f"# Lanes 0..{lanes - 1} (GT quads 227..224; the XDMA's select_quad {PCIE_GT_QUAD} places",
        "# lane 0 in quad 227). Only the P side is constrained, as in the corundum XDC.",
    ]
    for i in range(lanes):
        for side, pins in (("rxp", PCIE_RX_PINS), ("txp", PCIE_TX_PINS)):
            port = f"{{pcie_mgt_{side}[{i}]}}"
            out.append(f"set_property PACKAGE_PIN {pins[i][0]} [get_ports {port}]")
    return "\n".join(out) + "\n"


def cdc_xdc(*, core_mhz: int = CORE_MHZ_DEFAULT) -> str:
    """XDC for the one hand-written clock-domain crossing: the wrapper's interrupt synchronizer.

    ``core_clk`` comes from an MMCM fed by ``axi_aclk``, so Vivado sees two *related* clocks and
    would time ``irq_src`` (``core_clk``) -> ``irq_meta`` (``axi_aclk``) at their closest edge
    pair (a fraction of a nanosecond for some ratios). The synchronizer makes that requirement
    meaningless: the path gets ``set_max_delay -datapath_only`` of one ``axi_aclk`` period
    instead (bounded, not cut). ``create_bd.tcl`` reads this file in implementation only
    (``USED_IN_SYNTHESIS false``). The clock converters' crossings and ``proc_sys_reset``'s
    reset synchronizer carry their own constraints, and ``core_clk`` itself is derived by
    Vivado from the ``clk_wiz``: no ``create_clock`` here.
    """
    check_core_mhz(core_mhz)
    period = 1e9 / AXI_CLK_HZ
    cell = f"*{CORE_CELL}/*"
    return "\n".join([
        "# Hand-written clock-domain crossings of the sparseforge VCU1525 block design.",
        "# Generated by sparseforge.boards.vivado_bd -- do not edit. Implementation only",
        "# (create_bd.tcl: USED_IN_SYNTHESIS false).",
        "#",
        f"# Clocks: axi_aclk ({AXI_CLK_HZ // 1_000_000} MHz, XDMA) and {CORE_CLK} ({core_mhz} MHz, "
        f"core_clk_wiz from axi_aclk;",
        "# Vivado derives it from the MMCM). Being derived from axi_aclk, core_clk is a related",
        "# clock: every path between the two would be timed at the closest edge pair. The clock",
        "# converters (axi_clock_converter, axis_clock_converter) and proc_sys_reset constrain",
        "# their own crossings; the only hand-written one is the interrupt synchronizer in",
        f"# {WRAPPER_MODULE}:",
        f"#   {CORE_CELL} irq_src ({CORE_CLK}) -> irq_meta -> irq_sync (axi_aclk) -> "
        f"xdma_0/usr_irq_req",
        "# The interrupt is a level held until the host clears it: bound the first hop's data path",
        "# to one axi_aclk period instead of timing it as a synchronous path.",
        f"set_max_delay -datapath_only -from [get_cells -hierarchical -filter "
        f"{{NAME =~ {cell}irq_src_reg}}] -to [get_cells -hierarchical -filter "
        f"{{NAME =~ {cell}irq_meta_reg}}] {period:.3f}",
        ""])


# -- Tcl ---------------------------------------------------------------------------------------
def block_design_tcl(itf: CoreInterfaces, *, core_mhz: int = CORE_MHZ_DEFAULT,
                     core_file: str = f"{CORE_MODULE}.v",
                     wrapper_file: str = f"{WRAPPER_MODULE}.v", xdc_file: str = "pcie.xdc",
                     cdc_file: str = "cdc.xdc", jobs: int = 8) -> str:
    """``create_bd.tcl``: project, block design, wrapper, synthesis ... ``write_bitstream``.

    ``core_mhz``: frequency of ``core_clk``, the accelerator's clock (:func:`check_core_mhz`).
    Run from its folder: ``vivado -mode batch -source create_bd.tcl`` (full flow) or ``...
    -tclargs bd_only`` (stop after ``validate_bd_design`` and ``make_wrapper``). The number of
    parallel jobs comes from ``$SF_VIVADO_JOBS`` (default ``jobs``).
    """
    core_mhz = check_core_mhz(core_mhz)
    axi_mhz = AXI_CLK_HZ // 1_000_000
    stream_bytes = (itf.s_axis["TDATA"].width + 7) // 8
    out_bytes = (itf.m_axis["TDATA"].width + 7) // 8
    core_window = 1 << itf.axil_addr_width
    xdma_dict = " \\\n".join(f"    CONFIG.{k} {{{v}}}" for k, v in XDMA_CONFIG)
    return f"""\
# create_bd.tcl: Vivado IP Integrator block design for the sparseforge accelerator on the
# Xilinx VCU1525 ({PART}). Generated by sparseforge.boards.vivado_bd -- do not edit.
#
#                          axi_aclk ({axi_mhz} MHz)            |  {CORE_CLK} ({core_mhz} MHz)
#   PCIe Gen3 x16 --> XDMA --M_AXI_LITE (BAR0)---> axil_cc ---> SmartConnect --> {CORE_CELL}/s_axil
#                      |   --M_AXIS_H2C_0 (512 b)--> dwidth --> h2c_cc --> {CORE_CELL}/s_axis (32 b)
#                      |   <-S_AXIS_C2H_0 (512 b)--  dwidth <-- c2h_cc <-- {CORE_CELL}/m_axis (32 b)
#                      |   <-usr_irq_req[0]-- 2-flop sync in the wrapper <-- {CORE_CELL} irq
#                      +-- axi_aclk --> core_clk_wiz (MMCM) --> {CORE_CLK} --> {CORE_CELL}/clk
#                      +-- axi_aresetn --> core_rst (proc_sys_reset) --> {CORE_CELL}/aresetn
#
# Run (from this folder):  vivado -mode batch -source create_bd.tcl
#          block design only:  vivado -mode batch -source create_bd.tcl -tclargs bd_only
#
# Sources followed (public examples; nothing here was run through Vivado when it was generated):
#   firesim/firesim platforms/xilinx_alveo_u200/cl_firesim/scripts/create_bd_2022.1.tcl
#     (U200 = same xcvu9p die and package): util_ds_buf IBUF_DS_ODIV2 -> xdma sys_clk,
#     IBUF_OUT -> sys_clk_gt, PERST# -> sys_rst_n, pcie_mgt external, module reference;
#   Xilinx/XilinxBoardStore boards/Xilinx/vcu1525/1.4/preset.xml (pciex16_preset: X16, 8.0_GT/s,
#     Advanced, en_gt_selection, select_quad {PCIE_GT_QUAD}; pcie_refclk_preset: IBUFDSGTE);
#   public XDMA AXI4-Stream designs: xdma_0/M_AXIS_H2C_0, xdma_0/S_AXIS_C2H_0, xdma_0/M_AXI_LITE;
#   firesim's U200 design for the second clock domain (xdma_0/M_AXI_LITE -> axi_clock_converter,
#     clk_wiz + proc_sys_reset); public designs for the clk_wiz and axis_clock_converter settings.
# IP VLNVs carry no version: Vivado picks the one installed.

set script_dir [file dirname [file normalize [info script]]]
set bd_only [expr {{[info exists ::argv] && [lsearch -exact $::argv bd_only] >= 0}}]
set jobs {jobs}
if {{[info exists ::env(SF_VIVADO_JOBS)]}} {{ set jobs $::env(SF_VIVADO_JOBS) }}

# -- project and sources -----------------------------------------------------------------------
create_project -force {PROJECT_NAME} [file join $script_dir vivado] -part {PART}
set_property target_language Verilog [current_project]
add_files -norecurse [list [file join $script_dir {core_file}] \\
    [file join $script_dir {wrapper_file}]]
add_files -fileset constrs_1 -norecurse [file join $script_dir {xdc_file}]
# {cdc_file}: the interrupt synchronizer's set_max_delay; its cells exist after synthesis only
set cdc_xdc [file join $script_dir {cdc_file}]
add_files -fileset constrs_1 -norecurse $cdc_xdc
set_property USED_IN_SYNTHESIS false [get_files $cdc_xdc]
update_compile_order -fileset sources_1

# -- block design ------------------------------------------------------------------------------
create_bd_design {BD_NAME}
current_bd_design {BD_NAME}

# External ports: PCIe lanes, 100 MHz reference clock, PERST# (pins in {xdc_file})
set pcie_mgt [create_bd_intf_port -mode Master \\
    -vlnv xilinx.com:interface:pcie_7x_mgt_rtl:1.0 pcie_mgt]
set pcie_refclk [create_bd_intf_port -mode Slave \\
    -vlnv xilinx.com:interface:diff_clock_rtl:1.0 pcie_refclk]
set_property CONFIG.FREQ_HZ {PCIE_REFCLK_HZ} $pcie_refclk
set pcie_perstn [create_bd_port -dir I -type rst pcie_perstn]
set_property CONFIG.POLARITY ACTIVE_LOW $pcie_perstn

# PCIe reference clock buffer (IBUFDS_GTE4)
set refclk_buf [create_bd_cell -type ip -vlnv xilinx.com:ip:util_ds_buf refclk_buf]
set_property CONFIG.C_BUF_TYPE IBUFDSGTE $refclk_buf

# XDMA: PCIe Gen3 x16, AXI4-Stream with one H2C and one C2H channel, AXI4-Lite master BAR
set xdma [create_bd_cell -type ip -vlnv xilinx.com:ip:xdma xdma_0]
set_property -dict [list \\
{xdma_dict} \\
] $xdma

# -- core clock domain -------------------------------------------------------------------------
# {CORE_CLK} ({core_mhz} MHz): the accelerator's clock. The core closes timing nearer 100 MHz than
# the XDMA's {axi_mhz} MHz axi_aclk, so it runs in a domain of its own (change it with
# --core-mhz; whole MHz, 10..{CORE_MHZ_MAX}).
# Source: an MMCM fed by axi_aclk, not the board's 300 MHz SYSCLK0. The core is of no use
# without the PCIe link and is reset with it anyway (axi_aresetn); deriving core_clk from
# axi_aclk needs no extra pins, I/O standard or create_clock (the VCU1525 sources disagree on
# SYSCLK0's I/O standard, LVDS or DIFF_SSTL12), and Vivado derives core_clk from the MMCM.
# axi_aclk is already on a global buffer (BUFG_GT): PRIM_SOURCE No_buffer. The MMCM is held in
# reset while axi_aresetn is low: axi_aclk may stop or move during a PCIe reset, and an MMCM
# has to be reset to lock again afterwards.
set core_clk_wiz [create_bd_cell -type ip -vlnv xilinx.com:ip:clk_wiz core_clk_wiz]
set_property -dict [list \\
    CONFIG.PRIM_SOURCE {{No_buffer}} \\
    CONFIG.PRIM_IN_FREQ {{{axi_mhz}.000}} \\
    CONFIG.CLK_OUT1_PORT {{{CORE_CLK}}} \\
    CONFIG.CLKOUT1_REQUESTED_OUT_FREQ {{{core_mhz}.000}} \\
    CONFIG.USE_LOCKED {{true}} \\
    CONFIG.USE_RESET {{true}} \\
    CONFIG.RESET_TYPE {{ACTIVE_LOW}} \\
    CONFIG.RESET_PORT {{resetn}} \\
] $core_clk_wiz
# The wrapper declares FREQ_HZ {core_mhz * 1_000_000} on {CORE_CELL}/clk; IP Integrator rejects a
# clock whose FREQ_HZ differs. Say early if the MMCM setting clk_wiz chose is not exact.
proc sf_mmcm_out_mhz {{cell}} {{
    if {{[catch {{
        set period [get_property CONFIG.MMCM_CLKIN1_PERIOD $cell]
        set mult [get_property CONFIG.MMCM_CLKFBOUT_MULT_F $cell]
        set divclk [get_property CONFIG.MMCM_DIVCLK_DIVIDE $cell]
        set div [get_property CONFIG.MMCM_CLKOUT0_DIVIDE_F $cell]
        set mhz [expr {{1000.0 / $period * $mult / ($divclk * $div)}}]
    }}]}} {{ return "" }}
    return $mhz
}}
set core_clk_mhz [sf_mmcm_out_mhz $core_clk_wiz]
if {{$core_clk_mhz ne "" && abs($core_clk_mhz - {core_mhz}) > 0.001}} {{
    puts "WARNING: core_clk_wiz gives $core_clk_mhz MHz, not {core_mhz} MHz: validate_bd_design \\
will reject FREQ_HZ {core_mhz * 1_000_000} of {CORE_CELL}/clk; regenerate with another --core-mhz"
}}

# Reset of the core domain: axi_aresetn (asynchronous here) and the MMCM's locked, synchronized
# to {CORE_CLK}; interconnect_aresetn for the converters, peripheral_aresetn for the core
set core_rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset core_rst]
set_property CONFIG.C_EXT_RESET_HIGH {{0}} $core_rst

# AXI4-Stream width converters between the XDMA ({8 * XDMA_STREAM_BYTES} bits) and the core
set h2c_dw [create_bd_cell -type ip -vlnv xilinx.com:ip:axis_dwidth_converter h2c_dwidth]
set_property -dict [list CONFIG.S_TDATA_NUM_BYTES {{{XDMA_STREAM_BYTES}}} \\
    CONFIG.M_TDATA_NUM_BYTES {{{stream_bytes}}} \\
    CONFIG.HAS_TLAST {{1}} CONFIG.HAS_TKEEP {{1}}] $h2c_dw
set c2h_dw [create_bd_cell -type ip -vlnv xilinx.com:ip:axis_dwidth_converter c2h_dwidth]
set_property -dict [list CONFIG.S_TDATA_NUM_BYTES {{{out_bytes}}} \\
    CONFIG.M_TDATA_NUM_BYTES {{{XDMA_STREAM_BYTES}}} \\
    CONFIG.HAS_TLAST {{1}} CONFIG.HAS_TKEEP {{1}}] $c2h_dw

# AXI4-Stream clock converters, axi_aclk <-> {CORE_CLK}, on the core's side of the width
# converters ({8 * stream_bytes} / {8 * out_bytes} bits: small FIFOs); IP Integrator sets them
# asynchronous (two clock domains)
set h2c_cc [create_bd_cell -type ip -vlnv xilinx.com:ip:axis_clock_converter h2c_cc]
set_property -dict [list CONFIG.TDATA_NUM_BYTES {{{stream_bytes}}} \\
    CONFIG.HAS_TLAST {{1}} CONFIG.HAS_TKEEP {{1}}] $h2c_cc
set c2h_cc [create_bd_cell -type ip -vlnv xilinx.com:ip:axis_clock_converter c2h_cc]
set_property -dict [list CONFIG.TDATA_NUM_BYTES {{{out_bytes}}} \\
    CONFIG.HAS_TLAST {{1}} CONFIG.HAS_TKEEP {{1}}] $c2h_cc

# AXI4-Lite BAR -> core registers (address width {itf.axil_addr_width} bits): an
# axi_clock_converter (axi_aclk -> {CORE_CLK}, as firesim's U200 design does for M_AXI_LITE),
# then the SmartConnect in {CORE_CLK} next to the core (it decodes the {core_window}-byte window,
# DECERR elsewhere)
set axil_cc [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_clock_converter axil_cc]
set axil_smc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect axil_smc]
set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{1}}] $axil_smc

# The accelerator, as a module reference to {WRAPPER_MODULE} ({wrapper_file})
if {{[catch {{create_bd_cell -type module -reference {WRAPPER_MODULE} {CORE_CELL}}} err]}} {{
    error "cannot add the module reference {WRAPPER_MODULE}: $err"
}}

# -- connections -------------------------------------------------------------------------------
connect_bd_intf_net [get_bd_intf_ports pcie_refclk] [get_bd_intf_pins refclk_buf/CLK_IN_D]
connect_bd_net [get_bd_pins refclk_buf/IBUF_DS_ODIV2] [get_bd_pins xdma_0/sys_clk]
connect_bd_net [get_bd_pins refclk_buf/IBUF_OUT] [get_bd_pins xdma_0/sys_clk_gt]
connect_bd_net [get_bd_ports pcie_perstn] [get_bd_pins xdma_0/sys_rst_n]
connect_bd_intf_net [get_bd_intf_pins xdma_0/pcie_mgt] [get_bd_intf_ports pcie_mgt]

connect_bd_intf_net [get_bd_intf_pins xdma_0/M_AXI_LITE] [get_bd_intf_pins axil_cc/S_AXI]
connect_bd_intf_net [get_bd_intf_pins axil_cc/M_AXI] [get_bd_intf_pins axil_smc/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins axil_smc/M00_AXI] [get_bd_intf_pins {CORE_CELL}/s_axil]
connect_bd_intf_net [get_bd_intf_pins xdma_0/M_AXIS_H2C_0] [get_bd_intf_pins h2c_dwidth/S_AXIS]
connect_bd_intf_net [get_bd_intf_pins h2c_dwidth/M_AXIS] [get_bd_intf_pins h2c_cc/S_AXIS]
connect_bd_intf_net [get_bd_intf_pins h2c_cc/M_AXIS] [get_bd_intf_pins {CORE_CELL}/s_axis]
connect_bd_intf_net [get_bd_intf_pins {CORE_CELL}/m_axis] [get_bd_intf_pins c2h_cc/S_AXIS]
connect_bd_intf_net [get_bd_intf_pins c2h_cc/M_AXIS] [get_bd_intf_pins c2h_dwidth/S_AXIS]
connect_bd_intf_net [get_bd_intf_pins c2h_dwidth/M_AXIS] [get_bd_intf_pins xdma_0/S_AXIS_C2H_0]
# The wrapper's irq is already synchronous to axi_aclk (its irq_clk): a level, held until serviced
connect_bd_net [get_bd_pins {CORE_CELL}/irq] [get_bd_pins xdma_0/usr_irq_req]

# axi_aclk ({axi_mhz} MHz) domain: XDMA side of every crossing, width converters, MMCM input
connect_bd_net [get_bd_pins xdma_0/axi_aclk] [get_bd_pins core_clk_wiz/clk_in1] \\
    [get_bd_pins {CORE_CELL}/irq_clk] [get_bd_pins axil_cc/s_axi_aclk] \\
    [get_bd_pins h2c_dwidth/aclk] [get_bd_pins h2c_cc/s_axis_aclk] \\
    [get_bd_pins c2h_cc/m_axis_aclk] [get_bd_pins c2h_dwidth/aclk]
connect_bd_net [get_bd_pins xdma_0/axi_aresetn] [get_bd_pins core_clk_wiz/resetn] \\
    [get_bd_pins core_rst/ext_reset_in] [get_bd_pins axil_cc/s_axi_aresetn] \\
    [get_bd_pins h2c_dwidth/aresetn] [get_bd_pins h2c_cc/s_axis_aresetn] \\
    [get_bd_pins c2h_cc/m_axis_aresetn] [get_bd_pins c2h_dwidth/aresetn]
# {CORE_CLK} ({core_mhz} MHz) domain: the core, the SmartConnect, core side of every crossing
connect_bd_net [get_bd_pins core_clk_wiz/{CORE_CLK}] [get_bd_pins core_rst/slowest_sync_clk] \\
    [get_bd_pins {CORE_CELL}/clk] [get_bd_pins axil_cc/m_axi_aclk] [get_bd_pins axil_smc/aclk] \\
    [get_bd_pins h2c_cc/m_axis_aclk] [get_bd_pins c2h_cc/s_axis_aclk]
connect_bd_net [get_bd_pins core_clk_wiz/locked] [get_bd_pins core_rst/dcm_locked]
connect_bd_net [get_bd_pins core_rst/interconnect_aresetn] [get_bd_pins axil_cc/m_axi_aresetn] \\
    [get_bd_pins axil_smc/aresetn] [get_bd_pins h2c_cc/m_axis_aresetn] \\
    [get_bd_pins c2h_cc/s_axis_aresetn]
connect_bd_net [get_bd_pins core_rst/peripheral_aresetn] [get_bd_pins {CORE_CELL}/aresetn]

# -- address map: the core's {core_window}-byte register window at AXI address 0 of the BAR -------
set core_segs [get_bd_addr_segs {CORE_CELL}/s_axil/*]
if {{[catch {{assign_bd_address -target_address_space [get_bd_addr_spaces xdma_0/M_AXI_LITE] \\
        -offset 0x00000000 -range 0x{core_window:08X} $core_segs}} err]}} {{
    puts "assign_bd_address with offset failed ($err); assigning automatically"
    assign_bd_address
}}

validate_bd_design
save_bd_design

set bd_wrapper [make_wrapper -files [get_files {BD_NAME}.bd] -top]
add_files -norecurse $bd_wrapper
set_property top {BD_NAME}_wrapper [current_fileset]
update_compile_order -fileset sources_1

if {{$bd_only}} {{
    puts "bd_only: stopped after the block design ({BD_NAME}) and its wrapper"
    return
}}

# -- synthesis, implementation, bitstream --------------------------------------------------------
launch_runs synth_1 -jobs $jobs
wait_on_run synth_1
if {{[get_property PROGRESS [get_runs synth_1]] ne "100%"}} {{ error "synth_1 failed" }}
launch_runs impl_1 -to_step write_bitstream -jobs $jobs
wait_on_run impl_1
if {{[get_property PROGRESS [get_runs impl_1]] ne "100%"}} {{ error "impl_1 failed" }}

open_run impl_1
report_timing_summary -max_paths 10 -file [file join $script_dir timing_summary.rpt]
report_utilization -file [file join $script_dir utilization.rpt]
set bit [file join [get_property DIRECTORY [get_runs impl_1]] {BD_NAME}_wrapper.bit]
if {{![file exists $bit]}} {{ error "no bitstream at $bit" }}
file copy -force $bit [file join $script_dir {BITSTREAM_NAME}]
puts "bitstream: [file join $script_dir {BITSTREAM_NAME}]"
"""


def build_script() -> str:
    """``build_bd.sh``: like Amaranth's ``build_top.sh`` (``$VIVADO`` or ``vivado``)."""
    return ("#!/bin/sh\n"
            "# Generated by sparseforge.boards.vivado_bd -- do not edit.\n"
            "# Runs the VCU1525 XDMA block design: project, block design, synthesis,\n"
            "# implementation, bitstream. Extra arguments go to Vivado (e.g. -tclargs bd_only).\n"
            "set -e\n"
            "cd \"$(dirname \"$0\")\"\n"
            ": ${VIVADO:=vivado}\n"
            "\"$VIVADO\" -mode batch -log create_bd.log -journal create_bd.jou "
            "-source create_bd.tcl \"$@\"\n")


def _readme(itf: CoreInterfaces, cfg_name: str | None, core_mhz: int) -> str:
    return f"""\
sparseforge accelerator: Vivado block design for the Xilinx VCU1525 ({PART})
Generated by sparseforge.boards.vivado_bd{f' (preset {cfg_name})' if cfg_name else ''}.

Clocks
  axi_aclk  {AXI_CLK_HZ // 1_000_000} MHz   XDMA, width converters, XDMA side of the
                      clock converters, interrupt synchronizer
  {CORE_CLK}  {core_mhz} MHz   the core (clk_wiz core_clk_wiz from axi_aclk; reset:
                      proc_sys_reset core_rst); to change it, regenerate with
                      --core-mhz N (whole MHz, {CORE_MHZ_MIN}..{CORE_MHZ_MAX})

Files
  {CORE_MODULE}.v           the core (Amaranth -> Verilog), top module `{CORE_MODULE}`
  {WRAPPER_MODULE}.v   module-reference wrapper with X_INTERFACE_INFO attributes
  create_bd.tcl           project + block design (XDMA) + synthesis/implementation/bitstream
  pcie.xdc                PCIe refclk (100 MHz), PERST#, lanes, configuration settings
  cdc.xdc                 set_max_delay of the wrapper's interrupt synchronizer (implementation)
  build_bd.sh             runs: vivado -mode batch -source create_bd.tcl

Run (Vivado with the XDMA, util_ds_buf, clk_wiz, proc_sys_reset, axis_dwidth_converter,
axis_clock_converter, axi_clock_converter and smartconnect IP):
  sh build_bd.sh                      # bitstream -> {BITSTREAM_NAME}
  sh build_bd.sh -tclargs bd_only     # block design + wrapper only
  SF_VIVADO_JOBS=16 sh build_bd.sh    # parallel jobs (default 8)

Host view (XDMA driver)
  /dev/xdma0_user      BAR0 = AXI4-Lite master: offset 0x000..0x{(1 << itf.axil_addr_width) - 1:03X}
                       is the core's register map (docs/register-map.md); the rest of the
                       1 MiB BAR answers DECERR
  /dev/xdma0_h2c_0     host -> core s_axis (32-bit words; transfers a multiple of 4 bytes;
                       all-null words of a partial last 512-bit beat are dropped by the wrapper)
  /dev/xdma0_c2h_0     core m_axis -> host
  interrupt            usr_irq_req[0] = core irq (level: CTRL.irq_enable & IRQ_STATUS != 0),
                       synchronized to axi_aclk in the wrapper

Not verified where this was generated: Vivado never ran on these files.
"""


def write_block_design(component, out_dir: str | Path, *, config=None,
                       params: dict | None = None, core_mhz=CORE_MHZ_DEFAULT) -> dict:
    """Write the block-design tree for ``component`` (the ``accelerator`` block) into ``out_dir``.

    ``core_mhz``: the core's clock ``core_clk`` in whole MHz, 10..250 (``ValueError`` otherwise,
    before anything is written).

    Returns ``{"dir", "files", "ports", "interfaces", "clocks"}``.
    """
    from sparseforge.gen.verilog import write_verilog
    core_mhz = check_core_mhz(core_mhz)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    core_path = write_verilog(component, CORE_MODULE, out / f"{CORE_MODULE}.v", config=config,
                              params=params)
    ports = parse_verilog_ports(core_path.read_text(), CORE_MODULE)
    itf = classify_ports(ports)
    (out / f"{WRAPPER_MODULE}.v").write_text(wrapper_verilog(ports,
                                                             clk_hz=core_mhz * 1_000_000))
    (out / "create_bd.tcl").write_text(block_design_tcl(itf, core_mhz=core_mhz))
    (out / "pcie.xdc").write_text(pcie_xdc())
    (out / "cdc.xdc").write_text(cdc_xdc(core_mhz=core_mhz))
    script = out / "build_bd.sh"
    script.write_text(build_script())
    script.chmod(0o755)
    (out / "README").write_text(_readme(itf, getattr(config, "name", None), core_mhz))
    return {
        "dir": str(out),
        "files": list(BD_FILES),
        "ports": [[p.name, p.direction, p.width] for p in ports],
        "interfaces": {"s_axil": sorted(itf.s_axil), "s_axis": sorted(itf.s_axis),
                       "m_axis": sorted(itf.m_axis), "clk": itf.clk.name,
                       "rst": itf.rst.name, "irq": itf.irq.name},
        "clocks": {"axi_aclk_mhz": AXI_CLK_HZ // 1_000_000, "core_mhz": core_mhz},
    }
